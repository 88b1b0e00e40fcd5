//! GPU timestamp queries, for the benchmark and the per-kernel profile. Nothing
//! on the path of ordinary generation uses them.

use std::sync::{Arc, Mutex};

use super::{GpuBuffer, GpuContext, GpuError};

/// The most timestamps one query set holds (wgpu's own cap).
pub const MAX_TIMESTAMPS: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// A query set of timestamps with the buffers that bring them back to the CPU.
#[derive(Clone)]
pub struct Timestamps {
    pub query_set: wgpu::QuerySet,
    resolve: GpuBuffer,
    staging: GpuBuffer,
    capacity: u32,
}

impl Timestamps {
    /// Room for `capacity` timestamps, or `None` when the device cannot write them.
    pub fn new(ctx: &GpuContext, label: &str, capacity: u32) -> Option<Self> {
        if !ctx.features.timestamp_query {
            return None;
        }
        let capacity = capacity.clamp(2, MAX_TIMESTAMPS);
        let bytes = u64::from(capacity) * wgpu::QUERY_SIZE as u64;
        let query_set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some(label),
            ty: wgpu::QueryType::Timestamp,
            count: capacity,
        });
        let resolve = ctx.track(ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("{label} resolve")),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }));
        let staging = ctx.staging(&format!("{label} staging"), bytes);
        Some(Self {
            query_set,
            resolve,
            staging,
            capacity,
        })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Timestamp writes at the start (query 0) and end (query 1) of a pass.
    pub fn pass_writes(&self) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.query_set,
            beginning_of_pass_write_index: Some(0),
            end_of_pass_write_index: Some(1),
        }
    }

    /// Records the copy of the first `count` timestamps to the staging buffer.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder, count: u32) {
        let count = count.min(self.capacity);
        if count == 0 {
            return;
        }
        encoder.resolve_query_set(&self.query_set, 0..count, &self.resolve, 0);
        let bytes = u64::from(count) * wgpu::QUERY_SIZE as u64;
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.staging, 0, bytes);
    }

    /// Waits for the submission that resolved `count` timestamps and returns
    /// them in seconds from an arbitrary start.
    pub async fn read(&self, ctx: &GpuContext, count: u32) -> Result<Vec<f64>, GpuError> {
        let count = count.min(self.capacity);
        if count == 0 {
            return Ok(Vec::new());
        }
        let bytes = u64::from(count) * wgpu::QUERY_SIZE as u64;
        let raw = ctx.read_staging(&self.staging, bytes).await?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&raw);
        let period = f64::from(ctx.queue.get_timestamp_period()) * 1e-9;
        Ok(ticks.iter().map(|&t| t as f64 * period).collect())
    }
}

/// While installed on [`super::kernels::Kernels`], every dispatch is bracketed by
/// two timestamps written inside its pass, and its kernel's label is kept.
pub struct DispatchLog {
    pub timestamps: Timestamps,
    /// The label of each dispatch timed, in order: queries `2i` and `2i + 1`.
    pub labels: Vec<String>,
    /// Dispatches recorded after the query set was full, so left untimed.
    pub untimed: u64,
}

impl DispatchLog {
    pub fn new(timestamps: Timestamps) -> Self {
        Self {
            timestamps,
            labels: Vec::new(),
            untimed: 0,
        }
    }

    /// Queries written so far.
    pub fn queries(&self) -> u32 {
        2 * self.labels.len() as u32
    }

    /// Each timed dispatch's label and duration in seconds, from the timestamps
    /// read back.
    pub fn durations(&self, seconds: &[f64]) -> Vec<(String, f64)> {
        self.labels
            .iter()
            .zip(seconds.chunks_exact(2))
            .map(|(label, pair)| (label.clone(), (pair[1] - pair[0]).max(0.0)))
            .collect()
    }
}

/// The slot shared by every kernel of one set: a log while profiling, else empty.
pub type SharedLog = Arc<Mutex<Option<DispatchLog>>>;
