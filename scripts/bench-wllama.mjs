#!/usr/bin/env node
// wllama (llama.cpp compiled to WebAssembly) on the same model, in the same headless
// Chromium as scripts/bench-browser.mjs: the browser peer of BENCHMARKS.md. Installs
// @wllama/wllama into target/wllama (not a dependency of the project), serves it from
// /fixtures/, and prints its prefill and decode tokens/s as JSON, from llama.cpp's own
// timings: the median of `runs` completions after a warm-up, prompt cache off.
//
//   node scripts/bench-wllama.mjs [MODEL] [--threads N] [--runs N] [--prompt-words N]
//       [--decode-tokens N] [--version V]

import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { DEFAULT_MODEL, REPO, launchBrowser, startServer }
  from '../tests/browser/harness.mjs';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    threads: { type: 'string', default: '2' },
    runs: { type: 'string', default: '3' },
    version: { type: 'string', default: '3.13.0' },
    // 108 words of the text are 128 of SmolLM2's tokens; the report gives the count
    'prompt-words': { type: 'string', default: '108' },
    'decode-tokens': { type: 'string', default: '32' },
  },
});
const model = positionals[0] ?? DEFAULT_MODEL;

const prefix = join(REPO, 'target/wllama');
const installed = join(prefix, 'node_modules/@wllama/wllama');
if (!existsSync(join(installed, 'esm/index.js'))) {
  mkdirSync(prefix, { recursive: true });
  execFileSync('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', prefix,
    `@wllama/wllama@${values.version}`], { stdio: ['ignore', 2, 2] }); // stdout is the report
}
const served = join(REPO, 'target/browser-fixtures/wllama');
cpSync(join(installed, 'esm'), served, { recursive: true });
// A page of its own: the demo page's Content-Security-Policy forbids wllama's blob workers.
writeFileSync(join(served, 'bench.html'), '<!doctype html><title>wllama bench</title>\n');
const version = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')).version;

// The prompt: words of the shipped text.
const words = readFileSync(join(REPO, 'data/kjv-genesis.txt'), 'utf8').split(/\s+/);
const prompt = words.slice(200, 200 + Number(values['prompt-words'])).join(' ');

const server = await startServer();
const browser = await launchBrowser();
try {
  const page = await browser.context.newPage();
  if (process.env.VERBOSE) page.on('console', (m) => console.error(`[browser] ${m.text()}`));
  await page.goto(`${server.url}fixtures/wllama/bench.html`);
  page.setDefaultTimeout(0);
  const report = await page.evaluate(async ({ model, prompt, threads, runs, decode }) => {
    const { Wllama } = await import('/fixtures/wllama/index.js');
    const wllama = new Wllama({ default: '/fixtures/wllama/wasm/wllama.wasm' },
      { suppressNativeLog: true });
    await wllama.loadModelFromUrl(new URL(`/${model}`, location.href).href,
      { n_threads: threads, n_ctx: 1024 });
    const timings = [];
    for (let i = 0; i <= runs; i += 1) {
      const response = await wllama.createCompletion({
        prompt, max_tokens: decode, temperature: 0, cache_prompt: false, ignore_eos: true,
      });
      if (i > 0) timings.push(response.timings);
    }
    const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const result = {
      threads: wllama.getNumThreads?.() ?? threads,
      prompt_tokens: timings[0].prompt_n,
      decode_tokens: timings[0].predicted_n,
      prefill_tokens_per_s: median(timings.map((t) => t.prompt_per_second)),
      decode_tokens_per_s: median(timings.map((t) => t.predicted_per_second)),
      timings,
    };
    await wllama.exit();
    return result;
  }, { model, prompt, threads: Number(values.threads), runs: Number(values.runs),
    decode: Number(values['decode-tokens']) });
  console.log(JSON.stringify({ engine: `wllama ${version}`, ...report }, null, 2));
} finally {
  await browser.close();
  await server.stop();
}
