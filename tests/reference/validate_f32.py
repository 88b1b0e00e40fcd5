#!/usr/bin/env python3
"""Cross-check reference.py against llama.cpp with quantization taken out of the way.

llama.cpp's usual error against the goldens (llama_cpp_error.py) is dominated by
its own approximations: it quantizes activations to 8 bits before every Q4_1/Q8_0
matrix product and keeps the KV cache in f16. To check that reference.py computes
the same function as llama.cpp, this script writes a copy of the model with every
tensor dequantized to F32 (the very values reference.py uses), runs llama.cpp on it
with an F32 KV cache, teacher-forcing each golden's tokens, and reports the largest
|llama.cpp - golden| logit difference over the golden top-10 ids. Expect ~1e-4
(float32 rounding), versus ~1 for the quantized model.

    python3 tests/reference/validate_f32.py [--model PATH] [--f32-model /tmp/x.gguf]
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_cpp_error import DEFAULT_MODEL, GOLDEN_DIR, OUT_NAME, measure  # noqa: E402

GGML_TYPE_F32 = 0
LLAMA_FTYPE_ALL_F32 = 0


def write_f32_copy(src, dst):
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        if key == "general.file_type":
            value = LLAMA_FTYPE_ALL_F32
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, vtype, sub)
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        writer.add_tensor(t.name, values.reshape(shape), raw_dtype=GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--f32-model", default="/tmp/gqa-webgpu-reference-F32.gguf")
    ap.add_argument("--goldens", default=str(GOLDEN_DIR))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import llama_cpp

    if not Path(args.f32_model).exists():
        print(f"writing {args.f32_model}", file=sys.stderr)
        write_f32_copy(args.model, args.f32_model)

    files = sorted(p for p in Path(args.goldens).glob("*.json") if p.name != OUT_NAME)
    goldens = {p.stem: json.loads(p.read_text()) for p in files}
    n_ctx = max(len(g["prompt_ids"]) + len(g["steps"]) for g in goldens.values()) + 16
    llm = llama_cpp.Llama(model_path=args.f32_model, n_ctx=n_ctx, n_batch=n_ctx,
                          n_ubatch=n_ctx, n_threads=args.threads,
                          n_threads_batch=args.threads, logits_all=True,
                          n_gpu_layers=0, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32,
                          verbose=False)
    print(f"{'golden':<20} {'prompt':>6} {'steps':>5} {'matched':>7} {'err max':>9}")
    worst = 0.0
    for name, g in goldens.items():
        r = measure(llm, g)
        worst = max(worst, r["max_abs_err_all_steps"])
        print(f"{name:<20} {r['prompt_tokens']:>6} {r['golden_steps']:>5} "
              f"{r['matched_before_divergence']:>7} {r['max_abs_err_all_steps']:>9.2e}")
    print(f"largest error: {worst:.2e}")


if __name__ == "__main__":
    main()
