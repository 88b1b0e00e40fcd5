//! The model families the engine runs, each as a tiny random GGUF file with that
//! family's metadata layout and head ratio (dims scaled down, ratios kept), run on the
//! GPU against the CPU reference at every position; and the refusals of what the
//! families' graphs do not cover.

mod common;

use common::{assert_close, gpu};
use gqa_webgpu::gguf::{GgufFile, Value};
use gqa_webgpu::model::{weights, ModelConfig, ModelError};
use gqa_webgpu::quant::WeightFormat;
use gqa_webgpu::reference::CpuModel;
use gqa_webgpu::synthetic::{Family, Rng, SyntheticSpec};
use gqa_webgpu::{LoadOptions, Model, Output};

/// Logits after two layers of f32 arithmetic against the f64 reference (as
/// tests/forward.rs).
const LOGIT_ATOL: f32 = 2e-4;
const LOGIT_RTOL: f32 = 1e-4;

/// A family's tiny stand-in: its shapes, and its file layout.
struct Case {
    name: &'static str,
    spec: SyntheticSpec,
    family: Family,
}

fn spec(n_head: usize, n_kv_head: usize, head_dim: usize, tied: bool) -> SyntheticSpec {
    SyntheticSpec {
        n_layer: 2,
        n_embd: n_head * head_dim,
        n_ff: 64,
        vocab: 96,
        tied,
        ..SyntheticSpec::tiny(n_head, n_kv_head, WeightFormat::Q8_0)
    }
}

fn key(name: &str, value: u32) -> (String, Value) {
    (name.into(), Value::U32(value))
}

/// Llama-3.2-1B: 32 query heads over 8 KV heads (head 64, here 8), base 500000, tied
/// embeddings, the key and value lengths written out, and `rope_freqs.weight`: the
/// divisors Llama 3's long-context RoPE applies per pair (1 for the fast pairs, 8 for
/// the slow ones, a ramp between, as the real file's 32 values run).
fn llama_3_2_1b() -> Case {
    let mut spec = spec(32, 8, 8, true);
    spec.rope_base = 500_000.0;
    Case {
        name: "Llama-3.2-1B (llama, 32/8, rope_freqs)",
        family: Family {
            arch: "llama",
            head_dim: None,
            qkv_bias: false,
            rope_freqs: vec![1.0, 1.0, 3.5, 8.0],
            rms_eps: 1e-5,
            keys: vec![
                key("attention.key_length", 8),
                key("attention.value_length", 8),
                key("rope.dimension_count", 8),
                key("vocab_size", 96),
            ],
        },
        spec,
    }
}

/// TinyLlama-1.1B: 32 over 4 KV heads, base 10000, its own output matrix.
fn tinyllama_1_1b() -> Case {
    let spec = spec(32, 4, 8, false);
    Case {
        name: "TinyLlama-1.1B (llama, 32/4)",
        family: Family {
            keys: vec![key("rope.dimension_count", 8)],
            ..Family::llama(&spec)
        },
        spec,
    }
}

/// Mistral-7B: 32 over 8 KV heads, base 1000000, its own output matrix; written with
/// the `mistral` architecture name and key prefix.
fn mistral_7b() -> Case {
    let mut spec = spec(32, 8, 8, false);
    spec.rope_base = 1_000_000.0;
    Case {
        name: "Mistral-7B (mistral, 32/8)",
        family: Family {
            arch: "mistral",
            keys: vec![key("rope.dimension_count", 8)],
            ..Family::llama(&spec)
        },
        spec,
    }
}

/// Qwen2.5-0.5B: 14 over 2 KV heads (a group of 7; head 64, here 16), base 1000000,
/// epsilon 1e-6, tied embeddings, biases on Q, K and V, and llama.cpp's NEOX rotation,
/// which the `qwen2` architecture implies (no key says it).
fn qwen2_5_0_5b() -> Case {
    let mut spec = spec(14, 2, 16, true);
    spec.rope_base = 1_000_000.0;
    Case {
        name: "Qwen2.5-0.5B (qwen2, 14/2, biases, NEOX)",
        family: Family {
            arch: "qwen2",
            head_dim: None,
            qkv_bias: true,
            rope_freqs: Vec::new(),
            rms_eps: 1e-6,
            keys: Vec::new(),
        },
        spec,
    }
}

/// SmolLM2-360M: 15 over 5 KV heads (head 64, here 32: 15 heads of 16 would make rows
/// of 240, not whole 32-element blocks), base 100000, tied embeddings.
fn smollm2_360m() -> Case {
    let mut spec = spec(15, 5, 32, true);
    spec.rope_base = 100_000.0;
    Case {
        name: "SmolLM2-360M (llama, 15/5)",
        family: Family::llama(&spec),
        spec,
    }
}

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect()
}

fn parse(bytes: &[u8]) -> GgufFile {
    GgufFile::parse(bytes, bytes.len() as u64).unwrap()
}

/// Prefill of 9 tokens in blocks of 4 (three submissions, two starting past position
/// 0), then 3 decode steps, against the reference's logits at all 12 positions.
fn check_family(case: &Case) {
    let ctx = gpu();
    let bytes = case.spec.to_gguf_as(&case.family);
    let file = parse(&bytes);
    let sequence = tokens(12, case.spec.vocab, case.spec.seed + 11);
    let options = LoadOptions {
        max_seq: Some(32),
        block: 4,
        ..Default::default()
    };
    let mut model = Model::load(&ctx, &file, &bytes, &options).unwrap();

    let prefill = pollster::block_on(model.forward(&sequence[..9], Output::AllLogits));
    let mut got = prefill.unwrap().logits;
    for &token in &sequence[9..] {
        let step = pollster::block_on(model.forward(&[token], Output::LastLogits));
        got.extend(step.unwrap().logits);
    }

    let expected = CpuModel::from_gguf(&file, &bytes, Some(32))
        .unwrap()
        .forward(&sequence);
    assert_close(case.name, &got, &expected, LOGIT_ATOL, LOGIT_RTOL);
}

#[test]
fn llama_3_2_1b_layout_with_frequency_factors_matches_reference() {
    let case = llama_3_2_1b();
    let cfg = ModelConfig::from_gguf(&parse(&case.spec.to_gguf_as(&case.family)), None).unwrap();
    assert_eq!((cfg.n_head, cfg.n_kv_head, cfg.head_dim), (32, 8, 8));
    assert!(cfg.rope_factors && !cfg.rope_neox && !cfg.qkv_bias);
    check_family(&case);
}

#[test]
fn tinyllama_layout_matches_reference() {
    check_family(&tinyllama_1_1b());
}

#[test]
fn mistral_layout_matches_reference() {
    let case = mistral_7b();
    let cfg = ModelConfig::from_gguf(&parse(&case.spec.to_gguf_as(&case.family)), None).unwrap();
    assert_eq!((cfg.arch.as_str(), cfg.rope_base), ("mistral", 1_000_000.0));
    check_family(&case);
}

#[test]
fn qwen2_layout_with_biases_and_neox_matches_reference() {
    let case = qwen2_5_0_5b();
    let cfg = ModelConfig::from_gguf(&parse(&case.spec.to_gguf_as(&case.family)), None).unwrap();
    assert_eq!((cfg.n_head, cfg.n_kv_head, cfg.group_size()), (14, 2, 7));
    assert!(cfg.qkv_bias && cfg.rope_neox && cfg.rms_eps == 1e-6);
    check_family(&case);
}

#[test]
fn smollm2_360m_layout_matches_reference() {
    check_family(&smollm2_360m());
}

/// "Any head size": heads of 16 in a residual stream of 64 with 8 query heads, so the
/// query rows (128) are twice the width (as Qwen3 and Gemma files have it).
#[test]
fn a_head_size_apart_from_width_over_heads_matches_reference() {
    let spec = SyntheticSpec {
        n_embd: 64,
        ..spec(8, 2, 16, true)
    };
    let family = Family {
        head_dim: Some(16),
        keys: vec![key("rope.dimension_count", 16)],
        ..Family::llama(&spec)
    };
    let cfg = ModelConfig::from_gguf(&parse(&spec.to_gguf_as(&family)), None).unwrap();
    assert_eq!((cfg.n_embd, cfg.q_dim(), cfg.kv_dim()), (64, 128, 32));
    check_family(&Case {
        name: "head 16 under width 64",
        spec,
        family,
    });
}

/// The reference itself depends on what is new, so a kernel that ignored it would fail:
/// the same weights without the factors, without the biases or with adjacent-pair
/// rotation give other logits.
#[test]
fn factors_biases_and_neox_each_change_the_logits() {
    let sequence = tokens(6, 96, 3);
    let logits = |spec: &SyntheticSpec, family: &Family, neox: Option<bool>| {
        let bytes = spec.to_gguf_as(family);
        let file = parse(&bytes);
        let mut model = CpuModel::from_gguf(&file, &bytes, Some(32)).unwrap();
        if let Some(neox) = neox {
            model.config.rope_neox = neox;
        }
        model.forward(&sequence)
    };
    let differ = |a: &[f32], b: &[f32]| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-3);

    let llama3 = llama_3_2_1b();
    let no_factors = Family {
        rope_freqs: Vec::new(),
        ..llama3.family.clone()
    };
    let with = logits(&llama3.spec, &llama3.family, None);
    assert!(differ(&with, &logits(&llama3.spec, &no_factors, None)));

    let qwen = qwen2_5_0_5b();
    let with = logits(&qwen.spec, &qwen.family, None);
    assert!(differ(
        &with,
        &logits(&qwen.spec, &qwen.family, Some(false))
    ));
    // the same weights and no biases: the llama layout of the same shapes
    let no_bias = Family {
        arch: "llama",
        qkv_bias: false,
        ..qwen.family.clone()
    };
    assert!(differ(&with, &logits(&qwen.spec, &no_bias, Some(true))));
}

// ---------------------------------------------------------------------------------------
// What the graphs do not cover is refused, naming the key or tensor.

/// The checks `Model::load` makes before it allocates on the GPU.
fn preflight(bytes: &[u8]) -> Result<ModelConfig, ModelError> {
    let file = parse(bytes);
    let cfg = ModelConfig::from_gguf(&file, None)?;
    weights::formats(&cfg, &file)?;
    weights::rope_factors(&cfg, &file, bytes)?;
    Ok(cfg)
}

#[test]
fn other_architectures_are_refused_by_name() {
    let spec = spec(4, 2, 8, true);
    for arch in ["gemma2", "phi3", "gpt2"] {
        let family = Family {
            arch,
            ..Family::llama(&spec)
        };
        let err = preflight(&spec.to_gguf_as(&family)).unwrap_err();
        assert!(
            matches!(&err, ModelError::Architecture(a) if a == arch),
            "{err}"
        );
        assert!(err.to_string().contains(arch), "{err}");
    }
}

#[test]
fn rope_scaling_other_than_linear_is_refused_and_linear_is_read() {
    let spec = spec(4, 2, 8, true);
    let with_keys = |keys: Vec<(String, Value)>| {
        let family = Family {
            keys,
            ..Family::llama(&spec)
        };
        preflight(&spec.to_gguf_as(&family))
    };
    let string = |s: &str| Value::String(s.into());

    let yarn = with_keys(vec![("rope.scaling.type".into(), string("yarn"))]).unwrap_err();
    assert!(
        yarn.to_string().contains("llama.rope.scaling.type"),
        "{yarn}"
    );
    let linear = with_keys(vec![
        ("rope.scaling.type".into(), string("linear")),
        ("rope.scaling.factor".into(), Value::F32(4.0)),
    ]);
    assert_eq!(linear.unwrap().rope_scale, 0.25);
    // the older key llama.cpp falls back to, and 0 meaning none
    let old = with_keys(vec![("rope.scale_linear".into(), Value::F32(2.0))]);
    assert_eq!(old.unwrap().rope_scale, 0.5);
    let none = with_keys(vec![("rope.scaling.factor".into(), Value::F32(0.0))]);
    assert_eq!(none.unwrap().rope_scale, 1.0);
    let attn = with_keys(vec![("rope.scaling.attn_factor".into(), Value::F32(1.2))]);
    assert!(attn
        .unwrap_err()
        .to_string()
        .contains("rope.scaling.attn_factor"));
    let negative = with_keys(vec![("rope.scaling.factor".into(), Value::F32(-2.0))]);
    assert!(negative
        .unwrap_err()
        .to_string()
        .contains("rope.scaling.factor"));
}

#[test]
fn bad_frequency_factors_are_refused_by_name() {
    let case = llama_3_2_1b();
    let with_factors = |factors: Vec<f32>| {
        let family = Family {
            rope_freqs: factors,
            ..case.family.clone()
        };
        preflight(&case.spec.to_gguf_as(&family))
    };

    let short = with_factors(vec![1.0; 3]).unwrap_err();
    assert!(matches!(&short, ModelError::Shape { name, .. } if name == "rope_freqs.weight"));
    let zero = with_factors(vec![1.0, 0.0, 2.0, 8.0]).unwrap_err();
    assert!(matches!(&zero, ModelError::TensorValues { .. }), "{zero}");
    assert!(zero.to_string().contains("rope_freqs.weight"), "{zero}");
    // qwen2's graph has no factors: llama.cpp refuses the tensor too
    let qwen = qwen2_5_0_5b();
    let family = Family {
        rope_freqs: vec![1.0; 8],
        ..qwen.family
    };
    let err = preflight(&qwen.spec.to_gguf_as(&family)).unwrap_err();
    assert!(matches!(err, ModelError::UnexpectedTensor { .. }), "{err}");
}

#[test]
fn qwen2_without_its_biases_and_tensors_no_graph_reads_are_refused() {
    let qwen = qwen2_5_0_5b();
    let family = Family {
        qkv_bias: false,
        ..qwen.family.clone()
    };
    let err = preflight(&qwen.spec.to_gguf_as(&family)).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor(name) if name == "blk.0.attn_q.bias"),
        "{err}"
    );

    // a llama file with an output-projection bias the graph would silently skip
    let spec = spec(4, 2, 8, true);
    let mut bytes = spec.to_gguf();
    let file = parse(&bytes);
    let mut w = gqa_webgpu::gguf::GgufWriter::new();
    for (k, v) in &file.metadata {
        w.add(k, v.clone());
    }
    for t in &file.tensors {
        w.add_tensor(
            &t.name,
            &t.dims,
            t.ggml_type,
            file.tensor_data(&bytes, t).unwrap().to_vec(),
        );
    }
    w.add_tensor(
        "blk.0.attn_output.bias",
        &[32],
        gqa_webgpu::gguf::GgmlType::F32,
        vec![0; 128],
    );
    bytes = w.to_bytes();
    let err = preflight(&bytes).unwrap_err();
    assert!(err.to_string().contains("blk.0.attn_output.bias"), "{err}");
}

/// KV-head variants reshape K and V biases with their projections: qwen2's 2 KV heads
/// mean-pooled to 1 and duplicated to 14 (MHA), against the reference reshaped alike.
#[test]
fn qwen2_biases_follow_kv_head_variants() {
    let ctx = gpu();
    let case = qwen2_5_0_5b();
    let bytes = case.spec.to_gguf_as(&case.family);
    let file = parse(&bytes);
    let sequence = tokens(5, case.spec.vocab, 21);
    for kv_heads in [1, 14] {
        let options = LoadOptions {
            max_seq: Some(32),
            kv_heads: Some(kv_heads),
            ..Default::default()
        };
        let mut model = Model::load(&ctx, &file, &bytes, &options).unwrap();

        let got = pollster::block_on(model.forward(&sequence, Output::AllLogits));

        let cpu = CpuModel::from_gguf_with_kv_heads(&file, &bytes, Some(32), Some(kv_heads));
        let expected = cpu.unwrap().forward(&sequence);
        let what = format!("qwen2 with {kv_heads} KV heads");
        assert_close(
            &what,
            &got.unwrap().logits,
            &expected,
            LOGIT_ATOL,
            LOGIT_RTOL,
        );
        if kv_heads == 14 {
            // duplicated heads, biases included, compute what the trained heads did
            let trained = CpuModel::from_gguf(&file, &bytes, Some(32)).unwrap();
            let what = "duplicated KV heads vs trained";
            assert_close(what, &expected, &trained.forward(&sequence), 1e-5, 1e-5);
        }
    }

    // pooled: each new head's bias is the mean of the trained heads it merges
    let mut cfg = ModelConfig::from_gguf(&file, None).unwrap();
    cfg.n_kv_head = 1;
    let trained: Vec<f32> = (0..32).map(|i| i as f32).collect(); // heads 0..16, 16..32
    let pooled = gqa_webgpu::model::variants::reshape_bias(&cfg, &trained);
    let means: Vec<f32> = (0..16).map(|i| i as f32 + 8.0).collect();
    assert_eq!(pooled, means);
}

/// TinyLlama's files carry a SentencePiece vocabulary: a TinyLlama-layout model with a
/// tiny one runs from text to text through the engine, BOS first, the greedy tokens those
/// of the reference, the text their pieces with `▁` as a space.
#[test]
fn tinyllama_with_a_sentencepiece_vocabulary_runs_from_text_to_text() {
    // (text, score, type): <unk>, <s>, </s>, one byte token, then pieces
    let vocab: &[(&str, f32, i32)] = &[
        ("<unk>", 0.0, 2),
        ("<s>", 0.0, 3),
        ("</s>", 0.0, 3),
        ("<0x0A>", 0.0, 6),
        ("\u{2581}", -1.0, 1),
        ("h", -2.0, 1),
        ("i", -3.0, 1),
        ("hi", -0.5, 1),
        ("\u{2581}hi", -0.1, 1),
    ];
    let spec = SyntheticSpec {
        vocab: vocab.len(),
        ..spec(32, 4, 8, false)
    };
    let model = spec.to_gguf_as(&tinyllama_1_1b().family);
    let file = parse(&model);
    let mut w = gqa_webgpu::gguf::GgufWriter::new();
    for (k, v) in &file.metadata {
        w.add(k, v.clone());
    }
    let array =
        |f: &dyn Fn(&(&str, f32, i32)) -> Value| Value::Array(vocab.iter().map(f).collect());
    w.add("tokenizer.ggml.model", Value::String("llama".into()))
        .add(
            "tokenizer.ggml.tokens",
            array(&|t| Value::String(t.0.into())),
        )
        .add("tokenizer.ggml.scores", array(&|t| Value::F32(t.1)))
        .add("tokenizer.ggml.token_type", array(&|t| Value::I32(t.2)))
        .add("tokenizer.ggml.bos_token_id", Value::U32(1))
        .add("tokenizer.ggml.eos_token_id", Value::U32(2));
    for t in &file.tensors {
        let data = file.tensor_data(&model, t).unwrap().to_vec();
        w.add_tensor(&t.name, &t.dims, t.ggml_type, data);
    }
    let bytes = w.to_bytes();
    let options = LoadOptions {
        max_seq: Some(32),
        ..Default::default()
    };
    let mut engine = gqa_webgpu::Engine::load(&gpu(), &bytes, &options).unwrap();

    // "hi hi" with the space prefix is ▁ h i ▁ h i. Only "hi" pairs are tokens at first:
    // the left one merges (equal scores, leftmost first), which makes "▁hi" (-0.1) a pair
    // that outranks the other "hi" (-0.5); then that "hi" and its "▁hi". BOS first.
    let prompt = engine.encode("hi hi", false);
    assert_eq!(prompt, vec![1, 8, 8]);
    let options = gqa_webgpu::GenerateOptions {
        max_tokens: 4,
        ignore_eos: true,
        ..Default::default()
    };
    let out = pollster::block_on(engine.generate(&prompt, &options, |_, _| true)).unwrap();

    let cpu = CpuModel::from_gguf(&parse(&bytes), &bytes, Some(32)).unwrap();
    let mut sequence = prompt.clone();
    for _ in 0..4 {
        let logits = cpu.forward(&sequence);
        let last = &logits[(sequence.len() - 1) * vocab.len()..];
        sequence.push(gqa_webgpu::reference::argmax(last) as u32);
    }
    assert_eq!(out.tokens, sequence[3..]);
    assert_eq!(out.text, engine.tokenizer().decode(&out.tokens));
    assert_eq!(engine.tokenizer().decode(&[8, 4, 5, 6]), " hi hi");
}
