// The demo page and the server: what a visitor sees, with WebGPU and without.

import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
  DEFAULT_MODEL, DEFAULT_MODEL_PATH, REPO, TINY_MODEL_PATH, countsFor, launchBrowser, openPage,
  startServer,
} from './harness.mjs';

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

test('serve.py answers Range requests and sends the headers the page relies on', async () => {
  const size = statSync(join(REPO, DEFAULT_MODEL)).size;
  await server.resetStats();

  const range = await fetch(server.url + DEFAULT_MODEL, { headers: { Range: 'bytes=0-3' } });
  const ignored = await fetch(`${server.url}${DEFAULT_MODEL}?norange`,
    { method: 'HEAD', headers: { Range: 'bytes=0-3' } });
  const script = await fetch(`${server.url}gqa.js`);
  const outside = await fetch(`${server.url}models/..%2F..%2Fscripts/serve.py`);
  const stats = await server.stats();

  assert.equal(range.status, 206);
  assert.equal(await range.text(), 'GGUF');
  assert.equal(range.headers.get('content-range'), `bytes 0-3/${size}`);
  assert.equal(range.headers.get('accept-ranges'), 'bytes');
  assert.equal(range.headers.get('cache-control'), 'no-store');
  assert.equal(range.headers.get('cross-origin-opener-policy'), 'same-origin');
  assert.equal(range.headers.get('cross-origin-embedder-policy'), 'require-corp');
  assert.equal(ignored.status, 200);
  assert.equal(ignored.headers.get('content-length'), String(size));
  assert.match(script.headers.get('content-type'), /^text\/javascript/);
  assert.equal(outside.status, 404);
  assert.deepEqual(countsFor(stats, DEFAULT_MODEL_PATH), { GET: 1, 'GET 206': 1, HEAD: 1,
    'HEAD 200': 1 });
});

test('the page loads, imports the module and finds a WebGPU adapter', async () => {
  const page = await openPage(browser.context, server.url);

  const probe = await page.evaluate(async () => (await import('/gqa.js')).probeWebGPU());
  const badge = await page.textContent('#adapter');
  const hasWebGPU = await page.evaluate(() => document.body.dataset.webgpu);

  assert.equal(hasWebGPU, 'true');
  assert.equal(probe.isFallbackAdapter, true, 'SwiftShader is a fallback adapter');
  assert.match(badge, /swiftshader/i);
  assert.match(badge, /fallback/);
  assert.equal(await page.isHidden('#no-webgpu'), true);
  assert.deepEqual(page.problems, [], 'no errors, no CSP violations');
  await page.close();
});

test('without WebGPU the page explains what is missing, and Engine.load says why', async () => {
  const plain = await launchBrowser({ webgpu: false });
  try {
    await server.resetStats();
    const page = await openPage(plain.context, server.url);

    const explanation = await page.textContent('#no-webgpu');
    const loadDisabled = await page.isDisabled('#load');
    const error = await page.evaluate(async (url) => {
      const { Engine } = await import('/gqa.js');
      return Engine.load(url).then(() => 'loaded', (e) => `${e.constructor.name}: ${e.message}`);
    }, DEFAULT_MODEL);
    const stats = await server.stats();

    assert.equal(await page.isVisible('#no-webgpu'), true);
    assert.match(explanation, /WebGPU is not available in this browser: no GPU adapter/);
    assert.match(explanation, /Chrome or Edge 113/);
    assert.match(explanation, /enable-unsafe-webgpu/);
    assert.equal(loadDisabled, true);
    assert.match(error, /^Error: WebGPU is not available in this browser: /);
    assert.deepEqual(countsFor(stats, DEFAULT_MODEL_PATH), {}, 'no byte of the model fetched');
  } finally {
    await plain.close();
  }
});

test('HTML typed into the prompt is shown as text, never parsed', { timeout: 240_000 },
  async () => {
    const markup = '<img src=x onerror=alert(1)><b>bold</b>';
    const page = await openPage(browser.context, server.url);
    const dialogs = [];
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message());
      dialog.dismiss();
    });
    await page.fill('#model-url', TINY_MODEL_PATH);
    await page.click('#load');
    await page.waitForSelector('#send:not([disabled])', { timeout: 180_000 });
    await page.fill('#max-tokens', '3');

    await page.fill('#prompt', markup);
    await page.click('#send');
    await page.waitForSelector('.message.assistant .text:not(.streaming)', { timeout: 60_000 });

    const shown = await page.textContent('.message.user .text');
    const elements = await page.evaluate(
      () => document.querySelectorAll('#messages img, #messages b').length);
    assert.equal(shown, markup);
    assert.equal(elements, 0);
    assert.deepEqual(dialogs, []);
    assert.deepEqual(await page.$$eval('#errors li', (items) => items.map((i) => i.textContent)),
      []);
    await page.close();
  });

test('a load error naming a URL with markup shows it as text', async () => {
  const page = await openPage(browser.context, server.url);

  await page.fill('#model-url', '/models/<img src=x onerror=alert(2)>.gguf');
  await page.click('#load');
  await page.waitForSelector('#errors li');

  const error = await page.textContent('#errors li span');
  assert.match(error, /cannot download http:\S+%3Cimg\S+\.gguf: the server answered 404/);
  assert.equal(await page.evaluate(() => document.querySelectorAll('img').length), 0);
  await page.close();
});

test('after the GPU device is lost the page says so and loads the model again',
  { timeout: 300_000 }, async () => {
    const page = await openPage(browser.context, server.url);
    const ask = async (prompt) => {
      const answers = await page.$$('.message.assistant');
      await page.fill('#prompt', prompt);
      await page.click('#send');
      await page.waitForFunction((n) => {
        const all = document.querySelectorAll('.message.assistant .text');
        return all.length > n && !all[n].classList.contains('streaming');
      }, answers.length, { timeout: 120_000 });
      return page.$eval('.message.assistant:last-child .text',
        (text) => text.classList.contains('failed'));
    };
    await page.fill('#model-url', TINY_MODEL_PATH);
    await page.click('#load');
    await page.waitForSelector('#send:not([disabled])', { timeout: 180_000 });
    await page.fill('#max-tokens', '3');
    assert.equal(await ask('abc'), false);
    const buffers = await page.evaluate(() => window.gqaDemo.engine.info().gpuMemory.buffers);

    await page.evaluate(() => window.gqaDemo.engine.loseDevice());
    assert.equal(await ask('abc'), true, 'the answer after the loss is marked failed');
    const error = await page.textContent('#errors li span');
    assert.match(error, /GPU device was lost/);

    await page.click('#errors li button.action');
    // the new engine starts a new conversation: the old answers go
    await page.waitForFunction(() => !document.querySelector('.message.assistant')
      && !document.querySelector('#send').disabled, null, { timeout: 180_000 });
    assert.match(await page.textContent('#load-status'), /is ready/);
    assert.equal(await ask('abc'), false, 'the model answers again after the reload');
    assert.deepEqual(await page.$$eval('#errors li', (items) => items.length), 0);
    const after = await page.evaluate(() => window.gqaDemo.engine.info().gpuMemory.buffers);
    assert.equal(after, buffers, 'the new engine holds as many buffers as the first');
    await page.close();
  });
