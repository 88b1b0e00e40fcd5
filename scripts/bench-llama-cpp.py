#!/usr/bin/env python3
"""llama.cpp's prefill and decode speed on a GGUF model, measured the way
`gqa-webgpu bench` measures ours: prefill of 128- and 512-token prompts, and one
decode step with 0, 512 and 2048 positions already in the KV cache; the median
of repeated runs after a warm-up. Prints JSON.

Needs llama-cpp-python (`pip install llama-cpp-python`: it builds llama.cpp from
source, about 15 minutes on 2 cores). The prompt is text from data/kjv-genesis.txt.

llama.cpp's extra CPU buffer types (weights repacked for AMX and AVX-512 kernels)
are off unless --extra-bufts is given: on the machines we measure on, any batch of
more than one token then dies with a segmentation fault (llama-cpp-python 0.3.36,
a Xeon reporting AMX_INT8 inside a VM).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

REPO = Path(__file__).resolve().parent.parent


def median_seconds(run, runs, warmup):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", default="128,512")
    parser.add_argument("--contexts", default="0,512,2048")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--decode-steps", type=int, default=16,
                        help="decode steps timed together at each context")
    parser.add_argument("--extra-bufts", action="store_true",
                        help="keep llama.cpp's repacked CPU weight buffers (see above)")
    args = parser.parse_args()
    if not args.extra_bufts:
        default_params = llama_cpp.llama_model_default_params

        def without_extra_bufts():
            params = default_params()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = without_extra_bufts
        llama_cpp.llama.llama_cpp.llama_model_default_params = without_extra_bufts
    prompts = [int(n) for n in args.prompts.split(",")]
    contexts = [int(n) for n in args.contexts.split(",")]

    n_ctx = max(max(prompts), max(contexts) + args.decode_steps + 1)
    llm = Llama(model_path=args.model, n_ctx=n_ctx, n_batch=512, n_threads=args.threads,
                n_threads_batch=args.threads, verbose=False)
    text = (REPO / "data" / "kjv-genesis.txt").read_text(encoding="utf-8")
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=False)
    need = max(max(prompts), max(contexts) + args.decode_steps)
    if len(tokens) < need:
        raise SystemExit(f"the text gives {len(tokens)} tokens, {need} are needed")

    def prefill(n):
        llm.reset()
        llm.eval(tokens[:n])

    report = {"version": llama_cpp.__version__, "threads": args.threads, "runs": args.runs,
              "extra_bufts": args.extra_bufts, "prefill": [], "decode": []}
    for n in prompts:
        seconds = median_seconds(lambda: prefill(n), args.runs, args.warmup)
        report["prefill"].append({"prompt_tokens": n, "ms": seconds * 1e3,
                                  "tokens_per_s": n / seconds})

    for context in contexts:
        def decode():
            # the cache is filled untimed; the steps after it are timed one by one
            prefill(context) if context else llm.reset()
            steps = []
            for i in range(args.decode_steps):
                start = time.perf_counter()
                llm.eval([tokens[context + i]])
                steps.append(time.perf_counter() - start)
            return statistics.median(steps)

        for _ in range(args.warmup):
            decode()
        seconds = statistics.median(decode() for _ in range(args.runs))
        report["decode"].append({"context": context, "ms_per_token": seconds * 1e3,
                                 "tokens_per_s": 1 / seconds})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
