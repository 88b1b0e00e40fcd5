//! KV-head variants chosen at load, on tiny random models: duplicating KV heads
//! (up to MHA) keeps the model's outputs, pooling them (down to MQA) gives the
//! group means of the trained K/V projections, and the GPU runs every variant
//! as the CPU reference does.

mod common;

use std::borrow::Cow;

use common::{assert_close, gpu};
use gqa_webgpu::gguf::GgufFile;
use gqa_webgpu::gpu::GpuContext;
use gqa_webgpu::model::variants::{allowed_kv_heads, kv_projection, with_kv_heads};
use gqa_webgpu::quant::WeightFormat;
use gqa_webgpu::reference::CpuModel;
use gqa_webgpu::synthetic::{Rng, SyntheticSpec};
use gqa_webgpu::{LoadOptions, Model, ModelConfig, ModelError, Output};

/// GPU logits against the f64 CPU reference after two layers (as tests/forward.rs).
const LOGIT_ATOL: f32 = 2e-4;
const LOGIT_RTOL: f32 = 1e-4;
/// Two runs of the same arithmetic on one GPU, with different group sizes.
const SAME_GPU_ATOL: f32 = 1e-5;
/// A mean of a few f32 values, rounded once to f32.
const MEAN_RTOL: f32 = 1e-6;
const MEAN_ATOL: f32 = 1e-7;

const MAX_SEQ: usize = 64;

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect()
}

fn parse(bytes: &[u8]) -> GgufFile {
    GgufFile::parse(bytes, bytes.len() as u64).unwrap()
}

fn load(ctx: &GpuContext, bytes: &[u8], kv_heads: Option<usize>) -> Result<Model, ModelError> {
    let options = LoadOptions {
        max_seq: Some(MAX_SEQ),
        block: 16,
        kv_heads,
    };
    Model::load(ctx, &parse(bytes), bytes, &options)
}

fn cpu(bytes: &[u8], kv_heads: Option<usize>) -> Result<CpuModel, ModelError> {
    CpuModel::from_gguf_with_kv_heads(&parse(bytes), bytes, Some(MAX_SEQ), kv_heads)
}

fn all_logits(model: &mut Model, tokens: &[u32]) -> Vec<f32> {
    pollster::block_on(model.forward(tokens, Output::AllLogits))
        .unwrap()
        .logits
}

#[test]
fn allowed_counts_are_divisors_and_multiples_that_divide_the_query_heads() {
    assert_eq!(allowed_kv_heads(9, 3), [1, 3, 9]);
    assert_eq!(allowed_kv_heads(12, 4), [1, 2, 4, 12]);
    assert_eq!(allowed_kv_heads(8, 2), [1, 2, 4, 8]);
    assert_eq!(allowed_kv_heads(4, 4), [1, 2, 4]);
    assert_eq!(allowed_kv_heads(36, 6), [1, 2, 3, 6, 12, 18, 36]);
    // a header's absurd head count is answered at once: 2^0..=2^30, then 2^31
    let huge = allowed_kv_heads(1 << 31, 1 << 30);
    assert_eq!(huge.len(), 32);
    assert_eq!(huge.last(), Some(&(1 << 31)));
}

#[test]
fn mha_expansion_gives_the_models_own_logits() {
    let ctx = gpu();
    for (n_head, n_kv_head) in [(9, 3), (8, 1)] {
        let spec = SyntheticSpec::tiny(n_head, n_kv_head, WeightFormat::Q4_1);
        let bytes = spec.to_gguf();
        let prompt = tokens(40, spec.vocab, 7);
        let what = format!("{n_head}/{n_kv_head} heads expanded to {n_head}");

        let mut trained = load(&ctx, &bytes, None).unwrap();
        let mut mha = load(&ctx, &bytes, Some(n_head)).unwrap();
        let gpu_trained = all_logits(&mut trained, &prompt);
        let gpu_mha = all_logits(&mut mha, &prompt);
        let cpu_trained = cpu(&bytes, None).unwrap().forward(&prompt);
        let cpu_mha = cpu(&bytes, Some(n_head)).unwrap().forward(&prompt);

        assert_eq!(mha.config.n_kv_head, n_head);
        assert_eq!(mha.config.trained_kv_head, n_kv_head);
        let gpu_what = format!("{what}: GPU MHA vs GPU as trained");
        assert_close(&gpu_what, &gpu_mha, &gpu_trained, SAME_GPU_ATOL, 0.0);
        let ref_what = format!("{what}: GPU MHA vs CPU as trained");
        assert_close(&ref_what, &gpu_mha, &cpu_trained, LOGIT_ATOL, LOGIT_RTOL);
        // duplicated heads hold the same keys and values: the CPU's sums are the same
        assert_eq!(cpu_mha, cpu_trained, "{what}: CPU MHA vs CPU as trained");
    }
}

#[test]
fn duplication_keeps_the_stored_format_and_bytes() {
    let bytes = SyntheticSpec::tiny(9, 3, WeightFormat::Q8_0).to_gguf();
    let file = parse(&bytes);
    let trained = ModelConfig::from_gguf(&file, None).unwrap();
    let mha = with_kv_heads(&trained, Some(9)).unwrap();

    let stored = kv_projection(&trained, &file, &bytes, 1, "attn_v").unwrap();
    let expanded = kv_projection(&mha, &file, &bytes, 1, "attn_v").unwrap();

    assert!(
        matches!(stored.bytes, Cow::Borrowed(_)),
        "as trained: no copy"
    );
    assert_eq!(expanded.format, WeightFormat::Q8_0);
    assert_eq!(expanded.rows, 9 * trained.head_dim);
    // KV head j of 9 is trained head j / 3: whole heads of stored rows
    let head = stored.bytes.len() / 3;
    for j in 0..9 {
        let h = j / 3;
        assert_eq!(
            expanded.bytes[j * head..(j + 1) * head],
            stored.bytes[h * head..(h + 1) * head],
            "expanded head {j} is not trained head {h}"
        );
    }
}

#[test]
fn pooled_weights_equal_the_group_means() {
    let spec = SyntheticSpec::tiny(8, 4, WeightFormat::Q4_1);
    let bytes = spec.to_gguf();
    let trained = cpu(&bytes, None).unwrap();
    let hd = trained.config.head_dim;

    for n in [2, 1] {
        let pooled = cpu(&bytes, Some(n)).unwrap();
        let merge = 4 / n;

        for (l, (p, t)) in pooled.layers.iter().zip(&trained.layers).enumerate() {
            for (what, got, from) in [("attn_k", &p.wk, &t.wk), ("attn_v", &p.wv, &t.wv)] {
                assert_eq!(got.rows, n * hd);
                // row r of pooled head j: the mean of row r of trained heads j*merge..
                let mut expected = Vec::new();
                for j in 0..n {
                    for r in 0..hd {
                        for c in 0..got.cols {
                            let heads = j * merge..(j + 1) * merge;
                            let sum: f32 = heads.map(|h| from.row(h * hd + r)[c]).sum();
                            expected.push(sum / merge as f32);
                        }
                    }
                }
                let name = format!("layer {l} {what} pooled 4 -> {n} heads");
                assert_close(&name, &got.values, &expected, MEAN_ATOL, MEAN_RTOL);
            }
        }
    }
}

#[test]
fn pooled_projections_are_kept_unquantized() {
    let bytes = SyntheticSpec::tiny(9, 3, WeightFormat::Q4_0).to_gguf();
    let file = parse(&bytes);
    let mqa = with_kv_heads(&ModelConfig::from_gguf(&file, None).unwrap(), Some(1)).unwrap();

    let k = kv_projection(&mqa, &file, &bytes, 0, "attn_k").unwrap();

    assert_eq!(k.format, WeightFormat::F32);
    assert_eq!(k.rows, mqa.head_dim);
    assert_eq!(k.bytes.len(), k.rows * mqa.n_embd * 4);
}

#[test]
fn pooled_variants_run_on_the_gpu_as_on_the_cpu() {
    let ctx = gpu();
    for (n_head, n_kv_head, n) in [(9, 3, 1), (8, 4, 2)] {
        let spec = SyntheticSpec::tiny(n_head, n_kv_head, WeightFormat::Q4_1);
        let bytes = spec.to_gguf();
        let prompt = tokens(40, spec.vocab, 11);

        let mut model = load(&ctx, &bytes, Some(n)).unwrap();
        let got = all_logits(&mut model, &prompt);
        let expected = cpu(&bytes, Some(n)).unwrap().forward(&prompt);

        let what = format!("{n_head}/{n_kv_head} heads pooled to {n}");
        assert_close(&what, &got, &expected, LOGIT_ATOL, LOGIT_RTOL);
    }
}

#[test]
fn invalid_kv_head_counts_are_refused_with_the_allowed_values() {
    let ctx = gpu();
    let bytes = SyntheticSpec::tiny(9, 3, WeightFormat::Q4_1).to_gguf();

    for n in [0, 2, 6, 18] {
        let on_gpu = load(&ctx, &bytes, Some(n))
            .err()
            .expect("refused on the GPU");
        let on_cpu = cpu(&bytes, Some(n)).err().expect("refused on the CPU");

        for error in [on_gpu, on_cpu] {
            assert!(
                matches!(error, ModelError::KvHeads { requested, .. } if requested == n),
                "{n} KV heads: {error}"
            );
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{n} KV heads asked for")),
                "{message}"
            );
            assert!(message.contains("can run with 1, 3 or 9"), "{message}");
        }
    }
}
