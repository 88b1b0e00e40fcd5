//! A model: its description from GGUF metadata and its weights on the GPU.

mod config;
pub mod plan;
pub mod variants;
pub mod weights;

pub use config::{ModelConfig, ARCHITECTURES, DEFAULT_MAX_SEQ, ROPE_FREQS};
pub use plan::MemoryPlan;

use crate::gguf::GgufError;
use crate::gpu::matrix::MatrixError;
use crate::gpu::GpuError;

/// Why a model cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("architecture '{0}' is not supported (supported: llama, mistral, qwen2)")]
    Architecture(String),
    #[error("metadata '{key}' = {value}: {why}")]
    Invalid {
        key: String,
        value: String,
        why: String,
    },
    #[error("tensor '{0}' is missing")]
    MissingTensor(String),
    #[error("tensor '{name}' is not part of a '{arch}' model as this engine runs it")]
    UnexpectedTensor { name: String, arch: String },
    #[error("tensor '{name}': {why}")]
    TensorValues { name: String, why: String },
    #[error("tensor '{name}' has dims {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error(
        "tensor '{name}' is {ggml_type}, which no kernel reads \
         (F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)"
    )]
    TensorType {
        name: String,
        ggml_type: &'static str,
    },
    #[error(
        "tensor '{name}' is {ggml_type}: norms, biases and RoPE factors are read as F32 \
         or F16 values"
    )]
    VectorType {
        name: String,
        ggml_type: &'static str,
    },
    #[error(
        "tensor 'token_embd.weight' has dims {found:?}: expected [{n_embd}, vocabulary \
         size], rows of the embedding length ({n_embd}) and at most 2^32 of them"
    )]
    EmbeddingShape { found: Vec<u64>, n_embd: usize },
    #[error(
        "{requested} KV heads asked for: this model has {trained} KV heads under {n_head} \
         query heads, so it can run with {} (divisors of {trained}, or multiples of it \
         that divide {n_head})",
        variants::list_counts(.allowed)
    )]
    KvHeads {
        requested: usize,
        trained: usize,
        n_head: usize,
        allowed: Vec<usize>,
    },
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error(
        "the KV cache of one layer needs {bytes} bytes for {max_seq} positions, over the \
         {limit}-byte binding limit of this GPU: ask for a shorter context"
    )]
    CacheTooLarge {
        bytes: u64,
        max_seq: usize,
        limit: u64,
    },
    #[error(
        "the model needs a {needed}-byte GPU buffer, over this adapter's {limit}-byte limit: \
         ask for a shorter context"
    )]
    TooLargeForAdapter { needed: u64, limit: u64 },
    #[error(transparent)]
    Gpu(#[from] GpuError),
}
