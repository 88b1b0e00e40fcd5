//! The same model loaded as each of its KV-head variants (MHA, as trained, MQA,
//! see [`crate::model::variants`]) and measured side by side: KV-cache bytes,
//! decode speed at a long context, and perplexity on a text. The CLI's
//! `variants` command and the page's comparison panel both run this.

use serde::Serialize;

use crate::forward::{ForwardError, LoadOptions, Model, Output};
use crate::gguf::GgufFile;
use crate::gpu::GpuContext;
use crate::model::variants::allowed_kv_heads;
use crate::model::{ModelConfig, ModelError};
use crate::perplexity::{self, ChunkDone, PerplexityError, PerplexityOptions};

/// How one variant is measured.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// How the text is cut into chunks and scored.
    pub perplexity: PerplexityOptions,
    /// Positions in the cache when decode speed is measured.
    pub decode_context: usize,
    /// Decode steps timed at that context (after one untimed step).
    pub decode_steps: usize,
}

/// One row of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct VariantRow {
    /// "MHA", "GQA (trained)", "MQA", ...
    pub variant: String,
    pub kv_heads: usize,
    /// K and V of every layer, f32.
    pub kv_bytes_per_token: u64,
    /// The trained context.
    pub max_context: usize,
    pub kv_bytes_at_max_context: u64,
    /// Positions in the cache while decode speed was measured.
    pub decode_context: usize,
    pub decode_tokens_per_s: f64,
    pub perplexity: f64,
    pub chunks: usize,
    pub tokens_scored: usize,
    /// Tokens per perplexity chunk.
    pub context: usize,
}

/// Where a measurement is, for progress bars.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stage {
    /// The variant's weights are being made and uploaded.
    Load,
    /// A perplexity chunk is done.
    Chunk(ChunkDone),
    /// The cache is being filled and decode steps timed.
    Decode,
}

/// Why a variant could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("decode steps: at least one step must be timed")]
    NoDecodeSteps,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Perplexity(#[from] PerplexityError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// The KV-head counts worth comparing for `cfg`, most heads (MHA) first.
pub fn variant_counts(cfg: &ModelConfig) -> Vec<usize> {
    let mut counts = allowed_kv_heads(cfg.n_head, cfg.trained_kv_head);
    counts.reverse();
    counts
}

/// "MHA", "MQA", "GQA" or "GQA-N", with " (trained)" for the file's own count.
pub fn variant_name(cfg: &ModelConfig) -> String {
    let n = cfg.n_kv_head;
    let trained = n == cfg.trained_kv_head;
    let kind = match n {
        _ if n == cfg.n_head => "MHA".to_string(),
        1 => "MQA".to_string(),
        _ if trained => "GQA".to_string(),
        _ => format!("GQA-{n}"),
    };
    if trained {
        format!("{kind} (trained)")
    } else {
        kind
    }
}

/// The cache positions a comparison needs: a perplexity chunk, or the decode
/// fill with its untimed and timed steps.
pub fn cache_positions(options: &CompareOptions) -> usize {
    options
        .perplexity
        .context
        .max(options.decode_context + options.decode_steps + 1)
}

/// Loads `file` with `kv_heads` KV heads and measures it on `tokens` (the
/// text's ids, without BOS). The model is dropped before this returns, so
/// variants measured one after another never hold two sets of weights.
pub async fn measure_variant(
    ctx: &GpuContext,
    file: &GgufFile,
    bytes: &[u8],
    kv_heads: usize,
    tokens: &[u32],
    options: &CompareOptions,
    progress: &mut dyn FnMut(Stage),
) -> Result<VariantRow, CompareError> {
    if options.decode_steps == 0 {
        return Err(CompareError::NoDecodeSteps);
    }
    // refuse a short text or a bad context before the slow load
    perplexity::chunk_count(tokens.len(), &options.perplexity)?;
    progress(Stage::Load);
    let load = LoadOptions {
        max_seq: Some(cache_positions(options)),
        kv_heads: Some(kv_heads),
        ..LoadOptions::default()
    };
    let mut model = Model::load(ctx, file, bytes, &load)?;
    let cfg = model.config.clone();

    let ppl = perplexity::perplexity(&mut model, tokens, &options.perplexity, &mut |chunk| {
        progress(Stage::Chunk(chunk))
    })
    .await?;
    progress(Stage::Decode);
    let speed = decode_speed(
        &mut model,
        tokens,
        options.decode_context,
        options.decode_steps,
    )
    .await?;

    Ok(VariantRow {
        variant: variant_name(&cfg),
        kv_heads: cfg.n_kv_head,
        kv_bytes_per_token: cfg.kv_bytes_per_token(),
        max_context: cfg.train_ctx,
        kv_bytes_at_max_context: cfg.kv_bytes_per_token() * cfg.train_ctx as u64,
        decode_context: options.decode_context,
        decode_tokens_per_s: speed,
        perplexity: ppl.perplexity,
        chunks: ppl.chunks,
        tokens_scored: ppl.tokens_scored,
        context: ppl.context,
    })
}

/// Decode tokens/s with `fill` positions in the cache: the cache is filled (or
/// cut) to `fill` from the text, one step runs untimed (the first step after a
/// prefill pays for work a steady decode does not), then `steps` are timed.
pub async fn decode_speed(
    model: &mut Model,
    tokens: &[u32],
    fill: usize,
    steps: usize,
) -> Result<f64, ForwardError> {
    let mut text = tokens.iter().copied().cycle();
    if model.len() > fill {
        model.truncate(fill);
    } else if model.len() < fill {
        let more: Vec<u32> = text.by_ref().take(fill - model.len()).collect();
        model.forward(&more, Output::Argmax).await?;
    }
    model
        .forward(&[text.next().unwrap_or(0)], Output::Argmax)
        .await?;
    let start = crate::clock::now();
    for _ in 0..steps {
        model
            .forward(&[text.next().unwrap_or(0)], Output::Argmax)
            .await?;
    }
    Ok(steps as f64 / (crate::clock::now() - start))
}
