//! Every shader parses and validates with naga, without a GPU.

use gqa_webgpu::gpu::kernels::{full_source, PREFIXES, SOURCES};

#[test]
fn every_shader_parses_and_validates_with_naga() {
    let on_disk: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".wgsl"))
        .collect();
    assert_eq!(
        on_disk.len(),
        SOURCES.len(),
        "every file in shaders/ is a kernel: {on_disk:?}"
    );

    for (file, _) in SOURCES {
        let source = full_source(file).unwrap();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{file} does not parse:\n{}", e.emit_to_string(&source)));
        // Only what every WebGPU device has: naga counts `unpack2x16float` as a
        // capability because old GL targets lack it, but WebGPU's core includes it.
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32,
        );
        if let Err(e) = validator.validate(&module) {
            panic!("{file} does not validate:\n{}", e.emit_to_string(&source));
        }
        let entry_points: Vec<&str> = module
            .entry_points
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        if !PREFIXES.contains(file) {
            assert_eq!(
                entry_points,
                ["main"],
                "{file}: one entry point, named main"
            );
        }
    }
}
