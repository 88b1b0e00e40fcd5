// Turns a model source (a URL, a Blob, or bytes) into the bytes of the GGUF file.
//
// For a URL the header comes first, by Range requests, so that a model which
// cannot fit the GPU is refused before its weights are downloaded. Downloads are
// kept in the Cache API, keyed by URL; a cached file is used only when its size,
// and its sha256 when one is given, are right.

export const CACHE_NAME = 'gqa-webgpu-models';

// Enough for most headers in one request: SmolLM2's, tokenizer included, is ~1.6 MiB.
const FIRST_HEADER_BYTES = 2 << 20;

/**
 * @param {{url: string} | {blob: Blob} | {bytes: Uint8Array}} source
 * @param {object} options
 * @param {(prefix: Uint8Array, fileLength: number) => object} options.check
 *   inspectHeader and the fit check: returns {complete: false, needed} while it
 *   needs more bytes, and throws for a file that cannot be used.
 * @param {(loaded: number, total: number, cached: boolean) => void} options.onProgress
 * @param {AbortSignal} options.signal
 * @param {string} [options.sha256] lowercase or uppercase hex
 * @returns {Promise<Uint8Array>}
 */
export async function readModel(source, { check, onProgress, signal, sha256 }) {
  if (sha256 !== undefined && !/^[0-9a-fA-F]{64}$/.test(sha256)) {
    throw new Error(`sha256 must be 64 hexadecimal digits, got ${JSON.stringify(sha256)}`);
  }
  const expectedHash = sha256?.toLowerCase();

  if (source.bytes) {
    const bytes = source.bytes;
    await inspect((n) => bytes.subarray(0, n), bytes.length, check);
    onProgress(bytes.length, bytes.length, true);
    await verifyHash(bytes, expectedHash, 'the given bytes');
    return bytes;
  }

  if (source.blob) {
    const blob = source.blob;
    const name = blob.name ? `file ${blob.name}` : 'the given Blob';
    await inspect(async (n) => new Uint8Array(await blob.slice(0, n).arrayBuffer()), blob.size,
      check);
    const bytes = await readBody(blob.stream(), blob.size, name, signal,
      (loaded) => onProgress(loaded, blob.size, true));
    await verifyHash(bytes, expectedHash, name);
    return bytes;
  }

  const url = source.url;
  const cache = await openCache();
  const cached = cache && await readCached(cache, url, expectedHash, check, signal, onProgress);
  if (cached) return cached;

  const bytes = await download(url, check, signal, onProgress);
  await verifyHash(bytes, expectedHash, url);
  if (cache) {
    const headers = {
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(bytes.length),
    };
    try {
      await cache.put(url, new Response(bytes, { headers }));
    } catch (e) {
      // A full disk or a quota must not fail the load: the model is in hand.
      console.warn(`gqa-webgpu: could not keep ${url} in the Cache API: ${e?.message ?? e}`);
    }
  }
  return bytes;
}

/** Deletes every cached model, or the one at `url`. */
export async function clearCache(url) {
  if (!globalThis.caches) return false;
  if (url === undefined) return caches.delete(CACHE_NAME);
  const cache = await caches.open(CACHE_NAME);
  return cache.delete(url);
}

// Calls check with growing prefixes until it has the whole header.
async function inspect(prefixOf, fileLength, check) {
  let wanted = Math.min(FIRST_HEADER_BYTES, fileLength);
  for (;;) {
    const prefix = await prefixOf(wanted);
    const result = check(prefix, fileLength);
    if (result.complete) return result;
    if (!(result.needed > prefix.length) || prefix.length >= fileLength) {
      throw new Error(`the GGUF header needs ${result.needed} bytes, but the file has `
        + `${fileLength}: it is cut short`);
    }
    wanted = Math.min(result.needed, fileLength);
  }
}

async function openCache() {
  // The Cache API exists only in secure contexts (https, localhost).
  if (!globalThis.caches) return null;
  try {
    return await caches.open(CACHE_NAME);
  } catch (e) {
    console.warn(`gqa-webgpu: the Cache API is unavailable, models will not be kept: ${e}`);
    return null;
  }
}

async function readCached(cache, url, expectedHash, check, signal, onProgress) {
  const response = await cache.match(url);
  if (!response) return null;
  const size = Number(response.headers.get('Content-Length'));
  const bytes = await readBody(response.body, size, `cached ${url}`, signal,
    (loaded) => onProgress(loaded, size, true)).catch((e) => {
    if (signal.aborted) throw e;
    return e;
  });

  let problem = null;
  if (bytes instanceof Error) {
    problem = bytes.message;
  } else if (!(size > 0) || bytes.length !== size) {
    problem = `it has ${bytes.length} bytes where its Content-Length says ${size}`;
  } else if (expectedHash && await sha256Hex(bytes) !== expectedHash) {
    problem = `its sha256 is not ${expectedHash}`;
  }
  if (problem) {
    // A stale or broken copy is not the caller's error: fetch the file anew.
    console.warn(`gqa-webgpu: not using the cached ${url}: ${problem}; downloading it again`);
    await cache.delete(url);
    return null;
  }

  await inspect((n) => bytes.subarray(0, n), bytes.length, check);
  return bytes;
}

async function download(url, check, signal, onProgress) {
  // Ask for the header only; a server that ignores Range answers 200 with the whole
  // file, and then the header is read from the start of that same download.
  let response = await get(url, signal, 0, FIRST_HEADER_BYTES - 1);
  if (response.status === 206) {
    const first = await readRange(response, 0);
    if (first) {
      let prefix = first.bytes;
      const fileLength = first.total;
      await inspect(async (n) => {
        if (n > prefix.length) {
          const more = await readRange(await get(url, signal, prefix.length, n - 1),
            prefix.length);
          if (!more) throw new Error(`${url}: the server stopped answering Range requests`);
          prefix = concat(prefix, more.bytes);
        }
        return prefix.subarray(0, n);
      }, fileLength, check);

      onProgress(Math.min(prefix.length, fileLength), fileLength, false);
      // The rest of the file continues the bytes in hand, so the header is not
      // fetched twice.
      if (prefix.length >= fileLength) return prefix.slice(0, fileLength);
      const rest = await get(url, signal, prefix.length, fileLength - 1);
      const continues = rest.status === 206 && rangeStart(rest) === prefix.length;
      return readBody(rest.body, fileLength, url, signal,
        (loaded) => onProgress(loaded, fileLength, false), continues ? prefix : null);
    }
    // The length of the file is hidden (a cross-origin server that does not expose
    // Content-Range): fall back to one plain download.
    response = await get(url, signal);
  }

  const length = plainLength(response);
  const reader = new BodyReader(response.body, length, url, signal);
  try {
    if (length !== null) {
      await inspect(async (n) => reader.prefix(n), length, check);
    }
    const bytes = await reader.readAll((loaded) => onProgress(loaded, length ?? 0, false));
    if (length === null) await inspect((n) => bytes.subarray(0, n), bytes.length, check);
    return bytes;
  } finally {
    reader.cancel();
  }
}

async function get(url, signal, first, last) {
  const headers = first === undefined ? {} : { Range: `bytes=${first}-${last}` };
  let response;
  try {
    response = await fetch(url, { headers, signal });
  } catch (e) {
    if (signal.aborted) throw e;
    throw new Error(`cannot download ${url}: ${e?.message ?? e}`);
  }
  if (!response.ok) {
    response.body?.cancel().catch(() => {});
    throw new Error(`cannot download ${url}: the server answered ${response.status} `
      + `${response.statusText}`.trimEnd());
  }
  return response;
}

// {bytes, total} of a 206 response that starts at `start`, or null where it cannot
// be used (a Content-Range that is missing or starts elsewhere).
async function readRange(response, start) {
  const total = rangeTotal(response);
  if (response.status !== 206 || rangeStart(response) !== start || total === null) {
    response.body?.cancel().catch(() => {});
    return null;
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  return { bytes, total };
}

function rangeStart(response) {
  const match = /^bytes (\d+)-\d+\/\d+$/.exec(response.headers.get('Content-Range') ?? '');
  return match ? Number(match[1]) : null;
}

function rangeTotal(response) {
  const match = /^bytes \d+-\d+\/(\d+)$/.exec(response.headers.get('Content-Range') ?? '');
  return match ? Number(match[1]) : null;
}

// The file's length from a 200 response, or null where Content-Length is absent or
// counts compressed bytes.
function plainLength(response) {
  const encoding = response.headers.get('Content-Encoding');
  if (encoding && encoding !== 'identity') return null;
  const length = response.headers.get('Content-Length');
  return length === null ? null : Number(length);
}

async function readBody(stream, expected, name, signal, onProgress, start = null) {
  const reader = new BodyReader(stream, expected, name, signal, start);
  try {
    return await reader.readAll(onProgress);
  } finally {
    reader.cancel();
  }
}

/** Reads a body stream into one buffer, giving access to its start while it runs. */
class BodyReader {
  /** `start`: bytes already in hand that the stream continues. */
  constructor(stream, expected, name, signal, start = null) {
    this.reader = stream.getReader();
    this.name = name;
    this.signal = signal;
    this.expected = Number.isFinite(expected) && expected > 0 ? expected : null;
    this.buffer = new Uint8Array(Math.max(this.expected ?? 1 << 20, start?.length ?? 0));
    this.length = 0;
    this.done = false;
    if (start) {
      this.buffer.set(start);
      this.length = start.length;
    }
  }

  async prefix(n) {
    while (this.length < n && !this.done) await this.step();
    return this.buffer.subarray(0, Math.min(n, this.length));
  }

  async readAll(onProgress) {
    onProgress(this.length);
    while (!this.done) {
      await this.step();
      onProgress(this.length);
    }
    if (this.expected !== null && this.length !== this.expected) {
      throw new Error(`the download of ${this.name} ended after ${this.length} of `
        + `${this.expected} bytes`);
    }
    return this.buffer.length === this.length ? this.buffer : this.buffer.slice(0, this.length);
  }

  async step() {
    this.signal?.throwIfAborted();
    let chunk;
    try {
      chunk = await this.reader.read();
    } catch (e) {
      if (this.signal?.aborted) throw this.signal.reason;
      throw new Error(`the download of ${this.name} failed: ${e?.message ?? e}`);
    }
    if (chunk.done) {
      this.done = true;
      return;
    }
    const bytes = chunk.value;
    if (this.length + bytes.length > this.buffer.length) {
      const grown = new Uint8Array(Math.max(this.buffer.length * 2, this.length + bytes.length));
      grown.set(this.buffer.subarray(0, this.length));
      this.buffer = grown;
    }
    this.buffer.set(bytes, this.length);
    this.length += bytes.length;
  }

  cancel() {
    if (!this.done) this.reader.cancel().catch(() => {});
    this.done = true;
  }
}

function concat(a, b) {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}

async function verifyHash(bytes, expected, name) {
  if (!expected) return;
  const actual = await sha256Hex(bytes);
  if (actual !== expected) {
    throw new Error(`sha256 mismatch for ${name}: expected ${expected}, got ${actual}`);
  }
}

async function sha256Hex(bytes) {
  if (!globalThis.crypto?.subtle) {
    throw new Error('checking sha256 needs crypto.subtle, which exists only in secure '
      + 'contexts (https or localhost)');
  }
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}
