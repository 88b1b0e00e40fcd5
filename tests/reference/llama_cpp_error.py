#!/usr/bin/env python3
"""Measure llama.cpp's (llama-cpp-python's) error against tests/golden/*.json.

For each golden file: evaluate its prompt ids with llama.cpp (CPU, logits for all
positions), then feed the golden's greedy tokens one at a time (teacher forcing,
so positions line up with the golden). At the last prompt position and at each
greedy step, take the largest |llama.cpp logit - golden logit| over the golden's
top-10 ids, and check whether llama.cpp's argmax equals the golden's token. The
number of greedy tokens matched before the first divergence is reported.

Prints a table and writes tests/golden/llama_cpp_error.json.

    python3 tests/reference/llama_cpp_error.py [--model PATH] [--threads 2]
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GOLDEN_DIR = ROOT / "tests" / "golden"
OUT_NAME = "llama_cpp_error.json"


def measure(llm, golden):
    prompt = golden["prompt_ids"]
    steps = golden["steps"]
    llm.reset()
    llm.eval(prompt)
    # Teacher forcing: feed the golden's tokens (except the last, whose logits
    # nobody needs) one at a time, as greedy decoding would.
    for s in steps[:-1]:
        llm.eval([s["token"]])
    scores = np.asarray(llm.scores[: llm.n_tokens], dtype=np.float64)

    per_step = []
    matched = None
    for j, s in enumerate(steps):
        row = scores[len(prompt) - 1 + j]
        ids = [i for i, _ in s["top"]]
        gold = np.array([v for _, v in s["top"]])
        err = float(np.max(np.abs(row[ids] - gold)))
        argmax = int(np.argmax(row))
        per_step.append({"max_abs_err": round(err, 6), "llama_argmax": argmax,
                         "golden_token": s["token"], "golden_margin": s["margin"]})
        if matched is None and argmax != s["token"]:
            matched = j
    if matched is None:
        matched = len(steps)
    errs = [p["max_abs_err"] for p in per_step]
    return {
        "prompt_tokens": len(prompt),
        "golden_steps": len(steps),
        "matched_before_divergence": matched,
        "max_abs_err_last_prompt_pos": errs[0],
        "max_abs_err_all_steps": max(errs),
        "max_abs_err_before_divergence": max(errs[: matched + 1]),
        "per_step": per_step,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--goldens", default=str(GOLDEN_DIR))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import llama_cpp

    files = sorted(p for p in Path(args.goldens).glob("*.json") if p.name != OUT_NAME)
    goldens = {p.stem: json.loads(p.read_text()) for p in files}
    n_ctx = max(len(g["prompt_ids"]) + len(g["steps"]) for g in goldens.values()) + 16
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=n_ctx, n_batch=n_ctx,
                          n_ubatch=n_ctx, n_threads=args.threads,
                          n_threads_batch=args.threads, logits_all=True,
                          n_gpu_layers=0, verbose=False)

    results = {}
    header = (f"{'golden':<20} {'prompt':>6} {'steps':>5} {'matched':>7} "
              f"{'err@prompt':>10} {'err<=div':>9} {'err max':>8} {'secs':>5}")
    print(header)
    print("-" * len(header))
    for name, g in goldens.items():
        t0 = time.time()
        r = measure(llm, g)
        dt = time.time() - t0
        results[name] = r
        print(f"{name:<20} {r['prompt_tokens']:>6} {r['golden_steps']:>5} "
              f"{r['matched_before_divergence']:>7} "
              f"{r['max_abs_err_last_prompt_pos']:>10.4f} "
              f"{r['max_abs_err_before_divergence']:>9.4f} "
              f"{r['max_abs_err_all_steps']:>8.4f} {dt:>5.1f}")

    out = {
        "how": (f"tests/reference/llama_cpp_error.py with llama-cpp-python "
                f"{llama_cpp.__version__} (CPU, n_threads={args.threads}, default "
                f"f16 KV cache, prompt as one batch then golden tokens fed one at "
                f"a time); errors are max |llama.cpp - golden| over each step's "
                f"golden top-10 ids; made {datetime.date.today()}."),
        "llama_cpp_python_version": llama_cpp.__version__,
        "columns": {
            "matched_before_divergence": "greedy tokens equal to the golden's before "
                                         "llama.cpp's argmax first differs",
            "max_abs_err_last_prompt_pos": "error at the last prompt position",
            "max_abs_err_before_divergence": "largest error over steps up to and "
                                             "including the first divergence",
            "max_abs_err_all_steps": "largest error over all (teacher-forced) steps",
        },
        "results": results,
    }
    path = Path(args.goldens) / OUT_NAME
    with open(path, "w") as f:
        f.write(dump_compact(out))
    print(f"wrote {path}")


def dump_compact(obj):
    """Indented JSON, but each per-step record on one line."""
    def enc(value, indent):
        pad = " " * indent
        if isinstance(value, dict):
            items = [f"{pad} {json.dumps(k)}: {enc(v, indent + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = [f"{pad} {json.dumps(v)}" for v in value]
            return "[\n" + ",\n".join(items) + f"\n{pad}]"
        return json.dumps(value)
    return enc(obj, 0) + "\n"


if __name__ == "__main__":
    main()
