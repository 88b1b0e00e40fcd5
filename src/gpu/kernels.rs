//! The compute kernels: one WGSL file each under `shaders/`, compiled into
//! pipelines with explicit bind group layouts.
//!
//! Every kernel binds, at group 0, its buffers in a fixed order: uniforms first,
//! then read-only inputs, the output last. Kernels that read weights also bind one
//! chunk of a matrix at group 1 (`shaders/quant.wgsl`), whose source is prepended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::timing::{DispatchLog, SharedLog, Timestamps};
use super::{GpuBuffer, GpuContext, Slot};
use crate::quant::WeightFormat;

use Slot::{Read, Uniform, Write};

const QUANT: &str = include_str!("../../shaders/quant.wgsl");
const PRODUCT: &str = include_str!("../../shaders/product.wgsl");

/// Every kernel's file name and source, for tests that validate them without a GPU.
pub const SOURCES: &[(&str, &str)] = &[
    ("quant.wgsl", QUANT),
    ("product.wgsl", PRODUCT),
    ("embed.wgsl", include_str!("../../shaders/embed.wgsl")),
    ("matvec.wgsl", include_str!("../../shaders/matvec.wgsl")),
    ("matmul.wgsl", include_str!("../../shaders/matmul.wgsl")),
    ("rmsnorm.wgsl", include_str!("../../shaders/rmsnorm.wgsl")),
    (
        "attention.wgsl",
        include_str!("../../shaders/attention.wgsl"),
    ),
    (
        "attention_decode.wgsl",
        include_str!("../../shaders/attention_decode.wgsl"),
    ),
    (
        "attention_combine.wgsl",
        include_str!("../../shaders/attention_combine.wgsl"),
    ),
    (
        "attention_weights.wgsl",
        include_str!("../../shaders/attention_weights.wgsl"),
    ),
    ("argmax.wgsl", include_str!("../../shaders/argmax.wgsl")),
    ("topk.wgsl", include_str!("../../shaders/topk.wgsl")),
    // the benchmark's read-bandwidth probes (src/bench.rs)
    ("probe_storage.wgsl", PROBE_STORAGE),
    ("probe_texture.wgsl", PROBE_TEXTURE),
];

pub const PROBE_STORAGE: &str = include_str!("../../shaders/probe_storage.wgsl");
pub const PROBE_TEXTURE: &str = include_str!("../../shaders/probe_texture.wgsl");

/// Files prepended to others, with no entry point of their own.
pub const PREFIXES: &[&str] = &["quant.wgsl", "product.wgsl"];

/// The full source a pipeline is compiled from: kernels that read weights come
/// after `quant.wgsl`, and the weight products after `product.wgsl` too.
pub fn full_source(file: &str) -> Option<String> {
    let (_, source) = SOURCES.iter().find(|(name, _)| *name == file)?;
    Some(match file {
        "embed.wgsl" | "product.wgsl" => format!("{QUANT}\n{source}"),
        "matvec.wgsl" | "matmul.wgsl" => format!("{QUANT}\n{PRODUCT}\n{source}"),
        _ => source.to_string(),
    })
}

/// Invocations per workgroup of the element-wise kernels.
pub const WORKGROUP: u32 = 64;
/// The widest x matvec.wgsl reads: its uniform binding of x holds 64 KiB.
pub const MATVEC_MAX_COLS: u32 = 16384;
/// Bytes of that binding; a buffer bound as x must have at least as many.
pub const X_UNIFORM_BYTES: u64 = MATVEC_MAX_COLS as u64 * 4;
/// Rows each invocation of matvec.wgsl serves.
pub const MATVEC_ROWS_PER_INVOCATION: u32 = 4;
/// The most tokens an invocation of matmul.wgsl serves.
pub const MATMUL_MAX_TOKENS: u32 = 32;
/// Limits of attention.wgsl's workgroup memory.
pub const ATTENTION_MAX_HEADS: u32 = 16;
pub const ATTENTION_MAX_Q: u32 = 1024;
/// Limits of attention_decode.wgsl: query heads per workgroup, head size, the
/// query row its uniform binding holds, and scores in workgroup memory.
pub const DECODE_MAX_HEADS: u32 = 8;
pub const DECODE_MAX_DIM: u32 = 256;
pub const DECODE_MAX_Q: u32 = 4096;
const DECODE_SCORES: u32 = 1024;
/// The fewest keys worth splitting decode attention for on a CPU adapter: below
/// it, merging the splits costs more than the idle threads it saves.
const CPU_SPLIT_KEYS: u32 = 1024;
/// The largest head attention_weights.wgsl holds in workgroup memory.
pub const ATTENTION_WEIGHTS_MAX_DIM: u32 = 256;

/// One compiled kernel and the layout of its group-0 bindings.
pub struct Kernel {
    /// The name, with the variant and weight format for kernels that read weights.
    label: String,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    /// Shared by every kernel of one [`Kernels`]: dispatches recorded so far.
    dispatches: Arc<AtomicU64>,
    /// Shared by every kernel of one [`Kernels`]: the profiler's log, if on.
    log: SharedLog,
}

impl Kernel {
    /// A bind group for group 0, binding `buffers` whole, in the kernel's order.
    pub fn bind(
        &self,
        ctx: &GpuContext,
        label: &str,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let whole: Vec<wgpu::BindingResource> =
            buffers.iter().map(|b| b.as_entire_binding()).collect();
        self.bind_resources(ctx, label, whole)
    }

    /// A bind group for group 0 from `resources` in the kernel's order: for
    /// bindings of part of a buffer.
    pub fn bind_resources(
        &self,
        ctx: &GpuContext,
        label: &str,
        resources: Vec<wgpu::BindingResource>,
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .into_iter()
            .enumerate()
            .map(|(i, resource)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource,
            })
            .collect();
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&format!("{} {label}", self.label)),
            layout: &self.layout,
            entries: &entries,
        })
    }

    /// Records one dispatch with the given bind groups (group 0, then group 1).
    pub fn dispatch(&self, pass: &mut wgpu::ComputePass, groups: &[&wgpu::BindGroup], grid: Grid) {
        pass.set_pipeline(&self.pipeline);
        for (i, group) in groups.iter().enumerate() {
            pass.set_bind_group(i as u32, *group, &[]);
        }
        // Profiling only: a poisoned lock would mean a panic elsewhere; skip timing.
        let mut log = self.log.lock().ok();
        let timed = log.as_deref_mut().and_then(Option::as_mut).and_then(|log| {
            let first = log.queries();
            if first + 2 > log.timestamps.capacity() {
                log.untimed += 1;
                return None;
            }
            pass.write_timestamp(&log.timestamps.query_set, first);
            Some((log, first))
        });
        pass.dispatch_workgroups(grid.x, grid.y, 1);
        if let Some((log, first)) = timed {
            pass.write_timestamp(&log.timestamps.query_set, first + 1);
            log.labels.push(self.label.clone());
        }
        self.dispatches.fetch_add(1, Ordering::Relaxed);
    }

    /// The kernel's name, with the weight format where it reads weights.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Decode attention split along the keys, for one head shape.
pub struct DecodeAttention {
    /// attention_decode.wgsl: one workgroup per (KV head's heads, split of keys).
    pub split: Kernel,
    /// attention_decode.wgsl with PREFILL: one workgroup per (KV head's heads,
    /// token of a prompt block); it binds what `split` binds.
    pub prefill: Kernel,
    /// attention_combine.wgsl: merges the splits, one workgroup per query head.
    pub combine: Kernel,
    /// Query heads each workgroup serves.
    pub heads: u32,
    /// Keys per split, at most, until there are `max_splits`.
    pub split_keys: u32,
    /// Splits at most, however long the context.
    pub max_splits: u32,
}

impl DecodeAttention {
    /// Bytes the queries' uniform binding covers (DECODE_MAX_Q floats).
    pub const Q_BINDING_BYTES: u64 = DECODE_MAX_Q as u64 * 4;

    /// Splits that `n_keys` keys take: one per `split_keys` keys, at most
    /// `max_splits`; each takes an equal run of the keys (attention_decode.wgsl),
    /// and attention_combine.wgsl counts them by the same rule.
    pub fn splits(&self, n_keys: u32) -> u32 {
        n_keys
            .div_ceil(self.split_keys)
            .clamp(1, self.max_splits.max(1))
    }

    /// Bytes of the partial results for `n_head` heads of `head_dim` over at most
    /// `max_seq` keys: outputs, then (max, sum) pairs.
    pub fn partial_bytes(&self, n_head: u32, head_dim: u32, max_seq: u32) -> u64 {
        let splits = u64::from(self.splits(max_seq));
        4 * u64::from(n_head) * splits * (u64::from(head_dim) + 2)
    }

    /// Records causal attention for a block of `n_tokens` prompt tokens; `split`
    /// binds as for [`DecodeAttention::encode`].
    pub fn encode_prefill(
        &self,
        pass: &mut wgpu::ComputePass,
        split: &wgpu::BindGroup,
        (group_size, n_kv_head): (u32, u32),
        n_tokens: u32,
    ) {
        let grid = Grid::new(n_kv_head * group_size / self.heads, n_tokens);
        self.prefill.dispatch(pass, &[split], grid);
    }

    /// Records attention for a decode token that sees `n_keys` keys: `split` binds
    /// (step, params, q as uniform, K, V, out, partial, q as storage), `combine`
    /// (step, params, partial, out).
    pub fn encode(
        &self,
        pass: &mut wgpu::ComputePass,
        split: &wgpu::BindGroup,
        combine: &wgpu::BindGroup,
        (group_size, n_kv_head, n_head): (u32, u32, u32),
        n_keys: u32,
    ) {
        let splits = self.splits(n_keys);
        let grid = Grid::new(n_kv_head * group_size / self.heads, splits);
        self.split.dispatch(pass, &[split], grid);
        if splits > 1 {
            self.combine
                .dispatch(pass, &[combine], Grid::new(n_head, 1));
        }
    }
}

/// A dispatch's workgroup counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub x: u32,
    pub y: u32,
}

impl Grid {
    pub fn new(x: u32, y: u32) -> Self {
        Self { x, y }
    }

    /// Enough workgroups for `count` of them in a line, folded into a second
    /// dimension when one would exceed `max_per_dim`. Kernels rebuild the linear
    /// index as `x + y * groups.x` and ignore the surplus.
    pub fn linear(count: u32, max_per_dim: u32) -> Self {
        if count <= max_per_dim {
            Self {
                x: count.max(1),
                y: 1,
            }
        } else {
            Self {
                x: max_per_dim,
                y: count.div_ceil(max_per_dim),
            }
        }
    }
}

/// The kernels of one kind for each weight format the model uses.
pub struct ByFormat(HashMap<WeightFormat, Kernel>);

impl ByFormat {
    pub fn get(&self, format: WeightFormat) -> &Kernel {
        // Kernels are compiled for every format of a model's matrices before any
        // matrix is used, so a miss is a bug in this crate, not bad input.
        &self.0[&format]
    }
}

/// Kernel shapes that suit one adapter better than another, chosen at load
/// from the adapter's type and given to the kernels as pipeline constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelShapes {
    /// Invocations of matvec.wgsl that share one row's blocks (8 or 1).
    pub matvec_lanes: u32,
    /// Invocations per workgroup of matvec.wgsl (at most 64).
    pub matvec_workgroup: u32,
    /// Tokens each invocation of matmul.wgsl serves (at most
    /// [`MATMUL_MAX_TOKENS`]).
    pub matmul_tokens: u32,
    /// Rows each invocation of matmul.wgsl serves: 4 or 8.
    pub matmul_rows: u32,
    /// Keys a workgroup of decode attention takes (attention_decode.wgsl), at
    /// most, until the splits fill the adapter's threads.
    pub decode_split_keys: u32,
    /// Threads that run workgroups side by side on a CPU adapter (the host's
    /// cores); 0 on a GPU, whose splits are not capped.
    pub cpu_threads: u32,
}

impl KernelShapes {
    /// What suits an adapter of this type.
    ///
    /// A GPU runs thousands of invocations side by side: matvec gives each row 8
    /// of them, reading neighbouring blocks so that loads coalesce; matmul keeps
    /// 8 tokens of sums an invocation, few registers; and decode
    /// attention splits long contexts every 256 keys into many workgroups whose
    /// partial results attention_combine.wgsl merges (flash-decoding).
    ///
    /// A CPU adapter (lavapipe, SwiftShader) runs a few threads, each executing
    /// one workgroup's invocations as SIMD lanes. There matvec gives each row one
    /// invocation, which walks the row's blocks in a loop every lane takes in step,
    /// so x is read at the same place across lanes and no partial sums meet in
    /// workgroup memory, in workgroups of 16 invocations (64 rows), so that even
    /// a KV projection of 192 rows gives every thread work (lavapipe, SmolLM2-135M
    /// decode at context 0, 7 runs each, twice: 65.7 and 67.1 ms a token at 16,
    /// 74.4 and 85.6 at 8, 71.9 and 67.2 at 32, 85.8 and 87.6 at 64). Matmul
    /// reuses each dequantized block for 32 tokens (prefill of 64 tokens on
    /// lavapipe: 27.5 tokens/s at 8, 38.5 at 16, 44.7 at 32) and each loaded
    /// activation for 8 rows (prefill of 128 tokens: 64.6 and 67.1 tokens/s
    /// against 50.4 and 46.5 at 4 rows). Decode attention splits a context
    /// only from [`CPU_SPLIT_KEYS`] keys, into as many splits as keep the
    /// threads equally busy ([`KernelShapes::decode_max_splits`]): merging them
    /// costs a dispatch, and many splits cost more than they save (lavapipe,
    /// SmolLM2-135M at 2,048 keys: 9.8 ms in 8 splits against 2.4 unsplit),
    /// while 2 took it from 3.3 to 2.5 ms, and at 8,192 keys from 13.0 to 9.3.
    pub fn for_adapter(device_type: wgpu::DeviceType) -> Self {
        match device_type {
            wgpu::DeviceType::Cpu => Self {
                matvec_lanes: 1,
                matvec_workgroup: 16,
                matmul_tokens: 32,
                matmul_rows: 8,
                decode_split_keys: CPU_SPLIT_KEYS,
                cpu_threads: host_threads(),
            },
            _ => Self {
                matvec_lanes: 8,
                matvec_workgroup: 64,
                matmul_tokens: 8,
                matmul_rows: 4,
                decode_split_keys: 256,
                cpu_threads: 0,
            },
        }
    }

    /// The most splits decode attention makes of a context when each split
    /// takes `workgroups` workgroups (one per KV head, or per part of a group).
    /// A GPU takes as many as the context gives. A CPU adapter runs the
    /// workgroups on `cpu_threads` threads, each to its end, and a step lasts
    /// as long as the busiest thread: 3 KV heads on 2 threads leave one thread
    /// idle half the time, while 2 splits make 6 shorter workgroups, 3 each.
    /// So the count is the one of 1 ..= 8 that gives the busiest thread the
    /// fewest keys (the fewest splits among equals, each costing a merge).
    pub fn decode_max_splits(&self, workgroups: u32) -> u32 {
        if self.cpu_threads == 0 {
            return u32::MAX;
        }
        let threads = self.cpu_threads;
        // the busiest thread runs ceil(w s / t) workgroups of 1/s of the keys
        let load = |splits: u32| ((workgroups * splits).div_ceil(threads), splits);
        (1..=8)
            .map(load)
            .reduce(|best, next| {
                // compare a / b < c / d as a d < c b
                if next.0 * best.1 < best.0 * next.1 {
                    next
                } else {
                    best
                }
            })
            .map_or(1, |(_, splits)| splits)
    }

    /// Rows of a weight chunk each workgroup of matvec.wgsl serves.
    pub fn matvec_rows(&self) -> u32 {
        self.matvec_workgroup / self.matvec_lanes * MATVEC_ROWS_PER_INVOCATION
    }
}

/// What a weight product does with each sum it finishes (`EPILOGUE` in
/// shaders/product.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// y = W x.
    Store,
    /// y += W x: a projection added to the residual stream in place.
    Add,
    /// y = silu(y) * W x: the up projection over the gate, SwiGLU in the same pass.
    Swiglu,
    /// W stacks the Q, K and V projections: y = RoPE(q), and RoPE(k) and v
    /// written into the layer's KV cache at the step's positions.
    Qkv,
}

impl Epilogue {
    pub const ALL: [Epilogue; 4] = [
        Epilogue::Store,
        Epilogue::Add,
        Epilogue::Swiglu,
        Epilogue::Qkv,
    ];

    /// What a kernel's label adds for this epilogue.
    fn suffix(self) -> &'static str {
        match self {
            Epilogue::Store => "",
            Epilogue::Add => "+add",
            Epilogue::Swiglu => "+swiglu",
            Epilogue::Qkv => "+rope+kv",
        }
    }
}

/// The weight products in every epilogue, for every format of the model.
pub struct Products {
    /// One token (matvec.wgsl), x read as it is.
    matvec: [ByFormat; 4],
    /// One token, x read through RMSNorm (matvec.wgsl with NORM).
    matvec_normed: [ByFormat; 4],
    /// A block of tokens (matmul.wgsl).
    matmul: [ByFormat; 4],
}

impl Products {
    /// The matvec of `epilogue`, `normed` or not.
    pub fn matvec(&self, epilogue: Epilogue, normed: bool) -> &ByFormat {
        let by_epilogue = if normed {
            &self.matvec_normed
        } else {
            &self.matvec
        };
        &by_epilogue[epilogue as usize]
    }

    /// The matmul of `epilogue`.
    pub fn matmul(&self, epilogue: Epilogue) -> &ByFormat {
        &self.matmul[epilogue as usize]
    }
}

/// What the QKV epilogue writes besides the queries, and the table it rotates by.
#[derive(Clone, Copy)]
pub struct QkvCache<'a> {
    /// (cos, sin) of every position and pair of a head (`forward::rope_table`).
    pub rope_table: &'a wgpu::Buffer,
    /// The layer's K and V caches, `[n_kv_head, max_seq, head_dim]` f32 each.
    pub k: &'a wgpu::Buffer,
    pub v: &'a wgpu::Buffer,
}

/// Every pipeline the forward pass needs.
pub struct Kernels {
    pub embed: ByFormat,
    pub products: Products,
    pub rmsnorm: Kernel,
    pub attention: Kernel,
    pub argmax: Kernel,
    pub topk: Kernel,
    /// Group 1 of the weight-reading kernels: a chunk's uniform and its words.
    pub weight_layout: wgpu::BindGroupLayout,
    /// Group 0 of matvec.wgsl and matmul.wgsl (see [`Kernels::bind_product`]).
    product_layout: wgpu::BindGroupLayout,
    /// What the products that write no cache bind in its place.
    unused_cache: [GpuBuffer; 2],
    max_per_dim: u32,
    shapes: KernelShapes,
    dispatches: Arc<AtomicU64>,
    log: SharedLog,
}

impl Kernels {
    /// Compiles the kernels, with weight-reading ones for each of `formats`, in
    /// the shapes that suit the adapter. `neox` chooses the half-split rotation
    /// of RoPE over adjacent pairs.
    pub fn new(ctx: &GpuContext, formats: &[WeightFormat], neox: bool) -> Self {
        let shapes = KernelShapes::for_adapter(ctx.info.device_type);
        log::info!(
            "kernel shapes for a {:?} adapter: {shapes:?}",
            ctx.info.device_type
        );
        Self::with_shapes(ctx, formats, neox, shapes)
    }

    /// [`Kernels::new`] in the given shapes, whatever the adapter.
    pub fn with_shapes(
        ctx: &GpuContext,
        formats: &[WeightFormat],
        neox: bool,
        shapes: KernelShapes,
    ) -> Self {
        let mut builder = Builder {
            ctx,
            layouts: HashMap::new(),
            dispatches: Arc::default(),
            log: Arc::default(),
        };
        let weight_layout = builder.layout(&[Uniform, Read, Read]);
        // a matvec workgroup holds whole rows of lanes, and at most 64 invocations
        let lanes_per_row = shapes.matvec_lanes.clamp(1, WORKGROUP);
        let shapes = KernelShapes {
            matvec_lanes: lanes_per_row,
            matvec_workgroup: shapes.matvec_workgroup.clamp(lanes_per_row, WORKGROUP)
                / lanes_per_row
                * lanes_per_row,
            matmul_tokens: shapes.matmul_tokens.clamp(1, MATMUL_MAX_TOKENS),
            matmul_rows: if shapes.matmul_rows > 4 { 8 } else { 4 },
            ..shapes
        };
        let lanes = f64::from(shapes.matvec_lanes);
        let matvec_workgroup = f64::from(shapes.matvec_workgroup);
        let tokens = f64::from(shapes.matmul_tokens);
        let rows = f64::from(shapes.matmul_rows);
        let by_format = |builder: &mut Builder,
                         name: &str,
                         file: &str,
                         slots: &[Slot],
                         extra: &[(&str, f64)]| {
            let map = formats
                .iter()
                .map(|&f| {
                    let mut constants = vec![("WEIGHT_FORMAT", f as u32 as f64)];
                    constants.extend_from_slice(extra);
                    let label = format!("{name} {}", f.name());
                    let kernel =
                        builder.kernel(&label, file, slots, Some(&weight_layout), &constants);
                    (f, kernel)
                })
                .collect();
            ByFormat(map)
        };
        let embed = by_format(
            &mut builder,
            "embed",
            "embed.wgsl",
            &[Uniform, Read, Write],
            &[],
        );
        // (step, params, x, y, x's first row as uniform, RMSNorm's weights, RoPE
        // table, K cache, V cache): one layout for matvec and matmul
        // (shaders/product.wgsl)
        let weight_product = [
            Uniform, Uniform, Read, Write, Uniform, Read, Read, Write, Write,
        ];
        let product_layout = builder.layout(&weight_product);
        let neox = ("NEOX", if neox { 1.0 } else { 0.0 });
        let mut product = |file: &str, name: &str, epilogue: Epilogue, extra: &[(&str, f64)]| {
            let mut constants = vec![("EPILOGUE", epilogue as u32 as f64), neox];
            constants.extend_from_slice(extra);
            let name = format!("{name}{}", epilogue.suffix());
            by_format(&mut builder, &name, file, &weight_product, &constants)
        };
        let lanes = [("LANES", lanes), ("WORKGROUP", matvec_workgroup)];
        let products = Products {
            matvec: Epilogue::ALL.map(|e| product("matvec.wgsl", "matvec", e, &lanes)),
            matvec_normed: Epilogue::ALL.map(|e| {
                let constants = [lanes[0], lanes[1], ("NORM", 1.0)];
                product("matvec.wgsl", "rmsnorm+matvec", e, &constants)
            }),
            matmul: Epilogue::ALL.map(|e| {
                product(
                    "matmul.wgsl",
                    "matmul",
                    e,
                    &[("ROWS", rows), ("TOKENS", tokens)],
                )
            }),
        };
        Self {
            embed,
            products,
            rmsnorm: builder.kernel(
                "rmsnorm",
                "rmsnorm.wgsl",
                &[Uniform, Uniform, Read, Read, Write],
                None,
                &[],
            ),
            attention: builder.kernel(
                "attention",
                "attention.wgsl",
                &[Uniform, Uniform, Read, Read, Read, Write],
                None,
                &[],
            ),
            argmax: builder.kernel("argmax", "argmax.wgsl", &[Uniform, Read, Write], None, &[]),
            topk: builder.kernel("topk", "topk.wgsl", &[Uniform, Read, Write], None, &[]),
            weight_layout: weight_layout.clone(),
            product_layout,
            unused_cache: [
                ctx.storage("unused K cache binding", 16),
                ctx.storage("unused V cache binding", 16),
            ],
            max_per_dim: ctx.limits.max_compute_workgroups_per_dimension,
            shapes,
            dispatches: builder.dispatches,
            log: builder.log,
        }
    }

    /// Starts timing every dispatch recorded from now on, inside its pass, into
    /// `timestamps` (the device needs `TIMESTAMP_QUERY_INSIDE_PASSES`).
    /// For profiling: ordinary runs never call it.
    pub fn start_dispatch_log(&self, timestamps: Timestamps) {
        if let Ok(mut slot) = self.log.lock() {
            *slot = Some(DispatchLog::new(timestamps));
        }
    }

    /// Stops timing dispatches and returns what was logged.
    pub fn take_dispatch_log(&self) -> Option<DispatchLog> {
        self.log.lock().ok().and_then(|mut slot| slot.take())
    }

    /// Dispatches recorded by these kernels since they were compiled.
    pub fn dispatch_count(&self) -> u64 {
        self.dispatches.load(Ordering::Relaxed)
    }

    /// Compiles attention_weights.wgsl, which only the attention explainer uses: it
    /// is built on the first request, so a model that never shows its attention
    /// compiles nothing more. Its dispatches count with the others.
    pub fn attention_weights(&self, ctx: &GpuContext) -> Kernel {
        let mut builder = Builder {
            ctx,
            layouts: HashMap::new(),
            dispatches: Arc::clone(&self.dispatches),
            log: Arc::clone(&self.log),
        };
        builder.kernel(
            "attention_weights",
            "attention_weights.wgsl",
            &[Uniform, Uniform, Read, Read, Write],
            None,
            &[],
        )
    }

    /// A group-0 bind group of the weight products: `x -> y` with `params` (a
    /// `Product` uniform). `x` needs UNIFORM usage and [`X_UNIFORM_BYTES`] bytes
    /// ([`GpuContext::storage_uniform`]): matvec.wgsl reads its first token row
    /// through a uniform binding, matmul.wgsl every row as storage. `norm` is
    /// RMSNorm's weights for the normed matvec, and `cache` what the QKV
    /// epilogue writes besides y; a product without them binds placeholders
    /// there, never read or written.
    pub fn bind_product(
        &self,
        ctx: &GpuContext,
        label: &str,
        [step, params, x, y]: [&wgpu::Buffer; 4],
        norm: Option<&wgpu::Buffer>,
        cache: Option<QkvCache>,
    ) -> wgpu::BindGroup {
        let [unused_k, unused_v] = &self.unused_cache;
        let cache = cache.unwrap_or(QkvCache {
            rope_table: x,
            k: unused_k,
            v: unused_v,
        });
        let x_row = wgpu::BufferBinding {
            buffer: x,
            offset: 0,
            size: wgpu::BufferSize::new(X_UNIFORM_BYTES),
        };
        let resources = [
            step.as_entire_binding(),
            params.as_entire_binding(),
            x.as_entire_binding(),
            y.as_entire_binding(),
            wgpu::BindingResource::Buffer(x_row),
            norm.unwrap_or(x).as_entire_binding(),
            cache.rope_table.as_entire_binding(),
            cache.k.as_entire_binding(),
            cache.v.as_entire_binding(),
        ];
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .into_iter()
            .enumerate()
            .map(|(i, resource)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource,
            })
            .collect();
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&format!("product {label}")),
            layout: &self.product_layout,
            entries: &entries,
        })
    }

    /// Compiles decode attention for query heads of `head_dim` in groups of
    /// `group_size` (attention_decode.wgsl and attention_combine.wgsl), or None
    /// where that shape does not fit them; prefill's kernel then serves decode too.
    /// Splits as [`KernelShapes::decode_split_keys`] and
    /// [`KernelShapes::decode_max_splits`] say.
    pub fn decode_attention(
        &self,
        ctx: &GpuContext,
        group_size: u32,
        head_dim: u32,
        n_head: u32,
    ) -> Option<DecodeAttention> {
        let heads = Self::decode_heads(group_size)?;
        let max_splits = self.shapes.decode_max_splits(n_head / heads);
        let split_keys = self.shapes.decode_split_keys;
        self.decode_attention_split(ctx, group_size, head_dim, n_head, (split_keys, max_splits))
    }

    /// Query heads a workgroup of decode attention serves: the largest divisor
    /// of the group that fits.
    fn decode_heads(group_size: u32) -> Option<u32> {
        (1..=DECODE_MAX_HEADS.min(group_size))
            .rev()
            .find(|h| group_size % h == 0)
    }

    /// [`Kernels::decode_attention`] with `split_keys` keys per split, at most
    /// `max_splits` splits.
    pub fn decode_attention_split(
        &self,
        ctx: &GpuContext,
        group_size: u32,
        head_dim: u32,
        n_head: u32,
        (split_keys, max_splits): (u32, u32),
    ) -> Option<DecodeAttention> {
        let fits = head_dim % 4 == 0 && head_dim <= DECODE_MAX_DIM;
        if !fits || n_head * head_dim > DECODE_MAX_Q || split_keys == 0 || max_splits == 0 {
            return None;
        }
        let heads = Self::decode_heads(group_size)?;
        // Keys per tile: as many scores as workgroup memory holds, at most 256.
        let tile = (DECODE_SCORES / heads).min(256).next_power_of_two();
        let tile = if tile * heads > DECODE_SCORES {
            tile / 2
        } else {
            tile
        };
        let mut builder = Builder {
            ctx,
            layouts: HashMap::new(),
            dispatches: Arc::clone(&self.dispatches),
            log: Arc::clone(&self.log),
        };
        let constants = [
            ("HEADS", f64::from(heads)),
            ("HEAD_DIM", f64::from(head_dim)),
            ("TILE", f64::from(tile)),
        ];
        let slots = [Uniform, Uniform, Uniform, Read, Read, Write, Write, Read];
        let split = builder.kernel(
            "attention_decode",
            "attention_decode.wgsl",
            &slots,
            None,
            &constants,
        );
        let prefill_constants: Vec<(&str, f64)> = constants
            .iter()
            .copied()
            .chain([("PREFILL", 1.0)])
            .collect();
        let prefill = builder.kernel(
            "attention_prefill",
            "attention_decode.wgsl",
            &slots,
            None,
            &prefill_constants,
        );
        let combine = builder.kernel(
            "attention_combine",
            "attention_combine.wgsl",
            &[Uniform, Uniform, Read, Write],
            None,
            &[
                ("HEAD_DIM", f64::from(head_dim)),
                ("SPLIT_KEYS", f64::from(split_keys)),
                ("MAX_SPLITS", f64::from(max_splits)),
            ],
        );
        log::info!(
            "decode attention: {heads} query heads per workgroup, a split per {split_keys} \
             keys up to {max_splits} splits, {tile} keys per tile"
        );
        Some(DecodeAttention {
            split,
            prefill,
            combine,
            heads,
            split_keys,
            max_splits,
        })
    }

    /// Workgroups for `invocations` invocations of a 64-wide element-wise kernel.
    pub fn elementwise_grid(&self, invocations: u32) -> Grid {
        Grid::linear(invocations.div_ceil(WORKGROUP), self.max_per_dim)
    }

    /// The shapes the kernels were compiled in.
    pub fn shapes(&self) -> KernelShapes {
        self.shapes
    }

    /// Workgroups of matvec.wgsl for a chunk of `rows` rows.
    pub fn matvec_grid(&self, rows: u32) -> Grid {
        Grid::linear(rows.div_ceil(self.shapes.matvec_rows()), self.max_per_dim)
    }

    /// Workgroups of matmul.wgsl for a chunk of `rows` rows and `tokens` tokens.
    pub fn matmul_grid(&self, rows: u32, tokens: u32) -> Grid {
        Grid::new(
            rows.div_ceil(self.shapes.matmul_rows * WORKGROUP),
            tokens.div_ceil(self.shapes.matmul_tokens),
        )
    }

    /// The attention kernel's split of a group of `group_size` query heads of
    /// `head_dim` each across workgroups: (heads per workgroup, workgroups per
    /// KV head). Each workgroup holds its heads' queries and outputs in
    /// workgroup memory, which bounds how many it can serve.
    pub fn attention_split(group_size: u32, head_dim: u32) -> Option<(u32, u32)> {
        (1..=group_size)
            .filter(|splits| group_size % splits == 0)
            .map(|splits| (group_size / splits, splits))
            .find(|&(heads, _)| heads <= ATTENTION_MAX_HEADS && heads * head_dim <= ATTENTION_MAX_Q)
    }
}

struct Builder<'a> {
    ctx: &'a GpuContext,
    layouts: HashMap<Vec<Slot>, wgpu::BindGroupLayout>,
    dispatches: Arc<AtomicU64>,
    log: SharedLog,
}

impl Builder<'_> {
    /// The bind group layout for a list of slots; kernels with the same slots
    /// share one layout object, so their bind groups are interchangeable.
    fn layout(&mut self, slots: &[Slot]) -> wgpu::BindGroupLayout {
        let ctx = self.ctx;
        self.layouts
            .entry(slots.to_vec())
            .or_insert_with(|| {
                let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
                    .iter()
                    .enumerate()
                    .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                        binding: i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: match slot {
                                Uniform => wgpu::BufferBindingType::Uniform,
                                Read => wgpu::BufferBindingType::Storage { read_only: true },
                                Write => wgpu::BufferBindingType::Storage { read_only: false },
                            },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    })
                    .collect();
                let label = format!("layout {slots:?}");
                ctx.device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some(&label),
                        entries: &entries,
                    })
            })
            .clone()
    }

    fn kernel(
        &mut self,
        name: &str,
        file: &str,
        slots: &[Slot],
        weights: Option<&wgpu::BindGroupLayout>,
        constants: &[(&str, f64)],
    ) -> Kernel {
        let device = &self.ctx.device;
        let layout = self.layout(slots);
        // The sources are part of the crate, so a missing file is a build bug.
        let source = full_source(file).unwrap_or_default();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(file),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let groups: Vec<Option<&wgpu::BindGroupLayout>> = match weights {
            Some(w) => vec![Some(&layout), Some(w)],
            None => vec![Some(&layout)],
        };
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(name),
            bind_group_layouts: &groups,
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        Kernel {
            label: name.to_string(),
            pipeline,
            layout,
            dispatches: Arc::clone(&self.dispatches),
            log: Arc::clone(&self.log),
        }
    }
}

/// Threads the host runs a CPU adapter's workgroups on: its cores, as lavapipe
/// and SwiftShader start one thread per core; 1 where the host does not say.
#[cfg(not(target_arch = "wasm32"))]
fn host_threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// [`host_threads`] in a browser, from `navigator.hardwareConcurrency` (in a
/// page and in a worker alike).
#[cfg(target_arch = "wasm32")]
fn host_threads() -> u32 {
    let navigator = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).ok();
    navigator
        .and_then(|n| js_sys::Reflect::get(&n, &"hardwareConcurrency".into()).ok())
        .and_then(|cores| cores.as_f64())
        .map_or(1, |cores| (cores as u32).max(1))
}
