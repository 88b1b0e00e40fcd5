#!/usr/bin/env python3
"""Write tests/golden/quant_blocks.json: random blocks of every quantized format
the engine reads, dequantized by gguf-py (`gguf.quants.dequantize`).

Every byte is random except the f16 scale fields, which are set to finite values
in [-2, 2] (a random f16 can be NaN or infinite). tests/quant_golden.rs checks
that src/quant.rs decodes each block to exactly these values.

    python3 tests/reference/make_quant_goldens.py
"""

import datetime
import importlib.metadata
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "golden" / "quant_blocks.json"

# name: (type, bytes per block, byte offsets of its f16 fields, blocks to write)
FORMATS = {
    "Q8_0": (T.Q8_0, 34, [0], 4),
    "Q4_0": (T.Q4_0, 18, [0], 4),
    "Q4_1": (T.Q4_1, 20, [0, 2], 4),
    "Q5_0": (T.Q5_0, 22, [0], 4),
    "Q5_1": (T.Q5_1, 24, [0, 2], 4),
    "Q4_K": (T.Q4_K, 144, [0, 2], 2),
    "Q5_K": (T.Q5_K, 176, [0, 2], 2),
    "Q6_K": (T.Q6_K, 210, [208], 2),
}


def main():
    rng = np.random.default_rng(2026)
    blocks = {}
    for name, (qtype, size, halves, count) in FORMATS.items():
        raw = rng.integers(0, 256, size=(count, size), dtype=np.uint8)
        for at in halves:
            h = rng.uniform(-2, 2, size=count).astype(np.float16)
            raw[:, at : at + 2] = h.view(np.uint8).reshape(count, 2)
        data = raw.reshape(-1)
        values = quants.dequantize(data, qtype).astype(np.float32).reshape(-1)
        # float32 -> Python float is exact, and repr round-trips
        blocks[name] = {"bytes": data.tobytes().hex(), "values": [float(v) for v in values]}
    versions = {p: importlib.metadata.version(p) for p in ("gguf", "numpy")}
    doc = {
        "how": (
            "Random blocks (numpy seed 2026; f16 fields finite, in [-2, 2]) dequantized by "
            f"gguf.quants.dequantize (gguf {versions['gguf']}, numpy {versions['numpy']}) "
            "to float32, by tests/reference/make_quant_goldens.py; made "
            f"{datetime.date.today().isoformat()}."
        ),
        "formats": blocks,
    }
    OUT.write_text(json.dumps(doc) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
