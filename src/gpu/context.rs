//! The GPU context: adapter, device and queue, with the adapter's own limits.
//!
//! Natively the context uses Vulkan without a window (lavapipe on machines without
//! a GPU); in the browser it uses WebGPU. Optional features are requested only
//! when the adapter has them; every kernel has a path that needs none of them.

use std::sync::{Arc, Mutex};

use super::memory::Registry;
use super::{GpuBuffer, GpuError, MemoryInUse, WgpuMemoryReport};

/// What to ask of the adapter.
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Caps the bytes one storage binding may hold below the adapter's own limit.
    /// Tests use it to force large tensors to be split across bindings.
    pub max_binding_bytes: Option<u64>,
}

/// The optional features this engine can use when present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionalFeatures {
    pub shader_f16: bool,
    pub subgroups: bool,
    pub timestamp_query: bool,
    /// Timestamps between the dispatches of a pass (native only): the profiler's.
    pub timestamp_inside_passes: bool,
}

/// A device ready for the engine's kernels. Cloning shares the device.
#[derive(Clone)]
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: OptionalFeatures,
    max_binding_bytes: u64,
    /// The first uncaptured GPU error or device loss, as text; generation checks it
    /// after each submission so that a failing device stops with an error instead
    /// of producing wrong tokens.
    failure: Arc<Mutex<Option<String>>>,
    /// Every buffer made through this context's helpers, while it lives.
    registry: Arc<Registry>,
    /// Kept for wgpu's own memory report (natively).
    instance: wgpu::Instance,
}

impl GpuContext {
    /// Finds an adapter and opens a device with the adapter's own limits.
    pub async fn new(options: ContextOptions) -> Result<Self, GpuError> {
        #[cfg(target_arch = "wasm32")]
        if !wgpu::util::is_browser_webgpu_supported().await {
            return Err(GpuError::NoWebGpu);
        }

        let mut instance_desc = wgpu::InstanceDescriptor::new_without_display_handle();
        instance_desc.backends = if cfg!(target_arch = "wasm32") {
            wgpu::Backends::BROWSER_WEBGPU
        } else {
            wgpu::Backends::VULKAN
        };
        let instance = wgpu::Instance::new(instance_desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let available = adapter.features();
        let wanted = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        let required_features = available & wanted;
        let features = OptionalFeatures {
            shader_f16: required_features.contains(wgpu::Features::SHADER_F16),
            subgroups: required_features.contains(wgpu::Features::SUBGROUP),
            timestamp_query: required_features.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamp_inside_passes: required_features
                .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
        };

        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("gqa-webgpu device"),
                required_features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoDevice(e.to_string()))?;

        let failure = Arc::new(Mutex::new(None));
        let on_error = Arc::clone(&failure);
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            let text = describe(&error);
            log::error!("GPU error: {text}");
            record_failure(&on_error, text);
        }));
        let on_lost = Arc::clone(&failure);
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                record_failure(&on_lost, format!("the GPU device was lost: {message}"));
            }
        });

        let adapter_cap = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let max_binding_bytes = match options.max_binding_bytes {
            Some(cap) => cap.min(adapter_cap),
            None => adapter_cap,
        };
        let context = Self {
            device,
            queue,
            info,
            limits,
            features,
            max_binding_bytes,
            failure,
            registry: Arc::default(),
            instance,
        };
        context.log_summary();
        Ok(context)
    }

    /// The most bytes one storage binding may hold: the adapter's limit, or the
    /// smaller cap asked for in [`ContextOptions`].
    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding_bytes
    }

    /// The first GPU error or device loss seen so far, if any.
    pub fn check(&self) -> Result<(), GpuError> {
        match self.failure.lock().map(|f| f.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(text)) => Err(GpuError::Failed(text)),
            Err(_) => Err(GpuError::Failed("the GPU error record was poisoned".into())),
        }
    }

    /// Destroys the device as a driver reset would, recording `why` as the
    /// failure: every later call fails with it. For tests of recovery (the page
    /// offers to load the model again on a fresh device).
    pub fn lose_device(&self, why: &str) {
        record_failure(&self.failure, format!("the GPU device was lost: {why}"));
        self.device.destroy();
    }

    /// Counts `buffer` in this context's allocation registry while it lives.
    pub fn track(&self, buffer: wgpu::Buffer) -> GpuBuffer {
        self.registry.track(buffer)
    }

    /// The buffers made through this context that are still alive, and their bytes.
    pub fn memory_in_use(&self) -> MemoryInUse {
        self.registry.in_use()
    }

    /// Buffers ever made through this context, dropped ones included: a load
    /// refused before allocating leaves it unchanged.
    pub fn buffers_made(&self) -> u64 {
        self.registry.made()
    }

    /// wgpu's own count of the device's buffers and, where the backend's
    /// allocator says, the bytes it has handed out; `None` where wgpu gives no
    /// report (in the browser). Polls the device first so that buffers already
    /// dropped are released.
    pub fn wgpu_memory_report(&self) -> Option<WgpuMemoryReport> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
            let report = self.instance.generate_report()?;
            let allocated_bytes = self
                .device
                .generate_allocator_report()
                .map(|r| r.total_allocated_bytes);
            Some(WgpuMemoryReport {
                buffers: report.hub_report().buffers.num_allocated as u64,
                allocated_bytes,
            })
        }
        #[cfg(target_arch = "wasm32")]
        {
            let _ = &self.instance;
            None
        }
    }

    /// A one-line description of the adapter, for logs and `info()`.
    pub fn adapter_summary(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    fn log_summary(&self) {
        let l = &self.limits;
        log::info!("adapter: {}", self.adapter_summary());
        log::info!(
            "limits: storage binding {} bytes, buffer {} bytes, workgroup storage {} bytes, \
             {} invocations per workgroup, {} storage buffers per stage, \
             {} workgroups per dimension",
            l.max_storage_buffer_binding_size,
            l.max_buffer_size,
            l.max_compute_workgroup_storage_size,
            l.max_compute_invocations_per_workgroup,
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroups_per_dimension,
        );
        log::info!(
            "optional features: shader-f16 {}, subgroups {}, timestamp queries {}",
            self.features.shader_f16,
            self.features.subgroups,
            self.features.timestamp_query,
        );
        if self.max_binding_bytes < l.max_storage_buffer_binding_size {
            log::info!(
                "storage bindings capped at {} bytes",
                self.max_binding_bytes
            );
        }
    }
}

/// Keeps the first failure the device reports: later ones are its consequences.
fn record_failure(slot: &Mutex<Option<String>>, text: String) {
    if let Ok(mut first) = slot.lock() {
        first.get_or_insert(text);
    }
}

/// What the user reads for an error the device reports outside any error scope.
fn describe(error: &wgpu::Error) -> String {
    match error {
        wgpu::Error::OutOfMemory { source } => format!("the GPU ran out of memory ({source})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_is_reported_as_such_and_the_first_failure_is_kept() {
        let slot = Mutex::new(None);
        let oom = wgpu::Error::OutOfMemory {
            source: "Not enough memory left.".into(),
        };
        let invalid = wgpu::Error::Validation {
            source: "a buffer that no longer exists".into(),
            description: "Validation Error".into(),
        };

        record_failure(&slot, describe(&oom));
        record_failure(&slot, describe(&invalid));

        let kept = slot.lock().unwrap().clone();
        assert_eq!(
            kept.as_deref(),
            Some("the GPU ran out of memory (Not enough memory left.)")
        );
        assert_eq!(describe(&invalid), "Validation Error");
    }
}
