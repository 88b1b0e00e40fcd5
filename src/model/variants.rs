//! KV-head variants chosen at load: the trained K and V projections reshaped so
//! that the model runs with more KV heads (each duplicated: the same outputs) or
//! fewer (neighbouring heads mean-pooled: the conversion of Ainslie et al., 2023,
//! "GQA", here without the uptraining that follows it).
//!
//! Only `attn_k` and `attn_v` change; the rest of the model does not know. The
//! GPU upload and the CPU reference both take their K and V from
//! [`kv_projection`], so the tests compare the two on the same weights.

use std::borrow::Cow;

use super::weights::{find, format_of, layer_tensor};
use super::{ModelConfig, ModelError};
use crate::gguf::GgufFile;
use crate::gpu::matrix::{check_columns, MatrixError};
use crate::quant::{dequantize, WeightFormat};

/// How `attn_k` and `attn_v` are reshaped from the trained KV heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvVariant {
    /// The projections as stored.
    AsTrained,
    /// Each trained KV head repeated `copies` times, as whole rows of stored
    /// bytes, so the format and the outputs stay the same.
    Duplicate { copies: usize },
    /// Each run of `merge` neighbouring trained KV heads replaced by their mean,
    /// computed from the dequantized weights and kept as F32.
    Pool { merge: usize },
}

impl KvVariant {
    /// The reshaping that turns `cfg.trained_kv_head` heads into `cfg.n_kv_head`.
    pub fn of(cfg: &ModelConfig) -> Self {
        let (trained, chosen) = (cfg.trained_kv_head, cfg.n_kv_head);
        if chosen > trained {
            Self::Duplicate {
                copies: chosen / trained,
            }
        } else if chosen < trained {
            Self::Pool {
                merge: trained / chosen,
            }
        } else {
            Self::AsTrained
        }
    }

    /// The format the reshaped projection is uploaded in.
    pub fn format(self, stored: WeightFormat) -> WeightFormat {
        match self {
            Self::AsTrained | Self::Duplicate { .. } => stored,
            Self::Pool { .. } => WeightFormat::F32,
        }
    }
}

/// The KV-head counts a model with `n_head` query heads over `trained` KV heads
/// can run with, ascending: the divisors of `trained` (pooling) and the multiples
/// of `trained` that divide `n_head` (duplication).
pub fn allowed_kv_heads(n_head: usize, trained: usize) -> Vec<usize> {
    if trained == 0 || n_head % trained != 0 {
        return Vec::new();
    }
    // a multiple m * trained divides n_head exactly when m divides the group size
    let duplicated = divisors(n_head / trained).into_iter().skip(1);
    let mut counts = divisors(trained);
    counts.extend(duplicated.map(|m| m * trained));
    counts
}

/// Whether `n` is one of [`allowed_kv_heads`], without listing them.
fn is_allowed(n: usize, n_head: usize, trained: usize) -> bool {
    n > 0 && (trained % n == 0 || (n % trained == 0 && n_head % n == 0))
}

/// The divisors of `n > 0`, ascending, in O(sqrt n): a header may claim
/// billions of heads.
fn divisors(n: usize) -> Vec<usize> {
    let (mut low, mut high) = (Vec::new(), Vec::new());
    let mut d = 1;
    while d <= n / d {
        if n % d == 0 {
            low.push(d);
            if d != n / d {
                high.push(n / d);
            }
        }
        d += 1;
    }
    low.extend(high.into_iter().rev());
    low
}

/// "1, 3 or 9": a list of counts for an error message.
pub fn list_counts(counts: &[usize]) -> String {
    let words: Vec<String> = counts.iter().map(usize::to_string).collect();
    match words.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// `cfg` (as read from the file) running with `kv_heads` KV heads; `None` keeps
/// the trained count. Refuses a count that neither divides the trained count
/// nor is a multiple of it dividing the query heads.
pub fn with_kv_heads(
    cfg: &ModelConfig,
    kv_heads: Option<usize>,
) -> Result<ModelConfig, ModelError> {
    let Some(n) = kv_heads else {
        return Ok(cfg.clone());
    };
    if !is_allowed(n, cfg.n_head, cfg.trained_kv_head) {
        return Err(ModelError::KvHeads {
            requested: n,
            trained: cfg.trained_kv_head,
            n_head: cfg.n_head,
            allowed: allowed_kv_heads(cfg.n_head, cfg.trained_kv_head),
        });
    }
    Ok(ModelConfig {
        n_kv_head: n,
        ..cfg.clone()
    })
}

/// A K or V projection ready to upload: `[rows, cols]` as GGUF bytes of `format`.
#[derive(Clone, Debug)]
pub struct KvProjection<'a> {
    pub format: WeightFormat,
    pub rows: usize,
    pub bytes: Cow<'a, [u8]>,
}

/// Reshapes a trained projection, GGUF bytes of `format` holding
/// `[cfg.trained_kv_head * head_dim, cols]`, into `[cfg.n_kv_head * head_dim, cols]`.
///
/// Head `h` owns rows `h * head_dim .. (h + 1) * head_dim`. Query head `q` reads
/// trained KV head `q / (n_head / trained)`; after the reshape it reads head
/// `q / (n_head / n_kv_head)`, which is a copy of trained head `q / (n_head /
/// trained)` (duplication) or the mean of the trained heads its group merged
/// (pooling). RoPE rotates every head of a position alike, so pooling the
/// weights before it equals pooling the rotated keys.
pub fn reshape<'a>(
    cfg: &ModelConfig,
    name: &str,
    format: WeightFormat,
    bytes: &'a [u8],
    cols: usize,
) -> Result<KvProjection<'a>, ModelError> {
    let hd = cfg.head_dim;
    let trained_rows = cfg.trained_kv_dim();
    let rows = cfg.kv_dim();
    check_columns(name, format, cols)?;
    let row_bytes = format.row_bytes(cols);
    if bytes.len() != trained_rows * row_bytes {
        return Err(MatrixError::Size {
            name: name.into(),
            format: format.name(),
            bytes: bytes.len(),
            expected: trained_rows * row_bytes,
        }
        .into());
    }
    let head_bytes = hd * row_bytes;

    let bytes = match KvVariant::of(cfg) {
        KvVariant::AsTrained => Cow::Borrowed(bytes),

        // new head j is trained head j / copies
        KvVariant::Duplicate { copies } => {
            let mut out = Vec::with_capacity(rows * row_bytes);
            for j in 0..cfg.n_kv_head {
                let h = j / copies;
                out.extend_from_slice(&bytes[h * head_bytes..(h + 1) * head_bytes]);
            }
            Cow::Owned(out)
        }

        // new head j is the mean of trained heads j * merge .. (j + 1) * merge
        KvVariant::Pool { merge } => {
            let mut trained = vec![0.0f32; trained_rows * cols];
            dequantize(format, bytes, &mut trained);
            let head = hd * cols;
            let mut out = Vec::with_capacity(rows * cols * 4);
            for j in 0..cfg.n_kv_head {
                for i in 0..head {
                    let sum: f64 = (j * merge..(j + 1) * merge)
                        .map(|h| f64::from(trained[h * head + i]))
                        .sum();
                    out.extend_from_slice(&((sum / merge as f64) as f32).to_le_bytes());
                }
            }
            Cow::Owned(out)
        }
    };
    Ok(KvProjection {
        format: KvVariant::of(cfg).format(format),
        rows,
        bytes,
    })
}

/// A K or V bias of `cfg.trained_kv_head` heads reshaped for `cfg.n_kv_head`, as
/// [`reshape`] does its projection's rows: pooling a product's rows and its bias alike
/// pools its outputs.
pub fn reshape_bias(cfg: &ModelConfig, trained: &[f32]) -> Vec<f32> {
    let hd = cfg.head_dim;
    let head = |h: usize| &trained[h * hd..(h + 1) * hd];
    match KvVariant::of(cfg) {
        KvVariant::AsTrained => trained.to_vec(),
        KvVariant::Duplicate { copies } => (0..cfg.n_kv_head)
            .flat_map(|j| head(j / copies).to_vec())
            .collect(),
        KvVariant::Pool { merge } => (0..cfg.n_kv_head)
            .flat_map(|j| {
                (0..hd).map(move |i| {
                    let sum: f64 = (j * merge..(j + 1) * merge)
                        .map(|h| f64::from(trained[h * hd + i]))
                        .sum();
                    (sum / merge as f64) as f32
                })
            })
            .collect(),
    }
}

/// `blk.{layer}.{name}.weight` (`attn_k` or `attn_v`) read from the file and
/// reshaped for `cfg.n_kv_head` heads.
pub fn kv_projection<'a>(
    cfg: &ModelConfig,
    file: &GgufFile,
    bytes: &'a [u8],
    layer: usize,
    name: &str,
) -> Result<KvProjection<'a>, ModelError> {
    let name = layer_tensor(layer, name);
    let info = find(file, &name, &[cfg.n_embd, cfg.trained_kv_dim()])?;
    let data = file.tensor_data(bytes, info)?;
    reshape(cfg, &name, format_of(info)?, data, cfg.n_embd)
}
