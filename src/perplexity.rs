//! Perplexity the way llama.cpp's `perplexity` tool measures it: the text's
//! tokens are cut into non-overlapping chunks of `context` tokens (a partial last
//! chunk is dropped), each chunk runs from an empty cache, and only its second
//! half is scored: the logits at positions `context / 2 .. context - 1` against
//! the token that follows each. The first half gives every scored token at least
//! half a context of history. Perplexity is `exp` of the mean negative
//! log-likelihood, with the log-softmax taken in f64.

use crate::forward::{ForwardError, Model, Output};
use crate::tokenizer::Tokenizer;

/// Tokens per chunk when the caller asks for none (llama.cpp's default).
pub const DEFAULT_CONTEXT: usize = 512;

/// How the text is cut and scored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerplexityOptions {
    /// Tokens per chunk; each chunk runs from an empty cache.
    pub context: usize,
    /// Most chunks to run (default: every whole chunk of the text).
    pub max_chunks: Option<usize>,
    /// Written over the first token of every chunk, as llama.cpp does for a
    /// tokenizer that adds BOS; `None` for one that does not (SmolLM2).
    pub bos: Option<u32>,
}

impl Default for PerplexityOptions {
    fn default() -> Self {
        Self {
            context: DEFAULT_CONTEXT,
            max_chunks: None,
            bos: None,
        }
    }
}

impl PerplexityOptions {
    /// The options for `context` with the BOS rule of `tokenizer`.
    pub fn for_tokenizer(tokenizer: &Tokenizer, context: usize) -> Self {
        Self {
            context,
            max_chunks: None,
            bos: tokenizer.bos_id().filter(|_| tokenizer.add_bos()),
        }
    }
}

/// The result of a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Perplexity {
    /// `exp(nll / tokens_scored)`.
    pub perplexity: f64,
    pub chunks: usize,
    pub tokens_scored: usize,
    /// Tokens per chunk.
    pub context: usize,
    /// Sum of the negative log-likelihoods of the scored tokens, in nats.
    pub nll: f64,
}

/// Reported after each chunk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChunkDone {
    /// Chunks done so far, from 1.
    pub done: usize,
    pub chunks: usize,
    /// The perplexity of the chunks done so far.
    pub perplexity: f64,
    /// Seconds the last chunk took.
    pub seconds: f64,
}

/// Why perplexity could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error(
        "a context of {context} tokens leaves no token to score in its second half: \
         use at least {MIN_CONTEXT}"
    )]
    ContextTooShort { context: usize },
    #[error(
        "the text has {tokens} tokens, fewer than one chunk of {context}: \
         give a longer text or a shorter context"
    )]
    TextTooShort { tokens: usize, context: usize },
    #[error("a context of {context} tokens does not fit the model's KV cache of {capacity}")]
    ContextOverCache { context: usize, capacity: usize },
    #[error("--chunks 0: at least one chunk must run")]
    NoChunks,
    #[error("chunk {chunk}: {got} logits read back, expected {expected}")]
    LogitCount {
        chunk: usize,
        got: usize,
        expected: usize,
    },
    #[error("chunk {chunk}: the log-likelihood of token {token} is not a finite number")]
    NotFinite { chunk: usize, token: u32 },
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// The shortest context with a token to score: `context - 1 - context / 2 >= 1`.
pub const MIN_CONTEXT: usize = 3;

/// The first position of a chunk whose logits are scored.
pub fn first_scored(context: usize) -> usize {
    context / 2
}

/// Tokens scored in each chunk: positions `context / 2 .. context - 1` each
/// predict the next token of the chunk.
pub fn scored_per_chunk(context: usize) -> usize {
    context.saturating_sub(1 + first_scored(context))
}

/// The chunks a run over `tokens` tokens takes: whole chunks only, at most
/// `options.max_chunks`.
pub fn chunk_count(tokens: usize, options: &PerplexityOptions) -> Result<usize, PerplexityError> {
    let context = options.context;
    if context < MIN_CONTEXT {
        return Err(PerplexityError::ContextTooShort { context });
    }
    if options.max_chunks == Some(0) {
        return Err(PerplexityError::NoChunks);
    }
    let whole = tokens / context;
    if whole == 0 {
        return Err(PerplexityError::TextTooShort { tokens, context });
    }
    Ok(options.max_chunks.map_or(whole, |max| max.min(whole)))
}

/// `log softmax(logits)[id]`, in f64.
pub fn log_softmax_at(logits: &[f32], id: usize) -> f64 {
    let max = logits
        .iter()
        .map(|&l| f64::from(l))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|&l| (f64::from(l) - max).exp()).sum();
    f64::from(logits[id]) - max - sum.ln()
}

/// The tokens of chunk `index` as the model sees them (BOS written over the
/// first when `options.bos` says so).
pub fn chunk_tokens(tokens: &[u32], index: usize, options: &PerplexityOptions) -> Vec<u32> {
    let context = options.context;
    let mut chunk = tokens[index * context..(index + 1) * context].to_vec();
    if let Some(bos) = options.bos {
        chunk[0] = bos;
    }
    chunk
}

/// The summed negative log-likelihood of a chunk's scored tokens, from the
/// logits of every position of the chunk (`[chunk.len(), vocab]`).
pub fn chunk_nll(
    index: usize,
    chunk: &[u32],
    logits: &[f32],
    vocab: usize,
) -> Result<f64, PerplexityError> {
    let expected = chunk.len() * vocab;
    if logits.len() != expected {
        return Err(PerplexityError::LogitCount {
            chunk: index,
            got: logits.len(),
            expected,
        });
    }
    let mut nll = 0.0;
    for pos in first_scored(chunk.len())..chunk.len() - 1 {
        let next = chunk[pos + 1];
        let row = &logits[pos * vocab..(pos + 1) * vocab];
        let lp = log_softmax_at(row, next as usize);
        if !lp.is_finite() {
            return Err(PerplexityError::NotFinite {
                chunk: index,
                token: next,
            });
        }
        nll -= lp;
    }
    Ok(nll)
}

/// Measures the perplexity of `model` on `tokens` (the whole text, without
/// BOS), calling `progress` after each chunk. Leaves the model's cache holding
/// the last chunk.
pub async fn perplexity(
    model: &mut Model,
    tokens: &[u32],
    options: &PerplexityOptions,
    progress: &mut dyn FnMut(ChunkDone),
) -> Result<Perplexity, PerplexityError> {
    let chunks = chunk_count(tokens.len(), options)?;
    let context = options.context;
    if context > model.capacity() {
        return Err(PerplexityError::ContextOverCache {
            context,
            capacity: model.capacity(),
        });
    }
    let vocab = model.config.vocab;

    let mut nll = 0.0;
    let mut scored = 0;
    for index in 0..chunks {
        let start = crate::clock::now();
        let chunk = chunk_tokens(tokens, index, options);

        model.clear();
        let logits = model.forward(&chunk, Output::AllLogits).await?.logits;
        nll += chunk_nll(index, &chunk, &logits, vocab)?;
        scored += scored_per_chunk(context);

        progress(ChunkDone {
            done: index + 1,
            chunks,
            perplexity: (nll / scored as f64).exp(),
            seconds: crate::clock::now() - start,
        });
    }
    Ok(Perplexity {
        perplexity: (nll / scored as f64).exp(),
        chunks,
        tokens_scored: scored,
        context,
        nll,
    })
}
