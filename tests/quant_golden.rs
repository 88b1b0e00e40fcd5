//! src/quant.rs against an independent decoder: random blocks of every quantized
//! format, dequantized by gguf-py (tests/golden/quant_blocks.json, made by
//! tests/reference/make_quant_goldens.py).

use gqa_webgpu::quant::{dequantize, WeightFormat};

const GOLDEN: &str = include_str!("golden/quant_blocks.json");

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn random_blocks_dequantize_exactly_as_gguf_py_does() {
    let golden: serde_json::Value = serde_json::from_str(GOLDEN).expect("the golden file");
    let formats = golden["formats"].as_object().expect("formats");
    let quantized = WeightFormat::ALL
        .into_iter()
        .filter(|f| !matches!(f, WeightFormat::F32 | WeightFormat::F16));

    for format in quantized {
        let block = &formats
            .get(format.name())
            .unwrap_or_else(|| panic!("{} missing from the golden file", format.name()));
        let bytes = hex_bytes(block["bytes"].as_str().expect("bytes"));
        let want: Vec<f32> = block["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| v.as_f64().expect("a number") as f32)
            .collect();
        let blocks = bytes.len() / format.block_bytes();
        assert_eq!(want.len(), blocks * format.block_elements(), "{format:?}");

        let mut got = vec![f32::NAN; want.len()];
        dequantize(format, &bytes, &mut got);

        let differ: Vec<String> = got
            .iter()
            .zip(&want)
            .enumerate()
            .filter(|(_, (g, w))| g.to_bits() != w.to_bits() && !(**g == 0.0 && **w == 0.0))
            .take(8)
            .map(|(i, (g, w))| format!("  [{i}] ours {g:e}  gguf-py {w:e}"))
            .collect();
        assert!(differ.is_empty(), "{format:?}:\n{}", differ.join("\n"));
        eprintln!(
            "{format:?}: {} elements of {blocks} blocks match",
            want.len()
        );
    }
}
