// The default model (SmolLM2-135M-Instruct, Q4_1) in the browser: the same greedy
// tokens as the golden file, aborts, and the Cache API. SwiftShader runs it at
// about a token a second or slower, so generations stay short.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  DEFAULT_MODEL, DEFAULT_MODEL_PATH, countsFor, goldenCapital, startSession,
} from './harness.mjs';

const LOAD = { timeout: 600_000 };
const GENERATE = { timeout: 300_000 };

let server;
let browser;
let page;
const golden = goldenCapital();

before(async () => {
  ({ server, browser, page } = await startSession());
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

// Loads the default model into window.engine; returns the request counts and info.
async function loadDefault() {
  await server.resetStats();
  const info = await page.evaluate(async (url) => {
    await window.engine?.dispose();
    window.engine = await gqa.Engine.load(url);
    return window.engine.info();
  }, DEFAULT_MODEL);
  return { info, counts: countsFor(await server.stats(), DEFAULT_MODEL_PATH) };
}

function greedy(maxTokens, abortAfter = 0) {
  return page.evaluate(async ({ prompt, maxTokens, abortAfter }) => {
    const controller = new AbortController();
    const streamed = [];
    const result = await engine.generate(prompt, {
      maxTokens,
      signal: controller.signal,
      onToken: ({ id }) => {
        streamed.push(id);
        if (streamed.length === abortAfter) controller.abort();
      },
    });
    return { ...result, streamed };
  }, { prompt: golden.prompt, maxTokens, abortAfter });
}

test('the first load reads the header by Range, then downloads the rest once', LOAD,
  async () => {
    const { info, counts } = await loadDefault();

    assert.equal(info.model.nLayer, 30);
    assert.equal(info.model.nHead, 9);
    assert.equal(info.model.nKvHead, 3);
    assert.ok(!counts['GET 200'], `no whole-file GET: ${JSON.stringify(counts)}`);
    assert.ok(counts['GET 206'] >= 2 && counts['GET 206'] <= 3, JSON.stringify(counts));
  });

test('the first 8 greedy tokens of "The capital of France is" equal the golden ids', GENERATE,
  async () => {
    const result = await greedy(8);

    assert.deepEqual(result.tokens, golden.tokens.slice(0, 8));
    assert.deepEqual(result.streamed, result.tokens);
    assert.equal(result.finishReason, 'length');
    assert.ok(result.stats.decodeTokensPerS > 0 && result.stats.prefillTokensPerS > 0);
  });

test('an abort stops generation, and the next generation equals a fresh one', GENERATE,
  async () => {
    const stopped = await greedy(8, 2);
    const next = await greedy(4);

    assert.equal(stopped.finishReason, 'abort');
    assert.ok(stopped.tokens.length >= 2 && stopped.tokens.length < 8,
      `${stopped.tokens.length} tokens`);
    assert.deepEqual(stopped.tokens, golden.tokens.slice(0, stopped.tokens.length));
    assert.deepEqual(next.tokens, golden.tokens.slice(0, 4));
  });

test('a second load of the same URL comes from the Cache API, not the network', LOAD,
  async () => {
    const { counts } = await loadDefault();
    const result = await greedy(2);

    assert.deepEqual(counts, {}, 'no request for the model at all');
    assert.deepEqual(result.tokens, golden.tokens.slice(0, 2));
  });
