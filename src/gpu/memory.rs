//! The allocation registry: every buffer the engine makes goes through
//! [`GpuContext`](super::GpuContext)'s helpers, which count it while it lives.
//! A long session can then prove that it allocates nothing per call, and the
//! page can show the GPU memory it holds.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Buffers alive and the bytes they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryInUse {
    pub buffers: u64,
    pub bytes: u64,
}

/// Live counts shared by a context and every buffer it made.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    buffers: AtomicU64,
    bytes: AtomicU64,
    /// Buffers ever made, dropped ones included.
    made: AtomicU64,
}

impl Registry {
    pub(crate) fn in_use(&self) -> MemoryInUse {
        MemoryInUse {
            buffers: self.buffers.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    /// Counts `buffer` until the last clone of the returned handle is dropped.
    pub(crate) fn track(self: &Arc<Self>, buffer: wgpu::Buffer) -> GpuBuffer {
        let bytes = buffer.size();
        self.buffers.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.made.fetch_add(1, Ordering::Relaxed);
        GpuBuffer {
            buffer,
            _lease: Arc::new(Lease {
                registry: Arc::clone(self),
                bytes,
            }),
        }
    }
}

/// A buffer counted by its context's registry. It dereferences to the
/// [`wgpu::Buffer`]; clones share one buffer and one count.
#[derive(Clone, Debug)]
pub struct GpuBuffer {
    buffer: wgpu::Buffer,
    _lease: Arc<Lease>,
}

impl Deref for GpuBuffer {
    type Target = wgpu::Buffer;

    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

#[derive(Debug)]
struct Lease {
    registry: Arc<Registry>,
    bytes: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.registry.buffers.fetch_sub(1, Ordering::Relaxed);
        self.registry.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What wgpu itself reports, where the backend gives a report (natively).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WgpuMemoryReport {
    /// Buffers wgpu-core holds for the device (freed ones linger until the
    /// device is polled).
    pub buffers: u64,
    /// Bytes the backend's memory allocator has handed out, when it says.
    pub allocated_bytes: Option<u64>,
}
