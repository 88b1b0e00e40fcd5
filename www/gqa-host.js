// Runs the WebAssembly engine and answers the messages of gqa.js. It lives in the
// worker (gqa-worker.js), or on the page itself when Engine.load gets worker: false;
// both speak the same messages, so both paths behave alike.
//
// In:  {type: 'load' | 'generate' | 'chat' | 'info' | 'reset' | 'lose-device' | 'dispose',
//       id, ...}
//      {type: 'bench', id, source | synthetic, options}: the benchmark on a device
//       of its own; needs no loaded engine and leaves the loaded one alone.
//      {type: 'variants', id, source, text, options}: the model loaded as MHA, as
//       trained and as MQA in turn, each measured on `text`; a device of its own too.
//      {type: 'perplexity', id, text, options}: on the loaded engine.
//      {type: 'abort', id}: stops request `id` at its next token.
// Out: {type: 'progress', id, phase, loaded, total, fraction, cached, detail}
//      {type: 'token', id, token: {id, text}}
//      {type: 'attention', id, attention: {nLayer, nHead, nKvHead, context, tokens,
//        texts, weights}}: with options.attention, before the token it chose;
//        `tokens` (Uint32Array) and `weights` (Float32Array) are transferred.
//      {type: 'done', id, result, info}
//      {type: 'error', id, error: {name, message}}

import { checkFits, describeAdapter, requestAdapter } from './gqa-gpu.js';
import { readModel } from './gqa-source.js';

const WASM_URL = new URL('./pkg/gqa_webgpu_bg.wasm', import.meta.url);
const GLUE_URL = new URL('./pkg/gqa_webgpu.js', import.meta.url);

// Shares of the progress bar. A download dominates when there is one; without it
// (cache, file, bytes) the GPU upload and shader compilation take most of the time.
const WEIGHTS_NETWORK = { download: 0.8, parse: 0.04, compile: 0.06, upload: 0.1 };
const WEIGHTS_LOCAL = { download: 0.1, parse: 0.1, compile: 0.3, upload: 0.5 };

// Progress messages at most this often (ms), besides phase changes and the end.
const PROGRESS_INTERVAL = 50;

let wasmModule = null;

/** The wasm-bindgen module, initialised once for this thread. */
async function loadWasm() {
  wasmModule ??= (async () => {
    let glue;
    try {
      glue = await import(GLUE_URL.href);
    } catch (e) {
      throw new Error(`cannot load ${GLUE_URL.href} (is www/pkg built? scripts/build-wasm): `
        + (e?.message ?? e));
    }
    await glue.default({ module_or_path: WASM_URL });
    return glue;
  })();
  try {
    return await wasmModule;
  } catch (e) {
    wasmModule = null;
    throw e;
  }
}

export class Host {
  /** @param {(message: object, transfer?: Transferable[]) => void} post */
  constructor(post) {
    this.post = post;
    this.engine = null;
    this.adapter = null;
    // A wasm trap leaves the module's memory in an unknown state: refuse to go on.
    this.broken = null;
    this.queue = Promise.resolve();
    this.aborts = new Map();
  }

  /** Takes one message; replies through `post`. */
  handle(message) {
    if (message?.type === 'abort') {
      this.aborts.get(message.id)?.abort();
      return;
    }
    // Requests are run one at a time even if a client sends several.
    const aborter = new AbortController();
    this.aborts.set(message.id, aborter);
    this.queue = this.queue.then(async () => {
      try {
        const reply = await this.run(message, aborter.signal);
        this.post({ type: 'done', id: message.id, ...reply });
      } catch (e) {
        if (e instanceof WebAssembly.RuntimeError) this.broken = e;
        this.post({ type: 'error', id: message.id, error: toPlainError(e) });
      } finally {
        this.aborts.delete(message.id);
      }
    });
  }

  async run(message, signal) {
    if (this.broken && message.type !== 'dispose') {
      throw new Error(`the engine crashed earlier (${this.broken.message}); load the model `
        + 'again in a new Engine');
    }
    switch (message.type) {
      case 'load':
        return this.load(message, signal);
      case 'generate':
      case 'chat':
        return this.generate(message, signal);
      case 'info':
        return { result: this.info(), info: this.info() };
      case 'reset':
        this.requireEngine().reset();
        return { info: this.info() };
      case 'bench':
        return this.bench(message, signal);
      case 'variants':
        return this.variants(message, signal);
      case 'perplexity':
        return this.perplexity(message);
      case 'lose-device':
        this.requireEngine().loseDevice();
        return {};
      case 'dispose':
        this.engine?.free();
        this.engine = null;
        return {};
      default:
        throw new Error(`unknown request type ${JSON.stringify(message.type)}`);
    }
  }

  async load({ id, source, maxContext, kvHeads, sha256 }, signal) {
    const adapter = await requestAdapter();
    const wasm = await loadWasm();
    const progress = new Progress((p) => this.post({ type: 'progress', id, ...p }));
    const name = source.url ?? source.blob?.name ?? 'the model';
    const limits = adapter.limits;

    const check = headerCheck(wasm, limits, name, maxContext, kvHeads);
    const bytes = await readModel(source, {
      check,
      signal,
      sha256,
      onProgress: (loaded, total, cached) => progress.update('download', loaded, total, cached),
    });
    signal.throwIfAborted();

    const engine = await wasm.WasmEngine.load(bytes, maxContext, kvHeads,
      (phase, loaded, total) => progress.update(phase, loaded, total));
    if (signal.aborted) {
      engine.free();
      signal.throwIfAborted();
    }
    this.engine?.free();
    this.engine = engine;
    // limits are the engine's own, at the top of info()
    const { limits: _, ...described } = describeAdapter(adapter);
    this.adapter = described;
    progress.finish();
    return { info: this.info() };
  }

  async bench({ id, source, synthetic, options }, signal) {
    const adapter = await requestAdapter();
    const wasm = await loadWasm();
    const progress = new Progress((p) => this.post({ type: 'progress', id, ...p }));
    const start = performance.now();
    let bytes;
    let name;
    if (synthetic) {
      bytes = wasm.syntheticModel(synthetic);
      name = `synthetic: ${synthetic}`;
    } else {
      name = source.url ?? source.blob?.name ?? 'the given bytes';
      bytes = await readModel(source, {
        check: headerCheck(wasm, adapter.limits, name, undefined),
        signal,
        onProgress: (loaded, total, cached) => progress.update('download', loaded, total, cached),
      });
    }
    const readSeconds = (performance.now() - start) / 1000;
    progress.finish();
    signal.throwIfAborted();
    const report = toPlain(await wasm.runBench(bytes, readSeconds, name, options));
    // wgpu on WebGPU knows no adapter name: the page's adapter info gives it
    const { vendor, architecture, device, description } = describeAdapter(adapter);
    report.adapter.name ||= description || [vendor, architecture, device].filter(Boolean)
      .join(' ') || 'unnamed WebGPU adapter';
    Object.assign(report.adapter, { vendor, architecture, device, description });
    return { result: report };
  }

  async variants({ id, source, text, options }, signal) {
    const adapter = await requestAdapter();
    const wasm = await loadWasm();
    const name = source.url ?? source.blob?.name ?? 'the given bytes';
    const reading = new Progress((p) => this.post({ type: 'progress', id, ...p }));
    const bytes = await readModel(source, {
      check: headerCheck(wasm, adapter.limits, name, undefined, undefined),
      signal,
      onProgress: (loaded, total, cached) => reading.update('download', loaded, total, cached),
    });
    signal.throwIfAborted();
    // One bar over every variant: each loads, scores its chunks, then times decode.
    const onProgress = ({ stage, kvHeads, variant, variants, done, total }) => {
      const within = stage === 'load' ? 0 : stage === 'decode' ? 0.9 : 0.9 * (done / total);
      this.post({
        type: 'progress', id, phase: stage, loaded: done, total,
        fraction: (variant + within) / variants,
        detail: { kvHeads, variant, variants },
      });
    };
    const rows = await wasm.measureVariants(bytes, text, options, onProgress);
    return { result: toPlain(rows) };
  }

  async perplexity({ id, text, options }) {
    const engine = this.requireEngine();
    const onProgress = (done, chunks, perplexity) => this.post({
      type: 'progress', id, phase: 'perplexity', loaded: done, total: chunks,
      fraction: done / chunks, detail: { perplexity },
    });
    const result = toPlain(await engine.perplexity(text, options, onProgress));
    return { result, info: this.info() };
  }

  async generate({ id, type, prompt, messages, options }, signal) {
    const engine = this.requireEngine();
    const onToken = (tokenId, text) => {
      this.post({ type: 'token', id, token: { id: tokenId, text } });
      // Abort messages arrive between tokens: the engine awaits the GPU for each.
      return !signal.aborted;
    };
    const onAttention = options?.attention ? (step) => {
      const attention = {
        nLayer: step.nLayer, nHead: step.nHead, nKvHead: step.nKvHead, context: step.context,
        tokens: step.tokens, texts: step.texts, weights: step.weights,
      };
      this.post({ type: 'attention', id, attention },
        [attention.tokens.buffer, attention.weights.buffer]);
    } : undefined;
    const result = type === 'chat'
      ? await engine.chat(messages, options, onToken, onAttention)
      : await engine.generate(prompt, options, onToken, onAttention);
    return { result: toPlain(result), info: this.info() };
  }

  info() {
    const info = toPlain(this.requireEngine().info());
    // The engine knows its device; only the page's adapter says whether it is a fallback.
    info.adapter = { ...this.adapter, ...info.adapter,
      isFallbackAdapter: this.adapter.isFallbackAdapter };
    return info;
  }

  requireEngine() {
    if (!this.engine) throw new Error('no model is loaded');
    return this.engine;
  }
}

/** Refuses, from its header, a model the adapter cannot hold. */
function headerCheck(wasm, limits, name, maxContext, kvHeads) {
  return (prefix, fileLength) => {
    const header = wasm.inspectHeader(prefix, fileLength, maxContext, kvHeads);
    if (header.complete) checkFits(header.bytes, limits, name);
    return header;
  };
}

/** One overall fraction over the phases of a load, weighted by WEIGHTS_*. */
class Progress {
  constructor(post) {
    this.post = post;
    this.weights = WEIGHTS_LOCAL;
    this.done = 0; // the summed weights of the phases already finished
    this.phase = null;
    this.fraction = 0;
    this.lastPost = 0;
  }

  update(phase, loaded, total, cached = undefined) {
    if (phase === 'download' && this.phase === null && cached === false) {
      this.weights = WEIGHTS_NETWORK;
    }
    const changed = phase !== this.phase;
    if (changed && this.phase !== null) this.done += this.weights[this.phase] ?? 0;
    this.phase = phase;

    const within = total > 0 ? Math.min(loaded / total, 1) : 0;
    const fraction = Math.min(this.done + (this.weights[phase] ?? 0) * within, 1);
    // Phases the engine never reports leave a gap that finish() closes; never go back.
    this.fraction = Math.max(this.fraction, fraction);

    const now = Date.now();
    const ended = total > 0 && loaded >= total;
    if (changed || ended || now - this.lastPost >= PROGRESS_INTERVAL) {
      this.lastPost = now;
      const event = { phase, loaded, total, fraction: this.fraction };
      if (cached !== undefined) event.cached = cached;
      this.post(event);
    }
  }

  finish() {
    this.fraction = 1;
    this.post({ phase: this.phase ?? 'upload', loaded: 1, total: 1, fraction: 1 });
  }
}

/** Plain objects and arrays from what wasm-bindgen hands back (Maps, typed arrays). */
export function toPlain(value) {
  if (value instanceof Map) {
    return Object.fromEntries([...value].map(([k, v]) => [k, toPlain(v)]));
  }
  if (ArrayBuffer.isView(value)) return Array.from(value, Number);
  if (Array.isArray(value)) return value.map(toPlain);
  if (typeof value === 'bigint') return Number(value);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toPlain(v)]));
  }
  return value;
}

function toPlainError(e) {
  if (e instanceof WebAssembly.RuntimeError) {
    return { name: 'Error', message: `the engine crashed (${e.message}); the console `
      + 'shows the panic message' };
  }
  if (e instanceof Error || e instanceof DOMException) {
    return { name: e.name, message: e.message || String(e) };
  }
  return { name: 'Error', message: typeof e === 'string' ? e : JSON.stringify(e) };
}
