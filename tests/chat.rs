//! Chat templates rendered with minijinja the way Hugging Face renders them with Jinja2.
//!
//! The model tests compare with the `prompt_text` of tests/golden/chat_*.json, which Python's
//! jinja2 rendered with the same settings. They need models/SmolLM2-135M-Instruct.Q4_1.gguf;
//! without it they print a note and pass.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gqa_webgpu::chat::{ChatError, ChatTemplate, Message};
use gqa_webgpu::gguf::{GgufFile, GgufWriter, Value};

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const GOLDEN_DIR: &str = "tests/golden";
const SMOLLM_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

#[derive(serde::Deserialize)]
struct Golden {
    text: String,
    prompt_text: String,
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

// The model's template, loaded once for all tests; None (after a note) without the model.
fn smollm_template() -> Option<&'static ChatTemplate> {
    static TEMPLATE: OnceLock<Option<ChatTemplate>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let path = repo_path(MODEL);
            let Ok(bytes) = std::fs::read(&path) else {
                eprintln!(
                    "note: {} is absent; skipping the model's chat template",
                    path.display()
                );
                return None;
            };
            let file = GgufFile::parse(&bytes, bytes.len() as u64)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let template = ChatTemplate::from_gguf(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Some(template.unwrap_or_else(|| panic!("{} has no chat template", path.display())))
        })
        .as_ref()
}

fn render(template: &ChatTemplate, messages: &[Message], add_generation_prompt: bool) -> String {
    template
        .render(messages, add_generation_prompt)
        .unwrap_or_else(|e| panic!("rendering {messages:?}: {e}"))
}

// ChatML as SmolLM2 writes one turn.
fn turn(role: &str, content: &str) -> String {
    format!("<|im_start|>{role}\n{content}<|im_end|>\n")
}

fn inline(source: &str) -> ChatTemplate {
    ChatTemplate::new(source, "<s>", "</s>").unwrap_or_else(|e| panic!("{source:?}: {e}"))
}

fn user(content: &str) -> Vec<Message> {
    vec![Message::new("user", content)]
}

#[test]
fn a_user_message_renders_as_the_golden_prompts() {
    let Some(template) = smollm_template() else {
        return;
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo_path(GOLDEN_DIR))
        .expect("tests/golden is readable")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("chat_") && name.ends_with(".json")
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no chat_*.json in {GOLDEN_DIR}");

    for path in paths {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let golden: Golden = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid: {e}", path.display()));

        let prompt = render(template, &user(&golden.text), true);

        assert_eq!(prompt, golden.prompt_text, "{}", path.display());
    }
}

#[test]
fn a_system_message_replaces_the_default_system_prompt() {
    let Some(template) = smollm_template() else {
        return;
    };
    let messages = [
        Message::new("system", "You are terse."),
        Message::new("user", "Hi"),
    ];

    let prompt = render(template, &messages, true);

    let expected =
        turn("system", "You are terse.") + &turn("user", "Hi") + "<|im_start|>assistant\n";
    assert_eq!(prompt, expected);
    assert!(
        !prompt.contains(SMOLLM_SYSTEM),
        "the default system prompt is still there"
    );
}

#[test]
fn every_turn_of_a_conversation_renders_in_order() {
    let Some(template) = smollm_template() else {
        return;
    };
    let messages = [
        Message::new("user", "What is 2 + 2?"),
        Message::new("assistant", "4."),
        Message::new("user", "And times 3?"),
        Message::new("assistant", "12."),
        Message::new("user", "Thanks!"),
    ];

    let with_prompt = render(template, &messages, true);
    let without = render(template, &messages, false);

    let mut expected = turn("system", SMOLLM_SYSTEM);
    for m in &messages {
        expected += &turn(&m.role, &m.content);
    }
    assert_eq!(without, expected);
    assert_eq!(with_prompt, expected + "<|im_start|>assistant\n");
}

#[test]
fn from_gguf_reads_the_template_and_the_bos_eos_texts() {
    let mut writer = GgufWriter::new();
    writer
        .add(
            "tokenizer.chat_template",
            Value::String("{{ bos_token }}|{{ eos_token }}".into()),
        )
        .add(
            "tokenizer.ggml.tokens",
            Value::Array(["<a>", "<b>", "<c>"].map(str_value).into()),
        )
        .add("tokenizer.ggml.bos_token_id", Value::U32(2))
        .add("tokenizer.ggml.eos_token_id", Value::U32(0));
    let bytes = writer.to_bytes();
    let file = GgufFile::parse(&bytes, bytes.len() as u64).expect("the written file parses");

    let template = ChatTemplate::from_gguf(&file)
        .expect("a valid template")
        .expect("present");

    assert_eq!(render(&template, &[], false), "<c>|<a>");
}

#[test]
fn from_gguf_gives_none_without_a_template_and_empty_texts_without_ids() {
    let mut bare = GgufWriter::new();
    bare.add("general.architecture", Value::String("llama".into()));
    let mut no_ids = GgufWriter::new();
    no_ids.add(
        "tokenizer.chat_template",
        Value::String("[{{ bos_token }}{{ eos_token }}]".into()),
    );
    let parse = |bytes: &[u8]| GgufFile::parse(bytes, bytes.len() as u64).expect("parses");
    let (bare, no_ids) = (bare.to_bytes(), no_ids.to_bytes());

    let missing = ChatTemplate::from_gguf(&parse(&bare)).expect("no error");
    let template = ChatTemplate::from_gguf(&parse(&no_ids))
        .expect("no error")
        .expect("present");

    assert!(missing.is_none());
    assert_eq!(render(&template, &[], false), "[]");
}

#[test]
fn from_gguf_reports_a_template_that_is_not_a_string() {
    let mut writer = GgufWriter::new();
    writer.add("tokenizer.chat_template", Value::U32(7));
    let bytes = writer.to_bytes();
    let file = GgufFile::parse(&bytes, bytes.len() as u64).expect("parses");

    let result = ChatTemplate::from_gguf(&file);

    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("tokenizer.chat_template"), "{message:?}");
}

#[test]
fn trim_blocks_and_lstrip_blocks_remove_block_whitespace() {
    let source = [
        "{% for m in messages %}\n",
        "    {% if m.role == 'user' %}\n",
        "[{{ m.content }}]\n",
        "    {% endif %}\n",
        "{% endfor %}\n",
    ];
    let template = inline(&source.concat());
    let messages = [
        Message::new("user", "a"),
        Message::new("assistant", "b"),
        Message::new("user", "c"),
    ];

    let rendered = render(&template, &messages, false);

    // trim_blocks eats the newline after each tag, lstrip_blocks the indent before it,
    // and the template's final newline is dropped
    assert_eq!(rendered, "[a]\n[c]\n");
}

#[test]
fn python_string_methods_work() {
    let template = inline(
        "{{ messages[0].content.strip() }}|{{ messages[0].content.upper().strip() }}|\
         {{ messages[0].content.strip().startswith('hi') }}|{{ 'a,b'.split(',') | join('+') }}",
    );

    let rendered = render(&template, &user("  hi there \n"), false);

    // Python's spelling of a bool, as jinja2 prints it
    assert_eq!(rendered, "hi there|HI THERE|True|a+b");
}

#[test]
fn raise_exception_fails_with_its_message() {
    let template = inline(
        "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}\
         {{ raise_exception('Unknown role: ' + m.role) }}{% endif %}{{ m.content }}{% endfor %}",
    );

    let ok = template.render(&user("fine"), false);
    let rejected = template.render(&[Message::new("tool", "x")], false);

    assert_eq!(ok.expect("user is accepted"), "fine");
    match rejected {
        Err(ChatError::Raised { message }) => assert_eq!(message, "Unknown role: tool"),
        other => panic!("expected ChatError::Raised, got {other:?}"),
    }
}

#[test]
fn loop_controls_and_macros_work_as_in_jinja2() {
    let template = inline(
        "{% macro show(m) %}<{{ m.role }}:{{ m.content }}>{% endmacro %}\
         {% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}\
         {% if m.content == 'stop' %}{% break %}{% endif %}{{ show(m) }}{% endfor %}",
    );
    let messages = [
        Message::new("system", "s"),
        Message::new("user", "a"),
        Message::new("assistant", "stop"),
        Message::new("user", "b"),
    ];

    let rendered = render(&template, &messages, false);

    assert_eq!(rendered, "<user:a>");
}

#[test]
fn a_syntax_error_is_reported_with_its_line() {
    let source = "first line\n{% if add_generation_prompt %}\nthird\n{{ messages[ }}\n{% endif %}";

    let result = ChatTemplate::new(source, "", "");

    match result {
        Err(e @ ChatError::Syntax { line: Some(4), .. }) => {
            assert!(e.to_string().contains("line 4"), "{e}")
        }
        other => panic!("expected a syntax error on line 4, got {other:?}"),
    }
}

#[test]
fn bos_and_eos_tokens_and_the_generation_prompt_are_available() {
    let template = inline(
        "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}\
         {% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
    );

    let with_prompt = render(&template, &user("hello"), true);
    let without = render(&template, &user("hello"), false);

    assert_eq!(with_prompt, "<s>user: hello</s>assistant:");
    assert_eq!(without, "<s>user: hello</s>");
}

#[test]
fn a_render_error_names_what_failed() {
    let template = inline("line one\n{{ messages[0].content.no_such_method() }}");

    let result = template.render(&user("x"), false);

    match result {
        Err(e @ ChatError::Render { line: Some(2), .. }) => {
            let message = e.to_string();
            assert!(message.contains("no_such_method"), "{message}");
            assert!(message.contains("line 2"), "{message}");
        }
        other => panic!("expected a render error, got {other:?}"),
    }
}

fn str_value(s: &str) -> Value {
    Value::String(s.to_string())
}
