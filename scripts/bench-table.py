#!/usr/bin/env python3
"""Reproduces the table of BENCHMARKS.md on this machine: `gqa-webgpu bench` natively
on the machine's Vulkan adapter, llama.cpp on the CPU (scripts/bench-llama-cpp.py) and,
with --browser, gqa.js's bench() and wllama in headless Chromium
(scripts/bench-browser.mjs, scripts/bench-wllama.mjs), all on the same model, one after
the other. Prints a Markdown table; --out DIR keeps each
run's JSON.

    python3 scripts/bench-table.py [--model PATH] [--browser] [--out DIR]
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
# SwiftShader is slow: the browser row times fewer and shorter runs.
BROWSER_OPTIONS = {"contexts": [0, 512], "prompts": [128], "attentionContexts": [512, 2048],
                   "probeMib": 64, "runs": 3, "profile": False}


def run_json(command, name, out):
    print(f"running {name}: {' '.join(command)}", file=sys.stderr)
    done = subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)
    report = json.loads(done.stdout)
    if out:
        (out / f"{name}.json").write_text(done.stdout)
    return report


def by(items, key, value, field):
    for item in items:
        if item[key] == value:
            return item[field]
    return None


def cell(value, digits=1):
    return "–" if value is None else f"{value:.{digits}f}"


def ours(report, label):
    decode = report["decode"]
    prefill = report["prefill"]
    return [
        label,
        cell(report["roofline_gb_per_s"]),
        cell(by(prefill, "prompt_tokens", 128, "tokens_per_s")),
        cell(by(prefill, "prompt_tokens", 512, "tokens_per_s")),
        cell(by(decode, "context", 0, "tokens_per_s"), 2),
        cell(by(decode, "context", 512, "tokens_per_s"), 2),
        cell(by(decode, "context", 2048, "tokens_per_s"), 2),
        cell(report["decode_roofline_ratio"], 3),
        cell(report["attention_gqa_over_mha"], 3),
    ]


def llama(report):
    decode = report["decode"]
    prefill = report["prefill"]
    return [
        f"llama.cpp (CPU, {report['threads']} threads)",
        "–",
        cell(by(prefill, "prompt_tokens", 128, "tokens_per_s")),
        cell(by(prefill, "prompt_tokens", 512, "tokens_per_s")),
        cell(by(decode, "context", 0, "tokens_per_s"), 2),
        cell(by(decode, "context", 512, "tokens_per_s"), 2),
        cell(by(decode, "context", 2048, "tokens_per_s"), 2),
        "–",
        "–",
    ]


def wllama(report):
    prompt = report["prompt_tokens"]
    return [
        f"{report['engine']} in Chromium, {report['threads']} threads",
        "–",
        f"{report['prefill_tokens_per_s']:.1f} ({prompt} tokens)",
        "–",
        "–",
        f"{report['decode_tokens_per_s']:.2f} (after {prompt})",
        "–",
        "–",
        "–",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--browser", action="store_true", help="add the headless Chromium row")
    parser.add_argument("--out", type=Path, help="keep each run's JSON in this folder")
    args = parser.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    rows = []
    native = run_json(["target/release/gqa-webgpu", "bench", "--model", args.model,
                       "--format", "json"], "native", args.out)
    rows.append(ours(native, f"gqa-webgpu, {native['adapter']['name']} "
                             f"({native['adapter']['backend']})"))
    if args.browser:
        browser = run_json(["node", "scripts/bench-browser.mjs", args.model, "--options",
                            json.dumps(BROWSER_OPTIONS)], "browser", args.out)
        rows.append(ours(browser, f"gqa-webgpu in Chromium, {browser['adapter']['name']}"))
        rows.append(wllama(run_json(["node", "scripts/bench-wllama.mjs", args.model],
                                    "wllama", args.out)))
    rows.append(llama(run_json([sys.executable, "scripts/bench-llama-cpp.py", "--model",
                                args.model], "llama-cpp", args.out)))

    header = ["engine, adapter", "roofline GB/s", "prefill 128 tok/s", "prefill 512 tok/s",
              "decode @0 tok/s", "decode @512 tok/s", "decode @2048 tok/s",
              "roofline ratio @512", "GQA/MHA time"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
