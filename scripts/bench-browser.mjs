#!/usr/bin/env node
// Runs gqa.js's bench() in headless Chromium (WebGPU on SwiftShader, or the GPU
// Chromium finds) on a model the repo's server serves, and prints its JSON report:
// the browser row of BENCHMARKS.md.
//
//   node scripts/bench-browser.mjs [MODEL | --synthetic] [--options JSON]
//
// MODEL is a path under the repo (default models/SmolLM2-135M-Instruct.Q4_1.gguf);
// --options takes bench()'s options, e.g. '{"contexts":[0,512],"runs":3}'.

import { parseArgs } from 'node:util';

import { DEFAULT_MODEL, launchBrowser, openPage, startServer } from '../tests/browser/harness.mjs';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { synthetic: { type: 'boolean' }, options: { type: 'string', default: '{}' } },
});
const options = JSON.parse(values.options);
const source = values.synthetic ? { synthetic: 'smollm2-135m' } : `/${positionals[0] ?? DEFAULT_MODEL}`;

const server = await startServer();
const browser = await launchBrowser();
try {
  const page = await openPage(browser.context, server.url);
  page.setDefaultTimeout(0);
  const report = await page.evaluate(async ({ source, options }) => {
    const { bench } = await import('/gqa.js');
    return bench(source, options);
  }, { source, options });
  console.log(JSON.stringify(report, null, 2));
} finally {
  await browser.close();
  await server.stop();
}
