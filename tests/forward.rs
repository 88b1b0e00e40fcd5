//! The whole forward pass on small random GQA models, written as GGUF files by
//! the tests, against the CPU reference at every position.

mod common;

use common::{assert_close, gpu, gpu_with};
use gqa_webgpu::gguf::GgufFile;
use gqa_webgpu::gpu::{ContextOptions, GpuContext};
use gqa_webgpu::model::MemoryPlan;
use gqa_webgpu::quant::WeightFormat;
use gqa_webgpu::reference::CpuModel;
use gqa_webgpu::synthetic::{Rng, SyntheticSpec};
use gqa_webgpu::{ForwardError, LoadOptions, Model, Output};

/// Logits after two layers of f32 arithmetic against the f64 reference.
const LOGIT_ATOL: f32 = 2e-4;
const LOGIT_RTOL: f32 = 1e-4;
/// The same model run two ways on the same GPU (different kernels and orders).
const SAME_GPU_ATOL: f32 = 1e-4;

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

fn reference(bytes: &[u8]) -> CpuModel {
    let file = GgufFile::parse(bytes, bytes.len() as u64).unwrap();
    CpuModel::from_gguf(&file, bytes, Some(128)).unwrap()
}

fn all_logits(model: &mut Model, tokens: &[u32]) -> Vec<f32> {
    pollster::block_on(model.forward(tokens, Output::AllLogits))
        .unwrap()
        .logits
}

/// Prefill in blocks of 16 (so a 40-token prompt takes three submissions)
/// against the reference, for every position. Returns the model and its file.
fn check_model(ctx: &GpuContext, spec: &SyntheticSpec, what: &str) -> (Model, Vec<u8>) {
    let bytes = spec.to_gguf();
    let prompt = tokens(40, spec.vocab, spec.seed);
    let mut model = load(ctx, &bytes, 16);

    let got = all_logits(&mut model, &prompt);

    let expected = reference(&bytes).forward(&prompt);
    assert_close(what, &got, &expected, LOGIT_ATOL, LOGIT_RTOL);
    assert_eq!(model.len(), prompt.len());
    (model, bytes)
}

#[test]
fn forward_matches_reference_for_mha_gqa_and_mqa() {
    let ctx = gpu();
    for (n_head, n_kv_head) in [(4, 4), (8, 2), (8, 1), (9, 3)] {
        let spec = SyntheticSpec::tiny(n_head, n_kv_head, WeightFormat::Q4_1);
        check_model(&ctx, &spec, &format!("forward {n_head}/{n_kv_head} heads"));
    }
}

#[test]
fn forward_matches_reference_for_every_weight_format() {
    let ctx = gpu();
    for format in WeightFormat::ALL {
        let mut spec = SyntheticSpec::tiny(8, 2, format);
        spec.embd_format = format;
        spec.tied = format != WeightFormat::Q4_0; // one untied output matrix
        if format.is_k_quant() {
            // ffn_down's rows are n_ff long: whole superblocks
            spec.n_ff = 256;
        }
        if format == WeightFormat::Q4K {
            // as in llama.cpp's Q4_K_M files: Q6_K embeddings and output
            (spec.embd_format, spec.tied) = (WeightFormat::Q6K, false);
        }

        let (model, bytes) = check_model(&ctx, &spec, &format!("forward, {format:?} weights"));

        // the header alone sizes the weights to the byte
        let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
        let plan = MemoryPlan::new(&model.config, &file, 16).unwrap();
        assert_eq!(
            plan.weights,
            model.gpu_bytes().0,
            "{format:?}: planned weight bytes"
        );
    }
}

#[test]
fn forward_matches_reference_with_matrices_split_across_bindings() {
    // 48 KiB: token_embd (49 KB of Q8_0) and attn_q / attn_output (52 KB of Q4_1)
    // each take two bindings; the KV cache of a layer (48 KiB) just fits.
    let ctx = gpu_with(ContextOptions {
        max_binding_bytes: Some(48 * 1024),
    });
    let spec = SyntheticSpec::tiny(9, 3, WeightFormat::Q4_1);
    check_model(&ctx, &spec, "forward, split matrices");
}

#[test]
fn decode_after_prefill_equals_prefill_of_the_whole_sequence() {
    let ctx = gpu();
    let spec = SyntheticSpec::tiny(9, 3, WeightFormat::Q4_1);
    let bytes = spec.to_gguf();
    let sequence = tokens(24, spec.vocab, 3);
    let vocab = spec.vocab;
    let whole = all_logits(&mut load(&ctx, &bytes, 64), &sequence);

    // prefill 10 tokens, then decode one token at a time
    let mut model = load(&ctx, &bytes, 64);
    let mut stepwise = all_logits(&mut model, &sequence[..10]);
    for &token in &sequence[10..] {
        let step = pollster::block_on(model.forward(&[token], Output::LastLogits)).unwrap();
        stepwise.extend(step.logits);
    }

    assert_close("decode vs prefill", &stepwise, &whole, SAME_GPU_ATOL, 0.0);
    assert_eq!(stepwise.len(), sequence.len() * vocab);
}

#[test]
fn greedy_argmax_equals_argmax_of_the_logits() {
    let ctx = gpu();
    let spec = SyntheticSpec::tiny(8, 2, WeightFormat::Q8_0);
    let bytes = spec.to_gguf();
    let prompt = tokens(12, spec.vocab, 4);
    let mut model = load(&ctx, &bytes, 64);
    let mut by_logits = load(&ctx, &bytes, 64);

    let mut next = pollster::block_on(model.forward(&prompt, Output::Argmax))
        .unwrap()
        .token;
    let logits = pollster::block_on(by_logits.forward(&prompt, Output::LastLogits))
        .unwrap()
        .logits;
    for _ in 0..5 {
        let expected = gqa_webgpu::reference::argmax(&logits) as u32;
        assert_eq!(next, Some(expected));
        next = pollster::block_on(model.forward(&[expected], Output::Argmax))
            .unwrap()
            .token;
        let logits_now = pollster::block_on(by_logits.forward(&[expected], Output::LastLogits));
        let logits_now = logits_now.unwrap().logits;
        assert_eq!(
            next,
            Some(gqa_webgpu::reference::argmax(&logits_now) as u32)
        );
    }
}

#[test]
fn truncating_the_cache_and_running_again_reproduces_the_logits() {
    let ctx = gpu();
    let spec = SyntheticSpec::tiny(8, 1, WeightFormat::Q4_1);
    let bytes = spec.to_gguf();
    let first = tokens(20, spec.vocab, 5);
    let detour = tokens(7, spec.vocab, 6);
    let mut model = load(&ctx, &bytes, 64);
    let before = all_logits(&mut model, &first);

    // a new turn that diverges at position 12, then a retry of the original
    model.truncate(12);
    all_logits(&mut model, &detour);
    assert_eq!(model.len(), 19);
    model.truncate(12);
    let again = all_logits(&mut model, &first[12..]);

    let vocab = spec.vocab;
    assert_close("after truncate", &again, &before[12 * vocab..], 0.0, 0.0);
    model.clear();
    assert_eq!(model.len(), 0);
    assert_close(
        "after clear",
        &all_logits(&mut model, &first),
        &before,
        0.0,
        0.0,
    );
}

#[test]
fn the_context_limit_and_bad_ids_are_refused() {
    let ctx = gpu();
    let spec = SyntheticSpec::tiny(4, 2, WeightFormat::Q8_0);
    let bytes = spec.to_gguf();
    let mut model = load(&ctx, &bytes, 64);

    let too_long = tokens(129, spec.vocab, 7);
    let full = pollster::block_on(model.forward(&too_long, Output::Argmax));
    assert!(
        matches!(full, Err(ForwardError::ContextFull { capacity: 128, .. })),
        "{full:?}"
    );
    let bad = pollster::block_on(model.forward(&[spec.vocab as u32], Output::Argmax));
    assert!(
        matches!(bad, Err(ForwardError::TokenOutOfRange { .. })),
        "{bad:?}"
    );
    let empty = pollster::block_on(model.forward(&[], Output::Argmax));
    assert!(matches!(empty, Err(ForwardError::NoTokens)), "{empty:?}");
    assert_eq!(model.len(), 0, "refused calls leave the cache as it was");

    let fits = tokens(128, spec.vocab, 8);
    assert!(pollster::block_on(model.forward(&fits, Output::Argmax)).is_ok());
    let over = pollster::block_on(model.forward(&[1], Output::Argmax));
    assert!(
        matches!(over, Err(ForwardError::ContextFull { len: 128, .. })),
        "{over:?}"
    );
}

/// One submission per block of tokens, a fixed number of dispatches per layer,
/// and a greedy decode step reads back only the chosen id.
#[test]
fn step_stats_count_dispatches_submissions_and_readback() {
    let ctx = gpu();
    let spec = SyntheticSpec::tiny(8, 2, WeightFormat::Q4_1);
    let bytes = spec.to_gguf();
    let mut model = load(&ctx, &bytes, 16);
    let layers = model.config.n_layer as u64;

    pollster::block_on(model.forward(&tokens(40, spec.vocab, 1), Output::Argmax)).unwrap();
    let prefill = model.last_step();
    assert_eq!(
        (prefill.tokens, prefill.submissions, prefill.readback_bytes),
        (40, 3, 4)
    );

    pollster::block_on(model.forward(&[3], Output::Argmax)).unwrap();
    let decode = model.last_step();
    assert_eq!(
        (decode.tokens, decode.submissions, decode.readback_bytes),
        (1, 1, 4)
    );
    // per layer: 5 products (QKV, gate and up take their norm; QKV rotates q and
    // k and appends k and v to the cache, up applies SwiGLU, the output and down
    // products add to x) and attention; then embed, the logits (with the final
    // norm), argmax
    assert_eq!(decode.dispatches, 6 * layers + 3);

    pollster::block_on(model.forward(&[5], Output::TopK(10))).unwrap();
    assert_eq!(model.last_step().readback_bytes, 10 * 8);
}

/// A lost device (as a driver reset leaves it) fails the next step with an error
/// that says so, never with a token, and a load on the same device is refused.
#[test]
fn a_lost_device_fails_the_next_step_and_the_next_load_clearly() {
    let ctx = gpu();
    let spec = SyntheticSpec::tiny(9, 3, WeightFormat::Q4_1);
    let bytes = spec.to_gguf();
    let mut model = load(&ctx, &bytes, 16);
    pollster::block_on(model.forward(&[1, 2, 3], Output::Argmax)).unwrap();

    ctx.lose_device("a test");

    let step = pollster::block_on(model.forward(&[4], Output::Argmax));
    match step {
        Err(ForwardError::Gpu(e)) => assert!(e.to_string().contains("lost: a test"), "{e}"),
        Err(e) => panic!("another error: {e}"),
        Ok(out) => panic!("a lost device gave a token: {:?}", out.token),
    }
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    let again = Model::load(&ctx, &file, &bytes, &LoadOptions::default());
    let error = again
        .err()
        .expect("a load on a lost device succeeded")
        .to_string();
    assert!(error.contains("the GPU device was lost: a test"), "{error}");
}

/// An uncaptured GPU error (here a write past a buffer's end, as a bug elsewhere
/// in the same page could make) fails the next step with that error's text,
/// never with a token.
#[test]
fn an_uncaptured_gpu_error_fails_the_next_step_with_its_text() {
    let ctx = gpu();
    let spec = SyntheticSpec::tiny(9, 3, WeightFormat::Q4_1);
    let bytes = spec.to_gguf();
    let mut model = load(&ctx, &bytes, 16);
    pollster::block_on(model.forward(&[1, 2, 3], Output::Argmax)).unwrap();

    let small = ctx.storage("four bytes", 4);
    ctx.queue.write_buffer(&small, 0, &[0u8; 64]);

    let step = pollster::block_on(model.forward(&[4], Output::Argmax));
    match step {
        Err(ForwardError::Gpu(e)) => assert!(e.to_string().contains("overrun"), "{e}"),
        Err(e) => panic!("another error: {e}"),
        Ok(out) => panic!("a failed device gave a token: {:?}", out.token),
    }
}
