//! The GPU memory a model will need, computed from its GGUF header alone, so
//! that a browser can refuse a model before downloading its weights.

use super::weights::{find, matrices};
use super::{ModelConfig, ModelError};
use crate::gguf::GgufFile;
use crate::gpu::kernels::{DecodeAttention, X_UNIFORM_BYTES};
use crate::gpu::matrix::check_columns;
use crate::quant::WeightFormat;

/// Bytes of GPU memory by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Matrices in their stored formats, f32 norms and Q/K/V biases.
    pub weights: u64,
    /// K and V of every layer at the full context, f32.
    pub kv_cache: u64,
    /// Activations of one block of tokens, logits, the RoPE table.
    pub scratch: u64,
    /// The largest single binding: a matrix row, a layer's cache, or a scratch buffer.
    pub largest_binding: u64,
}

impl MemoryPlan {
    /// The plan for `cfg` (its `max_seq`) with prompt blocks of `block` tokens.
    pub fn new(cfg: &ModelConfig, file: &GgufFile, block: usize) -> Result<Self, ModelError> {
        // Saturating: a header's numbers and a caller's context may be absurd, and a saturated
        // figure still fails `check`, with the numbers.
        let f32_bytes =
            |counts: &[usize]| counts.iter().fold(4u64, |n, &c| n.saturating_mul(c as u64));
        let n_norms = (2 * cfg.n_layer as u64).saturating_add(1);
        let mut weights = f32_bytes(&[cfg.n_embd]).saturating_mul(n_norms);
        if cfg.qkv_bias {
            let per_layer = f32_bytes(&[cfg.q_dim() + 2 * cfg.kv_dim()]);
            weights = weights.saturating_add(per_layer.saturating_mul(cfg.n_layer as u64));
        }
        let mut largest_binding = 0u64;
        for (name, rows, cols) in matrices(cfg, file) {
            let info = find(file, &name, &[cols, rows])?;
            let format = WeightFormat::from_ggml(info.ggml_type).ok_or(ModelError::TensorType {
                name: name.clone(),
                ggml_type: info.ggml_type.name(),
            })?;
            check_columns(&name, format, cols)?;
            weights = weights.saturating_add(4 * format.gpu_words(rows, cols).0 as u64);
            largest_binding = largest_binding.max(4 * format.gpu_words(1, cols).0 as u64);
        }
        let layer_cache = f32_bytes(&[cfg.kv_dim(), cfg.max_seq]);
        // (width, least bytes): what a product reads as x is also bound as a
        // uniform window, and the queries as decode attention's (src/forward.rs)
        let x_floor = X_UNIFORM_BYTES;
        let q_floor = DecodeAttention::Q_BINDING_BYTES;
        // x, xn, q, attention output, gate (k and v go straight to the cache)
        let widths = [
            (cfg.n_embd, x_floor),
            (cfg.n_embd, x_floor),
            (cfg.q_dim(), q_floor),
            (cfg.q_dim(), x_floor),
            (cfg.n_ff, x_floor),
        ];
        let activations = widths.iter().fold(0u64, |n, &(w, floor)| {
            n.saturating_add(f32_bytes(&[block, w]).max(floor))
        });
        let logits = f32_bytes(&[block, cfg.vocab]);
        let rope = f32_bytes(&[cfg.max_seq, cfg.head_dim]);
        // the logits also have a staging copy for reading back
        let scratch = activations
            .saturating_add(logits.saturating_mul(2))
            .saturating_add(rope);
        largest_binding = largest_binding.max(layer_cache).max(logits).max(rope);
        Ok(Self {
            weights,
            kv_cache: layer_cache.saturating_mul(2 * cfg.n_layer as u64),
            scratch,
            largest_binding,
        })
    }

    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv_cache)
            .saturating_add(self.scratch)
    }

    /// Checks the plan against an adapter's limit on one binding.
    pub fn check(&self, max_binding_bytes: u64) -> Result<(), ModelError> {
        if self.largest_binding > max_binding_bytes {
            return Err(ModelError::TooLargeForAdapter {
                needed: self.largest_binding,
                limit: max_binding_bytes,
            });
        }
        Ok(())
    }
}
