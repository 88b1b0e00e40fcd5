// The attention explainer with the default model (SmolLM2-135M, 9 query heads over
// 3 KV heads) on the demo page: the panel renders, and two different prompts draw
// different pixels. SwiftShader decodes at a fraction of a token a second, so each
// answer is 2 tokens. The screenshots are kept in target/explainer/.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { REPO, launchBrowser, openPage, startServer } from './harness.mjs';

const OUT = join(REPO, 'target/explainer');

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

// Sends `prompt` as a new conversation; resolves once the answer and its map are drawn.
async function ask(page, prompt) {
  await page.click('#new-chat');
  await page.waitForSelector('#attention-panel:not([data-context])', { state: 'attached' });
  await page.fill('#prompt', prompt);
  await page.click('#send');
  await page.waitForSelector('.message.assistant .text:not(.streaming)', { timeout: 300_000 });
  await page.waitForSelector('#attention-panel[data-context]', { state: 'attached' });
  // the drawing happens at the next animation frame after the last map
  await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() =>
    requestAnimationFrame(resolve))));
}

// Pixels that are neither the background nor grey text: the heat strips.
function colouredPixels(page) {
  return page.evaluate(() => {
    const canvas = document.getElementById('attention-canvas');
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let count = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
      if (Math.max(r, g, b) - Math.min(r, g, b) > 8) count += 1;
    }
    return count;
  });
}

test('the panel renders for SmolLM2, and two prompts draw different pixels',
  { timeout: 1_200_000 }, async () => {
    const page = await openPage(browser.context, server.url);
    await page.setViewportSize({ width: 1100, height: 900 });
    await page.click('#load');
    await page.waitForSelector('#send:not([disabled])', { timeout: 600_000 });
    await page.fill('#max-tokens', '2');

    await ask(page, 'What is the capital of France?');
    const first = await page.locator('#attention-panel').screenshot();
    const firstColoured = await colouredPixels(page);
    const firstContext = await page.getAttribute('#attention-panel', 'data-context');
    const groups = await page.evaluate(() => document.querySelectorAll('#attention-layer option')
      .length);
    mkdirSync(OUT, { recursive: true });
    writeFileSync(join(OUT, 'panel-capital.png'), first);
    writeFileSync(join(OUT, 'explainer-capital.png'),
      await page.locator('#explainer').screenshot());

    await ask(page, 'Write one short line about the sea, please.');
    const second = await page.locator('#attention-panel').screenshot();
    const secondColoured = await colouredPixels(page);
    writeFileSync(join(OUT, 'panel-sea.png'), second);

    assert.equal(groups, 30, 'a layer chooser entry per layer');
    assert.ok(Number(firstContext) > 10, `context ${firstContext}`);
    assert.ok(firstColoured > 5000 && secondColoured > 5000,
      `${firstColoured} and ${secondColoured} coloured pixels`);
    assert.notDeepEqual(first, second, 'the two prompts drew the same panel');
    assert.deepEqual(page.problems, []);
    await page.close();
  });
