#!/usr/bin/env python3
"""Writes the seed corpus of tokenizer_json_fuzz: each tokenizer family of scripts/make_tokenizers.py, cut down to
its first 320 vocabulary entries (and the merges among them) so a seed stays a few kilobytes, followed by a NUL
byte and a text to encode. Needs the test virtual environment (the tokenizers library):

    .venv/bin/python tests/fuzz/make_tokenizer_json_corpus.py     # rewrites tests/fuzz/corpus/tokenizer_json/
"""
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = HERE / "corpus" / "tokenizer_json"
KEEP = 320


def load_generator():
    spec = importlib.util.spec_from_file_location("make_tokenizers", REPO / "scripts" / "make_tokenizers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def shrink(doc: dict) -> dict:
    model = doc["model"]
    vocab = {token: i for token, i in model["vocab"].items() if i < KEEP}
    merges = []
    for merge in model["merges"]:
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(merge)
    model["vocab"], model["merges"] = vocab, merges
    # Added tokens outside the kept vocabulary get the ids the library would give them, and templates follow.
    ids = {}
    next_id = len(vocab)
    for token in doc["added_tokens"]:
        if token["content"] in vocab:
            token["id"] = vocab[token["content"]]
        else:
            token["id"], next_id = next_id, next_id + 1
        ids[token["content"]] = token["id"]
    processors = [doc["post_processor"]] if doc["post_processor"] else []
    processors += [p for step in processors if step["type"] == "Sequence" for p in step["processors"]]
    for step in processors:
        for name, special in step.get("special_tokens", {}).items():
            special["ids"] = [ids[token] for token in special["tokens"]]
    return doc


def main() -> None:
    gen = load_generator()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        gen.main(tmp)
        for name in gen.VARIANTS:
            doc = shrink(json.loads((Path(tmp) / name / "tokenizer.json").read_text(encoding="utf-8")))
            text = "Hi <s>there</s> [INST] it's 2024 <|im_start|>ok<|im_end|> é 🇫🇷"
            seed = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\0" + text.encode()
            (OUT / f"{name}.json").write_bytes(seed)
    # Bad documents the parser must refuse cleanly.
    (OUT / "bad_not_json").write_bytes(b'{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [')
    (OUT / "bad_wordpiece").write_bytes(b'{"model": {"type": "WordPiece", "vocab": {"a": 0}}}')
    (OUT / "bad_merge").write_bytes(b'{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b c"]}}')


if __name__ == "__main__":
    main()
