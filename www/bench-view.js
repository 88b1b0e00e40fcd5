// The page's bench mode: runs gqa.js's bench() (the figures of `gqa-webgpu bench`)
// on this browser's adapter and shows them. `?bench` in the page's address starts
// it on the model in the address field; `?bench=synthetic` on random weights of the
// default model's shapes, with nothing to download; `?bench=tiny` a quick check on a
// tiny random model with small contexts and one run.

import { bench } from './gqa.js';

const $ = (id) => document.getElementById(id);

// `?bench=tiny`: every figure, on shapes small enough for a software adapter.
const QUICK = {
  contexts: [0, 40], prompts: [9], attentionContexts: [64], gqaMhaContext: 128, probeMib: 2,
  warmup: 0, runs: 1,
};

/** Lines like the CLI's text report. */
export function formatBench(r) {
  const f = (x, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : '–');
  const mib = (bytes) => f(bytes / 2 ** 20, 1);
  const lines = [
    `adapter: ${r.adapter.name} (${r.adapter.backend}, ${r.adapter.driver})`,
    `model: ${r.model}`,
    `timing: ${r.timing}, median of ${r.runs} runs after ${r.warmup} warm-up`,
  ];
  for (const p of r.bandwidth) {
    lines.push(`read bandwidth, ${p.layout}: ${f(p.gb_per_s)} GB/s (${mib(p.bytes)} MiB)`);
  }
  lines.push(`roofline: ${f(r.roofline_gb_per_s)} GB/s (${r.roofline_layout})`);
  for (const d of r.decode) {
    lines.push(`decode @ ${d.context}: ${f(d.ms_per_token)} ms/token, `
      + `${f(d.tokens_per_s)} tokens/s; roofline ${f(d.roofline_ms)} ms, `
      + `ratio ${f(d.roofline_ratio, 3)}`);
  }
  for (const p of r.prefill) {
    lines.push(`prefill ${p.prompt_tokens} tokens: ${f(p.ms, 1)} ms, `
      + `${f(p.tokens_per_s, 1)} tokens/s`);
  }
  for (const a of [...r.attention, r.attention_gqa, r.attention_mha]) {
    lines.push(`attention ${a.query_heads}/${a.kv_heads} heads @ ${a.context}: `
      + `${f(a.ms, 3)} ms, ${f(a.gb_per_s)} GB/s`);
  }
  lines.push(`attention GQA / MHA time: ${f(r.attention_gqa_over_mha, 3)}`);
  lines.push(`decode step: ${r.step.dispatches} dispatches, ${r.step.submissions} `
    + `submission(s), ${r.step.readback_bytes_per_token} bytes read back`);
  const m = r.memory;
  lines.push(`GPU memory (MiB): weights ${mib(m.weights)}, KV cache ${mib(m.kv_cache)}, `
    + `scratch ${mib(m.scratch)}`);
  const l = r.load_seconds;
  lines.push(`load: read ${f(l.read, 3)} s, parse ${f(l.parse, 3)} s, `
    + `compile ${f(l.compile, 3)} s, upload ${f(l.upload, 3)} s`);
  return lines;
}

/**
 * Wires the bench panel. `modelUrl()` gives the address in the model field;
 * `showError(error)` reports a failure. Resolves the runs `?bench` asks for.
 */
export function wireBench({ modelUrl, showError }) {
  const run = async (source, options = {}) => {
    $('bench-model').disabled = true;
    $('bench-synthetic').disabled = true;
    $('bench-status').textContent = 'Measuring… (a few minutes on a software adapter)';
    $('bench-report').hidden = true;
    try {
      const report = await bench(source, {
        onProgress: ({ fraction }) => {
          $('bench-status').textContent = `Reading the model: ${Math.round(fraction * 100)}%`;
        },
        ...options,
      });
      window.gqaDemo.bench = report;
      $('bench-report').textContent = formatBench(report).join('\n');
      $('bench-json').textContent = JSON.stringify(report, null, 2);
      $('bench-report').hidden = false;
      $('bench-status').textContent = 'Done.';
      document.body.dataset.bench = 'done';
    } catch (e) {
      $('bench-status').textContent = 'The benchmark failed.';
      document.body.dataset.bench = 'failed';
      showError(e);
    } finally {
      $('bench-model').disabled = false;
      $('bench-synthetic').disabled = false;
    }
  };
  $('bench-model').addEventListener('click', () => run(modelUrl()));
  $('bench-synthetic').addEventListener('click', () => run({ synthetic: 'smollm2-135m' }));

  const asked = new URLSearchParams(location.search).get('bench');
  if (asked === null) return;
  $('bench').open = true;
  if (asked === 'tiny') {
    run({ synthetic: 'tiny' }, QUICK);
  } else if (asked === 'synthetic') {
    run({ synthetic: 'smollm2-135m' });
  } else {
    run(modelUrl());
  }
}
