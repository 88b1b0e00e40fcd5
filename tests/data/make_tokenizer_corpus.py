#!/usr/bin/env python3
"""Writes tests/data/tokenizer_corpus.json: corpus strings and the token ids llama.cpp gives them.

Expected ids come only from llama.cpp (through llama-cpp-python), never from this crate:

    pip install llama-cpp-python==0.3.36
    python3 tests/data/make_tokenizer_corpus.py \
        --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
        [--vocab-dir path/to/llama.cpp/models] \
        --out tests/data/tokenizer_corpus.json

For each string the JSON holds `tokenize(text.encode(), add_bos=False, special=False)` per
vocabulary, and, for strings that contain "<" (chat markup and look-alikes) or are listed in
SPECIAL_TOO, the ids with `special=True` as well. With --vocab-dir, llama.cpp's vocab-only test
files (ggml-vocab-gpt-2.gguf, ...) are tokenized too, so that other pre-tokenizers can be
checked where those files are at hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random

import llama_cpp

# The main vocabulary's key in the JSON; the others are keyed by their file name.
MAIN = "smollm2"
EXTRA_VOCABS = [
    "ggml-vocab-gpt-2.gguf",
    "ggml-vocab-llama-bpe.gguf",
    "ggml-vocab-qwen2.gguf",
    "ggml-vocab-starcoder.gguf",
    "ggml-vocab-refact.gguf",
    "ggml-vocab-command-r.gguf",
]

ENGLISH = [
    "Hello world",
    " Hello world",
    "Hello World",
    "Hello, world!",
    "hello",
    " hello",
    "HELLO",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "What is the capital of France?",
    "I'm sorry, Dave. I'm afraid I can't do that.",
    "To be, or not to be, that is the question:",
    "Once upon a time, in a land far, far away, there lived a dragon.",
    "e.g. i.e. etc. vs. Mr. Mrs. Dr. St.",
    "U.S.A. and the U.K.",
    "supercalifragilisticexpialidocious",
    "antidisestablishmentarianism",
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "a",
    "A",
    "I",
    "ab",
    "The year 2024 was a leap year; 2025 is not.",
    "Email me at john.doe+test@example.com or visit https://example.com/path?q=1&r=2#frag",
    "C:\\Users\\Public\\Documents\\file.txt",
    "/usr/local/bin/python3 --version",
    "snake_case_name and camelCaseName and PascalCaseName and SCREAMING_SNAKE",
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
]

EUROPEAN = [
    "Äpfel",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "Straße, Größe, Fußgänger, weiß",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "Ça va? Très bien, merci! À bientôt.",
    "Noël, naïve, façade, déjà vu, crème brûlée",
    "¿Dónde está la biblioteca? ¡Olé!",
    "São Paulo, coração, ação, pão",
    "Zażółć gęślą jaźń",
    "Příliš žluťoučký kůň úpěl ďábelské ódy",
    "İstanbul'da ılık bir gün; Ağaç, çiçek, şeker",
    "Tiếng Việt có dấu: Xin chào thế giới",
    "Ærøskøbing og Ålborg",
    "Þetta er íslenska: Ég heiti Jón.",
    "Mëtropolitan Ünïcödé",
]

CJK = [
    "你好，世界！",
    "我想在apple工作1314151天～",
    "机器学习是人工智能的一个分支。",
    "繁體中文與簡體中文",
    "こんにちは世界",
    "日本語のテキストです。カタカナとひらがなと漢字。",
    "ｶﾀｶﾅ (half-width katakana)",
    "東京都渋谷区",
    "안녕하세요, 세계!",
    "한국어 텍스트입니다. 감사합니다.",
    "ㄱㄴㄷㄹ ㅏㅑㅓㅕ",
    "中文English混合日本語한국어",
]

OTHER_SCRIPTS = [
    "مرحبا بالعالم",
    "اللغة العربية جميلة جداً.",
    "سلام دنیا، حال شما چطور است؟",
    "שלום עולם",
    "עברית נכתבת מימין לשמאל.",
    "नमस्ते दुनिया",
    "हिन्दी भाषा में लिखा गया वाक्य।",
    "বাংলা ভাষা",
    "தமிழ் மொழி",
    "สวัสดีชาวโลก",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "កាន់តែពិសេសអាចខលចេញ",
    "ქართული ენა",
    "Հայերեն լեզու",
    "ሰላም ለዓለም",
    "ᚠᚢᚦᚨᚱᚲ runes",
]

CYRILLIC_GREEK = [
    "Привет, мир!",
    "нещо на Български",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Україна, їжак, ґанок",
    "Γειά σου Κόσμε",
    "Ελληνικά: αβγδεζηθικλμνξοπρστυφχψω ΑΒΓΔ",
    "ἐν ἀρχῇ ἦν ὁ λόγος",
    "ΣΊΣΥΦΟΣ σίσυφος",
]

EMOJI = [
    "🦙",
    " this is 🦙.cpp",
    "😀😃😄😁",
    "🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ (only emoji that has its own token)",
    "👨‍👩‍👧‍👦",
    "👩🏽‍💻 and 🧑🏿‍🚀",
    "👍 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿",
    "🏳️‍🌈 🏴‍☠️",
    "🇺🇸🇬🇧🇯🇵🇩🇪🇫🇷",
    "🇺",
    "1️⃣ 2️⃣ #️⃣",
    "❤️ ❤ ♥️",
    "☀️⛅🌧️⛈️",
    "emoji at the end 🎉",
    "🎉 emoji at the start",
    "mid🎉word",
    "🏻",
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland",
    "👁️‍🗨️",
    "🫠🫡🫶",
]

NUMBERS = [
    "1",
    "12",
    "123",
    "1234",
    "12345",
    "123456",
    "1234567",
    "1234567890",
    "3",
    "33",
    "333",
    "3333",
    "33333333",
    "3.14159",
    "1,000,000",
    "-42",
    "+7",
    "1e10",
    "6.022e23",
    "0x1F 0b1010 0o777",
    "+1 (555) 123-4567",
    "2024-01-15T13:45:30Z",
    "12:30pm",
    "$1,234.56 €99,99 £5 ¥1000",
    "100%",
    "٠١٢٣٤٥٦٧٨٩",
    "１２３４５",
    "x² + y³ = z⁴",
    "½ ¼ ¾",
    "ied 4 ½ months",
    "Ⅻ Ⅳ ⅷ",
    "①②③",
    "w048 7tuijk dsdfhu",
    "v1.2.3-beta.4",
    "abc123def456",
    "3333333 1 22 333 4444",
]

WHITESPACE = [
    "",
    " ",
    "  ",
    "   ",
    "    ",
    "        ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\n\n\n",
    "\r\n",
    "\r\n\r\n",
    "\r",
    "\t\n",
    " \n",
    "\n ",
    " \t \n \r\n ",
    "trailing space ",
    "trailing spaces   ",
    " leading space",
    "   leading spaces",
    "two  spaces  between",
    "Hello\nworld",
    "Hello\n\nworld",
    "line one\r\nline two\r\n",
    "    Hello\n    Hello",
    "\n =",
    "a\u00a0b",
    "\u00a0",
    "a\u3000b",
    "\u2003em space",
    "a\u000bb\u000cc",
    "next\u0085line",
    "line\u2028separator\u2029paragraph",
    "tab\tseparated\tvalues",
    " \u00a0 ",
    "word \n\n  word",
]

CODE = [
    "def add(a, b):\n    return a + b\n",
    "import numpy as np\n\nx = np.zeros((3, 4), dtype=np.float32)\nprint(x.shape)\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(f\"{i} is even\")",
    "class Foo(Bar):\n    def __init__(self):\n"
    "        super().__init__()\n        self._x = None\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!(\"{:?}\", v);\n}\n",
    "impl<'a, T: Clone> Iterator for Iter<'a, T> {\n    type Item = &'a T;\n}",
    "#[derive(Debug)]\npub struct Point { x: f64, y: f64 }",
    '{"name": "SmolLM2", "params": 135000000, "tags": ["small", "llm"], "ok": true, "x": null}',
    '[\n  {\n    "id": 1,\n    "value": -3.5e-2\n  }\n]',
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head><title>Test</title></head>\n"
    "<body><p class=\"x\">Hi &amp; bye</p></body>\n</html>",
    "<div id='main'><span>text</span><br/></div>",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    "const f = async (x) => { await fetch(`/api/${x}`); };",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "git commit -m \"fix: handle CRLF\" && git push origin main",
    "^\\s*(\\d{1,3})\\.(\\d+)?$",
    "# Title\n\n- item *one*\n- item **two**\n\n```python\nprint('hi')\n```",
    "\\frac{a}{b} + \\sum_{i=0}^{n} x_i^2",
    "x+=1;y-=2;z*=3;w/=4;a<<=1;b>>=2;c!=d;e==f;g<=h;i>=j",
    "if (a && b || !c) { return; }",
    "    indented with four spaces",
    "\t\tindented with tabs",
]

CONTRACTIONS = [
    "don't",
    "DON'T",
    "I'M",
    "I'm",
    "they'll",
    "THEY'LL",
    "we've",
    "you'd",
    "it's",
    "IT'S",
    "She'S",
    "'s",
    "'",
    "''",
    "'''",
    "' era",
    "rock 'n' roll",
    "'twas the night",
    "can't won't shouldn't",
    "Hello, y'all! How are you 😁 ?",
    "we'Ve and I'lL and you'Re",
    "Pay 'em back",
    "It's 5 o'clock",
    "the boys' toys and James's book",
]

PUNCTUATION = [
    "!!!",
    "...",
    "?!?!",
    "!!!???...",
    "—",
    "– - — ―",
    "«Bonjour» „Hallo“ “quotes” ‘single’",
    "----------",
    "==========",
    "**********",
    "((()))[[]]{{}}",
    "<<>>",
    "@#$%^&*",
    "~`|\\",
    "…",
    "。、！？",
    " (",
    " ((",
    "!",
    ",",
    ".",
    "a.b,c;d:e!f?g",
    "¡¿",
    "§¶†‡•",
]

CHAT_LOOKING = [
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "<|im_start",
    "< |im_end| >",
    "<|im_end|>",
    "<|im_start|>",
    "<|im_end|><|im_end|>",
    "text<|endoftext|>more text",
    " <|im_start|> spaced <|im_end|> ",
    "<|im_start|><|im_start|>nested",
    "<|im_end",
    "im_end|>",
    "<||>",
    "<|unknown_token|>",
    "<reponame>my-repo<file_sep>main.py",
    "<repo_name>",
    "<filename>src/lib.rs",
    "<jupyter_start><jupyter_code>print(1)<jupyter_output>1",
    "<gh_stars>100",
    "<empty_output>",
    "<issue_start>bug<issue_comment>fixed<issue_closed>",
    "< reponame >",
    "<|endoftext|><|endoftext|>",
    "<s>[INST] llama style [/INST]</s>",
    "<|eot_id|><|start_header_id|>",
    "<html><|im_start|></html>",
    "<|im_start|>user\n\n<|im_end|>\n",
    "\n<|im_end|>\n",
]

ZERO_WIDTH_AND_MARKS = [
    "zero\u200bwidth\u200bspace",
    "zero\u200cwidth\u200dnon\u200djoiner",
    "\ufeffBOM at start",
    "soft\u00adhyphen",
    "word\u2060joiner",
    "\u200e left-to-right mark \u200f right-to-left mark",
    "\u202ereversed\u202c",
    "\u200b",
    "e\u0301",
    "cafe\u0301 vs caf\u00e9",
    "a\u0308o\u0308u\u0308",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f"
    "\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369"
    "\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O",
    "\u1100\u1161\u11a8",
    "n\u0303",
    "\u0915\u094d\u0937",
    "\u0301 starts with a combining mark",
]

UNUSUAL_VALID = [
    "\ue000\ue001 private use",
    "\ufffd replacement char",
    "\uffff nonchar",
    "\U0010ffff",
    "\u0378 unassigned",
    "\U0001fffe",
    "\U000e0041\U000e0042 tags",
    "𝄞 music",
    "𝐀𝐁𝐂 𝒶𝒷𝒸 𝕏",
    "\ufe0f",
    "\u0000 nul",
    "\u0001\u0002\u001b[31mred\u001b[0m",
    "\u007f del",
    "\u0080\u0081\u009f C1 controls",
    "ﬁ ﬂ ligatures",
    "Å Å",
    "\U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1",
    "\u2588\u2591\u2592\u2593 blocks",
    "\u2603 \u2764 \u262f",
    "\U00020000 CJK ext B",
    # assigned in Unicode 16, after llama.cpp's tables (15.1): neither letters nor numbers
    "\U00010ec2'll",
    "x\U000136c0*m \U00014140'T",
    # SmolLM2 has no token for the bytes 0x04 and 0xF2: llama.cpp drops them
    "ctrl\u0004d",
    "\U00080000 plane 8",
]

LONG = [
    (
        "Large language models are neural networks trained on vast amounts of text. They "
        "learn to predict the next token in a sequence, and in doing so pick up grammar, "
        "facts, and some reasoning ability. Small models such as SmolLM2-135M trade accuracy "
        "for speed: with 135 million parameters they fit comfortably in a browser tab, run "
        "on integrated GPUs through WebGPU, and answer simple questions in well under a "
        "second. Grouped-query attention (GQA) shares each key/value head among several "
        "query heads, which shrinks the KV cache by the group size -- 3x for SmolLM2 -- "
        "without hurting quality much. Quantization to 4 bits (Q4_0, Q4_1, Q4_K) cuts the "
        "weights' size by 4-8x again. In 2023-2024, dozens of such models appeared; "
        "benchmarks like MMLU, HellaSwag and ARC measure them, though none is perfect."
    ),
    (
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
        "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
        "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.\n\nDuis aute "
        "irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla "
        "pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia "
        "deserunt mollit anim id est laborum."
    ),
    "ab" * 300,
    " " * 100 + "x",
    "\n" * 50,
    "9" * 200,
    "🦙" * 40,
    "的" * 100,
]

MIXED = [
    "Hello мир 世界 عالم 🌍",
    "The word 'naïve' in 日本語 is ナイーブ.",
    "Price: ¥1000 (約$7)",
    "Σ(x²) = 42 → ∞ ≠ ∅",
    "abc АБВ αβγ אבג",
    "GPT-4o vs. Llama-3.1-8B-Instruct: 128K ctx",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ",
    "Mix\tof\nall\r\nkinds  of   space",
    "2+2=4, 3*3=9; √16=4",
    "user@host:~$ ls -la | grep '.rs'",
]

# Strings without "<" whose ids are recorded with special=True too.
SPECIAL_TOO = ["Hello world", "", " ", "im_end|>", "|>"]


def random_strings(count: int, seed: int) -> list[str]:
    """Fixed pseudo-random mixtures of letters, digits, marks, spaces, symbols and emoji."""
    pool = (
        list("abcxyzABCXYZ0123456789 '\t\n\r.,;:!?-_()[]{}<>|/\\\"$%&*+=@#^~`")
        + list("äöüßéèçñøåÄÖÜÉ")
        + list("абвгдАБВГДαβγΩ")
        + list("中文字日本語한국어ひらがなカタカナ")
        + list("عربيעבריתहिंदीไทย")
        + ["\u0301", "\u0308", "\u200b", "\u200d", "\u00a0", "\u3000", "\u2028", "\ufe0f"]
        + ["🦙", "😀", "👍🏽", "🇫🇷", "👨‍👩‍👧", "✅", "€", "½", "²", "٣", "４"]
        + ["'s", "'ll", "'RE", "<|im_end|>", "<|im_start|>", "<|endoftext|>", "  ", "\n\n"]
    )
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(1, 24)
        out.append("".join(rng.choice(pool) for _ in range(n)))
    return out


def corpus() -> list[str]:
    strings = (
        ENGLISH + EUROPEAN + CJK + OTHER_SCRIPTS + CYRILLIC_GREEK + EMOJI + NUMBERS
        + WHITESPACE + CODE + CONTRACTIONS + PUNCTUATION + CHAT_LOOKING
        + ZERO_WIDTH_AND_MARKS + UNUSUAL_VALID + LONG + MIXED + random_strings(70, 20241203)
    )
    seen = set()
    unique = []
    for s in strings:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    return unique


def load(path: str) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--vocab-dir", help="llama.cpp's models/ folder with ggml-vocab-*.gguf")
    parser.add_argument("--out", default="tests/data/tokenizer_corpus.json")
    args = parser.parse_args()

    vocabs = {MAIN: args.model}
    if args.vocab_dir:
        for name in EXTRA_VOCABS:
            path = os.path.join(args.vocab_dir, name)
            if os.path.exists(path):
                vocabs[name] = path

    strings = corpus()
    cases = [{"text": s, "ids": {}, "ids_special": {}} for s in strings]
    for key, path in vocabs.items():
        llm = load(path)
        for case in cases:
            data = case["text"].encode("utf-8")
            case["ids"][key] = llm.tokenize(data, add_bos=False, special=False)
            if "<" in case["text"] or case["text"] in SPECIAL_TOO:
                case["ids_special"][key] = llm.tokenize(data, add_bos=False, special=True)
        del llm
    for case in cases:
        if not case["ids_special"]:
            del case["ids_special"]

    doc = {
        "about": (
            "Token ids that llama.cpp gives each string, through llama-cpp-python: "
            "Llama(model_path, vocab_only=True).tokenize(text.encode(), add_bos=False, "
            "special=False) under 'ids', and special=True under 'ids_special' for strings "
            "containing '<' and a few others. Keys name the vocabulary: 'smollm2' is --model, "
            "the others are llama.cpp's ggml-vocab-*.gguf test files, found by the Rust test "
            "in $LLAMA_CPP_VOCAB_DIR."
        ),
        "generator": "tests/data/make_tokenizer_corpus.py",
        "llama_cpp_python": llama_cpp.__version__,
        "created": datetime.date.today().isoformat(),
        "vocabs": {k: os.path.basename(v) for k, v in vocabs.items()},
        "cases": cases,
    }
    # One case per line, so that a regenerated file diffs line by line.
    head = json.dumps({k: v for k, v in doc.items() if k != "cases"}, ensure_ascii=False, indent=1)
    lines = [json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(head[:-2] + ',\n "cases": [\n' + ",\n".join(lines) + "\n ]\n}\n")
    print(f"{len(cases)} strings, vocabularies: {', '.join(vocabs)} -> {args.out}")


if __name__ == "__main__":
    main()
