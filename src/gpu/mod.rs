//! Everything that touches the GPU API: the context, buffers, and the kernels.

mod context;
pub mod kernels;
pub mod matrix;
mod memory;
pub mod timing;
pub mod uniforms;

pub use context::{ContextOptions, GpuContext, OptionalFeatures};
pub use memory::{GpuBuffer, MemoryInUse, WgpuMemoryReport};

use wgpu::util::DeviceExt;

/// Errors from the GPU and its API.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("this browser does not offer WebGPU (navigator.gpu is missing or has no adapter)")]
    NoWebGpu,
    #[error("no GPU adapter was found: {0}")]
    NoAdapter(String),
    #[error("the GPU adapter refused to open a device: {0}")]
    NoDevice(String),
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),
    #[error("GPU failure: {0}")]
    Failed(String),
}

/// How a kernel binds one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    Uniform,
    Read,
    Write,
}

impl GpuContext {
    /// A storage buffer holding `data`, readable by kernels and copyable.
    pub fn storage_with(&self, label: &str, data: &[u8]) -> GpuBuffer {
        self.track(
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: data,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_DST
                        | wgpu::BufferUsages::COPY_SRC,
                }),
        )
    }

    /// An uninitialised (zeroed) storage buffer of `bytes` bytes.
    pub fn storage(&self, label: &str, bytes: u64) -> GpuBuffer {
        self.track(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            // wgpu refuses zero-sized bindings; a buffer of at least one word keeps
            // degenerate shapes (an empty step) valid.
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// An uninitialised storage buffer that a kernel may also bind as uniform:
    /// decode attention reads the queries that way (shaders/attention_decode.wgsl).
    pub fn storage_uniform(&self, label: &str, bytes: u64) -> GpuBuffer {
        self.track(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(16),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// A uniform buffer holding `data`.
    pub fn uniform_with(&self, label: &str, data: &[u8]) -> GpuBuffer {
        self.track(
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: data,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                }),
        )
    }

    /// A buffer the CPU can map to read results back.
    pub fn staging(&self, label: &str, bytes: u64) -> GpuBuffer {
        self.track(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// Waits for the GPU and returns the first `bytes` bytes of a mapped-readable
    /// staging buffer. Natively this blocks; on the web it yields to the browser.
    pub async fn read_staging(
        &self,
        staging: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<u8>, GpuError> {
        let slice = staging.slice(..bytes);
        let (sender, receiver) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            // The receiver only goes away if the caller stopped waiting.
            let _ = sender.send(result);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let mapped = receiver
            .await
            .map_err(|_| GpuError::Readback("the map request was dropped".into()))
            .and_then(|result| result.map_err(|e| GpuError::Readback(e.to_string())));
        // a lost device fails the map too: its recorded cause says more
        self.check()?;
        mapped?;
        let data = slice
            .get_mapped_range()
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .to_vec();
        staging.unmap();
        self.check()?;
        Ok(data)
    }

    /// Copies `bytes` bytes of `buffer` to a new staging buffer and reads them back.
    /// For tests and rare reads; the forward pass keeps its own staging buffers.
    pub async fn read_buffer(
        &self,
        buffer: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<u8>, GpuError> {
        let staging = self.staging("read-back staging", bytes);
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read-back"),
            });
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes.next_multiple_of(4));
        self.queue.submit([encoder.finish()]);
        self.read_staging(&staging, bytes).await
    }
}
