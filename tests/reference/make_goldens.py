#!/usr/bin/env python3
"""Write tests/golden/*.json: greedy decodes and top-10 logits from reference.py.

Prompt ids come from llama.cpp's tokenizer (llama-cpp-python, vocab_only).
Chat prompts are rendered with the model's own `tokenizer.chat_template` (jinja2).
Logits come from the float64 reference in reference.py.

    python3 tests/reference/make_goldens.py [--model PATH] [--only NAME ...]
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import jinja2  # noqa: E402
import numpy as np  # noqa: E402
from gguf import GGUFReader  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GOLDEN_DIR = ROOT / "tests" / "golden"
STEPS = 32
TOP = 10
DIGITS = 6

LONG_TEXT = """\
The printing press did not arrive in Europe as a single invention but as a \
careful combination of older ideas. Screw presses had long been used to squeeze \
oil from olives and juice from grapes. Paper, which had travelled west from China \
through the Islamic world, was by the fifteenth century made in mills across \
Italy, France and Germany. Oil-based inks were already familiar to painters. \
What Johannes Gutenberg added, in Mainz around 1450, was a practical way to cast \
large numbers of identical metal letters, together with a workshop routine that \
turned those letters into pages quickly and cheaply.

The heart of the system was the hand mould. A craftsman struck the shape of a \
letter into a soft copper matrix with a hardened steel punch, placed the matrix \
at the bottom of the adjustable mould, and poured in a molten alloy of lead, tin \
and antimony. The metal cooled in seconds, and the result was a small block with \
a raised letter at one end. Because the mould could be adjusted for width but \
kept the same height, every piece of type stood at exactly the same level, so \
that a page made of thousands of separate pieces could be inked and printed \
evenly.

Compositors picked the letters from a case, set them line by line in a \
composing stick, and locked the finished page into an iron frame called a chase. \
Ink was dabbed onto the type with leather balls, a dampened sheet of paper was \
laid on top, and the pressman pulled a bar that lowered the platen. A skilled \
team could print several hundred sheets in a day, far more than any scribe could \
copy in a year. When the job was finished, the type was cleaned, sorted back \
into the case and used again for the next book.

The consequences spread faster than anyone expected. Within fifty years there \
were presses in more than two hundred towns, and millions of books had been \
printed. Prices fell, and reading ceased to be the privilege of monasteries, \
universities and wealthy households. Scholars could compare identical copies of \
a text, which made it easier to find and correct errors. Printers standardised \
spelling and punctuation, sometimes by accident and sometimes on purpose. \
Pamphlets carried religious and political arguments across borders in weeks \
rather than years, and governments soon learned to fear, license and censor the \
new machines.

Historians still argue about how much credit belongs to the press itself. Some \
point out that block printing and even movable type had existed in East Asia \
for centuries, and that the European trade in books grew out of a long tradition \
of commercial copying. Others stress that the technology mattered mainly because \
it met a society that was ready for it: growing cities, a merchant class that \
valued literacy, and universities hungry for texts. Whatever the balance, the \
workshop in Mainz marked a turning point after which the written word became \
cheap, plentiful and difficult to control."""

# name -> (mode, text). "raw": tokenized as plain text; "chat": rendered with
# the chat template, then tokenized with special tokens enabled.
PROMPTS = {
    "raw_single_token": ("raw", "Hello"),
    "raw_capital": ("raw", "The capital of France is"),
    "raw_story": ("raw", "Once upon a time, in a small village by the sea, there lived"),
    "raw_code": ("raw", 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'),
    "chat_capital": ("chat", "What is the capital of France?"),
    "chat_haiku": ("chat", "Write a haiku about the ocean."),
    "chat_math": ("chat", "If I have 3 apples and buy 5 more, how many apples do I have?"),
    "chat_long_summary": ("chat", "Summarize the following text in three sentences.\n\n"
                                  + LONG_TEXT),
}


def chat_template(model_path):
    reader = GGUFReader(str(model_path))
    return reader.fields["tokenizer.chat_template"].contents()


def render_chat(template_src, user_text):
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    tmpl = env.from_string(template_src)
    return tmpl.render(messages=[{"role": "user", "content": user_text}],
                       add_generation_prompt=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dump_compact(obj):
    """JSON with one top-level key per line and one step record per line."""
    lines = []
    for key, value in obj.items():
        if key == "steps":
            body = ",\n".join("  " + json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f'"{key}": [\n{body}\n ]')
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--out", default=str(GOLDEN_DIR))
    ap.add_argument("--only", nargs="*", help="prompt names to (re)generate")
    args = ap.parse_args(argv)

    import llama_cpp  # imported late: only needed for tokenization

    names = args.only or list(PROMPTS)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    tok = llama_cpp.Llama(model_path=args.model, vocab_only=True, verbose=False)
    template = chat_template(args.model)
    versions = {
        "gguf": version("gguf"),
        "numpy": np.__version__,
        "llama-cpp-python": llama_cpp.__version__,
    }
    how = (f"Logits from tests/reference/reference.py (float64 forward pass; weights "
           f"dequantized by gguf {versions['gguf']}, numpy {versions['numpy']}); "
           f"prompt ids from llama-cpp-python {versions['llama-cpp-python']} "
           f"tokenizer; greedy, up to {STEPS} tokens, stop after ids "
           f"{list(reference.DEFAULT_EOG_IDS)}; made {datetime.date.today()}.")

    t0 = time.time()
    model = reference.Model(args.model)
    print(f"model loaded in {time.time() - t0:.1f}s", file=sys.stderr)
    model_sha = sha256(args.model)

    for name in names:
        mode, text = PROMPTS[name]
        if mode == "chat":
            prompt_text = render_chat(template, text)
            special = True
        else:
            prompt_text = text
            special = False
        ids = tok.tokenize(prompt_text.encode("utf-8"), add_bos=False, special=special)
        t1 = time.time()
        steps = reference.greedy(model, ids, STEPS, TOP, reference.DEFAULT_EOG_IDS,
                                 digits=DIGITS)
        dt = time.time() - t1
        generated = [s["token"] for s in steps]
        gen_text = tok.detokenize(generated, special=True).decode("utf-8", "replace")
        golden = {
            "how": how,
            "model": Path(args.model).name,
            "model_sha256": model_sha,
            "mode": mode,
            "text": text,
            "prompt_text": prompt_text,
            "prompt_ids": ids,
            "generated_text": gen_text,
            "steps": steps,
        }
        path = out_dir / f"{name}.json"
        with open(path, "w") as f:
            f.write(dump_compact(golden))
        print(f"{name}: {len(ids)} prompt tokens, {len(generated)} generated, "
              f"{dt:.1f}s -> {gen_text!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
