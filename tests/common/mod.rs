//! Helpers shared by the GPU tests: a device, random inputs, and a checker that
//! reports the first mismatches.
#![allow(dead_code)]

use gqa_webgpu::gpu::{ContextOptions, GpuContext};
use gqa_webgpu::synthetic::Rng;

/// A device on the machine's Vulkan adapter (lavapipe where there is no GPU).
pub fn gpu() -> GpuContext {
    gpu_with(ContextOptions::default())
}

pub fn gpu_with(options: ContextOptions) -> GpuContext {
    let _ = env_logger::builder().is_test(true).try_init();
    pollster::block_on(GpuContext::new(options)).expect("a Vulkan adapter (mesa-vulkan-drivers)")
}

/// `n` values uniform in `[-scale, scale)`.
pub fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-scale, scale)).collect()
}

/// NaN bytes for `n` f32s, so that an element a kernel fails to write shows.
pub fn poison(n: usize) -> Vec<u8> {
    bytemuck::cast_slice(&vec![f32::NAN; n]).to_vec()
}

/// Reads `n` f32 back from a buffer.
pub fn read_f32(ctx: &GpuContext, buffer: &wgpu::Buffer, n: usize) -> Vec<f32> {
    let bytes = pollster::block_on(ctx.read_buffer(buffer, (n * 4) as u64)).expect("read back");
    bytemuck::pod_collect_to_vec(&bytes)
}

/// Records and submits one compute pass.
pub fn run(ctx: &GpuContext, record: impl FnOnce(&mut wgpu::ComputePass)) {
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        record(&mut pass);
    }
    ctx.queue.submit([encoder.finish()]);
}

/// Largest absolute difference, for reports.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Checks `|gpu - cpu| <= atol + rtol * |cpu|` everywhere; on failure prints the
/// first mismatches with both values and the tolerance, then panics.
pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], atol: f32, rtol: f32) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    let mut bad = Vec::new();
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let tol = atol + rtol * c.abs();
        // NaN (a poisoned element left unwritten) must fail too
        if (g - c).abs().is_nan() || (g - c).abs() > tol {
            bad.push(format!(
                "  [{i}] gpu {g:e}  cpu {c:e}  |diff| {:e} > tol {tol:e}",
                (g - c).abs()
            ));
        }
    }
    if !bad.is_empty() {
        let shown: Vec<&String> = bad.iter().take(8).collect();
        let lines: Vec<&str> = shown.iter().map(|s| s.as_str()).collect();
        panic!(
            "{what}: {} of {} elements differ\n{}",
            bad.len(),
            gpu.len(),
            lines.join("\n")
        );
    }
    eprintln!(
        "{what}: max |diff| {:e} over {} elements",
        max_abs_diff(gpu, cpu),
        gpu.len()
    );
}
