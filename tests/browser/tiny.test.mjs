// The module's API on the tiny model the native tests write: quick enough on
// SwiftShader to cover loading, streaming, aborts, queueing, caching and errors.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
  DEFAULT_MODEL, DEFAULT_MODEL_PATH, REPO, TINY_MODEL_PATH, countsFor, startSession,
  tinyFixture,
} from './harness.mjs';

const TIMEOUT = { timeout: 180_000 };

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

// Loads `url` in the page, runs `generate` on the fixture's prompt, disposes.
function greedyRun(loadOptions, url = TINY_MODEL_PATH) {
  return page.evaluate(async ({ url, loadOptions, fixture }) => {
    const engine = await gqa.Engine.load(url, { maxContext: fixture.maxContext, ...loadOptions });
    try {
      const streamed = [];
      const result = await engine.generate(fixture.prompt, {
        maxTokens: fixture.maxTokens,
        onToken: (token) => streamed.push(token.id),
      });
      return { result, streamed, info: engine.info() };
    } finally {
      await engine.dispose();
    }
  }, { url, loadOptions, fixture });
}

test('greedy decoding in a worker gives the ids the native engine gave', TIMEOUT, async () => {
  const { result, streamed, info } = await greedyRun({ worker: true });

  assert.deepEqual(result.promptTokens, fixture.promptTokens);
  assert.deepEqual(result.tokens, fixture.tokens);
  assert.deepEqual(streamed, fixture.tokens);
  assert.equal(result.finishReason, fixture.tokens.length < fixture.maxTokens ? 'stop' : 'length');
  assert.equal(info.model.maxSeq, fixture.maxContext);
  assert.equal(info.adapter.isFallbackAdapter, true);
});

test('greedy decoding on the page\'s own thread gives the same ids', TIMEOUT, async () => {
  const { result } = await greedyRun({ worker: false });

  assert.deepEqual(result.tokens, fixture.tokens);
});

test('a File, a Uint8Array and an ArrayBuffer load like a URL', TIMEOUT, async () => {
  const runs = await page.evaluate(async ({ url, fixture }) => {
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    const sources = [new File([bytes], 'tiny.gguf'), bytes, bytes.buffer];
    const tokens = [];
    for (const [i, source] of sources.entries()) {
      const engine = await gqa.Engine.load(source, { maxContext: fixture.maxContext,
        worker: i !== 1 });
      tokens.push((await engine.generate(fixture.prompt, { maxTokens: 3 })).tokens);
      await engine.dispose();
    }
    return { tokens, intact: bytes.byteLength };
  }, { url: TINY_MODEL_PATH, fixture });

  for (const tokens of runs.tokens) assert.deepEqual(tokens, fixture.tokens.slice(0, 3));
  assert.ok(runs.intact > 0, 'the caller\'s buffer is not detached');
});

test('progress goes through every phase, and its fraction rises to 1', TIMEOUT, async () => {
  // A new query string is a new cache key: this load downloads.
  const events = await page.evaluate(async (url) => {
    const events = [];
    const engine = await gqa.Engine.load(url, { onProgress: (p) => events.push(p) });
    await engine.dispose();
    return events;
  }, `${TINY_MODEL_PATH}?progress`);

  const phases = [...new Set(events.map((e) => e.phase))];
  assert.deepEqual(phases.filter((p) => p === 'download'), ['download']);
  for (const phase of ['download', 'parse', 'compile', 'upload']) {
    assert.ok(phases.includes(phase), `phase ${phase} among ${phases}`);
  }
  const fractions = events.map((e) => e.fraction);
  assert.deepEqual(fractions, [...fractions].sort((a, b) => a - b), 'never goes back');
  assert.ok(fractions[0] >= 0 && fractions.at(-1) === 1, `${fractions[0]} .. ${fractions.at(-1)}`);
  assert.equal(events.find((e) => e.phase === 'download').cached, false);
});

test('calls made while another runs wait their turn', TIMEOUT, async () => {
  const { order, results } = await page.evaluate(async ({ url, fixture }) => {
    const engine = await gqa.Engine.load(url, { maxContext: fixture.maxContext });
    const order = [];
    const run = (name) => engine.generate(fixture.prompt, {
      maxTokens: 3,
      onToken: () => order.push(name),
    });
    const results = await Promise.all([run('a'), run('b'), run('c')]);
    await engine.dispose();
    return { order: order.join(''), results };
  }, { url: TINY_MODEL_PATH, fixture });

  assert.equal(order, 'aaabbbccc');
  for (const result of results) assert.deepEqual(result.tokens, fixture.tokens.slice(0, 3));
});

test('an abort ends generation early and the next run equals a fresh one', TIMEOUT, async () => {
  const { stopped, after, early } = await page.evaluate(async ({ url, fixture }) => {
    const engine = await gqa.Engine.load(url, { maxContext: fixture.maxContext });
    const controller = new AbortController();
    let seen = 0;
    const stopped = await engine.generate(fixture.prompt, {
      maxTokens: fixture.maxTokens,
      signal: controller.signal,
      onToken: () => {
        seen += 1;
        if (seen === 2) controller.abort();
      },
    });
    const after = await engine.generate(fixture.prompt, { maxTokens: fixture.maxTokens });
    const early = await engine.generate(fixture.prompt, { signal: AbortSignal.abort() });
    await engine.dispose();
    return { stopped, after, early };
  }, { url: TINY_MODEL_PATH, fixture });

  assert.equal(stopped.finishReason, 'abort');
  assert.ok(stopped.tokens.length >= 2 && stopped.tokens.length < fixture.tokens.length,
    `${stopped.tokens.length} tokens`);
  assert.deepEqual(stopped.tokens, fixture.tokens.slice(0, stopped.tokens.length));
  assert.deepEqual(after.tokens, fixture.tokens);
  assert.equal(early.finishReason, 'abort');
  assert.deepEqual(early.tokens, []);
});

test('a chat follow-up reuses the KV cache and equals a fresh run', TIMEOUT, async () => {
  const { first, cached, fresh, used } = await page.evaluate(async ({ url }) => {
    const engine = await gqa.Engine.load(url, { maxContext: 64 });
    const turn = [{ role: 'user', content: 'hi' }];
    const first = await engine.chat(turn, { maxTokens: 4 });
    const followUp = [...turn, { role: 'assistant', content: first.text },
      { role: 'user', content: 'more' }];
    const cached = await engine.chat(followUp, { maxTokens: 4 });
    const used = engine.info().contextUsed;
    await engine.reset();
    const fresh = await engine.chat(followUp, { maxTokens: 4 });
    await engine.dispose();
    return { first, cached, fresh, used };
  }, { url: TINY_MODEL_PATH });

  assert.ok(first.tokens.length > 0);
  assert.deepEqual(cached.tokens, fresh.tokens);
  assert.deepEqual(cached.promptTokens, fresh.promptTokens);
  assert.ok(used >= cached.promptTokens.length, `context used ${used}`);
});

test('a second load of the same URL does not touch the network', TIMEOUT, async () => {
  const url = `${TINY_MODEL_PATH}?cache`;
  await greedyRun({}, url);
  await server.resetStats();

  const { result } = await greedyRun({}, url);
  const stats = await server.stats();

  assert.deepEqual(result.tokens, fixture.tokens);
  assert.deepEqual(countsFor(stats, TINY_MODEL_PATH), {});
});

test('a server that ignores Range still gives the model, in one download', TIMEOUT, async () => {
  await server.resetStats();

  const { result } = await greedyRun({}, `${TINY_MODEL_PATH}?norange`);
  const stats = await server.stats();

  assert.deepEqual(result.tokens, fixture.tokens);
  assert.deepEqual(countsFor(stats, TINY_MODEL_PATH), { GET: 1, 'GET 200': 1 });
});

test('a wrong sha256 is an error and the file is not kept', TIMEOUT, async () => {
  const url = `${TINY_MODEL_PATH}?sha`;
  const sha256 = createHash('sha256')
    .update(readFileSync(join(REPO, 'target/browser-fixtures/tiny.gguf'))).digest('hex');
  await server.resetStats();

  const wrong = await page.evaluate(async (url) => gqa.Engine
    .load(url, { sha256: 'ab'.repeat(32) }).then(() => 'loaded', (e) => e.message), url);
  await greedyRun({ sha256 }, url);
  const afterTwo = countsFor(await server.stats(), TINY_MODEL_PATH)['GET 206'] ?? 0;
  const { result } = await greedyRun({ sha256: sha256.toUpperCase() }, url);
  const afterThree = countsFor(await server.stats(), TINY_MODEL_PATH)['GET 206'] ?? 0;

  assert.match(wrong, new RegExp(`sha256 mismatch for .*: expected (ab){32}, got ${sha256}`));
  assert.ok(afterTwo >= 2, 'the second load downloaded again');
  assert.equal(afterThree, afterTwo, 'the third load used the cache');
  assert.deepEqual(result.tokens, fixture.tokens);
});

test('a model too large for the adapter is refused before its weights download', TIMEOUT,
  async () => {
    await server.resetStats();

    // 2M positions make one layer's KV cache 1.5 GB, over SwiftShader's 1 GiB bindings.
    const error = await page.evaluate(async (url) => gqa.Engine.load(url, { maxContext: 2e6 })
      .then(() => 'loaded', (e) => e.message), DEFAULT_MODEL);
    const counts = countsFor(await server.stats(), DEFAULT_MODEL_PATH);

    assert.match(error, /cannot run on this GPU: .*maxStorageBufferBindingSize of 1\.00 GiB/);
    assert.ok(counts['GET 206'] >= 1 && !counts['GET 200'], JSON.stringify(counts));
    assert.equal(counts.GET, counts['GET 206']);
  });

test('errors name the problem', TIMEOUT, async () => {
  const errors = await page.evaluate(async () => {
    const message = (promise) => promise.then(() => 'resolved', (e) => e.message);
    const engine = await gqa.Engine.load('/fixtures/tiny.gguf', { maxContext: 64 });
    const errors = {
      missing: await message(gqa.Engine.load('/models/missing.gguf')),
      notGguf: await message(gqa.Engine.load('/index.html')),
      option: await message(engine.generate('x', { max_tokens: 3 })),
      type: await message(engine.generate('x', { temperature: '1' })),
      source: await message(gqa.Engine.load(42)),
      messages: await message(engine.chat([{ role: 'user' }])),
    };
    await engine.dispose();
    errors.disposed = await message(engine.generate('x'));
    return errors;
  });

  assert.match(errors.missing, /cannot download http:\S+\/models\/missing\.gguf: .*404/);
  assert.match(errors.notGguf, /GGUF|magic/i);
  assert.match(errors.option, /unknown option max_tokens/);
  assert.match(errors.type, /temperature must be a number/);
  assert.match(errors.source, /model source must be/);
  assert.match(errors.messages, /role: string, content: string/);
  assert.match(errors.disposed, /disposed/);
});

test('aborting a load rejects with an AbortError at once', TIMEOUT, async () => {
  const outcome = await page.evaluate(async (url) => {
    const controller = new AbortController();
    const load = gqa.Engine.load(url, {
      signal: controller.signal,
      onProgress: () => controller.abort(),
    });
    return load.then(() => 'loaded', (e) => e.name);
  }, `${TINY_MODEL_PATH}?abort`);

  assert.equal(outcome, 'AbortError');
});
