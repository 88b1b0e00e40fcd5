//! The `gguf` target without the tokenizer: the reader and the model checks that run before
//! the GPU is touched. Building a tokenizer compiles its pre-tokenizer's regexes for each
//! input that has one, which makes `gguf` some 40 times slower; this target explores the
//! header and the model checks at full speed.

#![no_main]

use gqa_webgpu::gguf::GgufFile;
use gqa_webgpu::model::{weights, MemoryPlan, ModelConfig};
use libfuzzer_sys::fuzz_target;

/// The block size `LoadOptions` uses by default; any positive value exercises the plan.
const BLOCK: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(data, data.len() as u64) else {
        return;
    };
    for t in &file.tensors {
        let _ = file.tensor_data(data, t);
    }

    let Ok(cfg) = ModelConfig::from_gguf(&file, None) else {
        return;
    };
    let _ = MemoryPlan::new(&cfg, &file, BLOCK);
    let _ = weights::formats(&cfg, &file);
});
