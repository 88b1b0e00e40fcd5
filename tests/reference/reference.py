#!/usr/bin/env python3
"""Independent float64 reference forward pass for llama-architecture GGUF models.

Written for clarity, not speed, and sharing no code or tables with the Rust engine.
Weights are read with `gguf.GGUFReader`, dequantized with `gguf.quants.dequantize`
(which returns float32 values; they are then widened to float64), and every
activation is computed in float64.

GGUF dimension order: a matrix whose GGUF dims are [n_in, n_out] arrives from
the reader (and from `dequantize`) as a numpy array of shape (n_out, n_in), i.e.
each row is one output feature, so y = W @ x.

CLI:
    python3 tests/reference/reference.py --model PATH --prompt-ids 1,2,3 \
        --steps 32 --top 10
prints JSON with the greedy tokens and the top-k logits at the last prompt
position and at each greedy step.
"""

import os

# Keep BLAS single-threaded unless the caller says otherwise (shared machines).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from gguf import GGUFReader  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

# End-of-generation ids for SmolLM2: <|endoftext|>, <|im_end|>, <reponame>.
DEFAULT_EOG_IDS = (0, 2, 4)


def _field(reader, key):
    """Scalar (or string) metadata value for `key`."""
    return reader.fields[key].contents()


class Model:
    """A llama-architecture model with all weights dequantized to float64."""

    def __init__(self, path):
        reader = GGUFReader(path)
        arch = _field(reader, "general.architecture")
        if arch != "llama":
            raise ValueError(f"unsupported architecture {arch!r}")
        self.n_layer = int(_field(reader, "llama.block_count"))
        self.n_embd = int(_field(reader, "llama.embedding_length"))
        self.n_ff = int(_field(reader, "llama.feed_forward_length"))
        self.n_head = int(_field(reader, "llama.attention.head_count"))
        self.n_kv_head = int(_field(reader, "llama.attention.head_count_kv"))
        self.head_dim = self.n_embd // self.n_head
        self.rope_base = float(_field(reader, "llama.rope.freq_base"))
        # Stored as float32 in the file; use that exact value, widened to float64.
        self.eps = float(_field(reader, "llama.attention.layer_norm_rms_epsilon"))

        self.tensor_types = {}
        w = {}
        for t in reader.tensors:
            values = dequantize(t.data, t.tensor_type)
            # GGUF dims are listed innermost first; numpy shape is the reverse.
            expected = tuple(int(d) for d in reversed(t.shape.tolist()))
            values = np.asarray(values, dtype=np.float64).reshape(expected)
            w[t.name] = values
            self.tensor_types[t.name] = t.tensor_type.name
        self.w = w

        self.embed = w["token_embd.weight"]  # (n_vocab, n_embd)
        # Tied embeddings: without output.weight the embedding matrix is the output.
        self.output = w.get("output.weight", self.embed)  # (n_vocab, n_embd)
        self.output_norm = w["output_norm.weight"]
        self.n_vocab = self.embed.shape[0]
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            self.layers.append({
                "attn_norm": w[p + "attn_norm.weight"],
                "wq": w[p + "attn_q.weight"],        # (n_head*hd, n_embd)
                "wk": w[p + "attn_k.weight"],        # (n_kv_head*hd, n_embd)
                "wv": w[p + "attn_v.weight"],        # (n_kv_head*hd, n_embd)
                "wo": w[p + "attn_output.weight"],   # (n_embd, n_head*hd)
                "ffn_norm": w[p + "ffn_norm.weight"],
                "w_gate": w[p + "ffn_gate.weight"],  # (n_ff, n_embd)
                "w_up": w[p + "ffn_up.weight"],      # (n_ff, n_embd)
                "w_down": w[p + "ffn_down.weight"],  # (n_embd, n_ff)
            })
        hd = self.head_dim
        assert self.layers[0]["wq"].shape == (self.n_head * hd, self.n_embd)
        assert self.layers[0]["wk"].shape == (self.n_kv_head * hd, self.n_embd)
        assert self.layers[0]["w_down"].shape == (self.n_embd, self.n_ff)

    # ---- building blocks ------------------------------------------------------

    def rmsnorm(self, x, weight):
        """x: (T, n_embd). x / sqrt(mean(x^2) + eps) * weight, row by row."""
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(ms + self.eps) * weight

    def rope(self, x, positions):
        """Rotate ADJACENT pairs (x[2i], x[2i+1]) of each head (llama.cpp NORM mode).

        x: (T, n_heads, head_dim); positions: (T,) absolute positions.
        Pair i of a head at position p is rotated by p * base^(-2i/head_dim).
        """
        hd = self.head_dim
        i = np.arange(hd // 2, dtype=np.float64)
        inv_freq = self.rope_base ** (-2.0 * i / hd)                      # (hd/2,)
        angle = positions.astype(np.float64)[:, None] * inv_freq[None, :]  # (T, hd/2)
        cos = np.cos(angle)[:, None, :]
        sin = np.sin(angle)[:, None, :]
        x0 = x[..., 0::2]
        x1 = x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    @staticmethod
    def silu(x):
        return x / (1.0 + np.exp(-x))

    # ---- forward --------------------------------------------------------------

    def new_cache(self):
        """Per-layer key/value cache: lists of (n_kv_head, T, head_dim) arrays."""
        return {"pos": 0, "k": [None] * self.n_layer, "v": [None] * self.n_layer}

    def forward(self, ids, cache=None, last_only=False):
        """Run tokens `ids` (continuing after whatever `cache` holds).

        Returns logits (len(ids), n_vocab) for every new position, or only the
        last row, shape (n_vocab,), with last_only. The cache is extended in
        place. With cache=None a fresh one is used.
        """
        if cache is None:
            cache = self.new_cache()
        ids = np.asarray(ids, dtype=np.int64)
        T = len(ids)
        hd, nh, nkv = self.head_dim, self.n_head, self.n_kv_head
        group = nh // nkv
        start = cache["pos"]
        positions = np.arange(start, start + T)

        x = self.embed[ids].copy()  # (T, n_embd)
        for li, L in enumerate(self.layers):
            h = self.rmsnorm(x, L["attn_norm"])
            q = (h @ L["wq"].T).reshape(T, nh, hd)
            k = (h @ L["wk"].T).reshape(T, nkv, hd)
            v = (h @ L["wv"].T).reshape(T, nkv, hd)
            q = self.rope(q, positions)
            k = self.rope(k, positions)

            # Append to cache: stored as (n_kv_head, T_total, hd).
            k = k.transpose(1, 0, 2)
            v = v.transpose(1, 0, 2)
            if cache["k"][li] is not None:
                k = np.concatenate([cache["k"][li], k], axis=1)
                v = np.concatenate([cache["v"][li], v], axis=1)
            cache["k"][li] = k
            cache["v"][li] = v
            S = k.shape[1]  # total keys visible so far

            # Causal mask: query at absolute position p sees keys 0..p.
            key_pos = np.arange(S)
            mask = key_pos[None, :] <= positions[:, None]  # (T, S)
            attn = np.empty((T, nh, hd))
            scale = 1.0 / np.sqrt(hd)
            for head in range(nh):
                kv = head // group
                scores = (q[:, head, :] @ k[kv].T) * scale  # (T, S)
                scores = np.where(mask, scores, -np.inf)
                scores = scores - scores.max(axis=-1, keepdims=True)
                p = np.exp(scores)
                p /= p.sum(axis=-1, keepdims=True)
                attn[:, head, :] = p @ v[kv]
            x = x + attn.reshape(T, nh * hd) @ L["wo"].T

            h = self.rmsnorm(x, L["ffn_norm"])
            gate = h @ L["w_gate"].T
            up = h @ L["w_up"].T
            x = x + (self.silu(gate) * up) @ L["w_down"].T

        cache["pos"] = start + T
        if last_only:
            x = x[-1:]
        x = self.rmsnorm(x, self.output_norm)
        logits = x @ self.output.T
        return logits[0] if last_only else logits


def top_k(logits, k):
    """[[id, logit], ...] of the k largest logits, descending (ties: lower id first)."""
    order = np.lexsort((np.arange(len(logits)), -logits))[:k]
    return [[int(i), float(logits[i])] for i in order]


def greedy(model, prompt_ids, steps=32, top=10, eog_ids=DEFAULT_EOG_IDS, digits=None):
    """Greedy decoding. Returns a list of step records.

    Record 0 is for the last prompt position; record j>0 for the j-th generated
    token fed back in. Each record: {"token": argmax id chosen here,
    "top": [[id, logit], ...], "margin": top1 - top2}. At most `steps` tokens are
    generated; generation stops after a token in `eog_ids`.
    """
    cache = model.new_cache()
    logits = model.forward(list(prompt_ids), cache, last_only=True)
    records = []
    while True:
        t = top_k(logits, max(top, 2))
        token = t[0][0]
        margin = t[0][1] - t[1][1]
        t = t[:top]
        if digits is not None:
            t = [[i, round(v, digits)] for i, v in t]
            margin = round(margin, digits)
        records.append({"token": token, "top": t, "margin": margin})
        if len(records) >= steps or token in eog_ids:
            break
        logits = model.forward([token], cache)[0]
    return records


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-ids", required=True, help="comma-separated token ids")
    ap.add_argument("--steps", type=int, default=32, help="max generated tokens")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--no-stop", action="store_true",
                    help="do not stop at end-of-generation ids 0, 2, 4")
    ap.add_argument("--check-cache", action="store_true",
                    help="also recompute every step without the KV cache and "
                         "report the largest logit difference (slow)")
    args = ap.parse_args(argv)

    ids = [int(s) for s in args.prompt_ids.split(",") if s.strip()]
    t0 = time.time()
    model = Model(args.model)
    t1 = time.time()
    eog = () if args.no_stop else DEFAULT_EOG_IDS
    records = greedy(model, ids, args.steps, args.top, eog)
    t2 = time.time()
    out = {
        "prompt_ids": ids,
        "generated": [r["token"] for r in records],
        "steps": records,
        "load_s": round(t1 - t0, 3),
        "run_s": round(t2 - t1, 3),
    }
    if args.check_cache:
        # Full recompute of the whole sequence: logits at every position at once.
        seq = ids + [r["token"] for r in records[:-1]]
        full = model.forward(seq)
        worst = 0.0
        for j, r in enumerate(records):
            row = full[len(ids) - 1 + j]
            for i, v in r["top"]:
                worst = max(worst, abs(row[i] - v))
        out["cache_check_max_abs_diff"] = worst
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
