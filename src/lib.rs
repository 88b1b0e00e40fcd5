//! gqa-webgpu: small grouped-query-attention language models on WebGPU, in the
//! browser and natively.
//!
//! Data flows one way: file -> [`gguf`] -> [`model`] (config + weights on the
//! GPU) -> [`forward`] (kernels and the [`kv_cache`]) -> sampling -> tokenizer.

pub mod bench;
pub mod chat;
pub mod clock;
pub mod compare;
pub mod engine;
pub mod forward;
pub mod gguf;
pub mod gpu;
pub mod kv_cache;
pub mod model;
pub mod perplexity;
pub mod quant;
pub mod reference;
pub mod sampler;
pub mod synthetic;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use engine::{AttentionStep, Engine, EngineError, FinishReason, GenerateOptions, Generation};
pub use forward::{
    ForwardError, GpuTimes, GpuTiming, LoadOptions, LoadPhase, Model, Output, StepOutput,
    StepStats, MAX_CANDIDATES,
};
pub use gpu::{ContextOptions, GpuContext, GpuError};
pub use model::{ModelConfig, ModelError};
