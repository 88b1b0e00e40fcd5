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
    /// Key/value heads the model runs with; `n_head` is a multiple of it.
    pub n_kv_head: usize,
    /// Key/value heads stored in the file. Differs from `n_kv_head` when a variant
    /// was chosen at load (see [`super::variants`]).
    pub trained_kv_head: usize,
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

/// Tensors of one transformer block: two norms and seven matrices.
const TENSORS_PER_BLOCK: u64 = 9;

/// The key listing the tokenizer's vocabulary, one string per token id.
const TOKENS_KEY: &str = "tokenizer.ggml.tokens";

/// Token ids the tokenizer, the chat template or generation read. llama.cpp only warns
/// about an id past the vocabulary and ignores it; here such a file is refused, since an
/// id the model cannot embed means the file does not describe the model it holds.
const SPECIAL_ID_KEYS: [&str; 13] = [
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.suffix_token_id",
    "tokenizer.ggml.middle_token_id",
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
];

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
        // Every block has its own tensors, so a count the file cannot hold is refused here,
        // before anything makes a list per block.
        if n_layer as u64 > file.tensors.len() as u64 / TENSORS_PER_BLOCK {
            let why = format!(
                "the file holds {} tensors, too few for that many blocks of {TENSORS_PER_BLOCK}",
                file.tensors.len()
            );
            return Err(invalid("block_count", n_layer, &why));
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
        // The kernels index rows with u32: the query and key widths must fit one.
        for (name, heads) in [
            ("attention.head_count", n_head),
            ("attention.head_count_kv", n_kv_head),
        ] {
            if u32::try_from(heads as u64 * head_dim as u64).is_err() {
                let why = format!("{heads} heads of {head_dim} are more rows than a u32 counts");
                return Err(invalid(name, heads, &why));
            }
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
            // token ids are u32, and a wider count would not survive `as usize` on wasm32
            [cols, rows] if *cols == n_embd as u64 && u32::try_from(*rows).is_ok() => {
                *rows as usize
            }
            _ => {
                return Err(ModelError::Shape {
                    name: embd.name.clone(),
                    found: embd.dims.clone(),
                    expected: vec![n_embd as u64, 0],
                })
            }
        };
        check_vocabulary(file, vocab as u64)?;
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
            trained_kv_head: n_kv_head,
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

    /// Rows of `attn_k` and `attn_v` in the file: `trained_kv_head * head_dim`.
    pub fn trained_kv_dim(&self) -> usize {
        self.trained_kv_head * self.head_dim
    }

    /// Bytes of K and V the cache keeps per position, all layers together (f32).
    pub fn kv_bytes_per_token(&self) -> u64 {
        (2 * 4 * self.n_layer as u64).saturating_mul(self.kv_dim() as u64)
    }
}

/// The tokenizer's vocabulary, where the file has one, and the special token ids must fit
/// the `vocab` rows of `token_embd.weight`. Ids that are not integers are left to the
/// tokenizer, which names them.
fn check_vocabulary(file: &GgufFile, vocab: u64) -> Result<(), ModelError> {
    if file.get(TOKENS_KEY).is_some() {
        let n_tokens = file.get_array(TOKENS_KEY)?.len();
        if n_tokens as u64 != vocab {
            return Err(ModelError::Invalid {
                key: TOKENS_KEY.into(),
                value: format!("{n_tokens} tokens"),
                why: format!("token_embd.weight has {vocab} rows: the vocabularies must agree"),
            });
        }
    }
    for key in SPECIAL_ID_KEYS {
        match file.get(key).and_then(|v| v.as_u64()) {
            Some(id) if id >= vocab => {
                return Err(ModelError::Invalid {
                    key: key.into(),
                    value: id.to_string(),
                    why: format!("not a token: the vocabulary has {vocab} tokens"),
                })
            }
            _ => {}
        }
    }
    Ok(())
}
