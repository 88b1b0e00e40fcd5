//! The WebAssembly boundary: the engine as a JS class (`WasmEngine`), and the
//! header inspection that lets a page refuse a model before downloading it.
//! Errors become JS `Error`s here, and only here.
//!
//! A call holds the engine's `RefCell` borrow across its awaits on purpose: the
//! borrow is what makes a second call on the same engine fail as busy instead of
//! interleaving with the first (gqa-host.js queues calls, so it never happens
//! through gqa.js).
#![allow(clippy::await_holding_refcell_ref)]

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::bench::{self, BenchOptions};
use crate::chat::Message;
use crate::compare::{self, CompareOptions, Stage};
use crate::forward::LoadPhase;
use crate::gguf::{GgufError, GgufFile};
use crate::model::variants::with_kv_heads;
use crate::model::{MemoryPlan, ModelConfig};
use crate::perplexity::{self, ChunkDone, PerplexityOptions};
use crate::sampler::SamplingParams;
use crate::synthetic::SyntheticSpec;
use crate::{
    AttentionStep, ContextOptions, Engine, EngineError, ForwardError, GenerateOptions, Generation,
    GpuContext, LoadOptions,
};

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
    // a second module instance in the same page finds the logger set: harmless
    let _ = console_log::init_with_level(log::Level::Info);
}

/// `generate` and `chat` options as JS passes them; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct JsOptions {
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    seed: Option<f64>,
    ignore_eos: bool,
    /// Capture each step's attention weights for the `on_attention` callback.
    attention: Option<bool>,
}

impl JsOptions {
    fn to_options(&self) -> GenerateOptions {
        let d = SamplingParams::default();
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repetition_penalty.unwrap_or(d.repeat_penalty),
            // JS numbers: integers up to 2^53 keep their value
            seed: self.seed.map_or(d.seed, |s| s as u64),
            ..d
        };
        let max_tokens = self
            .max_tokens
            .unwrap_or(GenerateOptions::default().max_tokens);
        GenerateOptions {
            max_tokens,
            sampling,
            top_logits: 0,
            ignore_eos: self.ignore_eos,
            attention: self.attention.unwrap_or(false),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsStats {
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsGeneration {
    tokens: Vec<u32>,
    text: String,
    finish_reason: &'static str,
    prompt_tokens: Vec<u32>,
    stats: JsStats,
}

impl From<Generation> for JsGeneration {
    fn from(g: Generation) -> Self {
        Self {
            tokens: g.tokens,
            text: g.text,
            finish_reason: g.finish_reason.as_str(),
            prompt_tokens: g.prompt_tokens,
            stats: JsStats {
                prefill_tokens_per_s: g.prefill_tokens_per_s,
                decode_tokens_per_s: g.decode_tokens_per_s,
            },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsModel {
    arch: String,
    n_layer: usize,
    n_embd: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    n_ff: usize,
    vocab: usize,
    max_seq: usize,
}

impl From<&ModelConfig> for JsModel {
    fn from(c: &ModelConfig) -> Self {
        Self {
            arch: c.arch.clone(),
            n_layer: c.n_layer,
            n_embd: c.n_embd,
            n_head: c.n_head,
            n_kv_head: c.n_kv_head,
            head_dim: c.head_dim,
            n_ff: c.n_ff,
            vocab: c.vocab,
            max_seq: c.max_seq,
        }
    }
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    let serializer = serde_wasm_bindgen::Serializer::json_compatible();
    value
        .serialize(&serializer)
        .map_err(|e| JsError::new(&e.to_string()))
}

fn error(message: &str) -> JsValue {
    JsError::new(message).into()
}

struct Loaded {
    ctx: GpuContext,
    engine: Engine,
}

/// A model loaded onto this page's GPU.
#[wasm_bindgen]
pub struct WasmEngine {
    inner: Rc<RefCell<Loaded>>,
}

#[wasm_bindgen]
impl WasmEngine {
    /// Loads a model from the whole GGUF file. `on_progress(phase, loaded,
    /// total)` is called with phase 'parse', 'compile' and 'upload'.
    ///
    /// `kv_heads` runs the model with another number of KV heads (see
    /// [`crate::model::variants`]); `None` keeps the file's.
    pub async fn load(
        bytes: js_sys::Uint8Array,
        max_context: Option<u32>,
        kv_heads: Option<u32>,
        on_progress: js_sys::Function,
    ) -> Result<WasmEngine, JsError> {
        let report = |phase: &str, done: f64, total: f64| {
            // a failing progress callback must not stop the load
            let _ = on_progress.call3(&JsValue::NULL, &phase.into(), &done.into(), &total.into());
        };
        report("parse", 0.0, 1.0);
        let bytes = bytes.to_vec();
        let ctx = GpuContext::new(ContextOptions::default()).await?;
        report("parse", 1.0, 1.0);
        let options = LoadOptions {
            max_seq: max_context.map(|n| n as usize),
            kv_heads: kv_heads.map(|n| n as usize),
            ..Default::default()
        };
        let engine =
            Engine::load_with_progress(&ctx, &bytes, &options, &mut |phase, done, total| {
                let phase = match phase {
                    LoadPhase::Compile => "compile",
                    LoadPhase::Upload => "upload",
                };
                report(phase, done as f64, total as f64);
            })?;
        Ok(WasmEngine {
            inner: Rc::new(RefCell::new(Loaded { ctx, engine })),
        })
    }

    /// Generates from raw text. Resolves to `{tokens, text, finishReason,
    /// promptTokens, stats}`; `on_token(id, text)` returning false stops it. With
    /// the option `attention: true`, `on_attention(step)` gets each step's weights
    /// before the token they chose (see `attention_event`).
    pub fn generate(
        &self,
        prompt: String,
        options: JsValue,
        on_token: js_sys::Function,
        on_attention: Option<js_sys::Function>,
    ) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        wasm_bindgen_futures::future_to_promise(async move {
            let mut loaded = inner.try_borrow_mut().map_err(|_| busy())?;
            let ids = loaded.engine.encode(&prompt, false);
            run(&mut loaded.engine, &ids, options, on_token, on_attention).await
        })
    }

    /// Applies the model's chat template to `[{role, content}]` and generates;
    /// the KV cache of the shared beginning of the conversation is reused.
    pub fn chat(
        &self,
        messages: JsValue,
        options: JsValue,
        on_token: js_sys::Function,
        on_attention: Option<js_sys::Function>,
    ) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        wasm_bindgen_futures::future_to_promise(async move {
            let messages: Vec<Message> = serde_wasm_bindgen::from_value(messages)
                .map_err(|e| error(&format!("messages must be [{{role, content}}]: {e}")))?;
            let mut loaded = inner.try_borrow_mut().map_err(|_| busy())?;
            let text = loaded
                .engine
                .chat_prompt(&messages)
                .map_err(|e| error(&e.to_string()))?;
            let ids = loaded.engine.encode(&text, true);
            run(&mut loaded.engine, &ids, options, on_token, on_attention).await
        })
    }

    /// The perplexity of `text` as `gqa-webgpu perplexity` measures it. Options:
    /// `{context, chunks}` (default 512 tokens a chunk, every whole chunk);
    /// `on_progress(done, chunks, perplexitySoFar)` after each chunk. Resolves to
    /// `{perplexity, chunks, tokensScored, context, kvHeads}`. The chunks run
    /// through the engine's KV cache, so the conversation is forgotten.
    pub fn perplexity(
        &self,
        text: String,
        options: JsValue,
        on_progress: Option<js_sys::Function>,
    ) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        wasm_bindgen_futures::future_to_promise(async move {
            let options: JsPerplexityOptions =
                from_js_options(options, "perplexity options").map_err(|m| error(&m))?;
            let mut loaded = inner.try_borrow_mut().map_err(|_| busy())?;
            let context = options.context.unwrap_or(perplexity::DEFAULT_CONTEXT);
            let mut report = |c: ChunkDone| {
                if let Some(f) = &on_progress {
                    let _ = f.call3(
                        &JsValue::NULL,
                        &(c.done as u32).into(),
                        &(c.chunks as u32).into(),
                        &c.perplexity.into(),
                    );
                }
            };
            let result = loaded
                .engine
                .perplexity(&text, context, options.chunks, &mut report)
                .await
                .map_err(|e| error(&e.to_string()))?;
            let kv_heads = loaded.engine.config().n_kv_head;
            to_js(&serde_json::json!({
                "perplexity": result.perplexity,
                "chunks": result.chunks,
                "tokensScored": result.tokens_scored,
                "context": result.context,
                "kvHeads": kv_heads,
            }))
            .map_err(JsValue::from)
        })
    }

    /// The model, the adapter, its limits and the GPU memory in use.
    pub fn info(&self) -> Result<JsValue, JsError> {
        let loaded = self.inner.try_borrow().map_err(|_| JsError::new(BUSY))?;
        let (weights, kv_cache) = loaded.engine.model().gpu_bytes();
        let in_use = loaded.ctx.memory_in_use();
        let info = &loaded.ctx.info;
        to_js(&serde_json::json!({
            "model": JsModel::from(loaded.engine.config()),
            "adapter": {
                "name": info.name,
                "backend": format!("{:?}", info.backend),
                "deviceType": format!("{:?}", info.device_type),
            },
            "limits": {
                "maxStorageBufferBindingSize": loaded.ctx.limits.max_storage_buffer_binding_size,
                "maxBufferSize": loaded.ctx.limits.max_buffer_size,
            },
            "gpuMemory": {
                "weights": weights,
                "kvCache": kv_cache,
                "buffers": in_use.buffers,
                "total": in_use.bytes,
            },
            "contextUsed": loaded.engine.context_used(),
        }))
    }

    /// Destroys this engine's GPU device as a driver reset would: every later
    /// call fails with a `GpuError`. For testing recovery.
    #[wasm_bindgen(js_name = loseDevice)]
    pub fn lose_device(&self) -> Result<(), JsError> {
        let loaded = self.inner.try_borrow().map_err(|_| JsError::new(BUSY))?;
        loaded.ctx.lose_device("destroyed on request (loseDevice)");
        Ok(())
    }

    /// Forgets the conversation.
    pub fn reset(&self) -> Result<(), JsError> {
        let mut loaded = self
            .inner
            .try_borrow_mut()
            .map_err(|_| JsError::new(BUSY))?;
        loaded.engine.reset();
        Ok(())
    }
}

/// A generation error as a JS Error; a failing or lost GPU is named `GpuError`
/// so that pages can offer to load the model again.
fn engine_error(e: &EngineError) -> JsValue {
    let js = js_sys::Error::new(&e.to_string());
    if matches!(e, EngineError::Forward(ForwardError::Gpu(_))) {
        js.set_name("GpuError");
    }
    js.into()
}

const BUSY: &str = "the engine is busy with another request: wait for it to finish";

fn busy() -> JsValue {
    error(BUSY)
}

async fn run(
    engine: &mut Engine,
    prompt: &[u32],
    options: JsValue,
    on_token: js_sys::Function,
    on_attention: Option<js_sys::Function>,
) -> Result<JsValue, JsValue> {
    let options: JsOptions = if options.is_undefined() || options.is_null() {
        JsOptions::default()
    } else {
        serde_wasm_bindgen::from_value(options).map_err(|e| error(&format!("options: {e}")))?
    };
    let config = engine.config().clone();
    let attention_failed: RefCell<Option<JsValue>> = RefCell::new(None);
    let generation = engine
        .generate_observed(
            prompt,
            &options.to_options(),
            |id, text| {
                if attention_failed.borrow().is_some() {
                    return false;
                }
                let keep_going = on_token.call2(&JsValue::NULL, &id.into(), &text.into());
                // a callback that throws stops generation, like one that returns false
                keep_going
                    .map(|v| v.as_bool() != Some(false))
                    .unwrap_or(false)
            },
            |step| {
                let Some(callback) = &on_attention else {
                    return;
                };
                let event = attention_event(&config, step);
                if let Err(e) = event.and_then(|e| callback.call1(&JsValue::NULL, &e)) {
                    // stops at the next token, and the call fails with this error
                    attention_failed.borrow_mut().get_or_insert(e);
                }
            },
        )
        .await
        .map_err(|e| engine_error(&e))?;
    if let Some(e) = attention_failed.into_inner() {
        return Err(e);
    }
    to_js(&JsGeneration::from(generation)).map_err(JsValue::from)
}

/// `{nLayer, nHead, nKvHead, context, tokens, texts, weights}`: the ids of the
/// context and each one's text, and the weights `[nLayer, nHead, context]` as a
/// Float32Array of its own (a copy, so the worker can transfer it).
fn attention_event(config: &ModelConfig, step: &AttentionStep) -> Result<JsValue, JsValue> {
    let event = js_sys::Object::new();
    let set = |key: &str, value: &JsValue| js_sys::Reflect::set(&event, &key.into(), value);
    let texts: js_sys::Array = (0..step.context.len())
        .map(|i| JsValue::from(step.token_text(i)))
        .collect();
    set("nLayer", &(config.n_layer as u32).into())?;
    set("nHead", &(config.n_head as u32).into())?;
    set("nKvHead", &(config.n_kv_head as u32).into())?;
    set("context", &(step.context.len() as u32).into())?;
    set("tokens", &js_sys::Uint32Array::from(step.context).into())?;
    set("texts", &texts.into())?;
    set("weights", &js_sys::Float32Array::from(step.weights).into())?;
    Ok(event.into())
}

/// Reads a GGUF header from the first bytes of a file: `{complete: false,
/// needed}` when more bytes are needed, else the model and the GPU memory it
/// will need at `max_context` positions.
#[wasm_bindgen(js_name = inspectHeader)]
pub fn inspect_header(
    prefix: &[u8],
    file_length: f64,
    max_context: Option<u32>,
    kv_heads: Option<u32>,
) -> Result<JsValue, JsError> {
    let file = match GgufFile::parse(prefix, file_length as u64) {
        Ok(file) => file,
        Err(GgufError::Truncated { needed_at_least }) if needed_at_least <= file_length as u64 => {
            return to_js(&serde_json::json!({ "complete": false, "needed": needed_at_least }));
        }
        Err(e) => return Err(JsError::new(&e.to_string())),
    };
    let config = ModelConfig::from_gguf(&file, max_context.map(|n| n as usize))?;
    let config = with_kv_heads(&config, kv_heads.map(|n| n as usize))?;
    let plan = MemoryPlan::new(&config, &file, LoadOptions::default().block)?;
    to_js(&serde_json::json!({
        "complete": true,
        "model": JsModel::from(&config),
        "bytes": {
            "weights": plan.weights,
            "kvCache": plan.kv_cache,
            "scratch": plan.scratch,
            "total": plan.total(),
            "largestBinding": plan.largest_binding,
        },
    }))
}

/// What the page's bench mode may set; each missing field keeps the native
/// default of [`BenchOptions`].
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct JsBenchOptions {
    contexts: Option<Vec<usize>>,
    prompts: Option<Vec<usize>>,
    attention_contexts: Option<Vec<usize>>,
    gqa_mha_context: Option<usize>,
    probe_mib: Option<u64>,
    warmup: Option<usize>,
    runs: Option<usize>,
    profile: Option<bool>,
}

impl JsBenchOptions {
    fn into_options(self) -> BenchOptions {
        let d = BenchOptions::default();
        BenchOptions {
            contexts: self.contexts.unwrap_or(d.contexts),
            prompts: self.prompts.unwrap_or(d.prompts),
            attention_contexts: self.attention_contexts.unwrap_or(d.attention_contexts),
            gqa_mha_context: self.gqa_mha_context.unwrap_or(d.gqa_mha_context),
            probe_bytes: self
                .probe_mib
                .map_or(d.probe_bytes, |mib| mib.saturating_mul(1 << 20)),
            warmup: self.warmup.unwrap_or(d.warmup),
            runs: self.runs.unwrap_or(d.runs),
            profile: self.profile.unwrap_or(d.profile),
        }
    }
}

/// The GGUF bytes of a random model made in memory: `'smollm2-135m'` (the
/// default model's exact shapes and formats) or `'tiny'` (2 layers, 9 query
/// heads over 3 KV heads), for benchmarks that need no download.
#[wasm_bindgen(js_name = syntheticModel)]
pub fn synthetic_model(kind: &str) -> Result<Vec<u8>, JsError> {
    let spec = match kind {
        "smollm2-135m" => SyntheticSpec::smollm2_135m(),
        "tiny" => bench::tiny_synthetic_spec(),
        other => {
            return Err(JsError::new(&format!(
                "unknown synthetic model {other:?}: use 'smollm2-135m' or 'tiny'"
            )))
        }
    };
    Ok(spec.to_gguf())
}

/// Runs the benchmark of `gqa-webgpu bench` on the model in `bytes`, on a
/// device of its own, and resolves to the same report, with the same keys, as
/// the CLI's `--format json`. `read_seconds` is how long getting the bytes took.
#[wasm_bindgen(js_name = runBench)]
pub async fn run_bench(
    bytes: js_sys::Uint8Array,
    read_seconds: f64,
    name: String,
    options: JsValue,
) -> Result<JsValue, JsError> {
    let options: JsBenchOptions = if options.is_undefined() || options.is_null() {
        JsBenchOptions::default()
    } else {
        serde_wasm_bindgen::from_value(options)
            .map_err(|e| JsError::new(&format!("bench options: {e}")))?
    };
    let bytes = bytes.to_vec();
    let ctx = GpuContext::new(ContextOptions::default()).await?;
    let report = bench::run(&ctx, &bytes, read_seconds, &name, &options.into_options()).await?;
    to_js(&report)
}

/// `perplexity` options as JS passes them.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct JsPerplexityOptions {
    context: Option<usize>,
    chunks: Option<usize>,
}

/// `measureVariants` options; each missing field keeps the CLI's default.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct JsVariantsOptions {
    context: Option<usize>,
    chunks: Option<usize>,
    decode_context: Option<usize>,
    decode_steps: Option<usize>,
}

fn from_js_options<T: Default + serde::de::DeserializeOwned>(
    options: JsValue,
    what: &str,
) -> Result<T, String> {
    if options.is_undefined() || options.is_null() {
        return Ok(T::default());
    }
    serde_wasm_bindgen::from_value(options).map_err(|e| format!("{what}: {e}"))
}

/// Decode speed is measured at this context unless asked otherwise, as the CLI's
/// `variants` does.
const DEFAULT_DECODE_CONTEXT: usize = 2048;
const DEFAULT_DECODE_STEPS: usize = 8;

/// Loads the model in `bytes` as each of its KV-head variants in turn (MHA, as
/// trained, ..., MQA), on a device of its own, and measures each on `text` as
/// `gqa-webgpu variants` does; resolves to the same rows as its `--format json`.
/// `on_progress({stage, kvHeads, variant, variants, done, total})` reports the
/// stages `'load'`, `'perplexity'` (chunks `done` of `total`) and `'decode'` of
/// variant `variant` (from 0) of `variants`.
#[wasm_bindgen(js_name = measureVariants)]
pub async fn measure_variants(
    bytes: js_sys::Uint8Array,
    text: String,
    options: JsValue,
    on_progress: Option<js_sys::Function>,
) -> Result<JsValue, JsError> {
    let options: JsVariantsOptions =
        from_js_options(options, "variants options").map_err(|m| JsError::new(&m))?;
    let bytes = bytes.to_vec();
    let file = GgufFile::parse(&bytes, bytes.len() as u64)?;
    let trained = ModelConfig::from_gguf(&file, None)?;
    let tokenizer = crate::tokenizer::Tokenizer::from_gguf(&file)?;
    let tokens = tokenizer.encode(&text, false);
    let context = options.context.unwrap_or(perplexity::DEFAULT_CONTEXT);
    let options = CompareOptions {
        perplexity: PerplexityOptions {
            max_chunks: options.chunks,
            ..PerplexityOptions::for_tokenizer(&tokenizer, context)
        },
        decode_context: options.decode_context.unwrap_or(DEFAULT_DECODE_CONTEXT),
        decode_steps: options.decode_steps.unwrap_or(DEFAULT_DECODE_STEPS),
    };
    // a short text or a bad context is refused before any GPU work
    perplexity::chunk_count(tokens.len(), &options.perplexity)?;

    let ctx = GpuContext::new(ContextOptions::default()).await?;
    let counts = compare::variant_counts(&trained);
    let mut rows = Vec::new();
    for (index, &n) in counts.iter().enumerate() {
        let mut report = |stage: Stage| {
            let Some(f) = &on_progress else { return };
            let (name, done, total) = match stage {
                Stage::Load => ("load", 0, 1),
                Stage::Chunk(c) => ("perplexity", c.done, c.chunks),
                Stage::Decode => ("decode", 0, 1),
            };
            let event = serde_json::json!({
                "stage": name,
                "kvHeads": n,
                "variant": index,
                "variants": counts.len(),
                "done": done,
                "total": total,
            });
            if let Ok(event) = to_js(&event) {
                let _ = f.call1(&JsValue::NULL, &event);
            }
        };
        let row = compare::measure_variant(&ctx, &file, &bytes, n, &tokens, &options, &mut report)
            .await?;
        rows.push(row);
    }
    to_js(&rows)
}
