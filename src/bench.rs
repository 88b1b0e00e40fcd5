//! The benchmark: the adapter's read bandwidth (the roofline), decode and
//! prefill speed against it, grouped attention alone (GQA against MHA), the
//! work and memory of a step, load time, and where a decode step's time goes
//! kernel by kernel. Everything here is async and GPU-only, so the page's bench
//! mode can run it too; `gqa-webgpu bench` drives it natively.
//!
//! Times come from GPU timestamp queries where the adapter has them (the
//! start and end of a pass), else from the wall clock between a submission
//! and its completion; each figure is the median of `runs` runs after `warmup`.

use serde::Serialize;

use crate::clock;
use crate::forward::{ForwardError, GpuTiming, LoadOptions, LoadPhase, Model, Output};
use crate::gguf::{GgufError, GgufFile};
use crate::gpu::kernels::{self, Grid, Kernels, PROBE_STORAGE, PROBE_TEXTURE};
use crate::gpu::timing::Timestamps;
use crate::gpu::uniforms::{Attention, DecodeAttention, Step};
use crate::gpu::{GpuBuffer, GpuContext, GpuError};
use crate::model::{MemoryPlan, ModelError};
use crate::synthetic::Rng;

/// What to measure, and how often.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Positions in the KV cache when a decode step is timed.
    pub contexts: Vec<usize>,
    /// Prompt lengths whose prefill is timed.
    pub prompts: Vec<usize>,
    /// Keys read when grouped attention is timed alone.
    pub attention_contexts: Vec<usize>,
    /// Keys read when GQA is timed against MHA.
    pub gqa_mha_context: usize,
    /// Bytes each bandwidth probe reads (capped by the adapter's limits).
    pub probe_bytes: u64,
    /// Untimed runs before the timed ones.
    pub warmup: usize,
    /// Timed runs; each figure is their median.
    pub runs: usize,
    /// Time every dispatch of a decode step, where the adapter can.
    pub profile: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            contexts: vec![0, 512, 2048],
            prompts: vec![128, 512],
            attention_contexts: vec![512, 2048, 8192],
            gqa_mha_context: 2048,
            probe_bytes: 256 << 20,
            warmup: 1,
            runs: 3,
            profile: true,
        }
    }
}

/// The decode context and prompt length of the headline figures, when measured.
pub const HEADLINE_CONTEXT: usize = 512;
pub const HEADLINE_PROMPT: usize = 128;

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("benchmark options: {0}")]
    Options(String),
}

/// Seconds spent loading, by phase.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LoadSeconds {
    /// Reading the file into memory (or making the synthetic model).
    pub read: f64,
    /// Parsing the GGUF header and tensor table.
    pub parse: f64,
    /// Compiling the kernels.
    pub compile: f64,
    /// Uploading the weights and making the cache and scratch buffers, until
    /// the GPU has finished the copies.
    pub upload: f64,
}

/// The adapter the figures were measured on.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub timestamp_queries: bool,
}

/// One bandwidth probe.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub layout: &'static str,
    pub bytes: u64,
    pub seconds: f64,
    pub gb_per_s: f64,
}

/// Decode at one context.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeReport {
    pub context: usize,
    pub ms_per_token: f64,
    pub tokens_per_s: f64,
    /// The median wall time of a step, readback included.
    pub wall_ms_per_token: f64,
    pub weight_bytes: u64,
    pub kv_bytes: u64,
    /// (weight bytes + KV bytes) / roofline bandwidth.
    pub roofline_ms: f64,
    /// roofline_ms / ms_per_token: the fraction of the roofline reached.
    pub roofline_ratio: f64,
}

/// Prefill of one prompt length.
#[derive(Clone, Debug, Serialize)]
pub struct PrefillReport {
    pub prompt_tokens: usize,
    pub ms: f64,
    pub tokens_per_s: f64,
    pub wall_ms: f64,
}

/// Grouped attention alone, one decode token.
#[derive(Clone, Debug, Serialize)]
pub struct AttentionReport {
    pub context: usize,
    pub query_heads: usize,
    pub kv_heads: usize,
    pub ms: f64,
    /// K and V bytes read.
    pub bytes: u64,
    pub gb_per_s: f64,
    pub roofline_ratio: f64,
}

/// The work of one decode step.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub dispatches: u64,
    pub submissions: u32,
    pub readback_bytes_per_token: u64,
}

/// GPU memory by kind: what the model holds, and what its plan says it needs.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    pub weights: u64,
    pub kv_cache: u64,
    pub scratch: u64,
    pub total: u64,
    pub planned_weights: u64,
    pub planned_kv_cache: u64,
    pub planned_scratch: u64,
    pub planned_total: u64,
    /// Positions the KV cache was made for.
    pub max_seq: usize,
}

/// One kernel's share of a decode step.
#[derive(Clone, Debug, Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub dispatches: usize,
    pub ms_per_step: f64,
    pub share: f64,
}

/// Where a decode step's time goes, from timestamps around every dispatch.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileReport {
    pub context: usize,
    /// The dispatches' times added up.
    pub dispatch_ms: f64,
    /// The same step timed as one pass: the difference is spent between
    /// dispatches (barriers, pipeline changes).
    pub pass_ms: f64,
    pub kernels: Vec<KernelTime>,
}

/// Everything the benchmark measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub adapter: AdapterReport,
    /// "timestamp queries" or "wall clock".
    pub timing: &'static str,
    pub warmup: usize,
    pub runs: usize,
    pub model: String,
    /// The better of the probes.
    pub roofline_gb_per_s: f64,
    pub roofline_layout: &'static str,
    /// Decode at [`HEADLINE_CONTEXT`] (or the first context measured).
    pub decode_context: usize,
    pub decode_tokens_per_s: f64,
    pub decode_roofline_ratio: f64,
    /// Prefill of [`HEADLINE_PROMPT`] tokens (or the first length measured).
    pub prefill_prompt_tokens: usize,
    pub prefill_tokens_per_s: f64,
    /// GQA time over MHA time for the same query heads.
    pub attention_gqa_over_mha: f64,
    pub bandwidth: Vec<ProbeReport>,
    pub decode: Vec<DecodeReport>,
    pub prefill: Vec<PrefillReport>,
    pub attention: Vec<AttentionReport>,
    pub attention_gqa: AttentionReport,
    pub attention_mha: AttentionReport,
    pub step: StepReport,
    pub memory: MemoryReport,
    pub load_seconds: LoadSeconds,
    pub profile: Option<ProfileReport>,
}

/// The median of `values` (not empty).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Times single passes: by timestamps where the adapter has them, else by the
/// wall clock from submission to completion.
struct PassTimer {
    ctx: GpuContext,
    stamps: Option<Timestamps>,
    /// A word read back to wait for completion without timestamps.
    flush: GpuBuffer,
}

impl PassTimer {
    fn new(ctx: &GpuContext) -> Self {
        Self {
            ctx: ctx.clone(),
            stamps: Timestamps::new(ctx, "bench pass", 2),
            flush: ctx.storage("bench flush", 4),
        }
    }

    /// Seconds the pass that `record` fills takes.
    async fn time(&self, record: impl FnOnce(&mut wgpu::ComputePass)) -> Result<f64, GpuError> {
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("bench"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bench"),
                timestamp_writes: self.stamps.as_ref().map(Timestamps::pass_writes),
            });
            record(&mut pass);
        }
        if let Some(stamps) = &self.stamps {
            stamps.resolve(&mut encoder, 2);
        }
        let start = clock::now();
        self.ctx.queue.submit([encoder.finish()]);
        if let Some(stamps) = &self.stamps {
            let t = stamps.read(&self.ctx, 2).await?;
            return Ok((t[1] - t[0]).max(0.0));
        }
        self.ctx.read_buffer(&self.flush, 4).await?;
        Ok(clock::now() - start)
    }

    /// The median of `runs` timings after `warmup`, each divided by `per_pass`.
    async fn median(
        &self,
        warmup: usize,
        runs: usize,
        per_pass: usize,
        record: impl Fn(&mut wgpu::ComputePass),
    ) -> Result<f64, GpuError> {
        let mut times = Vec::with_capacity(runs);
        for i in 0..warmup + runs {
            let t = self.time(&record).await?;
            if i >= warmup {
                times.push(t / per_pass.max(1) as f64);
            }
        }
        Ok(median(&mut times))
    }
}

/// Words that make the probes' folds never equal their sentinel.
fn pattern(words: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng(seed | 1);
    (0..words).map(|_| rng.next_u64() as u32).collect()
}

fn probe_pipeline(ctx: &GpuContext, label: &str, source: &str) -> wgpu::ComputePipeline {
    let module = ctx
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
    ctx.device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        })
}

/// Elements (of 16 bytes) each probe workgroup reads: 64 invocations of 64.
const PROBE_PER_GROUP: u32 = 64 * 64;

/// Read bandwidth from one storage buffer of up to `bytes` bytes.
async fn probe_storage(
    ctx: &GpuContext,
    timer: &PassTimer,
    bytes: u64,
    options: &BenchOptions,
) -> Result<ProbeReport, BenchError> {
    let max_elements = u64::from(u32::MAX) / 2;
    let per_group = u64::from(PROBE_PER_GROUP);
    // whole workgroups only: the kernel reads without bounds checks
    let elements = (bytes.min(ctx.max_binding_bytes()) / 16).min(max_elements) / per_group;
    let elements = (elements.max(1) * per_group) as u32;
    let bytes = u64::from(elements) * 16;
    let src = ctx.storage_with(
        "probe source",
        bytemuck::cast_slice(&pattern(elements as usize * 4, 3)),
    );
    let sink = ctx.storage("probe sink", 4);
    let grid = Grid::linear(
        elements.div_ceil(PROBE_PER_GROUP),
        ctx.limits.max_compute_workgroups_per_dimension,
    );
    let params = ctx.uniform_with(
        "probe params",
        bytemuck::cast_slice(&[elements, grid.x, 0, 0]),
    );
    let pipeline = probe_pipeline(ctx, "probe_storage.wgsl", PROBE_STORAGE);
    let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("probe storage"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            entry(0, params.as_entire_binding()),
            entry(1, src.as_entire_binding()),
            entry(2, sink.as_entire_binding()),
        ],
    });
    let seconds = timer
        .median(options.warmup.max(1), options.runs.max(3), 1, |pass| {
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(grid.x, grid.y, 1);
        })
        .await?;
    Ok(ProbeReport {
        layout: "storage buffer",
        bytes,
        seconds,
        gb_per_s: bytes as f64 / seconds / 1e9,
    })
}

fn entry(binding: u32, resource: wgpu::BindingResource) -> wgpu::BindGroupEntry {
    wgpu::BindGroupEntry { binding, resource }
}

/// Read bandwidth from one rgba32uint texture of up to `bytes` bytes.
async fn probe_texture(
    ctx: &GpuContext,
    timer: &PassTimer,
    bytes: u64,
    options: &BenchOptions,
) -> Result<ProbeReport, BenchError> {
    // rows of 4096 texels, one workgroup's (64 KiB: a multiple of the copy
    // alignment); every WebGPU adapter allows textures 8192 wide and high
    let width = 4096;
    let max_rows = ctx.limits.max_texture_dimension_2d.min(65535);
    let height = (bytes / 16 / u64::from(width)).clamp(1, u64::from(max_rows)) as u32;
    let texels = width * height;
    let bytes = u64::from(texels) * 16;
    let texture = ctx.device.create_texture(&wgpu::TextureDescriptor {
        label: Some("probe texture"),
        size: wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Uint,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    // filled in bands, so the pattern never needs the whole size in memory
    let band = 256.min(height);
    let words = pattern((width * band * 4) as usize, 5);
    let mut y = 0;
    while y < height {
        let rows = band.min(height - y);
        ctx.queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &texture,
                mip_level: 0,
                origin: wgpu::Origin3d { x: 0, y, z: 0 },
                aspect: wgpu::TextureAspect::All,
            },
            bytemuck::cast_slice(&words[..(width * rows * 4) as usize]),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(width * 16),
                rows_per_image: Some(rows),
            },
            wgpu::Extent3d {
                width,
                height: rows,
                depth_or_array_layers: 1,
            },
        );
        y += rows;
    }
    let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
    let sink = ctx.storage("probe sink", 4);
    let grid = Grid::new(height, 1);
    let pipeline = probe_pipeline(ctx, "probe_texture.wgsl", PROBE_TEXTURE);
    let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("probe texture"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            entry(0, wgpu::BindingResource::TextureView(&view)),
            entry(1, sink.as_entire_binding()),
        ],
    });
    let seconds = timer
        .median(options.warmup.max(1), options.runs.max(3), 1, |pass| {
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(grid.x, grid.y, 1);
        })
        .await?;
    Ok(ProbeReport {
        layout: "rgba32uint texture",
        bytes,
        seconds,
        gb_per_s: bytes as f64 / seconds / 1e9,
    })
}

/// K and V together across the copies attention rotates through: more than a
/// large last-level cache, as the layers of a real model are.
const ATTENTION_SPREAD_BYTES: u64 = 64 << 20;

/// The shapes of one attention timing.
#[derive(Clone, Copy)]
struct AttentionShape {
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    context: usize,
}

/// One decode token's grouped attention over `context` keys, timed alone.
/// Each pass runs the kernel over several copies of the cache (another per
/// dispatch), so that K and V come from memory, not from a cache.
async fn time_attention(
    ctx: &GpuContext,
    kernels: &Kernels,
    timer: &PassTimer,
    shape: AttentionShape,
    options: &BenchOptions,
    roofline_gb_per_s: f64,
) -> Result<AttentionReport, BenchError> {
    let AttentionShape {
        n_head,
        n_kv_head,
        head_dim,
        context,
    } = shape;
    if context == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
        return Err(BenchError::Options(format!(
            "attention over {context} keys with {n_head} query heads and {n_kv_head} KV heads"
        )));
    }
    let group = (n_head / n_kv_head) as u32;
    let cache_bytes = (n_kv_head * context * head_dim * 4) as u64;
    if cache_bytes > ctx.max_binding_bytes() {
        return Err(BenchError::Options(format!(
            "attention at context {context}: a cache of {cache_bytes} bytes exceeds the \
             adapter's binding limit of {}",
            ctx.max_binding_bytes()
        )));
    }
    let copies = (ATTENTION_SPREAD_BYTES / (2 * cache_bytes)).clamp(1, 64) as usize;

    let step = Step {
        pos0: context as u32 - 1,
        n_tokens: 1,
        _pad: [0; 2],
    };
    let mut rng = Rng(11);
    let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect() };
    let step = ctx.uniform_with("bench step", bytemuck::bytes_of(&step));
    let q_values = values(n_head * head_dim);
    let out = ctx.storage("bench attention output", (n_head * head_dim * 4) as u64);
    let kv = values(n_kv_head * context * head_dim);
    let caches: Vec<(GpuBuffer, GpuBuffer)> = (0..copies)
        .map(|i| {
            let k = ctx.storage_with(&format!("bench K {i}"), bytemuck::cast_slice(&kv));
            let v = ctx.storage_with(&format!("bench V {i}"), bytemuck::cast_slice(&kv));
            (k, v)
        })
        .collect();

    // the kernel a model of this shape decodes with (src/forward.rs)
    let scale = 1.0 / (head_dim as f32).sqrt();
    let decode = kernels.decode_attention(ctx, group, head_dim as u32, n_head as u32);
    let seconds = if let Some(decode) = decode {
        let max_seq = context as u32;
        let params = DecodeAttention {
            n_head: n_head as u32,
            n_kv_head: n_kv_head as u32,
            max_seq,
            max_splits: decode.splits(max_seq),
            scale,
            _pad: [0; 3],
        };
        let params = ctx.uniform_with("bench attention params", bytemuck::bytes_of(&params));
        let q = ctx.storage_uniform("bench q", kernels::DecodeAttention::Q_BINDING_BYTES);
        ctx.queue
            .write_buffer(&q, 0, bytemuck::cast_slice(&q_values));
        let partial_bytes = decode.partial_bytes(n_head as u32, head_dim as u32, max_seq);
        let partial = ctx.storage("bench attention partials", partial_bytes);
        let groups: Vec<wgpu::BindGroup> = caches
            .iter()
            .map(|(k, v)| {
                decode.split.bind(
                    ctx,
                    "bench",
                    &[&step, &params, &q, k, v, &out, &partial, &q],
                )
            })
            .collect();
        let combine = decode
            .combine
            .bind(ctx, "bench", &[&step, &params, &partial, &out]);
        let heads = (group, n_kv_head as u32, n_head as u32);
        timer
            .median(options.warmup.max(1), options.runs.max(3), copies, |pass| {
                for split in &groups {
                    decode.encode(pass, split, &combine, heads, max_seq);
                }
            })
            .await?
    } else {
        let (heads_per_workgroup, splits) = Kernels::attention_split(group, head_dim as u32)
            .ok_or_else(|| {
                BenchError::Options(format!(
                    "attention heads of {head_dim} do not fit the kernel"
                ))
            })?;
        let params = Attention {
            n_head: n_head as u32,
            n_kv_head: n_kv_head as u32,
            head_dim: head_dim as u32,
            max_seq: context as u32,
            heads_per_workgroup,
            splits,
            scale,
            _pad: 0,
        };
        let params = ctx.uniform_with("bench attention params", bytemuck::bytes_of(&params));
        let q = ctx.storage_with("bench q", bytemuck::cast_slice(&q_values));
        let groups: Vec<wgpu::BindGroup> = caches
            .iter()
            .map(|(k, v)| {
                kernels
                    .attention
                    .bind(ctx, "bench", &[&step, &params, &q, k, v, &out])
            })
            .collect();
        let grid = Grid::new(n_kv_head as u32 * splits, 1);
        timer
            .median(options.warmup.max(1), options.runs.max(3), copies, |pass| {
                for group in &groups {
                    kernels.attention.dispatch(pass, &[group], grid);
                }
            })
            .await?
    };
    let bytes = 2 * cache_bytes;
    let gb_per_s = bytes as f64 / seconds / 1e9;
    Ok(AttentionReport {
        context,
        query_heads: n_head,
        kv_heads: n_kv_head,
        ms: seconds * 1e3,
        bytes,
        gb_per_s,
        roofline_ratio: gb_per_s / roofline_gb_per_s,
    })
}

fn check_options(options: &BenchOptions) -> Result<(), BenchError> {
    let fail = |why: &str| Err(BenchError::Options(why.to_string()));
    if options.runs == 0 {
        return fail("at least one timed run is needed");
    }
    if options.contexts.is_empty() || options.prompts.is_empty() {
        return fail("give at least one decode context and one prompt length");
    }
    if options.prompts.contains(&0) {
        return fail("a prompt of 0 tokens cannot be timed");
    }
    if options.attention_contexts.contains(&0) || options.gqa_mha_context == 0 {
        return fail("attention over 0 keys cannot be timed");
    }
    if options.probe_bytes < 16 {
        return fail("the bandwidth probes need at least 16 bytes");
    }
    Ok(())
}

/// Loads the model in `bytes` and measures everything [`Report`] holds.
/// `read_seconds` is how long the caller took to get the bytes; `name` says
/// what the model is.
pub async fn run(
    ctx: &GpuContext,
    bytes: &[u8],
    read_seconds: f64,
    name: &str,
    options: &BenchOptions,
) -> Result<Report, BenchError> {
    check_options(options)?;
    let timer = PassTimer::new(ctx);

    // load, phase by phase
    let mut load = LoadSeconds {
        read: read_seconds,
        ..LoadSeconds::default()
    };
    let start = clock::now();
    let file = GgufFile::parse(bytes, bytes.len() as u64)?;
    load.parse = clock::now() - start;
    let max_context = options.contexts.iter().max().copied().unwrap_or(0);
    let max_prompt = options.prompts.iter().max().copied().unwrap_or(1);
    let load_options = LoadOptions {
        max_seq: Some((max_context + 1).max(max_prompt)),
        ..LoadOptions::default()
    };
    let (mut compile_start, mut compile_end) = (clock::now(), None);
    let mut model =
        Model::load_with_progress(ctx, &file, bytes, &load_options, &mut |p, done, _| match (
            p, done,
        ) {
            (LoadPhase::Compile, 0) => compile_start = clock::now(),
            (LoadPhase::Compile, _) => compile_end = Some(clock::now()),
            _ => {}
        })?;
    // the uploads are queued: wait until the GPU has done them
    ctx.read_buffer(&timer.flush, 4).await?;
    let end = clock::now();
    let compile_end = compile_end.unwrap_or(compile_start);
    load.compile = compile_end - compile_start;
    load.upload = end - compile_end;
    let cfg = model.config.clone();

    // the roofline: the better of the two layouts
    let probe_bytes = options.probe_bytes;
    let bandwidth = vec![
        probe_storage(ctx, &timer, probe_bytes, options).await?,
        probe_texture(ctx, &timer, probe_bytes, options).await?,
    ];
    let best = bandwidth
        .iter()
        .max_by(|a, b| a.gb_per_s.total_cmp(&b.gb_per_s))
        .cloned()
        .ok_or_else(|| BenchError::Options("no probe ran".into()))?;
    let roofline = best.gb_per_s;

    let timed = model.set_gpu_timing(GpuTiming::Pass).is_ok();
    let mut rng = Rng(17);
    let mut token = || (rng.next_u64() % cfg.vocab as u64) as u32;

    // decode
    let weight_bytes = model.weight_bytes_per_token();
    let mut decode = Vec::new();
    let mut step = None;
    for &context in &options.contexts {
        let (mut gpu, mut wall) = (Vec::new(), Vec::new());
        for i in 0..options.warmup + options.runs {
            model.fill_for_benchmark(context)?;
            let start = clock::now();
            forward_greedy(&mut model, &[token()]).await?;
            let w = clock::now() - start;
            if i >= options.warmup {
                wall.push(w);
                gpu.push(model.last_gpu_times().map_or(w, |t| t.seconds));
            }
        }
        let stats = model.last_step();
        step.get_or_insert(StepReport {
            dispatches: stats.dispatches,
            submissions: stats.submissions,
            readback_bytes_per_token: stats.readback_bytes,
        });
        let seconds = median(&mut gpu);
        let kv_bytes = cfg.kv_bytes_per_token() * (context as u64 + 1);
        let roofline_s = (weight_bytes + kv_bytes) as f64 / (roofline * 1e9);
        decode.push(DecodeReport {
            context,
            ms_per_token: seconds * 1e3,
            tokens_per_s: 1.0 / seconds,
            wall_ms_per_token: median(&mut wall) * 1e3,
            weight_bytes,
            kv_bytes,
            roofline_ms: roofline_s * 1e3,
            roofline_ratio: roofline_s / seconds,
        });
    }

    // prefill
    let mut prefill = Vec::new();
    for &n in &options.prompts {
        let prompt: Vec<u32> = (0..n).map(|_| token()).collect();
        let (mut gpu, mut wall) = (Vec::new(), Vec::new());
        for i in 0..options.warmup + options.runs {
            model.clear();
            let start = clock::now();
            forward_greedy(&mut model, &prompt).await?;
            let w = clock::now() - start;
            if i >= options.warmup {
                wall.push(w);
                gpu.push(model.last_gpu_times().map_or(w, |t| t.seconds));
            }
        }
        let seconds = median(&mut gpu);
        prefill.push(PrefillReport {
            prompt_tokens: n,
            ms: seconds * 1e3,
            tokens_per_s: n as f64 / seconds,
            wall_ms: median(&mut wall) * 1e3,
        });
    }

    // where a decode step's time goes
    let headline = |contexts: &[usize], preferred: usize| {
        if contexts.contains(&preferred) {
            preferred
        } else {
            contexts[0]
        }
    };
    let decode_context = headline(&options.contexts, HEADLINE_CONTEXT);
    let profile = if options.profile && ctx.features.timestamp_inside_passes {
        model.set_gpu_timing(GpuTiming::Dispatch)?;
        let profile = profile_decode(&mut model, decode_context, options, &mut token).await?;
        model.set_gpu_timing(GpuTiming::Off)?;
        let pass_ms = decode
            .iter()
            .find(|d| d.context == decode_context)
            .map_or(0.0, |d| d.ms_per_token);
        Some(ProfileReport { pass_ms, ..profile })
    } else {
        None
    };

    // grouped attention alone
    let kernels = Kernels::new(ctx, &[], cfg.rope_neox);
    let shape = |kv: usize, context: usize| AttentionShape {
        n_head: cfg.n_head,
        n_kv_head: kv,
        head_dim: cfg.head_dim,
        context,
    };
    let mut attention = Vec::new();
    for &context in &options.attention_contexts {
        let s = shape(cfg.n_kv_head, context);
        attention.push(time_attention(ctx, &kernels, &timer, s, options, roofline).await?);
    }
    let c = options.gqa_mha_context;
    let gqa = shape(cfg.n_kv_head, c);
    let attention_gqa = time_attention(ctx, &kernels, &timer, gqa, options, roofline).await?;
    let mha = shape(cfg.n_head, c);
    let attention_mha = time_attention(ctx, &kernels, &timer, mha, options, roofline).await?;

    let (weights, kv_cache) = model.gpu_bytes();
    let scratch = model.scratch_bytes();
    let plan = MemoryPlan::new(&cfg, &file, LoadOptions::default().block)?;
    let memory = MemoryReport {
        weights,
        kv_cache,
        scratch,
        total: weights + kv_cache + scratch,
        planned_weights: plan.weights,
        planned_kv_cache: plan.kv_cache,
        planned_scratch: plan.scratch,
        planned_total: plan.total(),
        max_seq: cfg.max_seq,
    };

    let headline_decode = decode
        .iter()
        .find(|d| d.context == decode_context)
        .cloned()
        .ok_or_else(|| BenchError::Options("no decode context ran".into()))?;
    let prefill_prompt_tokens = headline(&options.prompts, HEADLINE_PROMPT);
    let prefill_tokens_per_s = prefill
        .iter()
        .find(|p| p.prompt_tokens == prefill_prompt_tokens)
        .map_or(0.0, |p| p.tokens_per_s);
    let info = &ctx.info;
    Ok(Report {
        adapter: AdapterReport {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            timestamp_queries: ctx.features.timestamp_query,
        },
        timing: if timed && timer.stamps.is_some() {
            "timestamp queries"
        } else {
            "wall clock"
        },
        warmup: options.warmup,
        runs: options.runs,
        model: name.to_string(),
        roofline_gb_per_s: roofline,
        roofline_layout: best.layout,
        decode_context,
        decode_tokens_per_s: headline_decode.tokens_per_s,
        decode_roofline_ratio: headline_decode.roofline_ratio,
        prefill_prompt_tokens,
        prefill_tokens_per_s,
        attention_gqa_over_mha: attention_gqa.ms / attention_mha.ms,
        bandwidth,
        decode,
        prefill,
        attention,
        attention_gqa,
        attention_mha,
        step: step.ok_or_else(|| BenchError::Options("no decode step ran".into()))?,
        memory,
        load_seconds: load,
        profile,
    })
}

/// One forward call that picks the greedy token (4 bytes read back).
async fn forward_greedy(model: &mut Model, tokens: &[u32]) -> Result<(), ForwardError> {
    model.forward(tokens, Output::Argmax).await.map(|_| ())
}

/// Decode steps at `context` with every dispatch timed, summed by kernel label.
async fn profile_decode(
    model: &mut Model,
    context: usize,
    options: &BenchOptions,
    token: &mut impl FnMut() -> u32,
) -> Result<ProfileReport, BenchError> {
    let mut by_kernel: Vec<(String, usize, f64)> = Vec::new();
    let mut total = 0.0;
    for i in 0..options.warmup + options.runs {
        model.fill_for_benchmark(context)?;
        forward_greedy(model, &[token()]).await?;
        if i < options.warmup {
            continue;
        }
        let Some(times) = model.last_gpu_times() else {
            continue;
        };
        for (label, seconds) in &times.dispatches {
            total += seconds;
            match by_kernel.iter_mut().find(|(l, _, _)| l == label) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 += seconds;
                }
                None => by_kernel.push((label.clone(), 1, *seconds)),
            }
        }
    }
    let runs = options.runs as f64;
    let mut kernels: Vec<KernelTime> = by_kernel
        .into_iter()
        .map(|(kernel, count, seconds)| KernelTime {
            kernel,
            dispatches: (count as f64 / runs).round() as usize,
            ms_per_step: seconds / runs * 1e3,
            share: if total > 0.0 { seconds / total } else { 0.0 },
        })
        .collect();
    kernels.sort_by(|a, b| b.ms_per_step.total_cmp(&a.ms_per_step));
    Ok(ProfileReport {
        context,
        dispatch_ms: total / runs * 1e3,
        pass_ms: 0.0,
        kernels,
    })
}

/// The tiny random model `bench --synthetic tiny` runs: SmolLM2's grouping (9
/// query heads over 3 KV heads) in 2 small layers, for tests.
pub fn tiny_synthetic_spec() -> crate::synthetic::SyntheticSpec {
    crate::synthetic::SyntheticSpec {
        context: 4096,
        ..crate::synthetic::SyntheticSpec::tiny(9, 3, crate::quant::WeightFormat::Q4_1)
    }
}
