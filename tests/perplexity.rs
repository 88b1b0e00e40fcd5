//! Perplexity as llama.cpp measures it, on a tiny model with a byte-level
//! tokenizer: the GPU run against a plain CPU computation, and the chunking.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::gpu;
use gqa_webgpu::gguf::GgufFile;
use gqa_webgpu::perplexity::{
    chunk_count, chunk_nll, perplexity, scored_per_chunk, Perplexity, PerplexityError,
    PerplexityOptions,
};
use gqa_webgpu::reference::CpuModel;
use gqa_webgpu::synthetic::SyntheticSpec;
use gqa_webgpu::tokenizer::Tokenizer;
use gqa_webgpu::{LoadOptions, Model};
use serde_json::Value;

/// Mean negative log-likelihoods (nats), GPU against CPU. The GPU's logits are
/// within about 2e-4 of the reference, and a log-probability moves at most
/// twice as much as the logits do; the mean of many moves less.
const MEAN_NLL_ATOL: f64 = 1e-4;

const CONTEXT: usize = 16;

const TEXT: &str = "In the beginning God created the heaven and the earth. And the earth \
    was without form, and void; and darkness was upon the face of the deep.";

struct Tiny {
    bytes: Vec<u8>,
    tokens: Vec<u32>,
}

fn tiny() -> Tiny {
    let bytes = SyntheticSpec::tiny_with_tokenizer().to_gguf();
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    let tokens = Tokenizer::from_gguf(&file).unwrap().encode(TEXT, false);
    Tiny { bytes, tokens }
}

fn gpu_perplexity(
    tiny: &Tiny,
    tokens: &[u32],
    options: &PerplexityOptions,
    kv_heads: Option<usize>,
) -> Result<Perplexity, PerplexityError> {
    let file = GgufFile::parse(&tiny.bytes, tiny.bytes.len() as u64).unwrap();
    let load = LoadOptions {
        max_seq: Some(CONTEXT),
        kv_heads,
        ..LoadOptions::default()
    };
    let mut model = Model::load(&gpu(), &file, &tiny.bytes, &load).unwrap();
    let mut chunks_seen = Vec::new();
    let result = pollster::block_on(perplexity(&mut model, tokens, options, &mut |c| {
        chunks_seen.push(c.done)
    }));
    if let Ok(r) = &result {
        assert_eq!(chunks_seen, (1..=r.chunks).collect::<Vec<_>>());
    }
    result
}

/// The same measure written out plainly: CPU logits of each whole chunk, a
/// log-softmax in f64, the second half of each chunk scored.
fn cpu_perplexity(tiny: &Tiny, bos: Option<u32>, kv_heads: Option<usize>) -> (f64, usize) {
    let file = GgufFile::parse(&tiny.bytes, tiny.bytes.len() as u64).unwrap();
    let model = CpuModel::from_gguf_with_kv_heads(&file, &tiny.bytes, None, kv_heads).unwrap();
    let vocab = model.config.vocab;
    let (mut nll, mut count) = (0.0f64, 0);
    for chunk in tiny.tokens.chunks_exact(CONTEXT) {
        let mut chunk = chunk.to_vec();
        if let Some(bos) = bos {
            chunk[0] = bos;
        }
        let logits = model.forward(&chunk);
        for pos in CONTEXT / 2..CONTEXT - 1 {
            let row: Vec<f64> = logits[pos * vocab..(pos + 1) * vocab]
                .iter()
                .map(|&l| f64::from(l))
                .collect();
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = row.iter().map(|l| (l - max).exp()).sum::<f64>().ln() + max;
            nll += log_sum - row[chunk[pos + 1] as usize];
            count += 1;
        }
    }
    ((nll / count as f64).exp(), count)
}

fn options(bos: Option<u32>) -> PerplexityOptions {
    PerplexityOptions {
        context: CONTEXT,
        max_chunks: None,
        bos,
    }
}

/// Compares perplexities by their logs, the mean NLL: the random tiny model is
/// confidently wrong, so its perplexity is huge.
fn assert_ppl_close(what: &str, got: f64, expected: f64) {
    let diff = (got.ln() - expected.ln()).abs();
    assert!(
        diff <= MEAN_NLL_ATOL,
        "{what}: GPU {got:e} vs CPU {expected:e}, mean NLL |diff| {diff:e} > {MEAN_NLL_ATOL:e}"
    );
    eprintln!("{what}: GPU {got:e} vs CPU {expected:e}, mean NLL |diff| {diff:e}");
}

#[test]
fn perplexity_matches_a_plain_cpu_computation() {
    let tiny = tiny();
    assert!(
        tiny.tokens.len() >= 3 * CONTEXT,
        "{} tokens",
        tiny.tokens.len()
    );

    for (bos, kv_heads) in [(None, None), (Some(1), None), (None, Some(1))] {
        let got = gpu_perplexity(&tiny, &tiny.tokens, &options(bos), kv_heads).unwrap();

        let (expected, count) = cpu_perplexity(&tiny, bos, kv_heads);
        let what = format!("perplexity, BOS {bos:?}, {kv_heads:?} KV heads");
        assert_eq!(got.tokens_scored, count, "{what}");
        assert_ppl_close(&what, got.perplexity, expected);
    }
}

#[test]
fn chunks_are_whole_and_scored_on_their_second_half() {
    let tiny = tiny();
    let three_and_a_half = &tiny.tokens[..3 * CONTEXT + CONTEXT / 2];
    let three = &tiny.tokens[..3 * CONTEXT];

    let got = gpu_perplexity(&tiny, three_and_a_half, &options(None), None).unwrap();
    let whole = gpu_perplexity(&tiny, three, &options(None), None).unwrap();

    assert_eq!(got.chunks, 3);
    assert_eq!(got.context, CONTEXT);
    // positions 8..15 of each chunk predict tokens 9..16: 7 a chunk
    assert_eq!(scored_per_chunk(CONTEXT), 7);
    assert_eq!(got.tokens_scored, 3 * 7);
    assert_eq!(
        got.perplexity, whole.perplexity,
        "the partial chunk was scored"
    );
}

#[test]
fn chunk_count_follows_llama_cpp() {
    let with_max = |max_chunks| PerplexityOptions {
        max_chunks,
        ..options(None)
    };

    assert_eq!(chunk_count(56, &with_max(None)).unwrap(), 3);
    assert_eq!(chunk_count(56, &with_max(Some(2))).unwrap(), 2);
    assert_eq!(chunk_count(56, &with_max(Some(9))).unwrap(), 3);
    assert_eq!(chunk_count(16, &with_max(None)).unwrap(), 1);
    assert_eq!(scored_per_chunk(512), 255);
    assert_eq!(scored_per_chunk(3), 1);
}

#[test]
fn only_the_second_half_of_a_chunk_is_read() {
    // 6 tokens over a vocabulary of 2: rows 3 and 4 predict tokens 4 and 5;
    // rows 0..3 and row 5 are NaN, so reading any of them would show
    let chunk = [0, 0, 0, 0, 1, 0];
    let nan = [f32::NAN; 2];
    let logits: Vec<f32> = [nan, nan, nan, [0.0, 0.0], [0.0, 2.0_f32.ln()], nan].concat();

    let nll = chunk_nll(0, &chunk, &logits, 2).unwrap();

    // -ln(1/2) - ln(1/3): token 1 at row 3, token 0 at row 4
    let expected = 2.0_f64.ln() + 3.0_f64.ln();
    assert!((nll - expected).abs() < 1e-6, "{nll} vs {expected}");
}

#[test]
fn short_texts_and_contexts_are_refused_clearly() {
    let tiny = tiny();

    let short = chunk_count(15, &options(None)).unwrap_err();
    let tiny_context = PerplexityOptions {
        context: 2,
        ..options(None)
    };
    let no_room = chunk_count(100, &tiny_context).unwrap_err();
    let zero = PerplexityOptions {
        max_chunks: Some(0),
        ..options(None)
    };
    let none = chunk_count(100, &zero).unwrap_err();
    let long = PerplexityOptions {
        context: 2 * CONTEXT,
        ..options(None)
    };
    let over_cache = gpu_perplexity(&tiny, &tiny.tokens, &long, None).unwrap_err();

    let message = short.to_string();
    assert!(
        message.contains("15 tokens, fewer than one chunk of 16"),
        "{message}"
    );
    let message = no_room.to_string();
    assert!(message.contains("context of 2 tokens"), "{message}");
    assert!(matches!(none, PerplexityError::NoChunks), "{none}");
    let message = over_cache.to_string();
    assert!(message.contains("32 tokens does not fit"), "{message}");
    assert!(message.contains("KV cache of 16"), "{message}");
}

/// The tiny model and TEXT as files, for the command line.
fn files(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("gqa-perplexity-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (model, text) = (dir.join("tiny.gguf"), dir.join("text.txt"));
    std::fs::write(&model, tiny().bytes).unwrap();
    std::fs::write(&text, TEXT).unwrap();
    (model, text)
}

fn remove_files(model: &Path) {
    if let Some(dir) = model.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gqa-webgpu"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap()
}

#[test]
fn the_command_line_reports_perplexity_as_text_and_json() {
    let (model_path, text_path) = files("cli");
    let (model, text) = (model_path.to_str().unwrap(), text_path.to_str().unwrap());
    let common = ["--model", model, "--text", text, "--context", "16"];

    let as_text = run(&[&["perplexity"], &common[..]].concat());
    let as_json = run(&[&["perplexity", "--format", "json"], &common[..]].concat());
    let refused = run(&[&["perplexity", "--kv-heads", "2"], &common[..]].concat());
    remove_files(&model_path);

    let stdout = String::from_utf8_lossy(&as_text.stdout);
    let stderr = String::from_utf8_lossy(&as_text.stderr);
    assert!(as_text.status.success(), "{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("perplexity: "), "{stdout}");
    assert!(
        stderr.contains("chunk 1/"),
        "no progress on stderr: {stderr}"
    );
    let json: Value = serde_json::from_slice(&as_json.stdout).unwrap();
    let (expected, count) = cpu_perplexity(&tiny(), None, None);
    assert_ppl_close(
        "command line",
        json["perplexity"].as_f64().unwrap(),
        expected,
    );
    assert_eq!(json["tokens_scored"], count);
    assert_eq!(json["context"], 16);
    assert_eq!(json["kv_heads"], 3);
    assert_eq!(json["chunks"], tiny().tokens.len() / CONTEXT);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(message.contains("2 KV heads asked for"), "{message}");
}

#[test]
fn the_variants_table_has_a_row_per_allowed_kv_head_count() {
    let (model_path, text_path) = files("variants");
    let (model, text) = (model_path.to_str().unwrap(), text_path.to_str().unwrap());
    let args = [
        "variants",
        "--model",
        model,
        "--text",
        text,
        "--context",
        "16",
        "--chunks",
        "2",
        "--decode-context",
        "20",
        "--decode-steps",
        "2",
    ];

    let table = run(&args);
    let json = run(&[&args[..], &["--format", "json"]].concat());
    remove_files(&model_path);

    let stdout = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    for name in ["MHA", "GQA (trained)", "MQA"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "no {name} row:\n{stdout}"
        );
    }
    let rows: Value = serde_json::from_slice(&json.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let heads: Vec<u64> = rows
        .iter()
        .map(|r| r["kv_heads"].as_u64().unwrap())
        .collect();
    assert_eq!(heads, [9, 3, 1]);
    for r in rows {
        let n = r["kv_heads"].as_u64().unwrap();
        // 2 layers, K and V, head_dim 32, f32
        assert_eq!(r["kv_bytes_per_token"], 2 * 2 * n * 32 * 4);
        assert_eq!(r["chunks"], 2);
        assert!(r["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        rows[0]["perplexity"], rows[1]["perplexity"],
        "MHA is the model itself"
    );
}
