// What the browser tests share: the repo's server (scripts/serve.py) on a free
// port, headless Chromium with WebGPU on SwiftShader, and the fixtures.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const DEFAULT_MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
export const DEFAULT_MODEL_PATH = `/${DEFAULT_MODEL}`;
export const TINY_MODEL_PATH = '/fixtures/tiny.gguf';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
// Background services would add requests and CPU load the tests do not want.
const FLAGS = [
  '--headless=new', '--no-sandbox', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** scripts/serve.py on a port the OS picks; stop() ends it. */
export async function startServer() {
  const child = spawn('python3', [join(REPO, 'scripts/serve.py'), '0', '--quiet'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('serve.py did not start in 10 s')), 10_000);
    child.once('exit', (code) => reject(new Error(`serve.py exited with ${code}`)));
    lines.on('line', (line) => {
      const match = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
  return {
    url,
    /** Request counts per path, e.g. {'/models/x.gguf': {GET: 2, 'GET 206': 1}}. */
    async stats() {
      return (await fetch(`${url}__stats`)).json();
    },
    async resetStats() {
      await fetch(`${url}__stats/reset`, { method: 'POST' });
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * Chromium with a fresh profile (so the Cache API starts empty), with WebGPU unless
 * `webgpu` is false: without --enable-unsafe-webgpu, Chromium on Linux has no adapter.
 */
export async function launchBrowser({ webgpu = true } = {}) {
  const profile = await mkdtemp(join(tmpdir(), 'gqa-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: webgpu ? [...FLAGS, '--enable-unsafe-webgpu'] : FLAGS,
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/**
 * Opens `url` and waits for the demo page to finish starting. `page.problems`
 * collects uncaught errors and console errors (CSP violations among them).
 */
export async function openPage(context, url) {
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (process.env.VERBOSE) console.log(`[browser ${message.type()}] ${message.text()}`);
    if (message.type() === 'error') page.problems.push(`console: ${message.text()}`);
  });
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]', { state: 'attached', timeout: 30_000 });
  return page;
}

/**
 * What most test files start with: the server, a browser, and the demo page with
 * gqa.js imported as `window.gqa`.
 */
export async function startSession() {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const page = await openPage(browser.context, server.url);
    await page.evaluate(async () => {
      window.gqa = await import('/gqa.js');
    });
    return { server, browser, page };
  } catch (e) {
    await browser.close();
    await server.stop();
    throw e;
  }
}

/** The tiny model's native greedy run, written by `cargo test --test engine`. */
export function tinyFixture() {
  const file = join(REPO, 'target/browser-fixtures/tiny.json');
  if (!existsSync(file)) {
    throw new Error(`${file} is missing: run cargo test --test engine write_browser_fixtures`);
  }
  return JSON.parse(readFileSync(file, 'utf8'));
}

/** The golden greedy run of the default model (tests/golden/raw_capital.json). */
export function goldenCapital() {
  const golden = JSON.parse(readFileSync(join(REPO, 'tests/golden/raw_capital.json'), 'utf8'));
  return { prompt: golden.prompt_text, tokens: golden.steps.map((step) => step.token) };
}

/** Requests of `path` in a /__stats answer, as {GET, 'GET 200', 'GET 206', ...}. */
export function countsFor(stats, path) {
  return stats[path] ?? {};
}
