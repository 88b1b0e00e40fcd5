//! `gqa-webgpu bench` on a tiny random model, with small contexts, probes and
//! one run: what it reports and that its counts are the forward pass's own.
//! Speed figures are never checked here; they belong in BENCHMARKS.md.

mod common;

use std::process::{Command, Output};

use common::gpu;
use gqa_webgpu::bench::tiny_synthetic_spec;
use gqa_webgpu::gguf::GgufFile;
use gqa_webgpu::{ForwardError, GpuTiming, LoadOptions, Model, Output as Want};
use serde_json::Value;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gqa-webgpu"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap()
}

const QUICK: &[&str] = &[
    "bench",
    "--synthetic",
    "tiny",
    "--contexts",
    "0,40",
    "--prompts",
    "9",
    "--attention-contexts",
    "64",
    "--gqa-mha-context",
    "128",
    "--probe-mib",
    "2",
    "--warmup",
    "0",
    "--runs",
    "1",
    "--format",
    "json",
];

fn number(report: &Value, path: &str) -> f64 {
    report
        .pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} is missing or not a number in {report}"))
}

/// The tiny model the bench runs, loaded here as the engine would load it.
fn tiny_model(max_seq: usize) -> Model {
    let bytes = tiny_synthetic_spec().to_gguf();
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    let options = LoadOptions {
        max_seq: Some(max_seq),
        ..LoadOptions::default()
    };
    Model::load(&gpu(), &file, &bytes, &options).unwrap()
}

#[test]
fn bench_json_has_every_figure_and_the_forward_pass_counts() {
    let output = run(QUICK);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();

    for key in [
        "decode_tokens_per_s",
        "decode_roofline_ratio",
        "prefill_tokens_per_s",
        "roofline_gb_per_s",
        "attention_gqa_over_mha",
    ] {
        let value = number(&report, &format!("/{key}"));
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    let adapter = report["adapter"]["name"].as_str().unwrap_or_default();
    assert!(!adapter.is_empty(), "the adapter is named: {report}");
    assert_eq!(report["bandwidth"].as_array().map(Vec::len), Some(2));
    let contexts: Vec<u64> = report["decode"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["context"].as_u64().unwrap())
        .collect();
    assert_eq!(contexts, [0, 40]);
    for d in report["decode"].as_array().unwrap() {
        for key in [
            "ms_per_token",
            "tokens_per_s",
            "roofline_ms",
            "roofline_ratio",
        ] {
            assert!(
                d[key].as_f64().is_some_and(|v| v.is_finite() && v > 0.0),
                "{d}"
            );
        }
    }
    // a longer context reads more of the cache
    assert!(number(&report, "/decode/1/kv_bytes") > number(&report, "/decode/0/kv_bytes"));
    assert_eq!(report["prefill"][0]["prompt_tokens"].as_u64(), Some(9));

    // GQA and MHA at one context: 9 query heads over 3, then over 9 KV heads
    assert_eq!(report["attention_gqa"]["kv_heads"].as_u64(), Some(3));
    assert_eq!(report["attention_mha"]["kv_heads"].as_u64(), Some(9));
    assert_eq!(report["attention_mha"]["query_heads"].as_u64(), Some(9));
    let gqa = number(&report, "/attention_gqa/ms");
    let mha = number(&report, "/attention_mha/ms");
    let ratio = number(&report, "/attention_gqa_over_mha");
    assert!((ratio - gqa / mha).abs() < 1e-9 * ratio.max(1.0));
    // MHA reads three times the K/V bytes of GQA
    assert_eq!(
        report["attention_mha"]["bytes"].as_u64(),
        report["attention_gqa"]["bytes"].as_u64().map(|b| 3 * b)
    );

    // what one decode step costs, as the forward pass itself counts it
    let mut model = tiny_model(41);
    pollster::block_on(model.forward(&[5], Want::Argmax)).unwrap();
    let stats = model.last_step();
    assert_eq!(
        report["step"]["dispatches"].as_u64(),
        Some(stats.dispatches)
    );
    assert_eq!(
        report["step"]["submissions"].as_u64(),
        Some(u64::from(stats.submissions))
    );
    assert_eq!(
        report["step"]["readback_bytes_per_token"].as_u64(),
        Some(stats.readback_bytes)
    );

    // memory by kind matches the plan made from the header alone
    let memory = &report["memory"];
    assert_eq!(memory["weights"], memory["planned_weights"]);
    assert_eq!(memory["kv_cache"], memory["planned_kv_cache"]);
    let (weights, kv) = model.gpu_bytes();
    assert_eq!(memory["weights"].as_u64(), Some(weights));
    assert_eq!(memory["kv_cache"].as_u64(), Some(kv));
    for phase in ["read", "parse", "compile", "upload"] {
        let seconds = number(&report, &format!("/load_seconds/{phase}"));
        assert!(seconds.is_finite() && seconds >= 0.0, "{phase}: {seconds}");
    }

    // the profile, where the adapter has it, covers every dispatch of a step
    if let Some(kernels) = report["profile"]["kernels"].as_array() {
        let timed: u64 = kernels
            .iter()
            .map(|k| k["dispatches"].as_u64().unwrap())
            .sum();
        assert_eq!(timed, stats.dispatches);
        assert!(kernels.iter().any(|k| k["kernel"] == "attention_decode"));
    }
}

#[test]
fn bench_refuses_bad_options_with_one_line() {
    for (flag, value, needle) in [
        ("--runs", "0", "timed run"),
        ("--prompts", "0", "prompt of 0"),
        ("--attention-contexts", "0", "0 keys"),
    ] {
        let mut args: Vec<&str> = QUICK.to_vec();
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = value;
        let output = run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag} {value} was accepted");
        assert!(stderr.contains(needle), "{flag} {value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    let output = run(&["bench"]);
    assert!(
        !output.status.success(),
        "bench without a model was accepted"
    );
}

#[test]
fn filling_for_a_benchmark_sets_the_context_and_refuses_more_than_it_holds() {
    let mut model = tiny_model(16);

    model.fill_for_benchmark(15).unwrap();
    assert_eq!(model.len(), 15);
    pollster::block_on(model.forward(&[1], Want::Argmax)).unwrap();
    assert_eq!(model.len(), 16);

    let refused = model.fill_for_benchmark(17);
    assert!(
        matches!(refused, Err(ForwardError::ContextFull { .. })),
        "{refused:?}"
    );
}

#[test]
fn gpu_timing_of_dispatches_labels_every_dispatch_of_a_step() {
    let mut model = tiny_model(8);
    let ctx = model.context().clone();
    if !ctx.features.timestamp_inside_passes {
        eprintln!("skipped: the adapter cannot write timestamps inside passes");
        return;
    }

    model.set_gpu_timing(GpuTiming::Dispatch).unwrap();
    pollster::block_on(model.forward(&[3], Want::Argmax)).unwrap();

    let times = model.last_gpu_times().unwrap().clone();
    assert_eq!(times.dispatches.len() as u64, model.last_step().dispatches);
    assert_eq!(times.untimed, 0);
    let labels: Vec<&str> = times.dispatches.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels.first(), Some(&"embed Q8_0"));
    assert_eq!(labels.last(), Some(&"argmax"));
    assert!(times
        .dispatches
        .iter()
        .all(|(_, s)| s.is_finite() && *s >= 0.0));

    model.set_gpu_timing(GpuTiming::Pass).unwrap();
    pollster::block_on(model.forward(&[4], Want::Argmax)).unwrap();
    let pass = model.last_gpu_times().unwrap();
    assert!(pass.dispatches.is_empty() && pass.seconds > 0.0, "{pass:?}");
}
