// The attention explainer on the tiny model: the weights onAttention hands out
// against the CPU reference (target/browser-fixtures/tiny.json), and the page's
// panel and KV-cache bars.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { REPO, TINY_MODEL_PATH, openPage, startSession, tinyFixture } from './harness.mjs';

const TIMEOUT = { timeout: 180_000 };
// SwiftShader's f32 against the reference's f64, after two layers.
const WEIGHT_ATOL = 1e-5;
const WEIGHT_RTOL = 1e-4;
const SUM_TOL = 1e-5;

let server;
let browser;
let page;
let fixture;

before(async () => {
  fixture = tinyFixture();
  ({ server, browser, page } = await startSession());
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

// Generates 2 tokens from the fixture's prompt, keeping every attention event.
function attentionRun(worker) {
  return page.evaluate(async ({ url, fixture, worker }) => {
    const engine = await gqa.Engine.load(url, { maxContext: fixture.maxContext, worker });
    try {
      const order = [];
      const maps = [];
      const result = await engine.generate(fixture.prompt, {
        maxTokens: 2,
        onToken: ({ id }) => order.push(`token ${id}`),
        onAttention: (map) => {
          order.push(`attention ${map.context}`);
          maps.push({ ...map, isFloat32: map.weights instanceof Float32Array,
            weights: Array.from(map.weights), tokens: Array.from(map.tokens) });
        },
      });
      return { result, order, maps };
    } finally {
      await engine.dispose();
    }
  }, { url: TINY_MODEL_PATH, fixture, worker });
}

function checkAgainstReference({ result, order, maps }) {
  const n = fixture.promptTokens.length;
  const { nLayer, nHead, nKvHead, weights: expected } = fixture.attention;
  assert.deepEqual(order, [`attention ${n}`, `token ${result.tokens[0]}`,
    `attention ${n + 1}`, `token ${result.tokens[1]}`]);
  const [first, second] = maps;
  assert.deepEqual([first.nLayer, first.nHead, first.nKvHead], [nLayer, nHead, nKvHead]);
  assert.equal(first.isFloat32, true);
  assert.deepEqual(first.tokens, fixture.promptTokens);
  assert.equal(first.texts.join(''), fixture.prompt);
  assert.deepEqual(second.tokens, [...fixture.promptTokens, result.tokens[0]]);

  for (const map of maps) {
    assert.equal(map.weights.length, nLayer * nHead * map.context);
    for (let row = 0; row < nLayer * nHead; row += 1) {
      const head = map.weights.slice(row * map.context, (row + 1) * map.context);
      const sum = head.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - 1) <= SUM_TOL, `context ${map.context}, row ${row}: sum ${sum}`);
    }
  }
  const bad = [];
  first.weights.forEach((got, i) => {
    const want = expected[i];
    if (!(Math.abs(got - want) <= WEIGHT_ATOL + WEIGHT_RTOL * Math.abs(want))) {
      bad.push(`[${i}] browser ${got} reference ${want}`);
    }
  });
  assert.deepEqual(bad.slice(0, 8), [], `${bad.length} of ${expected.length} weights differ`);
}

test('onAttention in a worker: weights sum to 1 per head and equal the CPU reference\'s',
  TIMEOUT, async () => {
    checkAgainstReference(await attentionRun(true));
  });

test('onAttention on the page\'s own thread gives the same', TIMEOUT, async () => {
  checkAgainstReference(await attentionRun(false));
});

test('an onAttention that throws stops generation and rejects with its error', TIMEOUT,
  async () => {
    const outcome = await page.evaluate(async ({ url, fixture }) => {
      const engine = await gqa.Engine.load(url, { maxContext: fixture.maxContext });
      try {
        const tokens = [];
        return await engine.generate(fixture.prompt, {
          maxTokens: 5,
          onToken: ({ id }) => tokens.push(id),
          onAttention: () => {
            throw new Error('drawing failed');
          },
        }).then(() => 'resolved', (e) => `${e.message}; ${tokens.length} tokens`);
      } finally {
        await engine.dispose();
      }
    }, { url: TINY_MODEL_PATH, fixture });

    assert.match(outcome, /^drawing failed; [01] tokens$/);
  });

test('the page draws the heat strips, tells a cell\'s token and weight on hover, and '
  + 'sizes the KV cache of GQA, MHA and MQA', TIMEOUT, async () => {
  const demo = await openPage(browser.context, server.url);
  const markup = '<b>x</b>';
  await demo.fill('#model-url', TINY_MODEL_PATH);
  await demo.click('#load');
  await demo.waitForSelector('#send:not([disabled])', { timeout: 120_000 });
  await demo.fill('#max-tokens', '2');
  await demo.fill('#prompt', markup);
  await demo.click('#send');
  await demo.waitForSelector('.message.assistant .text:not(.streaming)', { timeout: 60_000 });
  await demo.waitForSelector('#attention-panel[data-context]');

  const drawn = await demo.evaluate(() => {
    const canvas = document.getElementById('attention-canvas');
    const g = canvas.getContext('2d');
    const { data } = g.getImageData(0, 0, canvas.width, canvas.height);
    // pixels of neither the background (the top-left corner) nor any grey
    let heat = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, gr, b] = [data[i], data[i + 1], data[i + 2]];
      if (Math.max(r, gr, b) - Math.min(r, gr, b) > 8) heat += 1;
    }
    return { heat, context: Number(document.getElementById('attention-panel').dataset.context),
      layers: document.querySelectorAll('#attention-layer option').length };
  });
  // hover the first head's strip at its last cell (the newest token)
  await demo.locator('#attention-canvas').scrollIntoViewIfNeeded();
  const box = await demo.locator('#attention-canvas').boundingBox();
  await demo.mouse.move(box.x + box.width - 6, box.y + 12);
  const tip = await demo.textContent('#attention-tip');
  if (process.env.SCREENSHOTS) {
    await demo.screenshot({ path: join(REPO, 'target/explainer-tiny.png'), fullPage: true });
  }
  const bars = await demo.$$eval('#kv-bars .kv-row', (rows) => rows.map((row) => ({
    variant: row.dataset.variant, title: row.title,
    value: row.querySelector('.kv-value').textContent })));
  const injected = await demo.evaluate(() => document.querySelectorAll('#explainer b').length);

  assert.equal(drawn.layers, fixture.attention.nLayer);
  assert.ok(drawn.context > 0, `context ${drawn.context}`);
  assert.ok(drawn.heat > 500, `${drawn.heat} coloured pixels`);
  assert.match(tip, /^".*" \(position \d+\): [01]\.\d{4} · layer 2, query head 0, KV head 0$/);
  // 2 (K, V) x 2 layers x KV heads x 32 values x 4 bytes a token
  assert.deepEqual(bars.map((b) => b.variant), ['MHA', 'GQA', 'MQA']);
  assert.match(bars[0].title, /2 \(K and V\) × 2 layers × 9 KV heads × 32 values × 4 bytes/);
  assert.match(bars[0].title, /= 4,608 bytes a token/);
  assert.match(bars[1].title, /× 3 KV heads × .* = 1,536 bytes a token/);
  assert.match(bars[2].title, /× 1 KV head × .* = 512 bytes a token/);
  const now = 1536 * drawn.context;
  assert.ok(bars[1].value.startsWith(`${(now / 1e3).toFixed(1)} kB now`), bars[1].value);
  // the page loads the tiny model with its trained context: 256 tokens
  assert.match(bars[1].value, /· 393\.2 kB at 256 tokens$/);
  assert.equal(injected, 0, 'the prompt\'s markup stays text');
  assert.deepEqual(demo.problems, []);
  await demo.close();
});
