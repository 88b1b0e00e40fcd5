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
    /// Positions are multiplied by this before RoPE: `1 / rope.scaling.factor` (linear
    /// scaling), 1 for none.
    pub rope_scale: f32,
    /// Whether the file holds `rope_freqs.weight` (Llama 3's per-pair frequency
    /// divisors, read at load by [`super::weights::rope_factors`]).
    pub rope_factors: bool,
    /// Whether the Q, K and V products add `blk.N.attn_{q,k,v}.bias` (qwen2).
    pub qkv_bias: bool,
    pub rms_eps: f32,
    /// The context the model was trained for (`*.context_length`).
    pub train_ctx: usize,
    /// Positions the KV cache holds: the longest context this engine will run.
    pub max_seq: usize,
}

/// The architectures this engine runs, all the `llama` graph: RMSNorm, GQA with RoPE,
/// SwiGLU. `mistral` differs from `llama` in its key prefix only (llama.cpp's converter
/// writes Mistral-7B as `llama`; the alias is for files that name it). `qwen2` adds
/// biases to the Q, K and V products and rotates the halves of a head (NEOX).
pub const ARCHITECTURES: [&str; 3] = ["llama", "mistral", "qwen2"];

/// The tensor llama.cpp reads Llama 3's RoPE frequency factors from.
pub const ROPE_FREQS: &str = "rope_freqs.weight";

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
    /// Reads the description of a model of one of the [`ARCHITECTURES`]. `max_seq` caps
    /// the KV cache (default: the trained context, at most [`DEFAULT_MAX_SEQ`]).
    pub fn from_gguf(file: &GgufFile, max_seq: Option<usize>) -> Result<Self, ModelError> {
        let arch = file.get_str("general.architecture")?.to_string();
        if !ARCHITECTURES.contains(&arch.as_str()) {
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

        let rope_scale = rope_scale(file, &arch)?;
        let rope_factors = file.tensor(ROPE_FREQS).is_some();
        // llama.cpp's qwen2 graph takes no frequency factors, and refuses a file with
        // tensors it does not load
        if rope_factors && arch == "qwen2" {
            return Err(ModelError::UnexpectedTensor {
                name: ROPE_FREQS.into(),
                arch,
            });
        }
        // llama files may carry the biases too (llama.cpp loads them when present)
        let qkv_bias = arch == "qwen2" || file.tensor("blk.0.attn_q.bias").is_some();
        check_tensor_names(file, &arch, n_layer, qkv_bias)?;

        let embd = file
            .tensor("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        let vocab = match embd.dims.as_slice() {
            // token ids are u32, and a wider count would not survive `as usize` on wasm32
            [cols, rows] if *cols == n_embd as u64 && u32::try_from(*rows).is_ok() => {
                *rows as usize
            }
            _ => {
                return Err(ModelError::EmbeddingShape {
                    found: embd.dims.clone(),
                    n_embd,
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

        // llama.cpp's rope type: NORM (adjacent pairs) for llama, NEOX for qwen2
        let rope_neox = arch == "qwen2";
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
            rope_neox,
            rope_scale,
            rope_factors,
            qkv_bias,
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

/// Names of a block's tensors, as `blk.N.{name}`.
const BLOCK_TENSORS: [&str; 9] = [
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
];
const BIAS_TENSORS: [&str; 3] = ["attn_q.bias", "attn_k.bias", "attn_v.bias"];

/// Refuses a tensor the graph would not read (an output bias, a block past
/// `block_count`, another architecture's tensor): ignoring it would run a different model
/// than the file holds. llama.cpp refuses such files too ("wrong number of tensors").
fn check_tensor_names(
    file: &GgufFile,
    arch: &str,
    n_layer: usize,
    qkv_bias: bool,
) -> Result<(), ModelError> {
    let known = |name: &str| -> bool {
        if let Some(rest) = name.strip_prefix("blk.") {
            let Some((layer, tensor)) = rest.split_once('.') else {
                return false;
            };
            let in_range = layer.parse::<usize>().is_ok_and(|l| l < n_layer);
            // "01" parses as 1 but is not the name llama.cpp looks up
            let canonical = layer.parse::<usize>().is_ok_and(|l| l.to_string() == layer);
            in_range
                && canonical
                && (BLOCK_TENSORS.contains(&tensor) || qkv_bias && BIAS_TENSORS.contains(&tensor))
        } else {
            matches!(
                name,
                "token_embd.weight" | "output_norm.weight" | "output.weight" | ROPE_FREQS
            )
        }
    };
    match file.tensors.iter().find(|t| !known(&t.name)) {
        Some(t) => Err(ModelError::UnexpectedTensor {
            name: t.name.clone(),
            arch: arch.into(),
        }),
        None => Ok(()),
    }
}

/// The position scale of linear RoPE scaling, from the keys llama.cpp reads:
/// `rope.scaling.type` (linear when absent), `rope.scaling.factor` or the older
/// `rope.scale_linear` (0 or absent: no scaling). YaRN and LongRoPE change more than the
/// angles and are refused.
fn rope_scale(file: &GgufFile, arch: &str) -> Result<f32, ModelError> {
    let type_key = format!("{arch}.rope.scaling.type");
    if file.get(&type_key).is_some() {
        let kind = file.get_str(&type_key)?;
        if !matches!(kind, "none" | "linear") {
            return Err(ModelError::Invalid {
                key: type_key,
                value: format!("{kind:?}"),
                why: "only linear RoPE scaling is supported (or none)".into(),
            });
        }
    }
    // ggml's rope multiplies every cos and sin by this: a rescaling this engine does not do
    let attn_key = format!("{arch}.rope.scaling.attn_factor");
    if file.get(&attn_key).is_some() {
        let attn_factor = file.get_f32(&attn_key)?;
        if attn_factor != 1.0 {
            return Err(ModelError::Invalid {
                key: attn_key,
                value: attn_factor.to_string(),
                why: "only 1 (no rescaling of the rotated values) is supported".into(),
            });
        }
    }
    let factor_keys = [
        format!("{arch}.rope.scaling.factor"),
        format!("{arch}.rope.scale_linear"),
    ];
    let Some(key) = factor_keys.into_iter().find(|k| file.get(k).is_some()) else {
        return Ok(1.0);
    };
    let factor = file.get_f32(&key)?;
    if factor == 0.0 {
        return Ok(1.0);
    }
    if !factor.is_finite() || factor < 0.0 {
        return Err(ModelError::Invalid {
            key,
            value: factor.to_string(),
            why: "the scaling factor must be finite and positive (0: none)".into(),
        });
    }
    Ok(1.0 / factor)
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
