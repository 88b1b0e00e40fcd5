// gqa-webgpu in the browser: load a GGUF model, then generate or chat on the GPU.
//
//   import { Engine } from './gqa.js';
//   const engine = await Engine.load('models/SmolLM2-135M-Instruct.Q4_1.gguf');
//   const { text } = await engine.chat([{ role: 'user', content: 'Hi!' }]);
//
// The model runs in a module worker (gqa-worker.js) unless `worker: false`; the
// API and the messages are the same either way. Types: gqa.d.ts.

import { describeAdapter, requestAdapter } from './gqa-gpu.js';

export { clearCache, CACHE_NAME } from './gqa-source.js';

const LOAD_OPTIONS = ['onProgress', 'maxContext', 'kvHeads', 'signal', 'sha256', 'worker'];
const SAMPLING_OPTIONS = [
  'maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repetitionPenalty', 'seed', 'ignoreEos',
];
const CALL_OPTIONS = ['onToken', 'onAttention', 'signal'];
const PERPLEXITY_OPTIONS = ['context', 'chunks'];
const VARIANTS_OPTIONS = [...PERPLEXITY_OPTIONS, 'decodeContext', 'decodeSteps'];
const BENCH_OPTIONS = [
  'contexts', 'prompts', 'attentionContexts', 'gqaMhaContext', 'probeMib', 'warmup', 'runs',
  'profile',
];

// Engine's constructor is private: an Engine exists only once a model is loaded.
const CONSTRUCT = Symbol('construct');

/**
 * The WebGPU adapter this page would get, described; rejects with an Error that
 * says why when there is none.
 */
export async function probeWebGPU() {
  return describeAdapter(await requestAdapter());
}

/**
 * Benchmarks this browser's adapter as `gqa-webgpu bench` does natively: its read
 * bandwidth (the roofline), decode and prefill against it, grouped attention alone
 * (GQA against MHA), the work and memory of a decode step and the load time. `source`
 * is what Engine.load takes, or `{synthetic: 'smollm2-135m' | 'tiny'}` for random
 * weights of those shapes made in memory. Runs on a GPU device of its own, in a worker
 * of its own unless `worker: false`; resolves to the CLI's JSON report.
 */
export async function bench(source, options = {}) {
  checkOptions(options, [...BENCH_OPTIONS, 'onProgress', 'signal', 'worker'], 'bench');
  const { onProgress, signal, worker = true, ...settings } = options;
  signal?.throwIfAborted();
  const synthetic = source !== null && Object.getPrototypeOf(source) === Object.prototype
    ? source.synthetic : undefined;
  if (synthetic !== undefined && !['smollm2-135m', 'tiny'].includes(synthetic)) {
    throw new Error(`bench: synthetic must be 'smollm2-135m' or 'tiny', got ${synthetic}`);
  }
  const { message, transfer } = synthetic ? { message: { synthetic }, transfer: [] }
    : sourceMessage(source, worker);

  const channel = worker ? new WorkerChannel() : new LocalChannel();
  const id = channel.nextId();
  const { aborted, release } = abortion(channel, id, signal);
  try {
    const run = channel.request({ type: 'bench', id, ...message, options: settings },
      { onProgress, transfer });
    const { result } = await Promise.race([run, aborted]);
    return result;
  } finally {
    release();
    channel.close();
  }
}

/**
 * Loads the model as each of its KV-head variants in turn (MHA: a KV head per query
 * head; the file's own; ...; MQA: one for all) and measures each as `gqa-webgpu
 * variants` does: KV-cache bytes, decode tokens/s at `decodeContext` positions and
 * perplexity on `text` (chunks of `context` tokens, at most `chunks`). Runs on a GPU
 * device of its own, in a worker of its own unless `worker: false`; `onProgress`
 * gets `{phase: 'download' | 'load' | 'perplexity' | 'decode', fraction, detail}`.
 * Resolves to the CLI's JSON rows, most KV heads first.
 */
export async function compareVariants(source, options = {}) {
  checkOptions(options, [...VARIANTS_OPTIONS, 'text', 'onProgress', 'signal', 'worker'],
    'compareVariants');
  const { text, onProgress, signal, worker = true, ...settings } = options;
  if (typeof text !== 'string' || text.length === 0) {
    throw new TypeError('compareVariants: option text must be a non-empty string');
  }
  checkCounts(settings, 'compareVariants');
  signal?.throwIfAborted();
  const { message, transfer } = sourceMessage(source, worker);
  const channel = worker ? new WorkerChannel() : new LocalChannel();
  const id = channel.nextId();
  const { aborted, release } = abortion(channel, id, signal);
  try {
    const run = channel.request({ type: 'variants', id, ...message, text, options: settings },
      { onProgress, transfer });
    const { result } = await Promise.race([run, aborted]);
    return result;
  } finally {
    release();
    // ends the worker, and with it a measurement still running after an abort
    channel.close();
  }
}

export class Engine {
  #channel;
  #info;
  #queue = Promise.resolve();
  #current = null; // id of the request the engine is running
  #disposed = null; // the Promise of dispose(), once called

  constructor(token, channel) {
    if (token !== CONSTRUCT) throw new TypeError('use Engine.load() to create an Engine');
    this.#channel = channel;
  }

  static async load(source, options = {}) {
    checkOptions(options, LOAD_OPTIONS, 'Engine.load');
    const { onProgress, maxContext, kvHeads, signal, sha256, worker = true } = options;
    checkCounts({ maxContext, kvHeads }, 'Engine.load');
    signal?.throwIfAborted();
    const { message, transfer } = sourceMessage(source, worker);

    const channel = worker ? new WorkerChannel() : new LocalChannel();
    const engine = new Engine(CONSTRUCT, channel);
    const id = channel.nextId();
    // Aborting a load rejects at once; the worker, mid-upload, is simply ended.
    const { aborted, release } = abortion(channel, id, signal);
    try {
      const load = channel.request({ type: 'load', id, ...message, maxContext, kvHeads, sha256 },
        { onProgress, transfer });
      const { info } = await Promise.race([load, aborted]);
      engine.#info = info;
      return engine;
    } catch (e) {
      channel.close();
      throw e;
    } finally {
      release();
    }
  }

  /** Continues raw text. */
  generate(prompt, options = {}) {
    if (typeof prompt !== 'string') {
      return Promise.reject(new TypeError(`the prompt must be a string, got ${typeof prompt}`));
    }
    return this.#generate({ type: 'generate', prompt }, options, 'generate');
  }

  /** Answers the last of `messages` with the model's chat template. */
  chat(messages, options = {}) {
    const valid = Array.isArray(messages) && messages.length > 0 && messages.every(
      (m) => typeof m?.role === 'string' && typeof m?.content === 'string');
    if (!valid) {
      return Promise.reject(new TypeError(
        'messages must be a non-empty array of {role: string, content: string}'));
    }
    const plain = messages.map(({ role, content }) => ({ role, content }));
    return this.#generate({ type: 'chat', messages: plain }, options, 'chat');
  }

  /**
   * The perplexity of `text` as `gqa-webgpu perplexity` measures it: chunks of
   * `context` tokens (512), at most `chunks` of them, each scored on its second half.
   * `onProgress({phase: 'perplexity', loaded, total, fraction, detail: {perplexity}})`
   * follows the chunks. Resolves to `{perplexity, chunks, tokensScored, context,
   * kvHeads}`. The chunks run through the engine's KV cache: the conversation is
   * forgotten.
   */
  perplexity(text, options = {}) {
    try {
      if (typeof text !== 'string') throw new TypeError('the text must be a string');
      checkOptions(options, [...PERPLEXITY_OPTIONS, 'onProgress'], 'perplexity');
      checkCounts(options, 'perplexity');
    } catch (e) {
      return Promise.reject(e);
    }
    const { onProgress, ...settings } = options;
    return this.#enqueue(async () => {
      const { result, info } = await this.#request({ type: 'perplexity', text,
        options: settings }, { onProgress });
      this.#info = info;
      return result;
    });
  }

  /** The model, adapter and memory, as of the last call that finished. */
  info() {
    return structuredClone(this.#info);
  }

  /** Forgets the conversation (the KV cache). */
  reset() {
    return this.#enqueue(async () => {
      const { info } = await this.#request({ type: 'reset' });
      this.#info = info;
    });
  }

  /**
   * Destroys this engine's GPU device, as a driver reset or a crashed GPU process
   * would: later calls reject with an error named `GpuError`. For testing how an
   * app recovers (by loading the model again into a new Engine).
   */
  loseDevice() {
    return this.#enqueue(() => this.#request({ type: 'lose-device' }).then(() => {}));
  }

  /**
   * Stops what is running, refuses what is queued, and frees the GPU memory.
   * Safe to call more than once.
   */
  dispose() {
    if (this.#disposed) return this.#disposed;
    const running = this.#current;
    if (running !== null) this.#channel.send({ type: 'abort', id: running });
    this.#disposed = this.#queue.then(async () => {
      try {
        await this.#channel.request({ type: 'dispose', id: this.#channel.nextId() });
      } finally {
        this.#channel.close();
      }
    }).catch(() => {
      // The worker may already be gone; nothing is left to free then.
    });
    return this.#disposed;
  }

  #generate(request, options, what) {
    try {
      checkOptions(options, [...SAMPLING_OPTIONS, ...CALL_OPTIONS], what);
      checkSampling(options);
    } catch (e) {
      return Promise.reject(e);
    }
    const { onToken, onAttention, signal } = options;
    const sampling = {};
    for (const key of SAMPLING_OPTIONS) {
      if (options[key] !== undefined) sampling[key] = options[key];
    }
    // Weights are computed and read back only for a caller who takes them.
    if (onAttention) sampling.attention = true;

    return this.#enqueue(async () => {
      if (signal?.aborted) return abortedBeforeStart();
      const id = this.#channel.nextId();
      const abort = () => this.#channel.send({ type: 'abort', id });
      signal?.addEventListener('abort', abort, { once: true });
      let callbackError = null;
      const guarded = (callback) => (event) => {
        if (callbackError || !callback) return;
        try {
          callback(event);
        } catch (e) {
          // A throwing callback ends the generation, and the call rejects with its error.
          callbackError = e;
          abort();
        }
      };
      try {
        const { result, info } = await this.#request({ ...request, id, options: sampling },
          { onToken: guarded(onToken), onAttention: guarded(onAttention) });
        this.#info = info;
        if (callbackError) throw callbackError;
        return result;
      } finally {
        signal?.removeEventListener('abort', abort);
      }
    });
  }

  // Runs `task` after every call made before it: calls never interleave.
  #enqueue(task) {
    const run = this.#queue.then(() => {
      if (this.#disposed) throw new Error('the engine was disposed');
      return task();
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  async #request(message, handlers) {
    const id = message.id ?? this.#channel.nextId();
    this.#current = id;
    try {
      return await this.#channel.request({ ...message, id }, handlers);
    } finally {
      this.#current = null;
    }
  }
}

// `await using engine = await Engine.load(...)` where the browser knows it.
if (Symbol.asyncDispose) {
  Engine.prototype[Symbol.asyncDispose] = function asyncDispose() {
    return this.dispose();
  };
}

/** Requests and their replies, over a worker or within the page. */
class Channel {
  #lastId = 0;
  #pending = new Map();
  #failure = null;

  nextId() {
    this.#lastId += 1;
    return this.#lastId;
  }

  request(message, { onProgress, onToken, onAttention, transfer } = {}) {
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#pending.set(message.id, { resolve, reject, onProgress, onToken, onAttention });
      this.send(message, transfer);
    });
  }

  receive(message) {
    const pending = this.#pending.get(message.id);
    if (message.type === 'error' && message.id === null) {
      console.error(`gqa-webgpu worker: ${message.error.message}`);
      return;
    }
    if (!pending) return;
    switch (message.type) {
      case 'progress': {
        const { phase, loaded, total, fraction, cached, detail } = message;
        const event = { phase, loaded, total, fraction };
        if (cached !== undefined) event.cached = cached;
        if (detail !== undefined) event.detail = detail;
        callSafely(pending.onProgress, event);
        break;
      }
      case 'token':
        callSafely(pending.onToken, message.token);
        break;
      case 'attention':
        callSafely(pending.onAttention, message.attention);
        break;
      case 'done':
        this.#pending.delete(message.id);
        pending.resolve(message);
        break;
      case 'error': {
        this.#pending.delete(message.id);
        const { name, message: text } = message.error;
        if (name === 'AbortError') {
          pending.reject(new DOMException(text, name));
        } else {
          const error = new Error(text);
          // 'GpuError' (a failing or lost GPU) tells apps to offer a reload
          if (name !== 'Error') error.name = name;
          pending.reject(error);
        }
        break;
      }
      default:
        console.warn(`gqa-webgpu: unexpected message type ${message.type}`);
    }
  }

  /** Rejects every pending request, and all later ones, with `error`. */
  fail(error) {
    this.#failure ??= error;
    for (const { reject } of this.#pending.values()) reject(error);
    this.#pending.clear();
  }
}

class WorkerChannel extends Channel {
  #worker;

  constructor() {
    super();
    this.#worker = new Worker(new URL('./gqa-worker.js', import.meta.url),
      { type: 'module', name: 'gqa-webgpu' });
    this.#worker.addEventListener('message', (event) => this.receive(event.data));
    // Fires when the worker's module cannot load, or the worker dies of an error.
    this.#worker.addEventListener('error', (event) => {
      event.preventDefault();
      const detail = event.message || 'its script failed to load or threw';
      this.fail(new Error(`the gqa-webgpu worker stopped: ${detail}`));
    });
    this.#worker.addEventListener('messageerror', () => {
      this.fail(new Error('the gqa-webgpu worker sent a message that cannot be read'));
    });
  }

  send(message, transfer = []) {
    this.#worker.postMessage(message, transfer);
  }

  close() {
    this.#worker.terminate();
    this.fail(new Error('the engine was disposed'));
  }
}

/** The same protocol without a worker: for pages where a worker is unwanted. */
class LocalChannel extends Channel {
  #host;

  constructor() {
    super();
    // Replies go through a microtask, as a worker's would arrive later, so that a
    // callback's exception never lands inside the engine.
    this.#host = import('./gqa-host.js').then(({ Host }) => new Host(
      (message) => queueMicrotask(() => this.receive(message))));
  }

  send(message) {
    this.#host.then((host) => host.handle(message),
      (e) => this.fail(new Error(`cannot load gqa-host.js: ${e?.message ?? e}`)));
  }

  close() {
    this.fail(new Error('the engine was disposed'));
  }
}

// The load message for a source, and what to transfer rather than copy.
function sourceMessage(source, worker) {
  if (typeof source === 'string' || source instanceof URL) {
    // Relative to the page: the worker's own location is elsewhere.
    const base = globalThis.document?.baseURI ?? globalThis.location?.href;
    return { message: { source: { url: new URL(source, base).href } }, transfer: [] };
  }
  if (source instanceof Blob) {
    return { message: { source: { blob: source } }, transfer: [] };
  }
  let bytes;
  if (source instanceof ArrayBuffer) {
    bytes = new Uint8Array(source);
  } else if (ArrayBuffer.isView(source)) {
    bytes = new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  } else {
    throw new TypeError('the model source must be a URL string, a URL, a File or Blob, an '
      + `ArrayBuffer or a Uint8Array; got ${Object.prototype.toString.call(source)}`);
  }
  if (!worker) return { message: { source: { bytes } }, transfer: [] };
  // Copy, then transfer the copy: the caller's buffer stays usable.
  const copy = bytes.slice();
  return { message: { source: { bytes: copy } }, transfer: [copy.buffer] };
}

// A Promise that rejects with `signal.reason` when `signal` aborts, after telling
// the host to stop request `id`; `release()` stops listening.
function abortion(channel, id, signal) {
  const listening = new AbortController();
  const aborted = new Promise((_, reject) => {
    signal?.addEventListener('abort', () => {
      channel.send({ type: 'abort', id });
      reject(signal.reason);
    }, { once: true, signal: listening.signal });
  });
  return { aborted, release: () => listening.abort() };
}

function checkOptions(options, known, what) {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`${what}: options must be an object`);
  }
  const unknown = Object.keys(options).filter((key) => !known.includes(key));
  if (unknown.length > 0) {
    throw new TypeError(`${what}: unknown option${unknown.length > 1 ? 's' : ''} `
      + `${unknown.join(', ')} (known: ${known.join(', ')})`);
  }
}

// Options that must be positive integers when given (maxContext, kvHeads, context...).
function checkCounts(options, what) {
  for (const key of ['maxContext', 'kvHeads', ...VARIANTS_OPTIONS]) {
    const value = options[key];
    if (value !== undefined && !(Number.isInteger(value) && value > 0)) {
      throw new TypeError(`${what}: ${key} must be a positive integer, got ${String(value)}`);
    }
  }
}

function checkSampling(options) {
  for (const key of SAMPLING_OPTIONS) {
    const value = options[key];
    if (value !== undefined && (typeof value !== 'number' || Number.isNaN(value))) {
      throw new TypeError(`option ${key} must be a number, got ${String(value)}`);
    }
  }
  for (const key of CALL_OPTIONS) {
    if (options[key] === undefined) continue;
    const isCallback = key !== 'signal';
    const ok = isCallback ? typeof options[key] === 'function'
      : options[key] instanceof AbortSignal;
    if (!ok) {
      throw new TypeError(`option ${key} must be ${isCallback ? 'a function'
        : 'an AbortSignal'}`);
    }
  }
}

// A throwing progress callback is the page's bug; it must not break the engine's
// message handling, so it goes to the page's error handlers instead.
function callSafely(callback, event) {
  try {
    callback?.(event);
  } catch (e) {
    globalThis.reportError ? reportError(e) : console.error(e);
  }
}

function abortedBeforeStart() {
  return {
    tokens: [],
    text: '',
    finishReason: 'abort',
    promptTokens: [],
    stats: { prefillTokensPerS: 0, decodeTokensPerS: 0 },
  };
}
