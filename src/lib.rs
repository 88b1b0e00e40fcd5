//! gqa-webgpu: small grouped-query-attention language models on WebGPU, in the
//! browser and natively.
//!
//! Data flows one way: file -> [`gguf`] -> [`model`] (config + weights on the
//! GPU) -> [`forward`] (kernels and the [`kv_cache`]) -> sampling -> tokenizer.

pub mod forward;
pub mod gguf;
pub mod gpu;
pub mod kv_cache;
pub mod model;
pub mod quant;
pub mod reference;
pub mod synthetic;
pub mod tokenizer;

pub use forward::{ForwardError, LoadOptions, Model, Output, StepOutput};
pub use gpu::{ContextOptions, GpuContext, GpuError};
pub use model::{ModelConfig, ModelError};
