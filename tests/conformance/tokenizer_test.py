"""Conformance: `freehold tokenize` against the tokenizers library (DESIGN.md §3, §7; issue 4).

scripts/make_tokenizers.py trains one tokenizer of each supported family on local text. For each, every line of
the checked-in corpus tests/data/corpus/multilingual.txt must give the same ids in freehold as in the library,
with and without special tokens; so must multi-line JSONL records made from it and a sweep over every Unicode
code point (so the split patterns' Unicode classes are proven equal, not sampled); and decoding those ids must give
the library's text, with and without skip_special_tokens.

Invalid UTF-8: the library only sees Python str. The corpus holds invalid byte sequences; the reference reads each
line with errors="replace", and freehold's text mode replaces the same way (one U+FFFD per maximal ill-formed
subsequence), so both tokenize the same text.

    FREEHOLD_BIN=build/bin/freehold .venv/bin/python -m unittest -v tests/conformance/tokenizer_test.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import unittest
from pathlib import Path

from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("FREEHOLD_CONFORMANCE_DIR", REPO / "build" / "conformance")) / "tokenizers"
FREEHOLD_BIN = Path(os.environ.get("FREEHOLD_BIN", REPO / "build" / "bin" / "freehold"))
CORPUS = REPO / "tests" / "data" / "corpus" / "multilingual.txt"
REQUIRED_VARIANTS = {"gpt2", "llama3", "qwen2", "llama2", "mistral", "sp-metaspace"}


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_tokenizers", REPO / "scripts" / "make_tokenizers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def corpus_lines() -> list[str]:
    """The corpus as freehold's text mode reads it: split at \\n, one trailing \\r dropped, invalid UTF-8 replaced."""
    raw = CORPUS.read_bytes()
    parts = raw.split(b"\n")
    if raw.endswith(b"\n"):
        parts.pop()
    return [(p[:-1] if p.endswith(b"\r") else p).decode("utf-8", errors="replace") for p in parts]


def jsonl_texts(lines: list[str]) -> list[str]:
    """Multi-line records: neighbouring corpus lines joined by the line breaks the split patterns treat specially."""
    joins = ["\n", "\r\n", "\n\n", " \n ", "\t\n", "\n\n\n  ", "\r"]
    return [lines[i] + joins[i % len(joins)] + lines[i + 1] for i in range(len(lines) - 1)]


def unicode_sweep() -> list[str]:
    """Every code point but surrogates, 96 per line, in runs that mix it with letters, digits, spaces and marks."""
    points = [cp for cp in range(1, 0x110000) if not 0xD800 <= cp <= 0xDFFF]
    fillers = ["a", " ", "1", "'s", "  ", "\u0301", "\n", "x "]
    texts = []
    for start in range(0, len(points), 96):
        chunk = points[start:start + 96]
        filler = fillers[(start // 96) % len(fillers)]
        texts.append("".join(chr(cp) + (filler if k % 3 == 0 else "") for k, cp in enumerate(chunk)))
    return texts


def run_freehold(args: list[str], stdin: bytes | None = None) -> list[dict]:
    result = subprocess.run([str(FREEHOLD_BIN), "tokenize", *args], input=stdin, capture_output=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"freehold tokenize {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stderr.decode(errors='replace')[-3000:]}")
    # Only "\n" ends a record: str.splitlines() would also cut at U+2028, U+0085 and others inside the texts.
    lines = result.stdout.decode("utf-8").split("\n")
    assert lines[-1] == "", "output ends with a newline"
    return [json.loads(line) for line in lines[:-1]]


def first_difference(a: list[int], b: list[int]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at {i}: freehold {a[max(0, i - 3):i + 5]} vs library {b[max(0, i - 3):i + 5]}"
    return f"lengths {len(a)} vs {len(b)}"


class TokenizerConformance(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not FREEHOLD_BIN.exists():
            raise AssertionError(f"{FREEHOLD_BIN} does not exist: build the freehold target first")
        WORK.mkdir(parents=True, exist_ok=True)
        gen.main(str(WORK))
        cls.lines = corpus_lines()
        cls.jsonl = jsonl_texts(cls.lines)
        cls.sweep = unicode_sweep()
        cls.jsonl_path = WORK / "records.jsonl"
        cls.jsonl_path.write_text("".join(json.dumps({"text": t}) + "\n" for t in cls.jsonl), encoding="utf-8")
        cls.sweep_path = WORK / "sweep.jsonl"
        cls.sweep_path.write_text("".join(json.dumps({"text": t}) + "\n" for t in cls.sweep), encoding="utf-8")
        cls.counts = {}

    @classmethod
    def tearDownClass(cls):
        for name, count in sorted(cls.counts.items()):
            print(f"  {name}: {count}", file=sys.stderr)

    def test_all_variants_generated(self):
        self.assertEqual(set(gen.VARIANTS), REQUIRED_VARIANTS)
        self.assertIn("gpt2", gen.STRING_MERGES)
        merges = json.loads((WORK / "gpt2" / "tokenizer.json").read_text())["model"]["merges"]
        self.assertTrue(all(isinstance(m, str) for m in merges), "gpt2 must keep the older \"a b\" merge form")

    def check_variant(self, name: str):
        path = WORK / name / "tokenizer.json"
        reference = Tokenizer.from_file(str(path))
        inputs = {
            "corpus": (["--input", str(CORPUS)], self.lines),
            "jsonl": (["--input", str(self.jsonl_path)], self.jsonl),
            "sweep": (["--input", str(self.sweep_path)], self.sweep),
        }
        matched = 0
        for label, (input_args, texts) in inputs.items():
            for special in (True, False):
                flags = [] if special else ["--no-special-tokens"]
                got = [r["ids"] for r in run_freehold(["--tokenizer", str(path), *input_args, *flags])]
                want = [e.ids for e in reference.encode_batch(texts, add_special_tokens=special)]
                self.assertEqual(len(got), len(want), f"{name} {label}: number of output lines")
                for i, (g, w) in enumerate(zip(got, want)):
                    self.assertEqual(g, w, f"{name} {label} line {i + 1} (special={special}) {texts[i]!r:.120}: "
                                           f"{first_difference(g, w)}")
                    matched += 1
                # Decode what was encoded, keeping and skipping special tokens.
                ids_stdin = "".join(json.dumps({"ids": w}) + "\n" for w in want).encode()
                for skip in (False, True):
                    decode_flags = ["--decode"] + (["--no-special-tokens"] if skip else [])
                    texts_got = [r["text"] for r in run_freehold(["--tokenizer", str(path), *decode_flags], ids_stdin)]
                    texts_want = reference.decode_batch(want, skip_special_tokens=skip)
                    self.assertEqual(len(texts_got), len(texts_want))
                    for i, (g, w) in enumerate(zip(texts_got, texts_want)):
                        self.assertEqual(g, w, f"{name} {label} decode line {i + 1} (skip_special={skip})")
                        matched += 1
        self.counts[name] = matched
        # Every line of the corpus was checked: 2 encodings and 4 decodings each.
        self.assertGreaterEqual(matched, 6 * len(self.lines))

    def test_gpt2(self):
        self.check_variant("gpt2")

    def test_llama3(self):
        self.check_variant("llama3")

    def test_qwen2(self):
        self.check_variant("qwen2")

    def test_llama2(self):
        self.check_variant("llama2")

    def test_mistral(self):
        self.check_variant("mistral")

    def test_sp_metaspace(self):
        self.check_variant("sp-metaspace")


if __name__ == "__main__":
    unittest.main()
