//! Long and repeated use of one engine: a 2,000-token generation and 50 calls
//! allocate nothing on the GPU, counted by the context's allocation registry and
//! cross-checked with wgpu's own report; an abort leaves nothing behind.

mod common;

use gqa_webgpu::gpu::{GpuContext, MemoryInUse, WgpuMemoryReport};
use gqa_webgpu::sampler::SamplingParams;
use gqa_webgpu::synthetic::SyntheticSpec;
use gqa_webgpu::{Engine, FinishReason, GenerateOptions, Generation, LoadOptions};

/// The registry's count and wgpu's, taken together.
#[derive(Debug, PartialEq)]
struct Snapshot {
    ours: MemoryInUse,
    wgpu: Option<WgpuMemoryReport>,
}

fn snapshot(ctx: &GpuContext) -> Snapshot {
    Snapshot {
        wgpu: ctx.wgpu_memory_report(),
        ours: ctx.memory_in_use(),
    }
}

fn load(ctx: &GpuContext, bytes: &[u8], max_seq: usize) -> Engine {
    let options = LoadOptions {
        max_seq: Some(max_seq),
        ..Default::default()
    };
    Engine::load(ctx, bytes, &options).unwrap()
}

fn run(engine: &mut Engine, prompt: &[u32], options: &GenerateOptions) -> Generation {
    pollster::block_on(engine.generate(prompt, options, |_, _| true)).unwrap()
}

/// Greedy, sampled and top-logits calls in turn, so every output path runs.
fn options(call: usize, max_tokens: usize) -> GenerateOptions {
    let sampling = match call % 3 {
        0 => SamplingParams::default(),
        _ => SamplingParams {
            temperature: 0.8,
            top_k: 20,
            seed: call as u64,
            ..SamplingParams::default()
        },
    };
    GenerateOptions {
        max_tokens,
        sampling,
        top_logits: if call % 3 == 2 { 5 } else { 0 },
        ..Default::default()
    }
}

#[test]
fn a_2000_token_generation_and_50_calls_leave_gpu_memory_flat() {
    let ctx = common::gpu();
    let bytes = SyntheticSpec::tiny_with_tokenizer().to_gguf();
    let empty = snapshot(&ctx);
    let mut engine = load(&ctx, &bytes, 2048);
    let prompt = engine.encode("abc", false);
    // one call of each kind first, so anything made on first use is made
    for call in 0..3 {
        run(&mut engine, &prompt, &options(call, 4));
    }
    let loaded = snapshot(&ctx);
    assert!(loaded.ours.buffers > 0 && loaded.ours.bytes > 0);
    if let Some(wgpu) = loaded.wgpu {
        assert!(
            wgpu.buffers >= loaded.ours.buffers,
            "wgpu reports {} buffers, fewer than the {} the registry counts",
            wgpu.buffers,
            loaded.ours.buffers
        );
        if let Some(bytes) = wgpu.allocated_bytes {
            assert!(
                bytes >= loaded.ours.bytes,
                "{bytes} allocated < {:?}",
                loaded.ours
            );
        }
    }

    let long = GenerateOptions {
        ignore_eos: true,
        ..options(0, 2000)
    };
    let generation = run(&mut engine, &prompt, &long);
    assert_eq!(generation.tokens.len(), 2000);
    assert_eq!(generation.finish_reason, FinishReason::Length);
    assert_eq!(snapshot(&ctx), loaded, "after a 2,000-token generation");

    let texts = [
        "abc",
        "hello there",
        "a longer prompt of several words",
        "x",
    ];
    for call in 0..50 {
        let prompt = engine.encode(texts[call % texts.len()], false);
        run(&mut engine, &prompt, &options(call, 8));
    }
    assert_eq!(snapshot(&ctx), loaded, "after 50 calls");

    // the registry is not blind: what the engine held goes when it goes
    // (the allocator's own bytes include its internal blocks, so only counts here)
    drop(engine);
    let dropped = snapshot(&ctx);
    assert_eq!(dropped.ours, empty.ours, "after the engine is dropped");
    assert_eq!(
        dropped.wgpu.map(|w| w.buffers),
        empty.wgpu.map(|w| w.buffers),
        "wgpu's buffers after the engine is dropped"
    );
}

#[test]
fn after_an_abort_the_next_call_equals_a_fresh_engine() {
    let ctx = common::gpu();
    let bytes = SyntheticSpec::tiny_with_tokenizer().to_gguf();
    let mut engine = load(&ctx, &bytes, 256);
    let prompt = engine.encode("hello there", false);
    let options = GenerateOptions {
        ignore_eos: true,
        ..options(1, 24)
    };

    let mut made = 0;
    let stopped = pollster::block_on(engine.generate(&prompt, &options, |_, _| {
        made += 1;
        made < 5
    }))
    .unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Abort);
    assert_eq!(stopped.tokens.len(), 5);
    let after = run(&mut engine, &prompt, &options);

    let fresh = run(&mut load(&ctx, &bytes, 256), &prompt, &options);
    assert_eq!(after.tokens, fresh.tokens);
    assert_eq!(after.tokens.len(), 24);
}

/// The same on a real model file, for the closing figures:
/// `GQA_LONG_USE_MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf cargo test --release
/// --test long_use -- --ignored --nocapture`.
#[test]
#[ignore = "slow: needs a model file named by GQA_LONG_USE_MODEL"]
fn a_real_model_keeps_gpu_memory_flat() {
    let path = std::env::var("GQA_LONG_USE_MODEL").expect("set GQA_LONG_USE_MODEL");
    let tokens: usize = std::env::var("GQA_LONG_USE_TOKENS").map_or(2000, |n| n.parse().unwrap());
    let bytes = std::fs::read(&path).unwrap();
    let ctx = common::gpu();
    let mut engine = load(&ctx, &bytes, 4096);
    drop(bytes);
    let prompt = engine.encode("Once upon a time", false);
    for call in 0..3 {
        run(&mut engine, &prompt, &options(call, 2));
    }
    let loaded = snapshot(&ctx);
    println!("loaded: {loaded:?}");
    let start = std::time::Instant::now();
    let long = GenerateOptions {
        ignore_eos: true,
        ..options(0, tokens)
    };
    let generation = run(&mut engine, &prompt, &long);
    assert_eq!(generation.tokens.len(), tokens);
    let after_long = snapshot(&ctx);
    println!(
        "after {tokens} tokens in {:.0} s: {after_long:?}",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(after_long, loaded);
    for call in 0..50 {
        run(&mut engine, &prompt, &options(call, 2));
    }
    let after_calls = snapshot(&ctx);
    println!("after 50 calls: {after_calls:?}");
    assert_eq!(after_calls, loaded);
}

/// Models the device cannot hold, and variants that cannot be made, are refused
/// from their header before a single buffer is made.
#[test]
fn a_refused_model_allocates_nothing() {
    let bytes = SyntheticSpec::tiny_with_tokenizer().to_gguf();
    let small = common::gpu_with(gqa_webgpu::ContextOptions {
        max_binding_bytes: Some(4096),
    });
    let too_long = LoadOptions {
        max_seq: Some(1 << 22),
        ..Default::default()
    };
    let bad_variant = LoadOptions {
        kv_heads: Some(2), // divides neither way into 9 query heads over 3 KV heads
        ..Default::default()
    };
    for (ctx, options, expected) in [
        (&small, &LoadOptions::default(), "4096-byte limit"),
        (&common::gpu(), &bad_variant, "kv"),
        (&common::gpu(), &too_long, "shorter context"),
    ] {
        let made = ctx.buffers_made();
        let error = match Engine::load(ctx, &bytes, options) {
            Ok(_) => panic!("{options:?} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(error.to_lowercase().contains(expected), "{error}");
        assert_eq!(
            ctx.buffers_made(),
            made,
            "buffers made before refusing: {error}"
        );
        assert_eq!(ctx.memory_in_use(), MemoryInUse::default());
    }
}
