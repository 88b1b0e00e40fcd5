// The page's comparison of KV-head variants: the loaded model run as MHA, as
// trained (GQA) and as MQA, each measured on an excerpt of Genesis (about 2,000
// tokens) by gqa.js's compareVariants(): KV-cache bytes, decode speed and
// perplexity, drawn as bars. Runs on a GPU device of its own; the chat is left alone.

import { bytes } from './explainer.js';
import { compareVariants } from './gqa.js';

const $ = (id) => document.getElementById(id);

const EXCERPT_URL = new URL('./genesis-excerpt.txt', import.meta.url);

// The excerpt holds a little over 2,048 SmolLM2 tokens: four chunks of 512.
const DEFAULTS = { context: 512, chunks: 4, decodeContext: 2048, decodeSteps: 8 };

const STAGE_TEXT = {
  download: () => 'Reading the model',
  load: (d) => `Loading it with ${d.kvHeads} KV head${d.kvHeads > 1 ? 's' : ''}`,
  perplexity: (d, e) => `${d.kvHeads} KV heads: perplexity, chunk ${e.loaded} of ${e.total}`,
  decode: (d, e) => `${d.kvHeads} KV heads: timing decode`,
};

// The bars drawn for each row: what, how to read it, and the row's value.
const METRICS = [
  {
    name: 'KV cache a token',
    better: 'shorter is better',
    value: (r) => r.kv_bytes_per_token,
    text: (r) => `${bytes(r.kv_bytes_per_token)} (${bytes(r.kv_bytes_at_max_context)} at `
      + `${r.max_context.toLocaleString('en')} tokens)`,
    title: (r) => `${r.kv_heads} KV heads × 2 (K and V) × layers × head size × 4 bytes`,
  },
  {
    name: 'Decode speed',
    better: 'longer is better',
    value: (r) => r.decode_tokens_per_s,
    text: (r) => `${r.decode_tokens_per_s.toFixed(2)} tokens/s at `
      + `${r.decode_context.toLocaleString('en')} positions`,
    title: (r) => `timed steps after an untimed one, with the cache filled to `
      + `${r.decode_context} positions`,
  },
  {
    name: 'Perplexity',
    better: 'shorter is better',
    value: (r) => r.perplexity,
    // a pooled model without retraining can reach 1e4 and more
    text: (r) => (r.perplexity < 1e5 ? r.perplexity.toFixed(3)
      : r.perplexity.toExponential(3)),
    title: (r) => `exp(mean negative log-likelihood) of ${r.tokens_scored} tokens: `
      + `${r.chunks} chunks of ${r.context}, each scored on its second half`,
    // MQA without retraining can be thousands of times worse: a log scale keeps
    // the trained model's bar visible
    scale: 'log',
  },
];

/**
 * Wires the comparison panel. `modelSource()` gives what the loaded model came from
 * (a URL string or a File), or null; `showError(error)` reports a failure.
 */
let running = null; // the AbortController of the comparison in progress

export function wireVariants({ modelSource, showError }) {
  $('variants-run').addEventListener('click', async () => {
    const source = modelSource();
    if (!source || running) return;
    running = new AbortController();
    setRunning(true);
    document.body.dataset.variants = 'running';
    $('variants-bars').replaceChildren();
    try {
      const text = await excerpt();
      const options = { ...DEFAULTS, ...testOptions() };
      const rows = await compareVariants(source, {
        ...options,
        text,
        signal: running.signal,
        onProgress: (event) => {
          $('variants-progress').value = event.fraction;
          const say = STAGE_TEXT[event.phase];
          if (say) $('variants-status').textContent = `${say(event.detail ?? {}, event)}…`;
        },
      });
      window.gqaDemo.variants = rows;
      drawVariantBars($('variants-bars'), rows);
      $('variants-status').textContent = `Done: ${rows.length} variants, perplexity over `
        + `${rows[0].tokens_scored} tokens of the excerpt.`;
      document.body.dataset.variants = 'done';
    } catch (e) {
      const stopped = e?.name === 'AbortError';
      $('variants-status').textContent = stopped ? 'Stopped.' : 'The comparison failed.';
      document.body.dataset.variants = stopped ? 'stopped' : 'failed';
      if (!stopped) showError(e);
    } finally {
      running = null;
      setRunning(false);
    }
  });
  $('variants-stop').addEventListener('click', () => running?.abort());
}

/** Enables the Measure button when a model is loaded and nothing is measuring. */
export function setVariantsReady(ready) {
  $('variants-run').disabled = !ready || running !== null;
}

function setRunning(on) {
  $('variants-run').disabled = on;
  $('variants-stop').disabled = !on;
  $('variants-progress').hidden = !on;
  $('variants-progress').value = 0;
}

async function excerpt() {
  const response = await fetch(EXCERPT_URL);
  if (!response.ok) {
    throw new Error(`cannot read the excerpt ${EXCERPT_URL.href}: HTTP ${response.status}`);
  }
  return response.text();
}

// `?variants=context,chunks,decodeContext,decodeSteps` shrinks the run for tests on
// a software adapter.
function testOptions() {
  const asked = new URLSearchParams(location.search).get('variants');
  if (!asked) return {};
  const [context, chunks, decodeContext, decodeSteps] = asked.split(',').map(Number);
  return { context, chunks, decodeContext, decodeSteps };
}

/**
 * Fills `container` with a group of bars per metric, a bar per variant, each bar's
 * length relative to the largest of its group.
 */
export function drawVariantBars(container, rows) {
  const groups = METRICS.map((metric) => {
    const group = document.createElement('div');
    group.className = 'variant-group';
    const heading = document.createElement('h4');
    heading.textContent = `${metric.name} `;
    const better = document.createElement('span');
    better.className = 'hint';
    better.textContent = `(${metric.better})`;
    heading.append(better);
    group.append(heading);

    const values = rows.map(metric.value);
    const length = barLength(values, metric.scale);
    rows.forEach((row, i) => {
      const line = document.createElement('div');
      line.className = `kv-row${row.variant.includes('trained') ? ' current' : ''}`;
      line.dataset.variant = row.variant;
      line.title = metric.title(row);
      const name = document.createElement('span');
      name.className = 'kv-name';
      name.textContent = `${row.variant}, ${row.kv_heads} KV head${row.kv_heads > 1 ? 's' : ''}`;
      const track = document.createElement('div');
      track.className = 'kv-track';
      const bar = document.createElement('div');
      bar.className = 'kv-used';
      bar.style.width = `${length(values[i])}%`;
      track.append(bar);
      const value = document.createElement('span');
      value.className = 'kv-value';
      value.textContent = metric.text(row);
      line.append(name, track, value);
      group.append(line);
    });
    return group;
  });
  container.replaceChildren(...groups);
}

// Percent of the track for a value: linear from 0, or logarithmic from 1 (a
// perplexity of 1 is a model that is never surprised).
function barLength(values, scale) {
  const finite = values.filter(Number.isFinite);
  if (scale === 'log') {
    const most = Math.log(Math.max(...finite, Math.E));
    return (v) => (Number.isFinite(v) ? Math.max(2, (100 * Math.log(Math.max(v, 1))) / most)
      : 100);
  }
  const most = Math.max(...finite, Number.MIN_VALUE);
  return (v) => (Number.isFinite(v) ? Math.max(1, (100 * v) / most) : 0);
}
