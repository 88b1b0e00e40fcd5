//! Models of a billion parameters, planned from their GGUF headers alone as the browser
//! does before it downloads anything: the memory plan and the splitting of matrices across
//! a 128 MiB binding limit (lavapipe's) on headers of the real shapes of Llama-3.2-1B and
//! TinyLlama-1.1B, against figures computed here another way. One test then makes the
//! weights of TinyLlama-1.1B and runs them on the GPU, split across bindings.

mod common;

use gqa_webgpu::gguf::{GgufError, GgufFile};
use gqa_webgpu::gpu::matrix::GpuMatrix;
use gqa_webgpu::model::{weights, MemoryPlan, ModelConfig, ModelError};
use gqa_webgpu::quant::WeightFormat;
use gqa_webgpu::reference::CpuModel;
use gqa_webgpu::synthetic::{Family, SyntheticSpec};
use gqa_webgpu::{ContextOptions, LoadOptions, Model, Output};

/// lavapipe's `max_storage_buffer_binding_size`.
const LIMIT: u64 = 128 << 20;

fn llama_3_2_1b(format: WeightFormat) -> (SyntheticSpec, Family) {
    let spec = SyntheticSpec {
        n_layer: 16,
        n_embd: 2048,
        n_head: 32,
        n_kv_head: 8,
        n_ff: 8192,
        vocab: 128_256,
        context: 131_072,
        rope_base: 500_000.0,
        format,
        embd_format: format,
        tied: true,
        tokenizer: false,
        seed: 1,
    };
    let family = Family {
        rope_freqs: vec![1.0; 32],
        ..Family::llama(&spec)
    };
    (spec, family)
}

fn tinyllama_1_1b(format: WeightFormat, embd_format: WeightFormat) -> (SyntheticSpec, Family) {
    let spec = SyntheticSpec {
        n_layer: 22,
        n_embd: 2048,
        n_head: 32,
        n_kv_head: 4,
        n_ff: 5632,
        vocab: 32_000,
        context: 2048,
        rope_base: 10_000.0,
        format,
        embd_format,
        tied: false,
        tokenizer: false,
        seed: 1,
    };
    let family = Family::llama(&spec);
    (spec, family)
}

/// The header as a browser has it: its bytes, and the length of the file they start.
fn header(model: &(SyntheticSpec, Family)) -> GgufFile {
    let (bytes, file_len) = model.0.header_as(&model.1).unwrap();
    // the prefix cut short asks for more, as inspect_header relays to the page
    let short = GgufFile::parse(&bytes[..bytes.len() / 2], file_len);
    assert!(
        matches!(short, Err(GgufError::Truncated { .. })),
        "{short:?}"
    );
    GgufFile::parse(&bytes, file_len).unwrap()
}

/// Bytes of GGUF data per row of a matrix: whole 32-element blocks of its format.
fn row_bytes(format: WeightFormat, cols: usize) -> u64 {
    (cols / 32 * format.block_bytes()) as u64
}

/// The plan checked against figures computed from the shapes: the GPU holds the file's
/// own bytes for every tensor but `rope_freqs` (read on the CPU into the RoPE table), the
/// cache `2 * n_layer * max_seq * kv_dim` f32, the scratch the activations of a block of
/// 64 tokens, its logits twice (one staging copy) and the RoPE table.
fn check_plan(file: &GgufFile, cfg: &ModelConfig) -> MemoryPlan {
    let block = LoadOptions::default().block;
    let plan = MemoryPlan::new(cfg, file, block).unwrap();

    let stored: u64 = file
        .tensors
        .iter()
        .filter(|t| t.name != "rope_freqs.weight")
        .map(|t| t.n_bytes)
        .sum();
    assert_eq!(plan.weights, stored);
    let (e, q, kv, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
    assert_eq!(
        plan.kv_cache,
        (2 * cfg.n_layer * cfg.max_seq * kv * 4) as u64
    );
    // x, xn; q, attention; gate (the up product writes over it)
    let activations = block * 4 * (2 * e + 2 * q + ff);
    let logits = block * cfg.vocab * 4;
    let rope = cfg.max_seq * cfg.head_dim * 4;
    assert_eq!(plan.scratch, (activations + 2 * logits + rope) as u64);
    plan
}

/// How many bindings each matrix of the model takes at `limit`: its rows over the rows
/// that fit one binding (computed from GGUF's row bytes), by name.
fn chunk_counts(file: &GgufFile, cfg: &ModelConfig, limit: u64) -> Vec<(String, usize)> {
    weights::matrices(cfg, file)
        .into_iter()
        .map(|(name, rows, cols)| {
            let format = WeightFormat::from_ggml(file.tensor(&name).unwrap().ggml_type).unwrap();
            let per_chunk = GpuMatrix::rows_per_chunk(&name, format, cols, limit, false).unwrap();
            // whole rows, in fours: the rows an invocation of the products serves
            let fit = limit / row_bytes(format, cols);
            assert_eq!(per_chunk as u64, fit - fit % 4, "{name}");
            (name, rows.div_ceil(per_chunk))
        })
        .collect()
}

fn chunks_of(counts: &[(String, usize)], name: &str) -> usize {
    counts.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn llama_3_2_1b_plan_and_splitting_from_its_header() {
    let file = header(&llama_3_2_1b(WeightFormat::Q8_0));
    let cfg = ModelConfig::from_gguf(&file, None).unwrap();
    // 1.236 billion parameters in the matrices (embeddings tied)
    let params: usize = weights::matrices(&cfg, &file)
        .iter()
        .map(|(_, rows, cols)| rows * cols)
        .sum();
    assert_eq!(params, 1_235_746_816);
    assert_eq!((cfg.max_seq, cfg.head_dim, cfg.kv_dim()), (4096, 64, 512));

    let plan = check_plan(&file, &cfg);

    // worked out by hand: Q8_0 is 34 bytes per 32 weights, plus 33 norms of 2048 f32
    assert_eq!(plan.weights, 1_235_746_816 / 32 * 34 + 33 * 2048 * 4);
    assert_eq!(plan.weights, 1_313_251_328);
    assert_eq!(plan.kv_cache, 256 << 20);
    assert_eq!(plan.scratch, 70_909_952);
    // the largest binding is a block of logits: 64 x 128256 f32
    assert_eq!(plan.largest_binding, 64 * 128_256 * 4);
    assert!(plan.check(LIMIT).is_ok());

    // token_embd: 128256 rows of 2176 bytes, 61680 to a binding: 3 bindings; every other
    // matrix fits one (ffn_gate: 8192 x 2176 = 17 MiB)
    let counts = chunk_counts(&file, &cfg, LIMIT);
    assert_eq!(chunks_of(&counts, "token_embd.weight"), 3);
    assert!(counts.iter().skip(1).all(|(_, n)| *n == 1), "{counts:?}");
    assert_eq!(counts.len(), 1 + 16 * 7);
}

#[test]
fn llama_3_2_1b_in_f16_splits_its_embeddings_in_four() {
    let file = header(&llama_3_2_1b(WeightFormat::F16));
    let cfg = ModelConfig::from_gguf(&file, None).unwrap();

    let plan = check_plan(&file, &cfg);

    assert_eq!(plan.weights, 1_235_746_816 * 2 + 33 * 2048 * 4);
    // 128256 rows of 4096 bytes, 32768 to a binding
    let counts = chunk_counts(&file, &cfg, LIMIT);
    assert_eq!(chunks_of(&counts, "token_embd.weight"), 4);
    assert!(counts.iter().skip(1).all(|(_, n)| *n == 1), "{counts:?}");
}

#[test]
fn llama_3_2_1b_at_its_full_context_is_refused_before_download() {
    let file = header(&llama_3_2_1b(WeightFormat::Q8_0));
    let cfg = ModelConfig::from_gguf(&file, Some(131_072)).unwrap();

    let plan = check_plan(&file, &cfg);

    // one layer's K cache: 131072 positions x 512 f32 = 256 MiB, over 128 MiB
    assert_eq!(plan.largest_binding, 256 << 20);
    assert_eq!(plan.kv_cache, 8 << 30);
    let refused = plan.check(LIMIT);
    assert!(
        matches!(refused, Err(ModelError::TooLargeForAdapter { needed, limit })
            if needed == 256 << 20 && limit == LIMIT),
        "{refused:?}"
    );
}

#[test]
fn tinyllama_1_1b_plan_and_splitting_from_its_header() {
    let file = header(&tinyllama_1_1b(WeightFormat::Q4_0, WeightFormat::Q8_0));
    let cfg = ModelConfig::from_gguf(&file, None).unwrap();
    // 1.100 billion parameters, with its own output matrix
    let params: usize = weights::matrices(&cfg, &file)
        .iter()
        .map(|(_, rows, cols)| rows * cols)
        .sum();
    assert_eq!(params, 1_099_956_224);
    // the trained context, 2048, is under the default cap
    assert_eq!(
        (cfg.max_seq, cfg.kv_dim(), cfg.group_size()),
        (2048, 256, 8)
    );

    let plan = check_plan(&file, &cfg);

    // two 32000 x 2048 Q8_0 tables, 22 layers of Q4_0 (18 bytes per 32), 45 norms
    let tables = 2 * 32_000 * 2048 / 32 * 34;
    let layers = (1_099_956_224 - 2 * 32_000 * 2048) / 32 * 18;
    assert_eq!(plan.weights, (tables + layers + 45 * 2048 * 4) as u64);
    assert_eq!(plan.weights, 684_630_016);
    assert_eq!(plan.kv_cache, 2 * 22 * 2048 * 256 * 4);
    assert_eq!(plan.scratch, 20_447_232);
    assert_eq!(plan.largest_binding, 64 * 32_000 * 4);
    assert!(plan.check(LIMIT).is_ok());
    // 32000 rows of 2176 bytes fit one binding
    let counts = chunk_counts(&file, &cfg, LIMIT);
    assert!(counts.iter().all(|(_, n)| *n == 1), "{counts:?}");
}

#[test]
fn tinyllama_1_1b_with_f32_tables_splits_each_in_two() {
    let file = header(&tinyllama_1_1b(WeightFormat::Q4_0, WeightFormat::F32));
    let cfg = ModelConfig::from_gguf(&file, None).unwrap();

    let plan = check_plan(&file, &cfg);

    assert_eq!(plan.weights, 1_069_654_016);
    // 32000 rows of 8192 bytes, 16384 to a binding
    let counts = chunk_counts(&file, &cfg, LIMIT);
    assert_eq!(chunks_of(&counts, "token_embd.weight"), 2);
    assert_eq!(chunks_of(&counts, "output.weight"), 2);
    let layer_chunks = counts.iter().filter(|(n, _)| n.starts_with("blk."));
    assert!(layer_chunks.clone().all(|(_, n)| *n == 1));
    assert_eq!(layer_chunks.count(), 22 * 7);
}

/// TinyLlama-1.1B's real shapes with random weights (Q4_0 layers, F32 tables so that
/// both tables split in two at 128 MiB), loaded onto the GPU as the plan says and run
/// on tokens from both halves of the split tables against the CPU reference.
#[test]
fn tinyllama_1_1b_weights_run_on_the_gpu_split_as_planned() {
    let (spec, family) = tinyllama_1_1b(WeightFormat::Q4_0, WeightFormat::F32);
    let bytes = spec.to_gguf_as(&family);
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    let max_seq = 16;
    let cfg = ModelConfig::from_gguf(&file, Some(max_seq)).unwrap();
    let plan = check_plan(&file, &cfg);
    assert_eq!(
        chunks_of(&chunk_counts(&file, &cfg, LIMIT), "token_embd.weight"),
        2
    );

    let ctx = common::gpu_with(ContextOptions {
        max_binding_bytes: Some(LIMIT),
    });
    let options = LoadOptions {
        max_seq: Some(max_seq),
        ..LoadOptions::default()
    };
    let mut model = Model::load(&ctx, &file, &bytes, &options).unwrap();
    assert_eq!(model.gpu_bytes(), (plan.weights, plan.kv_cache));
    let in_use = ctx.memory_in_use().bytes;
    assert!(
        in_use >= plan.total() && in_use <= plan.total() + (1 << 20),
        "{in_use} bytes in use, {} planned",
        plan.total()
    );

    // rows 16384 and up of each table live in its second binding
    let tokens = [5, 16_383, 16_384, 31_999];
    let gpu = pollster::block_on(model.forward(&tokens, Output::AllLogits))
        .unwrap()
        .logits;
    let cpu = CpuModel::from_gguf(&file, &bytes, Some(max_seq))
        .unwrap()
        .forward(&tokens);
    // 22 layers of f32 against f64: errors relative to the logits' spread
    let spread = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
    common::assert_close("TinyLlama-1.1B logits", &gpu, &cpu, 2e-4 * spread, 1e-3);
}
