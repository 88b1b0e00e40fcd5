//! The model's tensors on the GPU: matrices in their stored formats, norms as f32.

use super::variants::{kv_projection, reshape_bias, KvVariant};
use super::{ModelConfig, ModelError, ROPE_FREQS};
use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::gpu::kernels::Kernels;
use crate::gpu::matrix::{check_columns, GpuMatrix, MatrixPart};
use crate::gpu::{GpuBuffer, GpuContext};
use crate::quant::{dequantize, WeightFormat, BLOCK};

/// One transformer block's weights. Matrices are `[out, in]`.
pub struct LayerWeights {
    pub attn_norm: GpuBuffer, // [n_embd] f32
    /// `attn_q`, `attn_k` and `attn_v` stacked, `[q_dim + 2 kv_dim, n_embd]`, with
    /// their biases (qwen2); with NEOX RoPE, the Q and K rows of each head in
    /// [`rope_pair_order`].
    pub wqkv: GpuMatrix,
    pub wo: GpuMatrix,       // [n_embd, n_head * head_dim]
    pub ffn_norm: GpuBuffer, // [n_embd] f32
    pub w_gate: GpuMatrix,   // [n_ff, n_embd]
    pub w_up: GpuMatrix,     // [n_ff, n_embd]
    pub w_down: GpuMatrix,   // [n_embd, n_ff]
}

/// Where each row of a Q or K projection of `rows` rows goes in the stacked QKV
/// product (`physical -> logical`): NEOX RoPE rotates the pairs (i, i + head_dim
/// / 2) of a head, which this puts at rows (2i, 2i + 1) of the head so that one
/// invocation of the product holds both (shaders/product.wgsl). GGUF `llama`
/// files rotate adjacent pairs already and keep their order.
pub fn rope_pair_order(rows: usize, head_dim: usize, neox: bool) -> Vec<usize> {
    let half = head_dim / 2;
    (0..rows)
        .map(|r| {
            let (head, j) = (r / head_dim, r % head_dim);
            match neox {
                true => head * head_dim + j / 2 + (j % 2) * half,
                false => r,
            }
        })
        .collect()
}

/// `data` of rows of `row_len` items, row `i` of the result being row `order[i]`.
fn reorder_rows<T: Copy>(data: &[T], row_len: usize, order: &[usize]) -> Vec<T> {
    order
        .iter()
        .flat_map(|&r| &data[r * row_len..(r + 1) * row_len])
        .copied()
        .collect()
}

/// Every weight of the model.
pub struct Weights {
    pub token_embd: GpuMatrix, // [vocab, n_embd]
    pub layers: Vec<LayerWeights>,
    pub output_norm: GpuBuffer, // [n_embd] f32
    /// `output.weight` [vocab, n_embd]; `None` when tied to `token_embd`.
    pub output: Option<GpuMatrix>,
}

/// The GGUF name of a tensor of block `layer`.
pub fn layer_tensor(layer: usize, name: &str) -> String {
    format!("blk.{layer}.{name}.weight")
}

/// The GGUF name of a bias of block `layer` (`attn_q`, `attn_k`, `attn_v`).
pub fn layer_bias(layer: usize, name: &str) -> String {
    format!("blk.{layer}.{name}.bias")
}

/// The Q, K and V biases of block `layer` as f32 values, K and V reshaped for the KV
/// heads chosen at load like their matrices; `None` for a model without biases.
pub fn qkv_bias_values(
    cfg: &ModelConfig,
    file: &GgufFile,
    bytes: &[u8],
    layer: usize,
) -> Result<Option<[Vec<f32>; 3]>, ModelError> {
    if !cfg.qkv_bias {
        return Ok(None);
    }
    let read = |name: &str, n: usize| norm_values(file, bytes, &layer_bias(layer, name), n);
    let q = read("attn_q", cfg.q_dim())?;
    let k = reshape_bias(cfg, &read("attn_k", cfg.trained_kv_dim())?);
    let v = reshape_bias(cfg, &read("attn_v", cfg.trained_kv_dim())?);
    Ok(Some([q, k, v]))
}

/// Llama 3's RoPE frequency factors, one divisor per pair of a head; empty when the
/// file has none. Each must be a positive finite number: a zero would make every angle
/// of its pair infinite.
pub fn rope_factors(
    cfg: &ModelConfig,
    file: &GgufFile,
    bytes: &[u8],
) -> Result<Vec<f32>, ModelError> {
    if !cfg.rope_factors {
        return Ok(Vec::new());
    }
    let factors = norm_values(file, bytes, ROPE_FREQS, cfg.head_dim / 2)?;
    if let Some((i, f)) = factors
        .iter()
        .enumerate()
        .find(|(_, f)| !(f.is_finite() && **f > 0.0))
    {
        return Err(ModelError::TensorValues {
            name: ROPE_FREQS.into(),
            why: format!("factor {i} is {f}; each must be finite and positive"),
        });
    }
    Ok(factors)
}

/// Looks up a tensor and checks its GGUF dims (`[cols, rows]` for a matrix).
pub fn find<'a>(
    file: &'a GgufFile,
    name: &str,
    dims: &[usize],
) -> Result<&'a TensorInfo, ModelError> {
    let info = file
        .tensor(name)
        .ok_or_else(|| ModelError::MissingTensor(name.into()))?;
    let expected: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    if info.dims != expected {
        return Err(ModelError::Shape {
            name: name.into(),
            found: info.dims.clone(),
            expected,
        });
    }
    Ok(info)
}

pub(crate) fn format_of(info: &TensorInfo) -> Result<WeightFormat, ModelError> {
    WeightFormat::from_ggml(info.ggml_type).ok_or(ModelError::TensorType {
        name: info.name.clone(),
        ggml_type: info.ggml_type.name(),
    })
}

/// Every matrix of the model with its shape as `(name, rows, cols)`, as stored
/// in the file (`attn_k` and `attn_v` with the trained KV heads).
pub fn matrices(cfg: &ModelConfig, file: &GgufFile) -> Vec<(String, usize, usize)> {
    let mut list = vec![("token_embd.weight".to_string(), cfg.vocab, cfg.n_embd)];
    for l in 0..cfg.n_layer {
        for (name, rows, cols) in [
            ("attn_q", cfg.q_dim(), cfg.n_embd),
            ("attn_k", cfg.trained_kv_dim(), cfg.n_embd),
            ("attn_v", cfg.trained_kv_dim(), cfg.n_embd),
            ("attn_output", cfg.n_embd, cfg.q_dim()),
            ("ffn_gate", cfg.n_ff, cfg.n_embd),
            ("ffn_up", cfg.n_ff, cfg.n_embd),
            ("ffn_down", cfg.n_embd, cfg.n_ff),
        ] {
            list.push((layer_tensor(l, name), rows, cols));
        }
    }
    if file.tensor("output.weight").is_some() {
        list.push(("output.weight".to_string(), cfg.vocab, cfg.n_embd));
    }
    list
}

/// The weight formats of the model's matrices as uploaded (a KV-head variant
/// may change those of `attn_k` and `attn_v`), checking every tensor the upload
/// reads: present, of its shape, of a type a kernel reads, whole blocks per row.
/// The loader calls it before it allocates anything on the GPU.
pub fn formats(cfg: &ModelConfig, file: &GgufFile) -> Result<Vec<WeightFormat>, ModelError> {
    let mut formats = Vec::new();
    for (name, rows, cols) in matrices(cfg, file) {
        let mut format = format_of(find(file, &name, &[cols, rows])?)?;
        check_columns(&name, format, cols)?;
        if name.ends_with(".attn_k.weight") || name.ends_with(".attn_v.weight") {
            format = KvVariant::of(cfg).format(format);
        }
        if !formats.contains(&format) {
            formats.push(format);
        }
    }
    let layer_norms =
        (0..cfg.n_layer).flat_map(|l| [layer_tensor(l, "attn_norm"), layer_tensor(l, "ffn_norm")]);
    for name in layer_norms.chain(["output_norm.weight".to_string()]) {
        norm_format(find(file, &name, &[cfg.n_embd])?)?;
    }
    let biases = (0..cfg.n_layer).filter(|_| cfg.qkv_bias).flat_map(|l| {
        [
            (layer_bias(l, "attn_q"), cfg.q_dim()),
            (layer_bias(l, "attn_k"), cfg.trained_kv_dim()),
            (layer_bias(l, "attn_v"), cfg.trained_kv_dim()),
        ]
    });
    let factors = [(ROPE_FREQS.to_string(), cfg.head_dim / 2)];
    for (name, n) in biases.chain(factors.into_iter().filter(|_| cfg.rope_factors)) {
        norm_format(find(file, &name, &[n])?)?;
    }
    Ok(formats)
}

/// Norms, biases and RoPE factors are read as f32 values: stored as F32, or F16 widened
/// at upload.
fn norm_format(info: &TensorInfo) -> Result<WeightFormat, ModelError> {
    match info.ggml_type {
        GgmlType::F32 => Ok(WeightFormat::F32),
        GgmlType::F16 => Ok(WeightFormat::F16),
        other => Err(ModelError::VectorType {
            name: info.name.clone(),
            ggml_type: other.name(),
        }),
    }
}

/// A vector (a norm, a bias) as f32 values (F32 as stored; F16 widened, it is tiny).
pub fn norm_values(
    file: &GgufFile,
    bytes: &[u8],
    name: &str,
    n: usize,
) -> Result<Vec<f32>, ModelError> {
    let info = find(file, name, &[n])?;
    let data = file.tensor_data(bytes, info)?;
    let format = norm_format(info)?;
    let mut values = vec![0.0; n.next_multiple_of(BLOCK)];
    let mut padded = data.to_vec();
    padded.resize(values.len() / BLOCK * format.block_bytes(), 0);
    dequantize(format, &padded, &mut values);
    values.truncate(n);
    Ok(values)
}

impl Weights {
    /// Uploads every tensor; `bytes` is the whole GGUF file.
    pub fn upload(
        ctx: &GpuContext,
        kernels: &Kernels,
        cfg: &ModelConfig,
        file: &GgufFile,
        bytes: &[u8],
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, ModelError> {
        let total: u64 = file.tensors.iter().map(|t| t.n_bytes).sum();
        let done = std::cell::Cell::new(0u64);
        let progress = std::cell::RefCell::new(progress);
        let advance = |n_bytes: u64| {
            done.set(done.get() + n_bytes);
            if let Ok(mut report) = progress.try_borrow_mut() {
                report(done.get(), total);
            }
        };
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<GpuMatrix, ModelError> {
            let info = find(file, name, &[cols, rows])?;
            let data = file.tensor_data(bytes, info)?;
            let m = GpuMatrix::upload(ctx, kernels, name, format_of(info)?, rows, cols, data)?;
            advance(info.n_bytes);
            Ok(m)
        };
        let (e, q, ff) = (cfg.n_embd, cfg.q_dim(), cfg.n_ff);
        // attn_q, attn_k and attn_v (K and V reshaped for the KV heads chosen at
        // load) as one matrix, rows in RoPE's pair order
        let qkv = |l: usize| -> Result<GpuMatrix, ModelError> {
            let q_name = layer_tensor(l, "attn_q");
            let q_info = find(file, &q_name, &[e, q])?;
            let q_format = format_of(q_info)?;
            let k = kv_projection(cfg, file, bytes, l, "attn_k")?;
            let v = kv_projection(cfg, file, bytes, l, "attn_v")?;
            let bias = qkv_bias_values(cfg, file, bytes, l)?;
            let q_order = rope_pair_order(q, cfg.head_dim, cfg.rope_neox);
            let k_order = rope_pair_order(k.rows, cfg.head_dim, cfg.rope_neox);
            let q_bytes = file.tensor_data(bytes, q_info)?;
            let q_bytes = reorder_rows(q_bytes, q_format.row_bytes(e), &q_order);
            let k_bytes = reorder_rows(&k.bytes, k.format.row_bytes(e), &k_order);
            let bias = bias.map(|[bq, bk, bv]| {
                [
                    reorder_rows(&bq, 1, &q_order),
                    reorder_rows(&bk, 1, &k_order),
                    bv,
                ]
            });
            let names = ["attn_q", "attn_k", "attn_v"].map(|n| layer_tensor(l, n));
            let shapes = [
                (q_format, q, &q_bytes[..]),
                (k.format, k.rows, &k_bytes[..]),
                (v.format, v.rows, &v.bytes[..]),
            ];
            let parts: Vec<MatrixPart> = (0..3)
                .map(|i| MatrixPart {
                    name: &names[i],
                    format: shapes[i].0,
                    rows: shapes[i].1,
                    bytes: shapes[i].2,
                    bias: bias.as_ref().map(|b| &b[i][..]),
                })
                .collect();
            let name = layer_tensor(l, "attn_qkv");
            let m = GpuMatrix::upload_stacked(ctx, kernels, &name, e, &parts)?;
            for name in &names {
                advance(file.tensor(name).map_or(0, |info| info.n_bytes));
            }
            Ok(m)
        };
        let norm = |name: &str| -> Result<GpuBuffer, ModelError> {
            let values = norm_values(file, bytes, name, cfg.n_embd)?;
            Ok(ctx.storage_with(name, bytemuck::cast_slice(&values)))
        };

        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let t = |name: &str| layer_tensor(l, name);
            layers.push(LayerWeights {
                attn_norm: norm(&t("attn_norm"))?,
                wqkv: qkv(l)?,
                wo: matrix(&t("attn_output"), e, q)?,
                ffn_norm: norm(&t("ffn_norm"))?,
                w_gate: matrix(&t("ffn_gate"), ff, e)?,
                w_up: matrix(&t("ffn_up"), ff, e)?,
                w_down: matrix(&t("ffn_down"), e, ff)?,
            });
        }
        let output = match file.tensor("output.weight") {
            Some(_) => Some(matrix("output.weight", cfg.vocab, e)?),
            None => None,
        };
        let weights = Self {
            token_embd: matrix("token_embd.weight", cfg.vocab, e)?,
            layers,
            output_norm: norm("output_norm.weight")?,
            output,
        };
        if let Ok(mut report) = progress.try_borrow_mut() {
            report(total, total);
        }
        Ok(weights)
    }

    /// The matrix that turns the final hidden state into logits.
    pub fn output(&self) -> &GpuMatrix {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// Bytes the weights take on the GPU.
    pub fn gpu_bytes(&self, cfg: &ModelConfig) -> u64 {
        let norms = (2 * cfg.n_layer + 1) as u64 * cfg.n_embd as u64 * 4;
        let mut bytes = self.token_embd.gpu_bytes() + norms;
        bytes += self.output.as_ref().map_or(0, GpuMatrix::gpu_bytes);
        for l in &self.layers {
            for m in [&l.wqkv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                bytes += m.gpu_bytes();
            }
        }
        bytes
    }
}
