//! The command line, run as a user would, on the default model.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> Option<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(MODEL);
    if path.exists() {
        return Some(path.to_string_lossy().into_owned());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must fetch the model first: {}",
        path.display()
    );
    eprintln!(
        "skipped: {} is missing; run scripts/fetch-model",
        path.display()
    );
    None
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gqa-webgpu"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap()
}

fn json(output: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn golden(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn greedy_raw_and_chat_generation_give_the_reference_tokens() {
    let Some(model) = model_path() else { return };
    for (mode, name, n) in [
        ("--prompt", "raw_capital.json", 6),
        ("--chat", "chat_capital.json", 8),
    ] {
        let golden = golden(name);
        let text = golden["text"].as_str().unwrap();
        let n_arg = n.to_string();
        let args = [
            "generate", "--model", &model, mode, text, "-n", &n_arg, "--format", "json",
        ];

        let out = json(&run(&args));

        assert_eq!(
            ids(&out["prompt_tokens"]),
            ids(&golden["prompt_ids"]),
            "{name}: prompt ids"
        );
        let expected: Vec<u64> = golden["steps"]
            .as_array()
            .unwrap()
            .iter()
            .take(n)
            .map(|s| s["token"].as_u64().unwrap())
            .collect();
        assert_eq!(ids(&out["tokens"]), expected, "{name}: greedy tokens");
        let stopped = expected.last() == Some(&2);
        let reason = if stopped { "stop" } else { "length" };
        assert_eq!(out["finish_reason"], reason, "{name}");
        assert!(out["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(out["prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(out.get("top_logits").is_none());
    }
}

#[test]
fn ignore_eos_goes_on_past_the_end_of_the_answer() {
    let Some(model) = model_path() else { return };
    let golden = golden("chat_capital.json");
    let text = golden["text"].as_str().unwrap();
    let args = [
        "generate",
        "--model",
        &model,
        "--chat",
        text,
        "-n",
        "10",
        "--ignore-eos",
        "--format",
        "json",
    ];

    let out = json(&run(&args));

    // the model's answer ends with <|im_end|> (id 2) at the 8th token; it goes on
    let answer: Vec<u64> = golden["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["token"].as_u64().unwrap())
        .collect();
    let tokens = ids(&out["tokens"]);
    assert_eq!(answer.len(), 8);
    assert_eq!(tokens.len(), 10);
    assert_eq!(tokens[..8], answer[..]);
    assert_eq!(out["finish_reason"], "length");
}

#[test]
fn seeded_sampling_repeats_and_top_logits_are_reported() {
    let Some(model) = model_path() else { return };
    let args = [
        "generate",
        "--model",
        &model,
        "--prompt",
        "Once upon a time",
        "-n",
        "6",
        "--temperature",
        "0.9",
        "--seed",
        "42",
        "--top-logits",
        "5",
        "--format",
        "json",
    ];

    let first = json(&run(&args));
    let second = json(&run(&args));

    assert_eq!(
        first["tokens"], second["tokens"],
        "the same seed gives the same tokens"
    );
    let steps = first["top_logits"].as_array().unwrap();
    assert_eq!(steps.len(), 6);
    for step in steps {
        let pairs = step.as_array().unwrap();
        assert_eq!(pairs.len(), 5);
        let logits: Vec<f64> = pairs.iter().map(|p| p[1].as_f64().unwrap()).collect();
        assert!(
            logits.windows(2).all(|w| w[0] >= w[1]),
            "descending: {logits:?}"
        );
    }
}

#[test]
fn text_format_streams_the_answer_and_reports_speed() {
    let Some(model) = model_path() else { return };

    let out = run(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        "The capital of France is",
        "-n",
        "2",
    ]);

    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), " Paris.\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tokens/s") && stderr.contains("finish: length"),
        "{stderr}"
    );
}

#[test]
fn tokenize_prints_ids_and_parses_control_tokens_on_request() {
    let Some(model) = model_path() else { return };
    let text = "<|im_start|>user";

    let plain: Value =
        serde_json::from_slice(&run(&["tokenize", "--model", &model, "--text", text]).stdout)
            .unwrap();
    let special = run(&["tokenize", "--model", &model, "--text", text, "--special"]);
    let special: Value = serde_json::from_slice(&special.stdout).unwrap();

    assert_eq!(ids(&special), [1, 4093]);
    assert!(
        ids(&plain).len() > 2 && !ids(&plain).contains(&1),
        "{plain}"
    );
}

#[test]
fn errors_are_one_line_on_stderr_with_a_failing_exit_code() {
    let missing = run(&["generate", "--model", "/nonexistent.gguf", "--prompt", "x"]);
    let not_gguf = run(&["tokenize", "--model", "Cargo.toml", "--text", "x"]);

    for out in [missing, not_gguf] {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}
