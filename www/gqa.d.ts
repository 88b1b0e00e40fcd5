// Types of gqa.js: small grouped-query-attention language models on WebGPU.
//
//   import { Engine } from './gqa.js';
//   const engine = await Engine.load('models/SmolLM2-135M-Instruct.Q4_1.gguf', {
//     onProgress: ({ fraction }) => (bar.value = fraction),
//   });
//   const answer = await engine.chat([{ role: 'user', content: 'Hello!' }], {
//     onToken: ({ text }) => output.append(text),
//   });

/** Where a model comes from. A string or URL is resolved against the page's base URL. */
export type ModelSource = string | URL | Blob | ArrayBuffer | ArrayBufferView;

/**
 * A load's stages:
 * - `download`: reading the file's bytes, from the network, the Cache API
 *   (`cached: true`), or a local File or buffer (`cached: true`);
 * - `parse`: reading the GGUF tensors and the tokenizer;
 * - `compile`: building the GPU pipelines;
 * - `upload`: copying the weights to the GPU.
 */
export type LoadPhase = 'download' | 'parse' | 'compile' | 'upload';

export interface LoadProgress {
  phase: LoadPhase;
  /** Done so far in this phase: bytes for `download` and `upload`. */
  loaded: number;
  /** The phase's total in the unit of `loaded`; 0 when unknown (no Content-Length). */
  total: number;
  /** The whole load, all phases together, from 0 to 1; it never goes back. */
  fraction: number;
  /** For `download`: whether the bytes came without the network. */
  cached?: boolean;
}

export interface LoadOptions {
  /** Called as the load advances; the last call has `fraction` 1. */
  onProgress?: (progress: LoadProgress) => void;
  /**
   * Tokens the context holds: prompt and answers of a conversation together. Sizes the
   * KV cache; defaults to the model's trained context length.
   */
  maxContext?: number;
  /**
   * Run the model with this many KV heads instead of the file's: the query head count
   * (MHA) duplicates each KV head's K/V projections (same outputs, more KV memory); a
   * divisor of the file's count (1 is MQA) mean-pools the merged heads' projections, as
   * the GQA paper converts checkpoints, without retraining (less memory, lower quality).
   * Other counts are refused with the allowed ones.
   */
  kvHeads?: number;
  /** Aborts the load: the Promise rejects with `signal.reason` (an AbortError by default). */
  signal?: AbortSignal;
  /**
   * The file's sha256 in hex. A file that differs is an error, never used; a cached copy
   * that differs is discarded and downloaded again.
   */
  sha256?: string;
  /**
   * Run the model in a module Web Worker (the default), so the page never freezes.
   * With `false` it runs on the page's thread, with the same API.
   */
  worker?: boolean;
}

export interface Token {
  /** The token's id in the model's vocabulary. */
  id: number;
  /** Its text; may be empty where a character spans several tokens. */
  text: string;
}

/** Sampling; without `temperature` (or with 0) decoding is greedy and the rest is unused. */
export interface SamplingOptions {
  /** Most tokens to generate; the engine's default is 256. */
  maxTokens?: number;
  /** 0 is greedy; higher is more varied. */
  temperature?: number;
  /** Sample among the `topK` most likely tokens only; 0 means all. */
  topK?: number;
  /** Sample among the most likely tokens whose probabilities sum to `topP` (0..1]. */
  topP?: number;
  /** Drop tokens less likely than `minP` times the most likely one (0..1). */
  minP?: number;
  /** Above 1, tokens already in the context become less likely. 1 is off. */
  repetitionPenalty?: number;
  /** Makes sampling repeatable: the same seed, prompt and options give the same text. */
  seed?: number;
  /** Go on past end-of-generation tokens until `maxTokens` (benchmarks, soak tests). */
  ignoreEos?: boolean;
}

/**
 * How the newest token of the context weighed every token of it, in every layer and
 * query head: the attention that chose the next token.
 */
export interface AttentionMap {
  nLayer: number;
  /** Query heads; head `h` shares key/value head `Math.floor(h / (nHead / nKvHead))`. */
  nHead: number;
  nKvHead: number;
  /** Tokens in the context; the last is the newest. */
  context: number;
  /** The context's token ids, position by position. */
  tokens: Uint32Array;
  /** Each context token's own text (a character split across tokens shows as U+FFFD). */
  texts: string[];
  /**
   * `[nLayer, nHead, context]` softmax weights: head `h` of layer `l` weighs token `j`
   * with `weights[(l * nHead + h) * context + j]`; each head's weights sum to 1.
   */
  weights: Float32Array;
}

export interface GenerateOptions extends SamplingOptions {
  /** Called for every generated token as it is made. If it throws, generation stops
   * and the call rejects with that error. */
  onToken?: (token: Token) => void;
  /**
   * Shows the model's attention: called after each step of the model (the prompt,
   * then each generated token fed back), before `onToken` for the token that step
   * chose. The weights are computed and read back only when this is given, at
   * `nLayer * nHead * context` floats a step. If it throws, generation stops and the
   * call rejects with that error.
   */
  onAttention?: (attention: AttentionMap) => void;
  /**
   * Stops generation at the next token: the call then resolves with what was made and
   * `finishReason: 'abort'`. A prompt's prefill cannot be cut short.
   */
  signal?: AbortSignal;
}

/**
 * - `stop`: the model ended its answer (an end-of-generation token);
 * - `length`: `maxTokens` was reached, or the end of the context;
 * - `abort`: the signal stopped it.
 */
export type FinishReason = 'stop' | 'length' | 'abort';

export interface Generation {
  /** The generated ids, an end-of-generation id included. */
  tokens: number[];
  /** The generated text, without the end-of-generation token's text. */
  text: string;
  finishReason: FinishReason;
  /** The prompt as token ids (for `chat`: the whole templated conversation). */
  promptTokens: number[];
  stats: {
    /** Prompt tokens run per second (those not already in the KV cache). */
    prefillTokensPerS: number;
    /** Generated tokens per second after the first. */
    decodeTokensPerS: number;
  };
}

export interface ChatMessage {
  /** Usually `system`, `user` or `assistant`: whatever the model's chat template knows. */
  role: string;
  content: string;
}

export interface EngineInfo {
  model: {
    /** GGUF `general.architecture`, e.g. `llama`. */
    arch: string;
    nLayer: number;
    /** Width of the residual stream. */
    nEmbd: number;
    /** Query heads. */
    nHead: number;
    /** Key/value heads; a group of nHead / nKvHead query heads shares each. */
    nKvHead: number;
    headDim: number;
    /** Width of the feed-forward layer. */
    nFf: number;
    /** Tokens in the vocabulary. */
    vocab: number;
    /** The context the engine was loaded with, in tokens. */
    maxSeq: number;
  };
  adapter: {
    /** The adapter as the engine's wgpu reports it. */
    name: string;
    backend: string;
    deviceType: string;
    /** A software adapter (e.g. SwiftShader): it works, slowly. */
    isFallbackAdapter: boolean;
    vendor: string;
    architecture: string;
    device: string;
    description: string;
    features: string[];
  };
  limits: {
    /** In bytes. */
    maxStorageBufferBindingSize: number;
    /** In bytes. */
    maxBufferSize: number;
  };
  /**
   * In bytes: the weights, the KV cache, and every GPU buffer the engine holds
   * (`buffers` of them, `total` bytes, scratch and staging included), counted by
   * the engine's allocation registry. Flat across calls: nothing is allocated per token.
   */
  gpuMemory: { weights: number; kvCache: number; buffers: number; total: number };
  /** Tokens in the KV cache now. */
  contextUsed: number;
}

/** A described WebGPU adapter, from `probeWebGPU`. */
export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  /** Sorted feature names, e.g. `shader-f16`, `subgroups`, `timestamp-query`. */
  features: string[];
  /** In bytes. */
  limits: { maxStorageBufferBindingSize: number; maxBufferSize: number };
}

/**
 * A loaded model on the GPU. Calls made while another runs wait their turn: they never
 * interleave. Every failure rejects with an `Error` whose message names the problem.
 */
export class Engine {
  private constructor();

  /**
   * Loads a GGUF model. For a URL, the header is read first (Range requests) and a model
   * that cannot fit the GPU's limits is refused before its weights are downloaded; the
   * file is then kept in the Cache API (`CACHE_NAME`), so a second load of the same URL
   * does not use the network. Rejects with "WebGPU is not available in this browser: ..."
   * where WebGPU is missing.
   */
  static load(source: ModelSource, options?: LoadOptions): Promise<Engine>;

  /** Continues raw text (no chat template). */
  generate(prompt: string, options?: GenerateOptions): Promise<Generation>;

  /**
   * Answers the last message, with the model's chat template. The KV cache is kept
   * between calls: a follow-up (the previous messages, the answer, a new message) runs
   * only the new tokens.
   */
  chat(messages: ChatMessage[], options?: GenerateOptions): Promise<Generation>;

  /**
   * The perplexity of `text` as `gqa-webgpu perplexity` (and llama.cpp's tool) measures
   * it: non-overlapping chunks of `context` tokens, each scored on its second half. The
   * chunks run through the engine's KV cache, so the conversation is forgotten.
   */
  perplexity(text: string, options?: PerplexityOptions): Promise<PerplexityResult>;

  /** The model, adapter and GPU memory, as of the last call that finished. */
  info(): EngineInfo;

  /** Forgets the conversation (empties the KV cache). */
  reset(): Promise<void>;

  /**
   * Destroys this engine's GPU device, as a driver reset would: later calls reject
   * with an Error named `GpuError`. For testing recovery: load the model again into
   * a new Engine (the Cache API keeps the file, so nothing downloads again).
   */
  loseDevice(): Promise<void>;

  /**
   * Stops a running generation, rejects queued calls, frees the GPU memory and ends
   * the worker. Later calls reject. Safe to call more than once.
   */
  dispose(): Promise<void>;

  [Symbol.asyncDispose](): Promise<void>;
}

export interface PerplexityOptions {
  /** Tokens per chunk (default 512, llama.cpp's); at most the engine's context. */
  context?: number;
  /** Most chunks to run (default: every whole chunk of the text). */
  chunks?: number;
  /** After each chunk: `loaded` chunks of `total`, `detail.perplexity` so far. */
  onProgress?: (event: { phase: 'perplexity'; loaded: number; total: number;
    fraction: number; detail: { perplexity: number } }) => void;
}

export interface PerplexityResult {
  perplexity: number;
  chunks: number;
  tokensScored: number;
  /** Tokens per chunk. */
  context: number;
  /** The KV heads the engine runs with. */
  kvHeads: number;
}

export interface CompareVariantsOptions {
  /** The text perplexity is measured on. */
  text: string;
  /** Tokens per perplexity chunk (default 512). */
  context?: number;
  /** Most perplexity chunks (default: every whole chunk of the text). */
  chunks?: number;
  /** Positions in the cache when decode speed is measured (default 2048). */
  decodeContext?: number;
  /** Decode steps timed there (default 8). */
  decodeSteps?: number;
  /**
   * `phase` 'download' while the model is read, then 'load', 'perplexity' (`loaded`
   * chunks of `total`) and 'decode' for each variant; `detail` says which
   * (`{kvHeads, variant, variants}`); `fraction` covers the whole comparison.
   */
  onProgress?: (event: { phase: string; loaded: number; total: number; fraction: number;
    detail?: { kvHeads: number; variant: number; variants: number } }) => void;
  /** Stops the comparison: its worker is ended and the call rejects. */
  signal?: AbortSignal;
  /** Run in a worker of its own (default true). */
  worker?: boolean;
}

/** One variant as `gqa-webgpu variants --format json` reports it. */
export interface VariantRow {
  /** 'MHA', 'GQA (trained)', 'MQA', ... */
  variant: string;
  kv_heads: number;
  kv_bytes_per_token: number;
  /** The trained context length. */
  max_context: number;
  kv_bytes_at_max_context: number;
  decode_context: number;
  decode_tokens_per_s: number;
  perplexity: number;
  chunks: number;
  tokens_scored: number;
  /** Tokens per perplexity chunk. */
  context: number;
}

/**
 * The model loaded as each of its KV-head variants in turn (MHA first, MQA last) on a
 * GPU device of its own, each measured on `options.text`: KV-cache bytes, decode speed
 * and perplexity. The page's comparison panel draws these as bars.
 */
export function compareVariants(
  source: string | URL | Blob | ArrayBuffer | ArrayBufferView,
  options: CompareVariantsOptions,
): Promise<VariantRow[]>;

/** The adapter this page gets; rejects with an Error that says why there is none. */
export function probeWebGPU(): Promise<AdapterDescription>;

/** The Cache API cache that keeps downloaded models. */
export const CACHE_NAME: 'gqa-webgpu-models';

/** Deletes the cached model at `url` (absolute), or every cached model. */
export function clearCache(url?: string): Promise<boolean>;

/** What `bench` measures, and how often; each missing field keeps the CLI's default. */
export interface BenchOptions {
  /** Cache positions at which a decode step is timed (default [0, 512, 2048]). */
  contexts?: number[];
  /** Prompt lengths whose prefill is timed (default [128, 512]). */
  prompts?: number[];
  /** Keys read when grouped attention is timed alone (default [512, 2048, 8192]). */
  attentionContexts?: number[];
  /** Keys read when GQA is timed against MHA (default 2048). */
  gqaMhaContext?: number;
  /** MiB each bandwidth probe reads, capped by the adapter's limits (default 256). */
  probeMib?: number;
  /** Untimed runs before the timed ones (default 1). */
  warmup?: number;
  /** Timed runs; each figure is their median (default 3). */
  runs?: number;
  /** Time every dispatch of a decode step where the adapter can (default true). */
  profile?: boolean;
  /** Download progress of the model (a URL, File or bytes source only). */
  onProgress?: (event: LoadProgress) => void;
  /** Stops the benchmark: its worker is ended and the call rejects. */
  signal?: AbortSignal;
  /** Run in a worker of its own (default true). */
  worker?: boolean;
}

/**
 * The report of `bench`, with the keys of `gqa-webgpu bench --format json`. The
 * headline figures are at the top level; `decode`, `prefill`, `attention`, `bandwidth`,
 * `step`, `memory`, `load_seconds` and `profile` hold the details.
 */
export interface BenchReport {
  adapter: { name: string; backend: string; device_type: string; driver: string;
    timestamp_queries: boolean };
  model: string;
  /** 'timestamp queries' or 'wall clock'. */
  timing: string;
  /** Decode tokens/s at context 512. */
  decode_tokens_per_s: number;
  /** The fraction of the roofline a decode step at context 512 reaches. */
  decode_roofline_ratio: number;
  /** Prefill tokens/s for a 128-token prompt. */
  prefill_tokens_per_s: number;
  /** The faster of the storage-buffer and texture read bandwidths. */
  roofline_gb_per_s: number;
  /** Grouped attention's time with 9 query heads over 3 KV heads, over 9 KV heads. */
  attention_gqa_over_mha: number;
  [detail: string]: unknown;
}

/**
 * Benchmarks this browser's adapter as `gqa-webgpu bench` does natively, on a GPU
 * device of its own. `source` is what `Engine.load` takes, or `{synthetic}` for random
 * weights of the default model's shapes ('smollm2-135m') or of a tiny model, made in
 * memory.
 */
export function bench(
  source: string | URL | Blob | ArrayBuffer | ArrayBufferView
    | { synthetic: 'smollm2-135m' | 'tiny' },
  options?: BenchOptions,
): Promise<BenchReport>;
