// The page's bench mode and the module's bench(): the same report as
// `gqa-webgpu bench --format json`, measured on SwiftShader. Only the shape and the
// consistency of the figures are checked; their size belongs in BENCHMARKS.md.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { launchBrowser, openPage, startServer } from './harness.mjs';

const TIMEOUT = { timeout: 300_000 };
const HEADLINE = [
  'decode_tokens_per_s', 'decode_roofline_ratio', 'prefill_tokens_per_s', 'roofline_gb_per_s',
  'attention_gqa_over_mha',
];

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('?bench=tiny measures every figure on the page and shows them', TIMEOUT, async () => {
  const page = await openPage(browser.context, `${server.url}?bench=tiny`);
  await page.waitForSelector('body[data-bench]', { state: 'attached', timeout: 240_000 });

  const outcome = await page.evaluate(() => document.body.dataset.bench);
  const errors = await page.locator('#errors li').allTextContents();
  assert.equal(outcome, 'done', `the bench failed: ${errors.join('; ')}`);
  const report = await page.evaluate(() => window.gqaDemo.bench);
  const shown = await page.textContent('#bench-report');

  for (const key of HEADLINE) {
    assert.ok(Number.isFinite(report[key]) && report[key] > 0, `${key} = ${report[key]}`);
  }
  assert.match(report.adapter.name, /SwiftShader/i);
  assert.equal(report.adapter.backend, 'BrowserWebGpu');
  assert.equal(report.model, 'synthetic: tiny');
  // the contexts and lengths of ?bench=tiny, each measured once
  assert.deepEqual(report.decode.map((d) => d.context), [0, 40]);
  assert.deepEqual(report.prefill.map((p) => p.prompt_tokens), [9]);
  assert.equal(report.runs, 1);
  assert.equal(report.attention_gqa.kv_heads, 3);
  assert.equal(report.attention_mha.kv_heads, 9);
  assert.equal(report.attention_gqa_over_mha, report.attention_gqa.ms / report.attention_mha.ms);
  // the roofline is the faster probe, and a step's ratio is its own roofline time over its time
  assert.equal(report.roofline_gb_per_s, Math.max(...report.bandwidth.map((p) => p.gb_per_s)));
  for (const d of report.decode) {
    assert.ok(Math.abs(d.roofline_ratio - d.roofline_ms / d.ms_per_token) < 1e-9);
  }
  // one submission a token, only the chosen id read back, memory as planned
  assert.equal(report.step.submissions, 1);
  assert.equal(report.step.readback_bytes_per_token, 4);
  assert.equal(report.memory.kv_cache, report.memory.planned_kv_cache);
  assert.equal(report.memory.weights, report.memory.planned_weights);

  assert.match(shown, new RegExp(`decode step: ${report.step.dispatches} dispatches`));
  assert.match(shown, /attention GQA \/ MHA time: \d/);
  assert.deepEqual(page.problems, []);
  await page.close();
});

test('bench() refuses bad options and sources with errors that name them', TIMEOUT, async () => {
  const page = await openPage(browser.context, server.url);
  const errors = await page.evaluate(async () => {
    const { bench } = await import('/gqa.js');
    const message = (promise) => promise.then(() => 'resolved', (e) => `${e.name}: ${e.message}`);
    return {
      unknown: await message(bench({ synthetic: 'tiny' }, { rounds: 3 })),
      noRuns: await message(bench({ synthetic: 'tiny' }, { runs: 0, worker: false })),
      kind: await message(bench({ synthetic: 'llama-70b' })),
      missing: await message(bench('/models/none.gguf', { probeMib: 1 })),
    };
  });
  assert.match(errors.unknown, /^TypeError: bench: unknown option.*rounds/);
  assert.match(errors.noRuns, /at least one timed run/);
  assert.match(errors.kind, /synthetic must be 'smollm2-135m' or 'tiny'/);
  assert.match(errors.missing, /404|not found/i);
  await page.close();
});
