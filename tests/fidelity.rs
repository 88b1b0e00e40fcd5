//! The default model against golden files from an independent float64
//! evaluation of the same quantized weights (tests/reference/, see its README).
//!
//! At the last prompt position and at each greedy step the engine's logits for
//! the reference's top-10 ids must be within LOGIT_TOLERANCE, and its greedy
//! choice must equal the reference's up to the first step where the reference's
//! own top-2 margin is under MARGIN_FLOOR (below that, f32 rounding may
//! legitimately flip the choice). The reference's tokens are fed back
//! (teacher forcing), so every step compares the same position.

mod common;

use std::path::Path;
use std::time::Instant;

use gqa_webgpu::gguf::GgufFile;
use gqa_webgpu::{LoadOptions, Model, Output};
use serde_json::Value;

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const LOGIT_TOLERANCE: f64 = 0.05;
const MARGIN_FLOOR: f64 = 0.02;

/// The model file's bytes, or None (with a note) where it was not fetched.
/// CI fetches it, so there a missing model fails.
pub fn model_bytes() -> Option<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(MODEL);
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: {} ({e}); run scripts/fetch-model", path.display());
            None
        }
        Err(e) => panic!("{}: {e}; CI must fetch the model first", path.display()),
    }
}

struct Outcome {
    max_error: f64,
    matched: usize,
    required: usize,
    steps: usize,
}

fn check_golden(model: &mut Model, name: &str) -> Outcome {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let prompt = ids(&golden["prompt_ids"]);
    let steps = golden["steps"].as_array().unwrap();
    model.clear();

    let mut logits = pollster::block_on(model.forward(&prompt, Output::LastLogits))
        .unwrap()
        .logits;
    let mut outcome = Outcome {
        max_error: 0.0,
        matched: 0,
        required: 0,
        steps: steps.len(),
    };
    let mut still_required = true;
    for (i, step) in steps.iter().enumerate() {
        for pair in step["top"].as_array().unwrap() {
            let id = pair[0].as_u64().unwrap() as usize;
            let expected = pair[1].as_f64().unwrap();
            let error = (f64::from(logits[id]) - expected).abs();
            outcome.max_error = outcome.max_error.max(error);
            assert!(
                error <= LOGIT_TOLERANCE,
                "{name} step {i}: logit of id {id} is {}, reference {expected} \
                 (tolerance {LOGIT_TOLERANCE})",
                logits[id]
            );
        }
        let token = step["token"].as_u64().unwrap() as u32;
        let ours = gqa_webgpu::reference::argmax(&logits) as u32;
        still_required &= step["margin"].as_f64().unwrap() >= MARGIN_FLOOR;
        if still_required {
            outcome.required += 1;
            assert_eq!(
                ours, token,
                "{name} step {i}: greedy token differs from the reference"
            );
        }
        if ours == token && outcome.matched == i {
            outcome.matched += 1;
        }
        if i + 1 < steps.len() {
            let next = pollster::block_on(model.forward(&[token], Output::LastLogits));
            logits = next.unwrap().logits;
        }
    }
    outcome
}

fn check_goldens(names: &[&str]) {
    let Some(bytes) = model_bytes() else { return };
    let ctx = common::gpu();
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    let options = LoadOptions {
        max_seq: Some(1024),
        ..Default::default()
    };
    let mut model = Model::load(&ctx, &file, &bytes, &options).unwrap();
    for name in names {
        let start = Instant::now();
        let o = check_golden(&mut model, name);
        eprintln!(
            "{name}: largest logit error {:.2e}, greedy tokens matched {}/{} (required {}), \
             {:.1} s",
            o.max_error,
            o.matched,
            o.steps,
            o.required,
            start.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn short_raw_and_chat_prompts_match_the_float64_reference() {
    check_goldens(&["raw_capital.json", "chat_capital.json"]);
}

#[test]
fn every_golden_matches_the_float64_reference() {
    check_goldens(&[
        "raw_single_token.json",
        "raw_story.json",
        "raw_code.json",
        "chat_haiku.json",
        "chat_math.json",
        "chat_long_summary.json",
    ]);
}
