// The WebGPU adapter as the page sees it: presence, limits, and whether the
// model will fit. Shared by the page and the worker, which each ask for their own.

const BROWSERS = 'Chrome or Edge 113+ on Windows, macOS or ChromeOS, Chrome 121+ on Android, '
  + 'Safari 26, or Firefox 141+ on Windows';

/**
 * The adapter, or an Error that says why there is none. Worker and page differ:
 * some browsers expose navigator.gpu on the page before they do in workers.
 */
export async function requestAdapter() {
  const where = typeof document === 'undefined' ? ' (in a Web Worker)' : '';
  if (!globalThis.isSecureContext) {
    throw new Error('WebGPU is not available in this browser: the page is not a secure '
      + 'context; serve it over https or from localhost');
  }
  if (!globalThis.navigator?.gpu) {
    throw new Error(`WebGPU is not available in this browser: navigator.gpu is missing${where}. `
      + `It needs ${BROWSERS}; on Linux, Chrome needs chrome://flags/#enable-unsafe-webgpu `
      + 'and a Vulkan driver');
  }
  let adapter;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch (e) {
    throw new Error(`WebGPU is not available in this browser: requestAdapter() failed${where}: `
      + (e?.message ?? e));
  }
  if (!adapter) {
    throw new Error(`WebGPU is not available in this browser: no GPU adapter was found${where}; `
      + 'WebGPU may be disabled, or the GPU or its driver is on the browser\'s blocklist '
      + '(see chrome://gpu)');
  }
  return adapter;
}

/** A plain, cloneable description of an adapter. */
export function describeAdapter(adapter) {
  const info = adapter.info ?? {};
  return {
    vendor: info.vendor ?? '',
    architecture: info.architecture ?? '',
    device: info.device ?? '',
    description: info.description ?? '',
    // Moved from the adapter to adapter.info in 2025; browsers differ in which they have.
    isFallbackAdapter: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
    features: [...adapter.features].sort(),
    limits: {
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
    },
  };
}

/**
 * Throws when the model described by inspectHeader's `bytes` cannot run on the
 * adapter. WebGPU says nothing of total memory, so only per-buffer limits are known.
 */
export function checkFits(needs, limits, modelName) {
  const largest = needs.largestBinding;
  const exceeded = ['maxStorageBufferBindingSize', 'maxBufferSize']
    .filter((limit) => largest > limits[limit])
    .map((limit) => `${limit} of ${formatBytes(limits[limit])}`);
  if (exceeded.length > 0) {
    throw new Error(`${modelName} cannot run on this GPU: its largest buffer is `
      + `${formatBytes(largest)}, over the adapter's ${exceeded.join(' and ')} (it needs `
      + `${formatBytes(needs.total)} of GPU memory in all; a smaller maxContext shrinks the `
      + `KV cache of ${formatBytes(needs.kvCache)})`);
  }
}

export function formatBytes(n) {
  if (!Number.isFinite(n)) return String(n);
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} bytes` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[unit]}`;
}
