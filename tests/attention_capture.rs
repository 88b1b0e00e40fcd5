//! Attention capture, what the page's explainer draws: the softmax weights of the
//! newest token for every layer and query head, against the CPU reference, and
//! proof that with capture off the forward pass records nothing more.

mod common;

use common::{assert_close, gpu, gpu_with};
use gqa_webgpu::gguf::GgufFile;
use gqa_webgpu::gpu::{ContextOptions, GpuContext};
use gqa_webgpu::quant::WeightFormat;
use gqa_webgpu::reference::CpuModel;
use gqa_webgpu::synthetic::{Rng, SyntheticSpec};
use gqa_webgpu::{ForwardError, LoadOptions, Model, Output, StepOutput};

/// Weights after two layers of f32 arithmetic against the f64 reference.
const WEIGHT_ATOL: f32 = 1e-5;
const WEIGHT_RTOL: f32 = 1e-4;
/// A head's weights, summed in f64, are 1 up to f32 rounding of each weight.
const SUM_TOL: f64 = 1e-5;

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect()
}

fn load(ctx: &GpuContext, bytes: &[u8], block: usize) -> Model {
    let file = GgufFile::parse(bytes, bytes.len() as u64).unwrap();
    let options = LoadOptions {
        max_seq: Some(128),
        block,
        ..Default::default()
    };
    Model::load(ctx, &file, bytes, &options).unwrap()
}

fn forward(model: &mut Model, ids: &[u32], output: Output) -> StepOutput {
    pollster::block_on(model.forward(ids, output)).unwrap()
}

/// The reference's weights of the last of `sequence`: `[n_layer, n_head, len]`.
fn reference_weights(bytes: &[u8], sequence: &[u32]) -> Vec<f32> {
    let file = GgufFile::parse(bytes, bytes.len() as u64).unwrap();
    let cpu = CpuModel::from_gguf(&file, bytes, Some(128)).unwrap();
    cpu.forward_with_attention(sequence).1
}

fn assert_rows_sum_to_one(what: &str, weights: &[f32], context: usize) {
    for (row, head) in weights.chunks(context).enumerate() {
        let sum: f64 = head.iter().map(|&w| f64::from(w)).sum();
        assert!(
            (sum - 1.0).abs() <= SUM_TOL && head.iter().all(|w| (0.0..=1.0).contains(w)),
            "{what}: row {row} (layer * n_head + head) sums to {sum}"
        );
    }
}

#[test]
fn captured_weights_sum_to_one_and_match_the_reference_for_9_heads_over_3() {
    let ctx = gpu();
    let spec = SyntheticSpec::tiny(9, 3, WeightFormat::Q4_1);
    let bytes = spec.to_gguf();
    let sequence = tokens(23, spec.vocab, 11);
    // blocks of 8: the 20-token prompt takes three submissions, the last one short
    let mut model = load(&ctx, &bytes, 8);
    model.set_attention_capture(true).unwrap();
    let (n_layer, n_head) = (model.config.n_layer, model.config.n_head);

    let prefill = forward(&mut model, &sequence[..20], Output::Argmax);
    let mut decoded = Vec::new();
    for &id in &sequence[20..] {
        decoded.push(forward(&mut model, &[id], Output::Argmax).attention);
    }

    assert_eq!(prefill.attention.len(), n_layer * n_head * 20);
    assert_rows_sum_to_one("prefill", &prefill.attention, 20);
    let expected = reference_weights(&bytes, &sequence[..20]);
    assert_close(
        "prefill weights",
        &prefill.attention,
        &expected,
        WEIGHT_ATOL,
        WEIGHT_RTOL,
    );
    for (i, got) in decoded.iter().enumerate() {
        let context = 21 + i;
        assert_eq!(got.len(), n_layer * n_head * context);
        assert_rows_sum_to_one(&format!("decode at {context}"), got, context);
        let expected = reference_weights(&bytes, &sequence[..context]);
        let what = format!("decode weights at {context}");
        assert_close(&what, got, &expected, WEIGHT_ATOL, WEIGHT_RTOL);
    }
}

/// Off (never asked for, or turned off again) costs nothing; on costs one
/// dispatch per layer and the weights' bytes, in the same submission, and
/// changes no logit.
#[test]
fn capture_off_records_nothing_more_and_capture_on_adds_a_dispatch_per_layer() {
    let ctx = gpu();
    let spec = SyntheticSpec::tiny(9, 3, WeightFormat::Q4_1);
    let bytes = spec.to_gguf();
    let prompt = tokens(12, spec.vocab, 12);
    let mut plain = load(&ctx, &bytes, 64);
    let mut toggled = load(&ctx, &bytes, 64);
    let (n_layer, n_head) = (plain.config.n_layer as u64, plain.config.n_head as u64);

    let plain_prefill = forward(&mut plain, &prompt, Output::LastLogits);
    let plain_stats = plain.last_step();
    let plain_decode = forward(&mut plain, &[7], Output::LastLogits);
    let plain_decode_stats = plain.last_step();

    toggled.set_attention_capture(true).unwrap();
    let on = forward(&mut toggled, &prompt, Output::LastLogits);
    let on_stats = toggled.last_step();
    toggled.set_attention_capture(false).unwrap();
    let off = forward(&mut toggled, &[7], Output::LastLogits);
    let off_stats = toggled.last_step();

    assert!(plain_prefill.attention.is_empty() && off.attention.is_empty());
    assert_eq!(off_stats, plain_decode_stats);
    assert_eq!(on_stats.dispatches, plain_stats.dispatches + n_layer);
    assert_eq!(on_stats.submissions, plain_stats.submissions);
    let weight_bytes = n_layer * n_head * prompt.len() as u64 * 4;
    assert_eq!(
        on_stats.readback_bytes,
        plain_stats.readback_bytes + weight_bytes
    );
    assert_eq!(on.logits, plain_prefill.logits);
    assert_eq!(off.logits, plain_decode.logits);
    assert!(!toggled.attention_capture());
}

#[test]
fn capture_refuses_heads_and_contexts_its_kernel_cannot_hold() {
    let ctx = gpu();
    let mut wide = SyntheticSpec::tiny(2, 1, WeightFormat::Q8_0);
    wide.n_embd = 1024; // heads of 512 elements
    let mut wide_model = load(&ctx, &wide.to_gguf(), 64);

    let refused = wide_model.set_attention_capture(true);

    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("512 elements"), "{message}");
    assert!(!wide_model.attention_capture());

    // 6 layers of 8 heads over 128 positions: 24 KiB of weights, over a 20 KiB
    // binding limit that the KV cache (16 KiB a layer) still fits
    let small = gpu_with(ContextOptions {
        max_binding_bytes: Some(20 * 1024),
    });
    let mut deep = SyntheticSpec::tiny(8, 1, WeightFormat::Q8_0);
    deep.n_layer = 6;
    let mut deep_model = load(&small, &deep.to_gguf(), 16);

    let refused = deep_model.set_attention_capture(true);

    assert!(
        matches!(&refused, Err(ForwardError::Capture(m)) if m.contains("binding limit")),
        "{refused:?}"
    );
}
