// KV-head variants in the browser, on the tiny model: Engine.load's kvHeads,
// engine.perplexity and compareVariants against the native rows the engine tests
// write (target/browser-fixtures/tiny.json), and the page's comparison panel.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { TINY_MODEL_PATH, openPage, startSession, tinyFixture } from './harness.mjs';

const TIMEOUT = { timeout: 240_000 };
// SwiftShader's f32 against lavapipe's f32: the same kernels, another rounding order.
// The tiny random model is confidently wrong (perplexities near 1e29, a mean
// negative log-likelihood near 66 nats), so perplexities are compared as logs.
const NLL_ATOL = 1e-3;

let server;
let browser;
let page;
let variants;

before(async () => {
  ({ variants } = tinyFixture());
  ({ server, browser, page } = await startSession());
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

// Perplexities whose logs (mean negative log-likelihoods) differ by at most `atol`.
function assertClose(what, got, expected, atol = NLL_ATOL) {
  assert.ok(Math.abs(Math.log(got) - Math.log(expected)) <= atol,
    `${what}: ${got} against ${expected}`);
}

test('compareVariants gives the native rows: MHA, GQA and MQA with their memory and '
  + 'perplexity', TIMEOUT, async () => {
  const { rows, events } = await page.evaluate(async ({ url, variants }) => {
    const events = [];
    const rows = await gqa.compareVariants(url, {
      ...variants.options,
      text: variants.text,
      onProgress: ({ phase, fraction, detail }) => events.push({ phase, fraction, detail }),
    });
    return { rows, events };
  }, { url: TINY_MODEL_PATH, variants });

  const expected = variants.rows;
  assert.deepEqual(rows.map((r) => r.variant), ['MHA', 'GQA (trained)', 'MQA']);
  for (const [i, row] of rows.entries()) {
    const want = expected[i];
    for (const key of ['kv_heads', 'kv_bytes_per_token', 'kv_bytes_at_max_context',
      'max_context', 'chunks', 'tokens_scored', 'context', 'decode_context']) {
      assert.equal(row[key], want[key], `${row.variant}: ${key}`);
    }
    assertClose(`${row.variant} perplexity`, row.perplexity, want.perplexity);
    assert.ok(row.decode_tokens_per_s > 0, `${row.variant}: ${row.decode_tokens_per_s} tokens/s`);
  }
  // MHA duplicates the KV heads: the trained model's outputs
  assertClose('MHA against GQA', rows[0].perplexity, rows[1].perplexity);

  const stages = events.map((e) => `${e.phase}${e.detail ? ` ${e.detail.kvHeads}` : ''}`);
  for (const n of [9, 3, 1]) {
    for (const phase of ['load', 'perplexity', 'decode']) {
      assert.ok(stages.includes(`${phase} ${n}`), `no ${phase} event for ${n} KV heads`);
    }
  }
  const fractions = events.filter((e) => e.detail).map((e) => e.fraction);
  assert.ok(fractions.every((f, i) => f >= 0 && f <= 1 && (i === 0 || f >= fractions[i - 1])),
    `fractions go back or leave [0, 1]: ${fractions}`);
});

test('Engine.load with kvHeads runs the pooled model; perplexity matches the native MQA row',
  TIMEOUT, async () => {
    const got = await page.evaluate(async ({ url, variants }) => {
      const engine = await gqa.Engine.load(url, { kvHeads: 1, maxContext: 64 });
      try {
        const progress = [];
        const before = await engine.generate('In', { maxTokens: 2 });
        const result = await engine.perplexity(variants.text, {
          context: variants.options.context,
          chunks: variants.options.chunks,
          onProgress: (e) => progress.push([e.loaded, e.total, e.detail.perplexity]),
        });
        return { result, progress, info: engine.info(), generated: before.tokens.length };
      } finally {
        await engine.dispose();
      }
    }, { url: TINY_MODEL_PATH, variants });

    const mqa = variants.rows[2];
    assert.equal(got.info.model.nKvHead, 1);
    assert.equal(got.info.model.nHead, 9);
    assert.equal(got.generated, 2);
    assert.equal(got.result.kvHeads, 1);
    assert.equal(got.result.chunks, mqa.chunks);
    assert.equal(got.result.tokensScored, mqa.tokens_scored);
    assertClose('MQA perplexity', got.result.perplexity, mqa.perplexity);
    assert.deepEqual(got.progress.map(([done, total]) => [done, total]), [[1, 2], [2, 2]]);
    assertClose('the last progress event', got.progress[1][2], got.result.perplexity, 1e-12);
    // the chunks ran through the cache: the conversation is gone
    assert.equal(got.info.contextUsed, 0);
  });

test('compareVariants stops at an abort and rejects with an AbortError', TIMEOUT, async () => {
  const got = await page.evaluate(async ({ url, variants }) => {
    const stop = new AbortController();
    const phases = [];
    try {
      await gqa.compareVariants(url, {
        ...variants.options,
        text: variants.text,
        signal: stop.signal,
        onProgress: ({ phase }) => {
          phases.push(phase);
          if (phase === 'perplexity') stop.abort();
        },
      });
      return { outcome: 'resolved', phases };
    } catch (e) {
      return { outcome: e.name, phases };
    }
  }, { url: TINY_MODEL_PATH, variants });

  assert.equal(got.outcome, 'AbortError');
  assert.ok(!got.phases.includes('decode'), `ran on after the abort: ${got.phases}`);
});

test('a kvHeads the model cannot take is refused with the counts it can', TIMEOUT, async () => {
  const messages = await page.evaluate(async (url) => {
    const tries = [{ kvHeads: 2 }, { kvHeads: 0 }, { kvHeads: 1.5 }];
    const out = [];
    for (const options of tries) {
      try {
        const engine = await gqa.Engine.load(url, options);
        await engine.dispose();
        out.push('loaded');
      } catch (e) {
        out.push(e.message);
      }
    }
    return out;
  }, TINY_MODEL_PATH);

  assert.match(messages[0], /2 KV heads/i);
  assert.match(messages[0], /1, 3 or 9/);
  assert.match(messages[1], /kvHeads must be a positive integer, got 0/);
  assert.match(messages[2], /kvHeads must be a positive integer, got 1.5/);
});

test('the page measures the three variants on demand and draws their bars', TIMEOUT,
  async () => {
    const { context, chunks, decodeContext, decodeSteps } = variants.options;
    const query = `?variants=${context},${chunks},${decodeContext},${decodeSteps}`;
    const demo = await openPage(browser.context, `${server.url}${query}`);
    assert.equal(await demo.isDisabled('#variants-run'), true, 'no model: nothing to measure');
    await demo.fill('#model-url', TINY_MODEL_PATH);
    await demo.click('#load');
    await demo.waitForSelector('#variants-run:not([disabled])', { timeout: 120_000 });
    await demo.click('#variants-run');
    await demo.waitForSelector('body[data-variants="done"], body[data-variants="failed"]',
      { state: 'attached', timeout: 180_000 });

    const shown = await demo.evaluate(() => ({
      state: document.body.dataset.variants,
      status: document.getElementById('variants-status').textContent,
      groups: [...document.querySelectorAll('#variants-bars .variant-group')].map((g) => ({
        heading: g.querySelector('h4').textContent,
        rows: [...g.querySelectorAll('.kv-row')].map((row) => ({
          variant: row.dataset.variant,
          width: parseFloat(row.querySelector('.kv-used').style.width),
          value: row.querySelector('.kv-value').textContent,
        })),
      })),
      rows: window.gqaDemo.variants,
    }));

    assert.equal(shown.state, 'done', shown.status);
    assert.deepEqual(shown.groups.map((g) => g.heading.split(' (')[0]),
      ['KV cache a token', 'Decode speed', 'Perplexity']);
    for (const group of shown.groups) {
      assert.deepEqual(group.rows.map((r) => r.variant), ['MHA', 'GQA (trained)', 'MQA']);
    }
    // KV bytes: 9 : 3 : 1 heads, bars relative to the largest
    const kv = shown.groups[0].rows;
    assert.deepEqual(kv.map((r) => Math.round(r.width)), [100, 33, 11]);
    assert.match(kv[1].value, /^1\.5 kB \(393\.2 kB at 256 tokens\)$/);
    const perplexity = shown.groups[2].rows;
    for (const [i, row] of perplexity.entries()) {
      assertClose(`page ${row.variant}`, shown.rows[i].perplexity, variants.rows[i].perplexity);
      // the tiny model's perplexities are far above 1e5: shown with exponents
      assert.equal(row.value, shown.rows[i].perplexity.toExponential(3));
    }
    assert.deepEqual(demo.problems, []);
    await demo.close();
  });
