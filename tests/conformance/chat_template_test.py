"""Conformance: chat templates, masks and `freehold prepare` against transformers (DESIGN.md §5, §7; issue 4).

tests/data/chat_templates/expected.json holds, for the built-in templates (llama3, chatml, mistral), how
transformers' apply_chat_template renders a set of conversations with the models' shipped Jinja templates and which
characters are assistant targets (scripts/make_chat_template_expectations.py). Here:

  - the checked-in expectation is still what transformers produces (rendered text and target spans);
  - `freehold prepare --format chat --template T` writes, for each conversation, exactly the ids of
    tokenizer(rendered, add_special_tokens=False) and the mask of apply_chat_template(...,
    return_assistant_tokens_mask=True) on the {% generation %}-marked template (train_on assistant); the last
    assistant turn only (last_assistant); every token (all);
  - the HDF5 file reads back with h5py with the schema of DESIGN.md §5 (attributes, chunked, shuffle + deflate,
    Fletcher32), and text records are tokenizer(text) + EOS.

    FREEHOLD_BIN=build/bin/freehold .venv/bin/python -m unittest -v tests/conformance/chat_template_test.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import unittest
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("FREEHOLD_CONFORMANCE_DIR", REPO / "build" / "conformance")) / "chat_templates"
FREEHOLD_BIN = Path(os.environ.get("FREEHOLD_BIN", REPO / "build" / "bin" / "freehold"))
EXPECTED = REPO / "tests" / "data" / "chat_templates" / "expected.json"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


expectations = _load("make_chat_template_expectations", REPO / "scripts" / "make_chat_template_expectations.py")
make_tokenizers = _load("make_tokenizers", REPO / "scripts" / "make_tokenizers.py")


def last_run(mask: list[int]) -> list[int]:
    out = [0] * len(mask)
    end = max((i for i, m in enumerate(mask) if m), default=-1)
    i = end
    while i >= 0 and mask[i]:
        out[i] = 1
        i -= 1
    return out


class ChatTemplateConformance(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not FREEHOLD_BIN.exists():
            raise AssertionError(f"{FREEHOLD_BIN} does not exist: build the freehold target first")
        WORK.mkdir(parents=True, exist_ok=True)
        make_tokenizers.main(str(WORK / "tokenizers"))
        cls.expected = json.loads(EXPECTED.read_text(encoding="utf-8"))["cases"]

    def prepare(self, name: str, tokenizer: str, records: list[dict], *extra: str) -> h5py.File:
        source = WORK / f"{name}.jsonl"
        source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        out = WORK / f"{name}.h5"
        result = subprocess.run([str(FREEHOLD_BIN), "prepare", "--tokenizer", str(WORK / "tokenizers" / tokenizer),
                                 "--input", str(source), "--out", str(out), "--force", *extra],
                                capture_output=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr.decode(errors="replace"))
        return h5py.File(out, "r")

    def test_expectation_is_what_transformers_renders(self):
        self.assertEqual(expectations.cases(WORK / "tokenizers"), self.expected)

    def test_prepare_ids_and_masks_match_apply_chat_template(self):
        for name, spec in expectations.TEMPLATES.items():
            tok = expectations.hf_tokenizer(WORK / "tokenizers", spec)
            cases = [c for c in self.expected if c["template"] == name]
            for train_on in ("assistant", "last_assistant", "all"):
                with self.subTest(template=name, train_on=train_on):
                    f = self.prepare(f"{name}-{train_on}", spec["tokenizer"], [{"messages": c["messages"]} for c in cases],
                                     "--format", "chat", "--template", name, "--train-on", train_on)
                    offsets = f["doc_offsets"][:]
                    self.assertEqual(len(offsets), len(cases) + 1)
                    tokens, masks = f["tokens"][:], f["loss_mask"][:]
                    for i, case in enumerate(cases):
                        result = tok.apply_chat_template(case["messages"], chat_template=spec["marked"], tokenize=True,
                                                         return_dict=True, return_assistant_tokens_mask=True)
                        ids = tok(case["rendered"], add_special_tokens=False)["input_ids"]
                        self.assertEqual(result["input_ids"], ids)
                        mask = list(result["assistant_masks"])
                        if train_on == "last_assistant":
                            mask = last_run(mask)
                        elif train_on == "all":
                            mask = [1] * len(ids)
                        got = tokens[offsets[i]:offsets[i + 1]].tolist()
                        self.assertEqual(got, ids, f"{name} case {i}: ids")
                        self.assertEqual(masks[offsets[i]:offsets[i + 1]].tolist(), mask, f"{name} case {i}: mask")

    def test_hdf5_schema_and_text_records(self):
        from tokenizers import Tokenizer
        texts = ["Hello world", "  spaces  and\nlines\n", "数字 12345 😀", "x"]
        f = self.prepare("text", "llama3", [{"text": t} for t in texts])
        # Fixed-length UTF-8 strings (kept in the checksummed object header): h5py reads them as bytes.
        self.assertEqual(f.attrs["format"], b"freehold.tokens")
        self.assertEqual(f.attrs["record_format"], b"text")
        self.assertEqual(int(f.attrs["version"]), 1)
        reference = Tokenizer.from_file(str(WORK / "tokenizers" / "llama3" / "tokenizer.json"))
        self.assertEqual(int(f.attrs["vocab_size"]), reference.get_vocab_size(with_added_tokens=True))
        self.assertEqual(len(f.attrs["tokenizer_sha256"]), 64)
        self.assertEqual(len(f.attrs["source_fingerprint"]), 64)
        for name, dtype in (("tokens", np.int32), ("doc_offsets", np.int64), ("loss_mask", np.uint8)):
            dataset = f[name]
            self.assertEqual(dataset.dtype, dtype, name)
            self.assertIsNotNone(dataset.chunks, name)
            self.assertTrue(dataset.shuffle and dataset.fletcher32 and dataset.compression == "gzip", name)
            self.assertIsNone(dataset.maxshape[0], name)
        eos = reference.token_to_id("<|end_of_text|>")
        offsets = f["doc_offsets"][:]
        for i, text in enumerate(texts):
            expected = reference.encode(text).ids + [eos]
            self.assertEqual(f["tokens"][offsets[i]:offsets[i + 1]].tolist(), expected, text)
        self.assertTrue(np.all(f["loss_mask"][:] == 1))


if __name__ == "__main__":
    unittest.main()
