//! The transformer on the GPU: a block of prompt tokens (prefill) or one token
//! (decode) per submission, every buffer and bind group made at load time.

use std::collections::HashMap;

use bytemuck::bytes_of;

use crate::gguf::GgufFile;
use crate::gpu::kernels::{
    DecodeAttention, Epilogue, Grid, Kernel, Kernels, QkvCache, ATTENTION_WEIGHTS_MAX_DIM,
    X_UNIFORM_BYTES,
};
use crate::gpu::matrix::GpuMatrix;
use crate::gpu::timing::{Timestamps, MAX_TIMESTAMPS};
use crate::gpu::uniforms::{self, Step};
use crate::gpu::{GpuBuffer, GpuContext, GpuError};
use crate::kv_cache::KvCache;
use crate::model::variants;
use crate::model::weights::{self, Weights};
use crate::model::{MemoryPlan, ModelConfig, ModelError};
use crate::reference::rope_freqs;

/// Choices made when a model is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Positions the KV cache holds (default: see [`crate::model::config`]).
    pub max_seq: Option<usize>,
    /// Most prompt tokens per submission; longer prompts run in several.
    pub block: usize,
    /// KV heads to run with (default: as trained). See [`crate::model::variants`]:
    /// more than trained duplicates the K/V projections, fewer mean-pools them.
    pub kv_heads: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_seq: None,
            block: 64,
            kv_heads: None,
        }
    }
}

/// A loading phase, reported with the bytes done and the bytes in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadPhase {
    /// Compiling the kernels (counted in kernels, not bytes).
    Compile,
    /// Copying the weights to the GPU.
    Upload,
}

/// What a forward call reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The id of the largest logit of the last token: 4 bytes.
    Argmax,
    /// The logits of the last token.
    LastLogits,
    /// The logits of every token, `[n_tokens, vocab]`.
    AllLogits,
    /// The `k` largest logits of the last token with their ids (at most
    /// [`MAX_CANDIDATES`]): what sampling needs, without the whole vocabulary.
    TopK(usize),
}

/// The most candidates [`Output::TopK`] returns.
pub const MAX_CANDIDATES: usize = 1024;

/// What a forward call returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutput {
    /// With [`Output::Argmax`]: the chosen id.
    pub token: Option<u32>,
    /// With the logits outputs: `[vocab]` or `[n_tokens, vocab]`.
    pub logits: Vec<f32>,
    /// With [`Output::TopK`]: `(id, logit)`, the largest logit first (the lower
    /// id first among equal logits).
    pub candidates: Vec<(u32, f32)>,
    /// With attention capture on ([`Model::set_attention_capture`]): the softmax
    /// weights of the last token run, `[n_layer, n_head, context]` with `context`
    /// the positions it sees ([`Model::len`] after the call). Empty otherwise.
    pub attention: Vec<f32>,
}

/// What one forward call cost, counted as it was recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepStats {
    /// Tokens run.
    pub tokens: u32,
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Command buffers submitted to the queue.
    pub submissions: u32,
    /// Bytes copied back to the CPU.
    pub readback_bytes: u64,
}

/// How [`Model::forward`] times its work on the GPU. Benchmarks and profiling
/// only: ordinary generation leaves it off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GpuTiming {
    #[default]
    Off,
    /// Timestamps at the start and end of each submission's pass.
    Pass,
    /// Timestamps around every dispatch, labelled by kernel (native only:
    /// needs `TIMESTAMP_QUERY_INSIDE_PASSES`).
    Dispatch,
}

/// What the GPU's timestamps measured in the last forward call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuTimes {
    /// With [`GpuTiming::Pass`]: seconds of all passes added up. With
    /// [`GpuTiming::Dispatch`]: of all timed dispatches added up.
    pub seconds: f64,
    /// With [`GpuTiming::Dispatch`]: each dispatch's kernel label and seconds.
    pub dispatches: Vec<(String, f64)>,
    /// Dispatches left untimed because the query set was full.
    pub untimed: u64,
}

/// Why a forward call did not run.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no tokens to process")]
    NoTokens,
    #[error(
        "the context is full: {len} positions used and {new} more asked for, \
         but the cache holds {capacity}"
    )]
    ContextFull {
        len: usize,
        new: usize,
        capacity: usize,
    },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("{k} candidates asked for; between 1 and {max} can be read back")]
    Candidates { k: usize, max: usize },
    #[error("the logits are not finite numbers: the GPU produced NaN or infinity")]
    NotFinite,
    #[error("attention weights cannot be captured: {0}")]
    Capture(String),
    #[error("this adapter cannot time {0}")]
    TimingUnavailable(&'static str),
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

/// Activations of one block of tokens. Shapes are per token row.
struct Scratch {
    step: GpuBuffer,       // Step uniform
    ids: GpuBuffer,        // [block] u32
    x: GpuBuffer,          // [block, n_embd] residual stream, also bound as uniform
    xn: GpuBuffer,         // [block, n_embd] normed
    q: GpuBuffer,          // [block, n_head * head_dim] rotated, also bound as uniform
    att: GpuBuffer,        // [block, n_head * head_dim] attention output
    gate: GpuBuffer,       // [block, n_ff], then silu(gate) * up
    logits: GpuBuffer,     // [block, vocab]
    chosen: GpuBuffer,     // [1] u32
    topk: GpuBuffer,       // TopK uniform
    candidates: GpuBuffer, // [MAX_CANDIDATES] (id, logit bits)
    rope_table: GpuBuffer, // [max_seq, head_dim / 2] (cos, sin)
    // decode attention's splits: [n_head, splits, head_dim], then [n_head, splits] pairs
    partial: GpuBuffer,
    chosen_staging: GpuBuffer,
    candidates_staging: GpuBuffer,
    logits_staging: GpuBuffer,
}

/// Group-0 bind groups of every dispatch, by role. The products of a prompt
/// block read xn, which a norm pass fills; those of a decode token read the
/// residual stream x through their layer's norm (`LayerBinds`).
struct Binds {
    embed: wgpu::BindGroup,
    /// x += attention output projected
    o: wgpu::BindGroup,
    gate: wgpu::BindGroup,
    /// x += feed-forward output projected
    down: wgpu::BindGroup,
    layers: Vec<LayerBinds>,
    output_norm: wgpu::BindGroup,
    /// The final norm of the step's last token alone, into row 0 of xn.
    output_norm_last: wgpu::BindGroup,
    logits: wgpu::BindGroup,
    /// One token's logits, of x through the final norm.
    logits_normed: wgpu::BindGroup,
    argmax: wgpu::BindGroup,
    topk: wgpu::BindGroup,
    /// With decode attention: the merge of its splits (partial -> att).
    attention_combine: Option<wgpu::BindGroup>,
}

/// What attention capture adds, made on its first request and kept after.
struct Capture {
    kernel: Kernel,
    weights: GpuBuffer, // [n_layer, n_head, context] f32, context <= max_seq
    staging: GpuBuffer,
    layers: Vec<wgpu::BindGroup>,
}

struct LayerBinds {
    attn_norm: wgpu::BindGroup,
    /// The stacked Q, K and V product, which rotates q and k and appends k and
    /// v to this layer's cache: of x through the layer's norm for one token
    /// (`qkv`), of xn for a block (`qkv_block`).
    qkv: wgpu::BindGroup,
    qkv_block: wgpu::BindGroup,
    /// One token's gate and up, products of x through this layer's norm into
    /// the gate buffer: the gate stored, then SwiGLU of it and the up product.
    ffn: wgpu::BindGroup,
    attention: wgpu::BindGroup,
    /// With decode attention: its bind group for one token over this layer's cache.
    decode_attention: Option<wgpu::BindGroup>,
    ffn_norm: wgpu::BindGroup,
}

/// How attention runs for this model's head shape.
struct AttentionKernels {
    /// (heads per workgroup, workgroups per KV head) of attention.wgsl, which runs
    /// prompt blocks, and decode tokens where `decode` is None.
    split: (u32, u32),
    /// Attention for one decode token split along the keys, where the shape fits.
    decode: Option<DecodeAttention>,
}

/// A loaded model with its KV cache, ready to run.
pub struct Model {
    pub config: ModelConfig,
    ctx: GpuContext,
    kernels: Kernels,
    weights: Weights,
    cache: KvCache,
    scratch: Scratch,
    binds: Binds,
    block: usize,
    attention: AttentionKernels,
    last_step: StepStats,
    /// Made on the first [`Model::set_attention_capture`]`(true)`.
    capture: Option<Capture>,
    capture_on: bool,
    /// Benchmarks only: how forward calls are timed, and where.
    timing: Option<(GpuTiming, Timestamps)>,
    last_gpu: Option<GpuTimes>,
}

/// (cos, sin) of `pos * freqs[i]` for every position and pair `i` of a head (the
/// frequencies from [`crate::reference::rope_freqs`]: base, linear scaling and Llama 3's
/// factors), computed in f64 so the only rounding is the final one to f32.
pub fn rope_table(max_seq: usize, freqs: &[f64]) -> Vec<[f32; 2]> {
    let mut table = Vec::with_capacity(max_seq * freqs.len());
    for pos in 0..max_seq {
        for freq in freqs {
            let angle = pos as f64 * freq;
            table.push([angle.cos() as f32, angle.sin() as f32]);
        }
    }
    table
}

impl Model {
    /// Checks the model, compiles the kernels, uploads the weights and makes
    /// every buffer the forward pass needs. `bytes` is the whole GGUF file.
    pub fn load(
        ctx: &GpuContext,
        file: &GgufFile,
        bytes: &[u8],
        options: &LoadOptions,
    ) -> Result<Self, ModelError> {
        Self::load_with_progress(ctx, file, bytes, options, &mut |_, _, _| {})
    }

    /// [`Model::load`], calling `progress(phase, done, total)` as it goes.
    pub fn load_with_progress(
        ctx: &GpuContext,
        file: &GgufFile,
        bytes: &[u8],
        options: &LoadOptions,
        progress: &mut dyn FnMut(LoadPhase, u64, u64),
    ) -> Result<Self, ModelError> {
        // a lost device makes wgpu's buffer uploads panic: refuse it first
        ctx.check()?;
        let trained = ModelConfig::from_gguf(file, options.max_seq)?;
        let cfg = variants::with_kv_heads(&trained, options.kv_heads)?;
        let block = options.block.max(1);
        MemoryPlan::new(&cfg, file, block)?.check(ctx.max_binding_bytes())?;
        let formats = weights::formats(&cfg, file)?;
        let factors = weights::rope_factors(&cfg, file, bytes)?;
        let freqs = rope_freqs(cfg.head_dim, cfg.rope_base, cfg.rope_scale, &factors);
        let group = cfg.group_size() as u32;
        let split = Kernels::attention_split(group, cfg.head_dim as u32).ok_or_else(|| {
            ModelError::Invalid {
                key: format!("{}.attention.key_length", cfg.arch),
                value: cfg.head_dim.to_string(),
                why: format!(
                    "a head of more than {} elements does not fit the attention kernel",
                    crate::gpu::kernels::ATTENTION_MAX_Q
                ),
            }
        })?;
        progress(LoadPhase::Compile, 0, 1);
        let kernels = Kernels::new(ctx, &formats, cfg.rope_neox);
        let attention = AttentionKernels {
            split,
            decode: kernels.decode_attention(ctx, group, cfg.head_dim as u32, cfg.n_head as u32),
        };
        progress(LoadPhase::Compile, 1, 1);
        let weights = Weights::upload(ctx, &kernels, &cfg, file, bytes, &mut |done, total| {
            progress(LoadPhase::Upload, done, total)
        })?;
        let cache = KvCache::new(ctx, &cfg)?;
        let scratch = Scratch::new(ctx, &cfg, block, attention.decode.as_ref(), &freqs);
        let binds = Binds::new(ctx, &kernels, &cfg, &weights, &cache, &scratch, &attention);
        log::info!(
            "model: {} layers, {} heads over {} KV heads, {} MiB of weights, {} MiB of KV cache",
            cfg.n_layer,
            cfg.n_head,
            cfg.n_kv_head,
            weights.gpu_bytes(&cfg) >> 20,
            cache.gpu_bytes() >> 20,
        );
        // an allocation or upload the device refused (out of memory, say) fails
        // the load itself where the backend reports it at once (wgpu-core does)
        ctx.check()?;
        Ok(Self {
            config: cfg,
            ctx: ctx.clone(),
            kernels,
            weights,
            cache,
            scratch,
            binds,
            block,
            attention,
            last_step: StepStats::default(),
            capture: None,
            capture_on: false,
            timing: None,
            last_gpu: None,
        })
    }

    /// Positions held in the KV cache.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Positions the KV cache holds at most.
    pub fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Forgets every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.cache.truncate(len);
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// Bytes of GPU memory: (weights, KV cache).
    pub fn gpu_bytes(&self) -> (u64, u64) {
        (self.weights.gpu_bytes(&self.config), self.cache.gpu_bytes())
    }

    /// Bytes of weights one decode step reads: every matrix and norm once, but
    /// of an embedding table that is not also the output matrix only one row.
    pub fn weight_bytes_per_token(&self) -> u64 {
        let all = self.weights.gpu_bytes(&self.config);
        match &self.weights.output {
            Some(_) => {
                let table = self.weights.token_embd.gpu_bytes();
                all - table + table / self.config.vocab.max(1) as u64
            }
            None => all,
        }
    }

    /// Bytes of GPU memory in activations, logits, staging buffers and the RoPE
    /// table: everything the model holds besides weights and KV cache.
    pub fn scratch_bytes(&self) -> u64 {
        self.scratch.gpu_bytes()
    }

    /// For benchmarks only: marks the first `len` positions of the cache as
    /// filled without computing them, so that a step at context `len` can be
    /// timed without a prefill of `len` tokens. What the skipped positions hold
    /// is stale or zero, and the outputs after this call are meaningless; the
    /// work (and so the time) of a step does not depend on the cache's contents.
    pub fn fill_for_benchmark(&mut self, len: usize) -> Result<(), ForwardError> {
        if len > self.cache.capacity() {
            return Err(ForwardError::ContextFull {
                len: 0,
                new: len,
                capacity: self.cache.capacity(),
            });
        }
        self.cache.clear();
        self.cache.advance(len);
        Ok(())
    }

    /// Chooses how forward calls are timed on the GPU (benchmarks only; the
    /// result of each call is in [`Model::last_gpu_times`]).
    pub fn set_gpu_timing(&mut self, mode: GpuTiming) -> Result<(), ForwardError> {
        let features = self.ctx.features;
        self.timing = match mode {
            GpuTiming::Off => None,
            GpuTiming::Pass if !features.timestamp_query => {
                return Err(ForwardError::TimingUnavailable("passes"));
            }
            GpuTiming::Dispatch if !features.timestamp_inside_passes => {
                return Err(ForwardError::TimingUnavailable("single dispatches"));
            }
            _ => {
                let capacity = if mode == GpuTiming::Pass {
                    2
                } else {
                    MAX_TIMESTAMPS
                };
                let timestamps = Timestamps::new(&self.ctx, "forward timing", capacity)
                    .ok_or(ForwardError::TimingUnavailable("passes"))?;
                Some((mode, timestamps))
            }
        };
        self.last_gpu = None;
        Ok(())
    }

    /// What the GPU timed in the last forward call, when timing is on.
    pub fn last_gpu_times(&self) -> Option<&GpuTimes> {
        self.last_gpu.as_ref()
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// What the last [`Model::forward`] call recorded and read back.
    pub fn last_step(&self) -> StepStats {
        self.last_step
    }

    /// Turns attention capture on or off. While on, each forward call also
    /// computes the softmax weights of its last token for every layer and query
    /// head (one more dispatch per layer) and reads them back in
    /// [`StepOutput::attention`]. Its kernel and buffers are made the first time
    /// it is turned on; while off, the forward pass records nothing more.
    pub fn set_attention_capture(&mut self, on: bool) -> Result<(), ForwardError> {
        if on && self.capture.is_none() {
            self.capture = Some(self.make_capture()?);
        }
        self.capture_on = on;
        Ok(())
    }

    /// Whether forward calls capture attention weights.
    pub fn attention_capture(&self) -> bool {
        self.capture_on
    }

    fn make_capture(&self) -> Result<Capture, ForwardError> {
        let c = &self.config;
        if c.head_dim > ATTENTION_WEIGHTS_MAX_DIM as usize {
            return Err(ForwardError::Capture(format!(
                "heads of {} elements are over the {ATTENTION_WEIGHTS_MAX_DIM} its kernel holds",
                c.head_dim
            )));
        }
        let bytes = (c.n_layer * c.n_head * c.max_seq * 4) as u64;
        if bytes > self.ctx.max_binding_bytes() {
            return Err(ForwardError::Capture(format!(
                "{bytes} bytes for {} positions are over the {}-byte binding limit of this \
                 GPU: ask for a shorter context",
                c.max_seq,
                self.ctx.max_binding_bytes()
            )));
        }
        let kernel = self.kernels.attention_weights(&self.ctx);
        let weights = self.ctx.storage("attention weights", bytes);
        let staging = self.ctx.staging("attention weights staging", bytes);
        let s = &self.scratch;
        let layers = (0..c.n_layer)
            .map(|l| {
                let params = uniforms::AttentionWeights {
                    n_head: c.n_head as u32,
                    n_kv_head: c.n_kv_head as u32,
                    head_dim: c.head_dim as u32,
                    max_seq: c.max_seq as u32,
                    layer: l as u32,
                    scale: 1.0 / (c.head_dim as f32).sqrt(),
                    _pad: [0; 2],
                };
                let label = format!("attention weights params, layer {l}");
                let params = self.ctx.uniform_with(&label, bytes_of(&params));
                kernel.bind(
                    &self.ctx,
                    &format!("layer {l}"),
                    &[&s.step, &params, &s.q, &self.cache.k[l], &weights],
                )
            })
            .collect();
        Ok(Capture {
            kernel,
            weights,
            staging,
            layers,
        })
    }

    /// Runs `tokens` at the next positions of the cache and reads back `output`
    /// for them (the last one, or all with [`Output::AllLogits`]).
    pub async fn forward(
        &mut self,
        tokens: &[u32],
        output: Output,
    ) -> Result<StepOutput, ForwardError> {
        if tokens.is_empty() {
            return Err(ForwardError::NoTokens);
        }
        if tokens.len() > self.cache.remaining() {
            return Err(ForwardError::ContextFull {
                len: self.cache.len(),
                new: tokens.len(),
                capacity: self.cache.capacity(),
            });
        }
        let vocab = self.config.vocab;
        if let Output::TopK(k) = output {
            if k == 0 || k > MAX_CANDIDATES.min(vocab) {
                return Err(ForwardError::Candidates {
                    k,
                    max: MAX_CANDIDATES.min(vocab),
                });
            }
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(ForwardError::TokenOutOfRange { id, vocab });
        }

        let mut result = StepOutput::default();
        self.last_step = StepStats {
            tokens: tokens.len() as u32,
            ..StepStats::default()
        };
        let dispatches_before = self.kernels.dispatch_count();
        self.last_gpu = self.timing.as_ref().map(|_| GpuTimes::default());
        let blocks: Vec<&[u32]> = tokens.chunks(self.block).collect();
        for (i, block) in blocks.iter().enumerate() {
            let last = i + 1 == blocks.len();
            let wanted = match output {
                Output::AllLogits => Some(Output::AllLogits),
                _ if last => Some(output),
                _ => None,
            };
            // only the last token's weights are wanted: those of the last block
            let capture = self.capture_on && last;
            let part = self.run_block(block, wanted, capture).await?;
            result.token = part.token.or(result.token);
            result.logits.extend(part.logits);
            result.candidates = part.candidates;
            result.attention = part.attention;
        }
        self.last_step.dispatches = self.kernels.dispatch_count() - dispatches_before;
        Ok(result)
    }

    /// One submission: the tokens of `ids` (at most a block), and what to read
    /// back; with `capture`, the attention weights of the block's last token too.
    async fn run_block(
        &mut self,
        ids: &[u32],
        output: Option<Output>,
        capture: bool,
    ) -> Result<StepOutput, ForwardError> {
        let n = ids.len() as u32;
        let s = &self.scratch;
        let step = Step {
            pos0: self.cache.len() as u32,
            n_tokens: n,
            _pad: [0; 2],
        };
        self.ctx.queue.write_buffer(&s.step, 0, bytes_of(&step));
        self.ctx
            .queue
            .write_buffer(&s.ids, 0, bytemuck::cast_slice(ids));
        if let Some(Output::TopK(k)) = output {
            let params = uniforms::TopK {
                n: self.config.vocab as u32,
                k: k as u32,
                _pad: [0; 2],
            };
            self.ctx.queue.write_buffer(&s.topk, 0, bytes_of(&params));
        }

        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            });
        let timing = self.timing.clone();
        let pass_writes = match &timing {
            Some((GpuTiming::Pass, ts)) => Some(ts.pass_writes()),
            Some((_, ts)) => {
                self.kernels.start_dispatch_log(ts.clone());
                None
            }
            None => None,
        };
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("forward"),
                timestamp_writes: pass_writes,
            });
            self.encode_layers(&mut pass, n, capture);
            self.encode_output(&mut pass, n, output);
        }
        let context = self.cache.len() + ids.len();
        let capture_bytes = match (&self.capture, capture) {
            (Some(cap), true) => {
                let bytes = (self.config.n_layer * self.config.n_head * context * 4) as u64;
                encoder.copy_buffer_to_buffer(&cap.weights, 0, &cap.staging, 0, bytes);
                bytes
            }
            _ => 0,
        };
        let log = match &timing {
            Some((GpuTiming::Dispatch, _)) => self.kernels.take_dispatch_log(),
            _ => None,
        };
        let queries = log.as_ref().map_or(2, |log| log.queries());
        if let Some((_, ts)) = &timing {
            ts.resolve(&mut encoder, queries);
        }
        let vocab = self.config.vocab;
        let vocab_bytes = (vocab * 4) as u64;
        let read = match output {
            None => 0,
            Some(Output::Argmax) => {
                encoder.copy_buffer_to_buffer(&s.chosen, 0, &s.chosen_staging, 0, 4);
                4
            }
            Some(Output::LastLogits) => {
                encoder.copy_buffer_to_buffer(&s.logits, 0, &s.logits_staging, 0, vocab_bytes);
                vocab_bytes
            }
            Some(Output::AllLogits) => {
                let bytes = u64::from(n) * vocab_bytes;
                encoder.copy_buffer_to_buffer(&s.logits, 0, &s.logits_staging, 0, bytes);
                bytes
            }
            Some(Output::TopK(k)) => {
                let bytes = (k * 8) as u64;
                encoder.copy_buffer_to_buffer(&s.candidates, 0, &s.candidates_staging, 0, bytes);
                bytes
            }
        };
        self.ctx.queue.submit([encoder.finish()]);
        self.cache.advance(ids.len());
        self.last_step.submissions += 1;
        self.last_step.readback_bytes += read + capture_bytes;

        let mut out = StepOutput::default();
        match output {
            None => self.ctx.check()?,
            Some(Output::Argmax) => {
                let bytes = self.ctx.read_staging(&s.chosen_staging, read).await?;
                let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                // argmax.wgsl leaves u32::MAX when no logit is a finite number
                if id as usize >= self.config.vocab {
                    return Err(ForwardError::NotFinite);
                }
                out.token = Some(id);
            }
            Some(Output::TopK(_)) => {
                let bytes = self.ctx.read_staging(&s.candidates_staging, read).await?;
                let pairs: Vec<[u32; 2]> = bytemuck::pod_collect_to_vec(&bytes);
                let mut candidates: Vec<(u32, f32)> = pairs
                    .iter()
                    .map(|&[id, bits]| (id, f32::from_bits(bits)))
                    .collect();
                if candidates
                    .iter()
                    .any(|&(id, logit)| !logit.is_finite() || id as usize >= vocab)
                {
                    return Err(ForwardError::NotFinite);
                }
                candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                out.candidates = candidates;
            }
            Some(_) => {
                let bytes = self.ctx.read_staging(&s.logits_staging, read).await?;
                out.logits = bytemuck::pod_collect_to_vec(&bytes);
            }
        }
        if let (Some(cap), true) = (&self.capture, capture_bytes > 0) {
            let bytes = self.ctx.read_staging(&cap.staging, capture_bytes).await?;
            out.attention = bytemuck::pod_collect_to_vec(&bytes);
        }
        if let (Some((_, ts)), Some(times)) = (&timing, self.last_gpu.as_mut()) {
            let stamps = ts.read(&self.ctx, queries).await?;
            match &log {
                Some(log) => {
                    let durations = log.durations(&stamps);
                    times.seconds += durations.iter().map(|(_, s)| s).sum::<f64>();
                    times.dispatches.extend(durations);
                    times.untimed += log.untimed;
                }
                None if stamps.len() == 2 => times.seconds += (stamps[1] - stamps[0]).max(0.0),
                None => {}
            }
        }
        Ok(out)
    }

    /// Records the transformer blocks and the final norm for `n` tokens; with
    /// `capture`, the attention weights of the last token of every layer too.
    fn encode_layers(&self, pass: &mut wgpu::ComputePass, n: u32, capture: bool) {
        let (k, b, w, c) = (&self.kernels, &self.binds, &self.weights, &self.config);
        let (_, splits) = self.attention.split;

        // token embeddings -> x
        w.token_embd.encode_embed(k, pass, &b.embed, n);

        // A product of the normed x: for one token the product takes the norm
        // itself (`one` binds x and the norm's weights); a block's products read
        // xn, normed once for all of them, the norm's cost spread over the block.
        let normed = |pass: &mut wgpu::ComputePass,
                      m: &GpuMatrix,
                      one: &wgpu::BindGroup,
                      block: &wgpu::BindGroup,
                      epilogue: Epilogue| {
            if n == 1 {
                m.encode_normed_product(k, pass, one, epilogue);
            } else {
                m.encode_product(k, pass, block, n, epilogue);
            }
        };
        let capture = self.capture.as_ref().filter(|_| capture);
        for (l, (layer, lb)) in w.layers.iter().zip(&b.layers).enumerate() {
            // attention: norm, project to q, k, v (plus biases: qwen2), rotate q
            // and k, append k and v to the cache: one product
            if n > 1 {
                k.rmsnorm.dispatch(pass, &[&lb.attn_norm], Grid::new(n, 1));
            }
            normed(pass, &layer.wqkv, &lb.qkv, &lb.qkv_block, Epilogue::Qkv);

            // attend over the cache, project back, add to x
            match (
                &self.attention.decode,
                &lb.decode_attention,
                &b.attention_combine,
            ) {
                (Some(decode), Some(split), Some(combine)) if n == 1 => {
                    let heads = (c.group_size() as u32, c.n_kv_head as u32, c.n_head as u32);
                    decode.encode(pass, split, combine, heads, self.len() as u32 + 1);
                }
                (Some(decode), Some(split), _) => {
                    let heads = (c.group_size() as u32, c.n_kv_head as u32);
                    decode.encode_prefill(pass, split, heads, n);
                }
                _ => {
                    let groups = Grid::new(c.n_kv_head as u32 * splits, n);
                    k.attention.dispatch(pass, &[&lb.attention], groups);
                }
            }
            if let Some(cap) = capture {
                // q still holds this layer's queries: the explainer's weights
                let heads = Grid::new(c.n_head as u32, 1);
                cap.kernel.dispatch(pass, &[&cap.layers[l]], heads);
            }
            layer.wo.encode_product(k, pass, &b.o, n, Epilogue::Add);

            // feed-forward: norm, gate, up with SwiGLU over the gate, down added to x
            if n > 1 {
                k.rmsnorm.dispatch(pass, &[&lb.ffn_norm], Grid::new(n, 1));
            }
            normed(pass, &layer.w_gate, &lb.ffn, &b.gate, Epilogue::Store);
            normed(pass, &layer.w_up, &lb.ffn, &b.gate, Epilogue::Swiglu);
            layer
                .w_down
                .encode_product(k, pass, &b.down, n, Epilogue::Add);
        }
    }

    /// Records the logits (and the greedy choice) that `output` asks for.
    fn encode_output(&self, pass: &mut wgpu::ComputePass, n: u32, output: Option<Output>) {
        let (k, b) = (&self.kernels, &self.binds);
        let head = self.weights.output();
        let Some(output) = output else {
            return;
        };

        // final norm: of every token for all logits; of one token in its
        // product; else of the last token into row 0 of xn
        if output == Output::AllLogits {
            k.rmsnorm.dispatch(pass, &[&b.output_norm], Grid::new(n, 1));
            head.encode_product(k, pass, &b.logits, n, Epilogue::Store);
            return;
        }
        if n == 1 {
            head.encode_normed_product(k, pass, &b.logits_normed, Epilogue::Store);
        } else {
            k.rmsnorm
                .dispatch(pass, &[&b.output_norm_last], Grid::new(1, 1));
            head.encode_product(k, pass, &b.logits, 1, Epilogue::Store);
        }

        match output {
            Output::Argmax => k.argmax.dispatch(pass, &[&b.argmax], Grid::new(1, 1)),
            Output::TopK(_) => k.topk.dispatch(pass, &[&b.topk], Grid::new(1, 1)),
            Output::LastLogits | Output::AllLogits => {}
        }
    }
}

impl Scratch {
    /// Bytes of every buffer held, staging included.
    fn gpu_bytes(&self) -> u64 {
        [
            &self.step,
            &self.ids,
            &self.x,
            &self.xn,
            &self.q,
            &self.att,
            &self.gate,
            &self.logits,
            &self.chosen,
            &self.topk,
            &self.candidates,
            &self.rope_table,
            &self.partial,
            &self.chosen_staging,
            &self.candidates_staging,
            &self.logits_staging,
        ]
        .iter()
        .map(|b| b.size())
        .sum()
    }

    fn new(
        ctx: &GpuContext,
        cfg: &ModelConfig,
        block: usize,
        decode: Option<&DecodeAttention>,
        rope_freqs: &[f64],
    ) -> Self {
        let rows = |label: &str, width: usize| ctx.storage(label, (block * width * 4) as u64);
        let q_bytes = ((block * cfg.q_dim() * 4) as u64).max(DecodeAttention::Q_BINDING_BYTES);
        // what a weight product reads as x is also bound as a uniform (matvec.wgsl)
        let x_rows = |label: &str, width: usize| {
            ctx.storage_uniform(label, ((block * width * 4) as u64).max(X_UNIFORM_BYTES))
        };
        let partial_bytes = decode.map_or(4, |d| {
            d.partial_bytes(cfg.n_head as u32, cfg.head_dim as u32, cfg.max_seq as u32)
        });
        let table = rope_table(cfg.max_seq, rope_freqs);
        let logits_bytes = (block * cfg.vocab * 4) as u64;
        Self {
            step: ctx.uniform_with("step", bytes_of(&Step::default())),
            ids: rows("token ids", 1),
            x: x_rows("x (residual stream)", cfg.n_embd),
            xn: x_rows("xn (normed)", cfg.n_embd),
            q: ctx.storage_uniform("q", q_bytes),
            att: x_rows("attention output", cfg.q_dim()),
            gate: x_rows("gate", cfg.n_ff),
            logits: ctx.storage("logits", logits_bytes),
            chosen: ctx.storage("chosen token", 4),
            topk: ctx.uniform_with("topk params", bytes_of(&uniforms::TopK::default())),
            candidates: ctx.storage("candidates", (MAX_CANDIDATES * 8) as u64),
            rope_table: ctx.storage_with("rope table", bytemuck::cast_slice(&table)),
            partial: ctx.storage("decode attention partials", partial_bytes),
            chosen_staging: ctx.staging("chosen token staging", 4),
            candidates_staging: ctx.staging("candidates staging", (MAX_CANDIDATES * 8) as u64),
            logits_staging: ctx.staging("logits staging", logits_bytes),
        }
    }
}

impl Binds {
    fn new(
        ctx: &GpuContext,
        k: &Kernels,
        cfg: &ModelConfig,
        w: &Weights,
        cache: &KvCache,
        s: &Scratch,
        attention_kernels: &AttentionKernels,
    ) -> Self {
        let (heads_per_workgroup, splits) = attention_kernels.split;
        let decode = attention_kernels.decode.as_ref();
        // Uniforms with equal contents share one buffer.
        let mut uniforms: HashMap<Vec<u8>, GpuBuffer> = HashMap::new();
        let mut uniform = |label: &str, bytes: &[u8]| -> GpuBuffer {
            uniforms
                .entry(bytes.to_vec())
                .or_insert_with(|| ctx.uniform_with(label, bytes))
                .clone()
        };
        let product = |y_stride: usize| uniforms::Product {
            y_stride: y_stride as u32,
            eps: cfg.rms_eps,
            ..Default::default()
        };
        let count = |n: usize| uniforms::Count {
            n: n as u32,
            _pad: [0; 3],
        };
        let norm = |last_only: u32| uniforms::Norm {
            n: cfg.n_embd as u32,
            eps: cfg.rms_eps,
            last_only,
            _pad: 0,
        };
        let norm_last = uniform("rmsnorm params, last token", bytes_of(&norm(1)));
        let norm = uniform("rmsnorm params", bytes_of(&norm(0)));
        let attention = uniforms::Attention {
            n_head: cfg.n_head as u32,
            n_kv_head: cfg.n_kv_head as u32,
            head_dim: cfg.head_dim as u32,
            max_seq: cfg.max_seq as u32,
            heads_per_workgroup,
            splits,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            _pad: 0,
        };
        let attention = uniform("attention params", bytes_of(&attention));
        let decode_params = decode.map(|d| uniforms::DecodeAttention {
            n_head: cfg.n_head as u32,
            n_kv_head: cfg.n_kv_head as u32,
            max_seq: cfg.max_seq as u32,
            max_splits: d.splits(cfg.max_seq as u32),
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            _pad: [0; 3],
        });
        let decode_params = decode_params.map(|p| uniform("decode attention params", bytes_of(&p)));
        // the decode token's queries, as the uniform array attention_decode.wgsl declares
        let q_uniform = || wgpu::BufferBinding {
            buffer: &s.q,
            offset: 0,
            size: wgpu::BufferSize::new(DecodeAttention::Q_BINDING_BYTES),
        };
        let p_qkv = uniforms::Product {
            head_dim: cfg.head_dim as u32,
            q_rows: cfg.q_dim() as u32,
            kv_rows: cfg.kv_dim() as u32,
            max_seq: cfg.max_seq as u32,
            ..product(cfg.q_dim())
        };
        let p_qkv = uniform("qkv product", bytes_of(&p_qkv));
        let p_embd = uniform("embd product", bytes_of(&product(cfg.n_embd)));
        let p_ff = uniform("ffn product", bytes_of(&product(cfg.n_ff)));
        let p_vocab = uniform("logits product", bytes_of(&product(cfg.vocab)));
        let c_vocab = uniform("count vocab", bytes_of(&count(cfg.vocab)));

        let product = |label: &str, params: &GpuBuffer, x: &GpuBuffer, y: &GpuBuffer| {
            k.bind_product(ctx, label, [&s.step, params, x, y], None, None)
        };
        // a product of x through a norm with these weights
        let normed = |label: &str, params: &GpuBuffer, norm: &GpuBuffer, y: &GpuBuffer| {
            k.bind_product(ctx, label, [&s.step, params, &s.x, y], Some(norm), None)
        };
        let cache_of = |l: usize| QkvCache {
            rope_table: &s.rope_table,
            k: &cache.k[l],
            v: &cache.v[l],
        };
        let layers = (0..cfg.n_layer)
            .map(|l| {
                let lw = &w.layers[l];
                let label = |what: &str| format!("{what}, layer {l}");
                let (attn_norm, ffn_norm) = (&lw.attn_norm, &lw.ffn_norm);
                LayerBinds {
                    attn_norm: k.rmsnorm.bind(
                        ctx,
                        &label("attn_norm"),
                        &[&s.step, &norm, &s.x, attn_norm, &s.xn],
                    ),
                    qkv: k.bind_product(
                        ctx,
                        &label("x -> q, k, v"),
                        [&s.step, &p_qkv, &s.x, &s.q],
                        Some(attn_norm),
                        Some(cache_of(l)),
                    ),
                    qkv_block: k.bind_product(
                        ctx,
                        &label("xn -> q, k, v"),
                        [&s.step, &p_qkv, &s.xn, &s.q],
                        None,
                        Some(cache_of(l)),
                    ),
                    ffn: normed(
                        &label("x -> gate, silu(gate) * up"),
                        &p_ff,
                        ffn_norm,
                        &s.gate,
                    ),
                    attention: k.attention.bind(
                        ctx,
                        &label("attention"),
                        &[&s.step, &attention, &s.q, &cache.k[l], &cache.v[l], &s.att],
                    ),
                    decode_attention: decode.zip(decode_params.as_ref()).map(|(d, params)| {
                        d.split.bind_resources(
                            ctx,
                            &label("decode"),
                            vec![
                                s.step.as_entire_binding(),
                                params.as_entire_binding(),
                                wgpu::BindingResource::Buffer(q_uniform()),
                                cache.k[l].as_entire_binding(),
                                cache.v[l].as_entire_binding(),
                                s.att.as_entire_binding(),
                                s.partial.as_entire_binding(),
                                s.q.as_entire_binding(),
                            ],
                        )
                    }),
                    ffn_norm: k.rmsnorm.bind(
                        ctx,
                        &label("ffn_norm"),
                        &[&s.step, &norm, &s.x, &lw.ffn_norm, &s.xn],
                    ),
                }
            })
            .collect();

        Self {
            embed: k.embed.get(w.token_embd.chunks[0].format).bind(
                ctx,
                "token ids",
                &[&s.step, &s.ids, &s.x],
            ),
            o: product("x += attention projected", &p_embd, &s.att, &s.x),
            gate: product("xn -> gate", &p_ff, &s.xn, &s.gate),
            down: product("x += feed-forward projected", &p_embd, &s.gate, &s.x),
            layers,
            output_norm: k.rmsnorm.bind(
                ctx,
                "output_norm",
                &[&s.step, &norm, &s.x, &w.output_norm, &s.xn],
            ),
            output_norm_last: k.rmsnorm.bind(
                ctx,
                "output_norm, last token",
                &[&s.step, &norm_last, &s.x, &w.output_norm, &s.xn],
            ),
            logits: product("xn -> logits", &p_vocab, &s.xn, &s.logits),
            logits_normed: normed("x -> logits", &p_vocab, &w.output_norm, &s.logits),
            argmax: k
                .argmax
                .bind(ctx, "logits", &[&c_vocab, &s.logits, &s.chosen]),
            topk: k
                .topk
                .bind(ctx, "logits", &[&s.topk, &s.logits, &s.candidates]),
            attention_combine: decode.zip(decode_params.as_ref()).map(|(d, params)| {
                d.combine
                    .bind(ctx, "splits", &[&s.step, params, &s.partial, &s.att])
            }),
        }
    }
}
