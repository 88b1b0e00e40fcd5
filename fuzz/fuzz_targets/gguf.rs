//! Any byte string given to the GGUF reader, and to everything that reads a parsed header
//! before the GPU is touched, must give a value or an error: never a panic, a hang or an
//! allocation out of proportion to the input.

#![no_main]

use gqa_webgpu::gguf::GgufFile;
use gqa_webgpu::model::{weights, MemoryPlan, ModelConfig};
use gqa_webgpu::tokenizer::Tokenizer;
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
    let _ = Tokenizer::from_gguf(&file);

    // the loader's checks before it allocates anything on the GPU
    let Ok(cfg) = ModelConfig::from_gguf(&file, None) else {
        return;
    };
    let _ = MemoryPlan::new(&cfg, &file, BLOCK);
    let _ = weights::formats(&cfg, &file);
});
