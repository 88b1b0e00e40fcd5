//! The model description, read and checked from GGUF metadata.

use super::ModelError;
use crate::gguf::GgufFile;

/// The shape of a GQA transformer, everything the kernels and the cache need.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// `general.architecture`, e.g. `llama`.
    pub arch: String,
    pub n_layer: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads; `n_head` is a multiple of it.
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// Hidden width of the feed-forward block.
    pub n_ff: usize,
    pub vocab: usize,
    pub rope_base: f32,
    /// true: RoPE rotates the two halves of a head (NEOX); false: adjacent pairs.
    pub rope_neox: bool,
    pub rms_eps: f32,
    /// The context the model was trained for (`*.context_length`).
    pub train_ctx: usize,
    /// Positions the KV cache holds: the longest context this engine will run.
    pub max_seq: usize,
}

/// The context used when a caller asks for none: enough for a chat, small
/// enough for any adapter.
pub const DEFAULT_MAX_SEQ: usize = 4096;

impl ModelConfig {
    /// Reads the description of a `llama`-architecture model. `max_seq` caps the
    /// KV cache (default: the trained context, at most [`DEFAULT_MAX_SEQ`]).
    pub fn from_gguf(file: &GgufFile, max_seq: Option<usize>) -> Result<Self, ModelError> {
        let arch = file.get_str("general.architecture")?.to_string();
        if arch != "llama" {
            return Err(ModelError::Architecture(arch));
        }
        let key = |name: &str| format!("{arch}.{name}");
        let count =
            |name: &str| -> Result<usize, ModelError> { Ok(file.get_u32(&key(name))? as usize) };

        let n_layer = count("block_count")?;
        let n_embd = count("embedding_length")?;
        let n_head = count("attention.head_count")?;
        let n_kv_head = match file.get(&key("attention.head_count_kv")) {
            Some(_) => count("attention.head_count_kv")?,
            None => n_head,
        };
        let n_ff = count("feed_forward_length")?;
        let train_ctx = count("context_length")?;
        let rope_base = match file.get(&key("rope.freq_base")) {
            Some(_) => file.get_f32(&key("rope.freq_base"))?,
            None => 10_000.0,
        };
        let rms_eps = file.get_f32(&key("attention.layer_norm_rms_epsilon"))?;

        let invalid = |name: &str, value: usize, why: &str| ModelError::Invalid {
            key: key(name),
            value: value.to_string(),
            why: why.to_string(),
        };
        for (name, value) in [
            ("block_count", n_layer),
            ("embedding_length", n_embd),
            ("attention.head_count", n_head),
            ("attention.head_count_kv", n_kv_head),
            ("feed_forward_length", n_ff),
        ] {
            if value == 0 {
                return Err(invalid(name, value, "must be positive"));
            }
        }
        if n_head % n_kv_head != 0 {
            let why = format!("the {n_head} query heads must split evenly among the KV heads");
            return Err(invalid("attention.head_count_kv", n_kv_head, &why));
        }
        if n_embd % n_head != 0 {
            let why = format!("must be a multiple of the {n_head} heads");
            return Err(invalid("embedding_length", n_embd, &why));
        }
        let head_dim = match file.get(&key("attention.key_length")) {
            Some(_) => count("attention.key_length")?,
            None => n_embd / n_head,
        };
        if head_dim % 2 != 0 || head_dim == 0 {
            return Err(invalid(
                "attention.key_length",
                head_dim,
                "must be even and positive",
            ));
        }
        if let Some(v) = file.get(&key("attention.value_length")) {
            if v.as_u64() != Some(head_dim as u64) {
                let why = format!("must equal the key length {head_dim}");
                return Err(ModelError::Invalid {
                    key: key("attention.value_length"),
                    value: format!("{v:?}"),
                    why,
                });
            }
        }
        if let Some(v) = file.get(&key("rope.dimension_count")) {
            if v.as_u64() != Some(head_dim as u64) {
                let why =
                    format!("partial rotary embeddings are not supported (head size {head_dim})");
                return Err(ModelError::Invalid {
                    key: key("rope.dimension_count"),
                    value: format!("{v:?}"),
                    why,
                });
            }
        }
        let eps_ok = rms_eps.is_finite() && rms_eps > 0.0;
        if !eps_ok || !rope_base.is_finite() || rope_base <= 1.0 {
            return Err(ModelError::Invalid {
                key: key("rope.freq_base / attention.layer_norm_rms_epsilon"),
                value: format!("{rope_base} / {rms_eps}"),
                why: "the RoPE base must be finite and above 1, epsilon positive".into(),
            });
        }

        let embd = file
            .tensor("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        let vocab = match embd.dims.as_slice() {
            [cols, rows] if *cols == n_embd as u64 => *rows as usize,
            _ => {
                return Err(ModelError::Shape {
                    name: embd.name.clone(),
                    found: embd.dims.clone(),
                    expected: vec![n_embd as u64, 0],
                })
            }
        };
        let max_seq = max_seq.unwrap_or(DEFAULT_MAX_SEQ.min(train_ctx.max(1)));
        if max_seq == 0 {
            return Err(invalid(
                "context_length",
                max_seq,
                "the context must hold a token",
            ));
        }

        Ok(Self {
            arch,
            n_layer,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            n_ff,
            vocab,
            rope_base,
            rope_neox: false,
            rms_eps,
            train_ctx,
            max_seq,
        })
    }

    /// Query heads that share one KV head.
    pub fn group_size(&self) -> usize {
        self.n_head / self.n_kv_head
    }

    /// Width of the query rows: `n_head * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of the key and value rows: `n_kv_head * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Bytes of K and V the cache keeps per position, all layers together (f32).
    pub fn kv_bytes_per_token(&self) -> u64 {
        (2 * self.n_layer * self.kv_dim() * 4) as u64
    }
}
