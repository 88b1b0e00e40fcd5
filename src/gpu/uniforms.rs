//! Rust twins of the kernels' uniform structs, field for field, padded to the
//! 16-byte multiples WebGPU wants for uniform buffers.

use bytemuck::{Pod, Zeroable};

/// `Step` in every kernel: where the tokens of this submission sit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Step {
    pub pos0: u32,     // position of the step's first token
    pub n_tokens: u32, // tokens in this step
    pub _pad: [u32; 2],
}

/// `WeightChunk` in shaders/quant.wgsl: one binding's rows of a matrix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct WeightChunk {
    pub rows: u32,         // rows in this chunk
    pub cols: u32,         // elements per row, a multiple of 32 (of 256 for k-quants)
    pub row0: u32,         // the chunk's first row within the whole tensor
    pub scale_offset: u32, // in words: where the scales start
    pub bias_offset: u32,  // in words: where the rows' f32 biases start, or NO_BIAS
    pub _pad: [u32; 3],
}

/// `WeightChunk::bias_offset` of a chunk without biases: its quants start there.
pub const NO_BIAS: u32 = 0;

/// `Params` of matvec.wgsl and matmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Product {
    pub y_stride: u32, // elements between token rows of y: the tensor's rows
    pub eps: f32,      // RMSNorm's epsilon, for the normed matvec
    // the stacked Q, K and V projections' shape (Epilogue::Qkv)
    pub head_dim: u32,
    pub q_rows: u32,
    pub kv_rows: u32,
    pub max_seq: u32,
    pub _pad: [u32; 2],
}

/// `Params` of rmsnorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Norm {
    pub n: u32,         // elements per row
    pub eps: f32,       // added to the mean square
    pub last_only: u32, // 1: only the step's last token, written to row 0
    pub _pad: u32,
}

/// `Params` of attention.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Attention {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    pub max_seq: u32,             // positions the cache holds
    pub heads_per_workgroup: u32, // query heads each workgroup serves
    pub splits: u32,              // workgroups per KV head
    pub scale: f32,               // 1 / sqrt(head_dim)
    pub _pad: u32,
}

/// `Params` of attention_decode.wgsl and attention_combine.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DecodeAttention {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub max_seq: u32,    // positions the cache holds
    pub max_splits: u32, // splits the partial buffer has room for, per query head
    pub scale: f32,      // 1 / sqrt(head_dim)
    pub _pad: [u32; 3],
}

/// `Params` of attention_weights.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AttentionWeights {
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    pub max_seq: u32, // positions the cache holds
    pub layer: u32,   // the layer whose rows of the capture buffer are written
    pub scale: f32,   // 1 / sqrt(head_dim)
    pub _pad: [u32; 2],
}

/// `Params` of the element-wise kernels (swiglu, add) and argmax.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Count {
    pub n: u32, // elements per token row (argmax: logits)
    pub _pad: [u32; 3],
}

/// `Params` of topk.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct TopK {
    pub n: u32, // logits
    pub k: u32, // candidates wanted, at most n
    pub _pad: [u32; 2],
}
