//! The engine from text to text on a tiny model with a byte-level tokenizer,
//! and the fixtures the browser tests compare against.

mod common;

use common::assert_close;
use gqa_webgpu::chat::Message;
use gqa_webgpu::gguf::GgufFile;
use gqa_webgpu::reference::CpuModel;
use gqa_webgpu::synthetic::SyntheticSpec;
use gqa_webgpu::{Engine, FinishReason, GenerateOptions, LoadOptions};

fn engine() -> Engine {
    let bytes = SyntheticSpec::tiny_with_tokenizer().to_gguf();
    let options = LoadOptions {
        max_seq: Some(64),
        ..Default::default()
    };
    Engine::load(&common::gpu(), &bytes, &options).unwrap()
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ..Default::default()
    }
}

#[test]
fn a_follow_up_turn_reuses_the_cache_and_equals_a_fresh_run() {
    let mut engine = engine();
    let first = [Message::new("user", "hi")];
    let prompt = engine.encode(&engine.chat_prompt(&first).unwrap(), true);
    let answer = pollster::block_on(engine.generate(&prompt, &greedy(5), |_, _| true)).unwrap();
    let mut turn = first.to_vec();
    turn.push(Message::new("assistant", &answer.text));
    turn.push(Message::new("user", "more"));
    let follow_up = engine.encode(&engine.chat_prompt(&turn).unwrap(), true);

    let cached = pollster::block_on(engine.generate(&follow_up, &greedy(5), |_, _| true)).unwrap();
    engine.reset();
    let fresh = pollster::block_on(engine.generate(&follow_up, &greedy(5), |_, _| true)).unwrap();

    assert_eq!(cached.tokens, fresh.tokens);
    assert_eq!(answer.prompt_tokens, prompt);
}

#[test]
fn stopping_from_the_callback_aborts_and_the_next_run_equals_a_fresh_one() {
    let mut engine = engine();
    let prompt = engine.encode("abc", false);

    let mut seen = 0;
    let stopped = pollster::block_on(engine.generate(&prompt, &greedy(10), |_, _| {
        seen += 1;
        seen < 3
    }))
    .unwrap();
    let after = pollster::block_on(engine.generate(&prompt, &greedy(10), |_, _| true)).unwrap();
    engine.reset();
    let fresh = pollster::block_on(engine.generate(&prompt, &greedy(10), |_, _| true)).unwrap();

    assert_eq!(stopped.finish_reason, FinishReason::Abort);
    assert_eq!(stopped.tokens.len(), 3);
    assert_eq!(after.tokens, fresh.tokens);
    assert_eq!(&fresh.tokens[..3], &stopped.tokens[..]);
}

#[test]
fn generation_ends_with_length_at_the_end_of_the_context() {
    let mut engine = engine();
    let prompt = engine.encode(&"x".repeat(60), false);
    let too_long = engine.encode(&"x".repeat(64), false);

    let out = pollster::block_on(engine.generate(&prompt, &greedy(100), |_, _| true)).unwrap();
    let refused = pollster::block_on(engine.generate(&too_long, &greedy(1), |_, _| true));

    assert_eq!(out.finish_reason, FinishReason::Length);
    // positions 60..63 take the first four generated tokens; the fifth is chosen
    // from the logits of position 63 and needs no position of its own
    assert_eq!(out.tokens.len(), 5);
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("64 tokens") && message.contains("context holds 64"),
        "{message}"
    );
}

/// The CPU reference's attention weights of the last token of `context`:
/// `[n_layer, n_head, context.len()]`.
fn reference_attention(context: &[u32]) -> Vec<f32> {
    let bytes = SyntheticSpec::tiny_with_tokenizer().to_gguf();
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    let cpu = CpuModel::from_gguf(&file, &bytes, Some(64)).unwrap();
    cpu.forward_with_attention(context).1
}

#[test]
fn attention_comes_before_each_token_it_chose_and_equals_the_reference() {
    let mut engine = engine();
    let prompt = engine.encode("GQA", false);
    let options = GenerateOptions {
        attention: true,
        ..greedy(3)
    };
    let order = std::cell::RefCell::new(Vec::new());
    let mut steps: Vec<(Vec<u32>, Vec<f32>)> = Vec::new();

    let out = pollster::block_on(engine.generate_observed(
        &prompt,
        &options,
        |id, _| {
            order.borrow_mut().push(format!("token {id}"));
            true
        },
        |step| {
            order
                .borrow_mut()
                .push(format!("attention over {}", step.context.len()));
            steps.push((step.context.to_vec(), step.weights.to_vec()));
        },
    ))
    .unwrap();
    let plain = pollster::block_on(engine.generate(&prompt, &greedy(3), |_, _| true)).unwrap();

    let n = prompt.len();
    let t = &out.tokens;
    let expected_order = [
        format!("attention over {n}"),
        format!("token {}", t[0]),
        format!("attention over {}", n + 1),
        format!("token {}", t[1]),
        format!("attention over {}", n + 2),
        format!("token {}", t[2]),
    ];
    assert_eq!(order.into_inner(), expected_order);
    assert_eq!(out.tokens, plain.tokens, "capture changes no token");
    for (context, weights) in &steps {
        assert_eq!(&context[..n], &prompt[..]);
        assert_eq!(&context[n..], &t[..context.len() - n]);
        let what = format!("engine attention over {}", context.len());
        assert_close(&what, weights, &reference_attention(context), 1e-5, 1e-4);
    }
}

/// Writes the tiny model and its native greedy tokens for the browser tests
/// (tests/browser), which must produce the same ids through WebAssembly.
#[test]
fn write_browser_fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = SyntheticSpec::tiny_with_tokenizer().to_gguf();
    let mut engine = engine();
    let prompt_text = "Hello, GQA!";
    let prompt = engine.encode(prompt_text, false);

    let out = pollster::block_on(engine.generate(&prompt, &greedy(8), |_, _| true)).unwrap();

    assert!(!out.tokens.is_empty());
    let config = engine.config();
    let attention = serde_json::json!({
        "nLayer": config.n_layer,
        "nHead": config.n_head,
        "nKvHead": config.n_kv_head,
        // the prompt's last token over the prompt, as the CPU reference weighs it
        "weights": reference_attention(&prompt),
    });
    let variants = variant_rows(&bytes);
    let expected = serde_json::json!({
        "variants": variants,
        "prompt": prompt_text,
        "promptTokens": out.prompt_tokens,
        "tokens": out.tokens,
        "maxTokens": 8,
        "maxContext": 64,
        "attention": attention,
    });
    std::fs::write(dir.join("tiny.gguf"), bytes).unwrap();
    std::fs::write(dir.join("tiny.json"), expected.to_string()).unwrap();
}

/// The text, options and native rows of `compareVariants` for the browser tests:
/// the tiny model as 9, 3 and 1 KV heads, 2 chunks of 16 tokens each of the page's
/// Genesis excerpt.
fn variant_rows(bytes: &[u8]) -> serde_json::Value {
    use gqa_webgpu::compare::{self, CompareOptions};
    use gqa_webgpu::perplexity::PerplexityOptions;
    use gqa_webgpu::tokenizer::Tokenizer;

    // the excerpt the page's comparison panel measures on
    let excerpt = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/genesis-excerpt.txt");
    let text = std::fs::read_to_string(excerpt).unwrap();
    let text = text.as_str();
    let file = GgufFile::parse(bytes, bytes.len() as u64).unwrap();
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let tokens = tokenizer.encode(text, false);
    let (context, chunks, decode_context, decode_steps) = (16, 2, 24, 2);
    let options = CompareOptions {
        perplexity: PerplexityOptions {
            max_chunks: Some(chunks),
            ..PerplexityOptions::for_tokenizer(&tokenizer, context)
        },
        decode_context,
        decode_steps,
    };
    let ctx = common::gpu();
    let trained = gqa_webgpu::ModelConfig::from_gguf(&file, None).unwrap();
    let counts = compare::variant_counts(&trained);
    assert_eq!(counts, [9, 3, 1]);
    let rows: Vec<_> = counts
        .iter()
        .map(|&n| {
            let row = pollster::block_on(compare::measure_variant(
                &ctx,
                &file,
                bytes,
                n,
                &tokens,
                &options,
                &mut |_| {},
            ))
            .unwrap();
            assert!(row.perplexity.is_finite() && row.perplexity > 1.0);
            row
        })
        .collect();
    // duplicating the KV heads gives the trained model's outputs
    let (mha, gqa) = (rows[0].perplexity, rows[1].perplexity);
    assert!(
        (mha - gqa).abs() <= 1e-4 * gqa,
        "MHA {mha} against GQA {gqa}"
    );
    serde_json::json!({
        "text": text,
        "options": {
            "context": context,
            "chunks": chunks,
            "decodeContext": decode_context,
            "decodeSteps": decode_steps,
        },
        "rows": rows,
    })
}
