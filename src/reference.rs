//! The CPU twin of every kernel and of the whole forward pass, written for
//! clarity, not speed. Tests compare the GPU against it. Sums are taken in f64,
//! so its own rounding error is far below the tolerances the tests use.

use crate::gguf::GgufFile;
use crate::gpu::matrix::check_columns;
use crate::model::variants::{kv_projection, with_kv_heads};
use crate::model::weights::{find, layer_tensor, norm_values, qkv_bias_values, rope_factors};
use crate::model::{ModelConfig, ModelError};
use crate::quant::{dequantize, WeightFormat};

/// A dequantized `[rows, cols]` matrix.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>, // [rows, cols]
}

impl Matrix {
    pub fn row(&self, r: usize) -> &[f32] {
        &self.values[r * self.cols..(r + 1) * self.cols]
    }

    /// Dequantizes GGUF bytes of `format`.
    pub fn from_gguf_bytes(format: WeightFormat, bytes: &[u8], rows: usize, cols: usize) -> Self {
        let mut values = vec![0.0; rows * cols];
        dequantize(format, bytes, &mut values);
        Self { rows, cols, values }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// Rows of the embedding table for each id: `[ids.len(), cols]`.
pub fn embed(table: &Matrix, ids: &[u32]) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| table.row(id as usize).to_vec())
        .collect()
}

/// RMSNorm of each row of `x` (rows of `weight.len()`).
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    x.chunks(weight.len())
        .flat_map(|row| {
            let mean_square = dot(row, row) / row.len() as f64;
            let scale = 1.0 / (mean_square + f64::from(eps)).sqrt();
            row.iter()
                .zip(weight)
                .map(move |(&v, &w)| (f64::from(v) * scale * f64::from(w)) as f32)
        })
        .collect()
}

/// `y[t] = W x[t]` for each row of `x`: `[tokens, w.rows]`.
pub fn matmul(w: &Matrix, x: &[f32]) -> Vec<f32> {
    x.chunks(w.cols)
        .flat_map(|xt| (0..w.rows).map(move |r| dot(w.row(r), xt) as f32))
        .collect()
}

/// The angular frequency of each pair `i` of a head, in radians per position:
/// `scale * base^(-2i / head_dim) / factors[i]`, as llama.cpp's rope computes it.
/// `scale` is linear RoPE scaling (1: none); `factors` are Llama 3's `rope_freqs`
/// divisors (empty: none).
pub fn rope_freqs(head_dim: usize, base: f32, scale: f32, factors: &[f32]) -> Vec<f64> {
    (0..head_dim / 2)
        .map(|i| {
            let factor = factors.get(i).map_or(1.0, |&f| f64::from(f));
            let theta = f64::from(base).powf(-2.0 * i as f64 / head_dim as f64);
            f64::from(scale) * theta / factor
        })
        .collect()
}

/// Rotates each head of each token row in place; token `t` is at `pos0 + t`, pair `i`
/// turns by `(pos0 + t) * freqs[i]` (see [`rope_freqs`]).
/// `neox`: pairs (i, i + head_dim/2); otherwise adjacent pairs (2i, 2i + 1).
pub fn rope(x: &mut [f32], head_dim: usize, pos0: usize, freqs: &[f64], neox: bool, heads: usize) {
    let half = head_dim / 2;
    for (t, row) in x.chunks_mut(heads * head_dim).enumerate() {
        let pos = (pos0 + t) as f64;
        for head in row.chunks_mut(head_dim) {
            for (i, freq) in freqs.iter().enumerate().take(half) {
                let angle = pos * freq;
                let (a, b) = if neox {
                    (i, i + half)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (x0, x1) = (f64::from(head[a]), f64::from(head[b]));
                head[a] = (x0 * angle.cos() - x1 * angle.sin()) as f32;
                head[b] = (x0 * angle.sin() + x1 * angle.cos()) as f32;
            }
        }
    }
}

/// The shape attention works on.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub max_seq: usize,
}

/// Causal grouped attention for the tokens of `q` (`[tokens, n_head, head_dim]`),
/// token `t` at position `pos0 + t`, over caches `[n_kv_head, max_seq, head_dim]`.
/// Query head `h` reads KV head `h / (n_head / n_kv_head)`.
pub fn attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    s: AttentionShape,
    pos0: usize,
) -> Vec<f32> {
    let hd = s.head_dim;
    let group = s.n_head / s.n_kv_head;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0.0; q.len()];
    for (t, q_row) in q.chunks(s.n_head * hd).enumerate() {
        let n_keys = pos0 + t + 1;
        for h in 0..s.n_head {
            let kv = h / group;
            let qh = &q_row[h * hd..(h + 1) * hd];
            // where key or value `j` of this head's KV head starts in a cache
            let at = |j: usize| (kv * s.max_seq + j) * hd;
            let scores: Vec<f64> = (0..n_keys)
                .map(|j| dot(qh, &k_cache[at(j)..at(j) + hd]) * scale)
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for d in 0..hd {
                let v: f64 = (0..n_keys)
                    .map(|j| weights[j] * f64::from(v_cache[at(j) + d]))
                    .sum();
                out[(t * s.n_head + h) * hd + d] = (v / total) as f32;
            }
        }
    }
    out
}

/// The softmax weights of the last token of `q` (`[tokens, n_head, head_dim]`,
/// token `t` at position `pos0 + t`) over the keys it sees: `[n_head, n_keys]`
/// with `n_keys = pos0 + tokens`. What the attention explainer shows.
pub fn attention_weights(q: &[f32], k_cache: &[f32], s: AttentionShape, pos0: usize) -> Vec<f32> {
    let hd = s.head_dim;
    let group = s.n_head / s.n_kv_head;
    let scale = 1.0 / (hd as f64).sqrt();
    let tokens = q.len() / (s.n_head * hd);
    if tokens == 0 {
        return Vec::new();
    }
    let n_keys = pos0 + tokens;
    let q_last = &q[(tokens - 1) * s.n_head * hd..];
    let mut out = Vec::with_capacity(s.n_head * n_keys);
    for h in 0..s.n_head {
        let kv = h / group;
        let qh = &q_last[h * hd..(h + 1) * hd];
        let at = |j: usize| (kv * s.max_seq + j) * hd;
        let scores: Vec<f64> = (0..n_keys)
            .map(|j| dot(qh, &k_cache[at(j)..at(j) + hd]) * scale)
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
        out.extend(scores.iter().map(|s| ((s - max).exp() / total) as f32));
    }
    out
}

/// `silu(gate) * up`, element by element.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = f64::from(g);
            (g / (1.0 + (-g).exp()) * f64::from(u)) as f32
        })
        .collect()
}

/// `x[t] + bias` for every token row of `x` (rows of `bias.len()`).
pub fn bias_add(x: &[f32], bias: &[f32]) -> Vec<f32> {
    x.chunks(bias.len())
        .flat_map(|row| row.iter().zip(bias).map(|(a, b)| a + b))
        .collect()
}

/// `x + y`, element by element.
pub fn add(x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(a, b)| a + b).collect()
}

/// The index of the largest value, the lowest among equals.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// One transformer block's weights, dequantized.
pub struct CpuLayer {
    pub attn_norm: Vec<f32>,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Matrix,
    pub w_up: Matrix,
    pub w_down: Matrix,
    /// Biases of the Q, K and V products (qwen2): `[q_dim]`, `[kv_dim]`, `[kv_dim]`.
    pub qkv_bias: Option<[Vec<f32>; 3]>,
}

/// The whole model on the CPU, for reference.
pub struct CpuModel {
    pub config: ModelConfig,
    pub token_embd: Matrix,
    pub layers: Vec<CpuLayer>,
    pub output_norm: Vec<f32>,
    pub output: Matrix,
    /// Radians per position of each pair of a head (see [`rope_freqs`]).
    pub rope_freqs: Vec<f64>,
}

impl CpuModel {
    pub fn from_gguf(
        file: &GgufFile,
        bytes: &[u8],
        max_seq: Option<usize>,
    ) -> Result<Self, ModelError> {
        Self::from_gguf_with_kv_heads(file, bytes, max_seq, None)
    }

    /// The model running with `kv_heads` KV heads (`None`: as trained), its K and
    /// V projections reshaped as on the GPU (see [`crate::model::variants`]).
    pub fn from_gguf_with_kv_heads(
        file: &GgufFile,
        bytes: &[u8],
        max_seq: Option<usize>,
        kv_heads: Option<usize>,
    ) -> Result<Self, ModelError> {
        let config = with_kv_heads(&ModelConfig::from_gguf(file, max_seq)?, kv_heads)?;
        let c = &config;
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<Matrix, ModelError> {
            let info = find(file, name, &[cols, rows])?;
            let format = WeightFormat::from_ggml(info.ggml_type).ok_or(ModelError::TensorType {
                name: name.into(),
                ggml_type: info.ggml_type.name(),
            })?;
            check_columns(name, format, cols)?;
            Ok(Matrix::from_gguf_bytes(
                format,
                file.tensor_data(bytes, info)?,
                rows,
                cols,
            ))
        };
        let kv = |l: usize, name: &str| -> Result<Matrix, ModelError> {
            let p = kv_projection(c, file, bytes, l, name)?;
            Ok(Matrix::from_gguf_bytes(
                p.format, &p.bytes, p.rows, c.n_embd,
            ))
        };
        let norm = |name: &str| norm_values(file, bytes, name, c.n_embd);
        let mut layers = Vec::new();
        for l in 0..c.n_layer {
            let t = |name: &str| layer_tensor(l, name);
            layers.push(CpuLayer {
                attn_norm: norm(&t("attn_norm"))?,
                wq: matrix(&t("attn_q"), c.q_dim(), c.n_embd)?,
                wk: kv(l, "attn_k")?,
                wv: kv(l, "attn_v")?,
                wo: matrix(&t("attn_output"), c.n_embd, c.q_dim())?,
                ffn_norm: norm(&t("ffn_norm"))?,
                w_gate: matrix(&t("ffn_gate"), c.n_ff, c.n_embd)?,
                w_up: matrix(&t("ffn_up"), c.n_ff, c.n_embd)?,
                w_down: matrix(&t("ffn_down"), c.n_embd, c.n_ff)?,
                qkv_bias: qkv_bias_values(c, file, bytes, l)?,
            });
        }
        let token_embd = matrix("token_embd.weight", c.vocab, c.n_embd)?;
        let output = match file.tensor("output.weight") {
            Some(_) => matrix("output.weight", c.vocab, c.n_embd)?,
            None => token_embd.clone(),
        };
        let factors = rope_factors(c, file, bytes)?;
        Ok(Self {
            rope_freqs: rope_freqs(c.head_dim, c.rope_base, c.rope_scale, &factors),
            output_norm: norm("output_norm.weight")?,
            config,
            token_embd,
            layers,
            output,
        })
    }

    /// The logits of every position for a sequence starting at position 0:
    /// `[tokens.len(), vocab]`.
    pub fn forward(&self, tokens: &[u32]) -> Vec<f32> {
        self.forward_with_attention(tokens).0
    }

    /// [`CpuModel::forward`], and the softmax weights of the last token in every
    /// layer: `[n_layer, n_head, tokens.len()]`.
    pub fn forward_with_attention(&self, tokens: &[u32]) -> (Vec<f32>, Vec<f32>) {
        let c = &self.config;
        let mut weights = Vec::with_capacity(c.n_layer * c.n_head * tokens.len());
        let shape = AttentionShape {
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: c.head_dim,
            max_seq: tokens.len(),
        };
        let mut x = embed(&self.token_embd, tokens);
        for layer in &self.layers {
            // attention
            let h = rmsnorm(&x, &layer.attn_norm, c.rms_eps);
            let mut q = matmul(&layer.wq, &h);
            let mut k = matmul(&layer.wk, &h);
            let mut v = matmul(&layer.wv, &h);
            if let Some([bq, bk, bv]) = &layer.qkv_bias {
                (q, k, v) = (bias_add(&q, bq), bias_add(&k, bk), bias_add(&v, bv));
            }
            let freqs = &self.rope_freqs;
            rope(&mut q, c.head_dim, 0, freqs, c.rope_neox, c.n_head);
            rope(&mut k, c.head_dim, 0, freqs, c.rope_neox, c.n_kv_head);
            let (k_cache, v_cache) = (to_cache(&k, shape), to_cache(&v, shape));
            let att = attention(&q, &k_cache, &v_cache, shape, 0);
            weights.extend(attention_weights(&q, &k_cache, shape, 0));
            x = add(&x, &matmul(&layer.wo, &att));

            // feed-forward
            let h = rmsnorm(&x, &layer.ffn_norm, c.rms_eps);
            let gate = matmul(&layer.w_gate, &h);
            let up = matmul(&layer.w_up, &h);
            x = add(&x, &matmul(&layer.w_down, &swiglu(&gate, &up)));
        }
        let logits = matmul(&self.output, &rmsnorm(&x, &self.output_norm, c.rms_eps));
        (logits, weights)
    }
}

/// Token rows `[tokens, n_kv_head, head_dim]` laid out as a cache
/// `[n_kv_head, max_seq, head_dim]` from position 0.
pub fn to_cache(rows: &[f32], s: AttentionShape) -> Vec<f32> {
    let hd = s.head_dim;
    let mut cache = vec![0.0; s.n_kv_head * s.max_seq * hd];
    for (t, row) in rows.chunks(s.n_kv_head * hd).enumerate() {
        for h in 0..s.n_kv_head {
            let to = (h * s.max_seq + t) * hd;
            cache[to..to + hd].copy_from_slice(&row[h * hd..(h + 1) * hd]);
        }
    }
    cache
}
