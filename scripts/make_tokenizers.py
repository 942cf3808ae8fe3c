#!/usr/bin/env python3
"""Trains small tokenizers of each family freehold supports with the `tokenizers` library, on local text only.

    .venv/bin/python scripts/make_tokenizers.py OUT_DIR

writes OUT_DIR/<name>/tokenizer.json for every entry of VARIANTS. The training text is the checked-in multilingual
corpus (tests/data/corpus/multilingual.txt, invalid bytes replaced) and the repository's own Markdown and Python
files, so nothing is downloaded. The variants mirror what the families ship:

  gpt2           ByteLevel(use_regex) pre-tokenizer; merges written as "a b" strings (the older file form)
  llama3         Split(Llama-3 regex) + ByteLevel(use_regex=false), ignore_merges, <|begin_of_text|> BOS template
  qwen2          NFC, Split(Qwen2 regex) + ByteLevel, <|im_start|>/<|im_end|> special and a non-special added token
  llama2         Prepend("▁") + Replace(" ", "▁") normalizer, byte_fallback + fuse_unk, <s> BOS template,
                 decoder Replace/ByteFallback/Fuse/Strip
  mistral        Metaspace(prepend_scheme first, split false), no byte fallback: unknown characters → fused <unk>;
                 "<s> $A </s>" template; [INST] added tokens; <mask> with lstrip/rstrip, a single_word token
  sp-metaspace   Metaspace(prepend_scheme always, split true), byte_fallback, Metaspace decoder
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "corpus" / "multilingual.txt"

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def training_text() -> list[str]:
    lines = CORPUS.read_bytes().decode("utf-8", errors="replace").split("\n")
    for pattern in ("*.md", "scripts/*.py", "tests/**/*.py"):
        for path in sorted(REPO.glob(pattern)):
            if ".venv" in path.parts or "build" in path.parts[0]:
                continue
            lines += path.read_text(encoding="utf-8", errors="replace").split("\n")
    return [line for line in lines if line]


def byte_level(pre_tokenizer, special_tokens, vocab_size=3000, ignore_merges=False) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text(), trainer)
    return tok


def make_gpt2() -> Tokenizer:
    tok = byte_level(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>"])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def make_llama3() -> Tokenizer:
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    specials += [f"<|reserved_special_token_{i}|>" for i in range(4)]
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok = byte_level(pre, [], ignore_merges=True)
    tok.add_special_tokens(specials)  # after training: ids after the vocabulary, as Llama-3's are
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))]),
    ])
    return tok


def make_qwen2() -> Tokenizer:
    pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
                                   pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok = byte_level(pre, [])
    tok.normalizer = normalizers.NFC()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False),
                    AddedToken("</tool_call>", special=False, normalized=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def sentencepiece_bpe(byte_fallback: bool, vocab_size: int, limit_alphabet: int | None = None) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=byte_fallback, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    specials = ["<unk>", "<s>", "</s>"] + (BYTE_TOKENS if byte_fallback else [])
    kwargs = {} if limit_alphabet is None else {"limit_alphabet": limit_alphabet}
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False, **kwargs)
    tok.train_from_iterator(training_text(), trainer)
    return tok


def drop_byte_added_tokens(tok: Tokenizer) -> Tokenizer:
    """Llama-2's <0xNN> tokens are vocabulary entries, not added tokens: keep them in model.vocab only."""
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in BYTE_TOKENS]
    return Tokenizer.from_str(json.dumps(data))


def bos_template(tok: Tokenizer, single: str) -> processors.TemplateProcessing:
    names = [name for name in ("<s>", "</s>") if name in single]
    return processors.TemplateProcessing(single=single, pair=f"{single} $B:1",
                                         special_tokens=[(n, tok.token_to_id(n)) for n in names])


def make_llama2() -> Tokenizer:
    tok = sentencepiece_bpe(byte_fallback=True, vocab_size=1500)
    tok.pre_tokenizer = None
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])
    tok.post_processor = bos_template(tok, "<s> $A")
    return drop_byte_added_tokens(tok)


def make_mistral() -> Tokenizer:
    tok = sentencepiece_bpe(byte_fallback=False, vocab_size=900, limit_alphabet=120)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.post_processor = bos_template(tok, "<s> $A </s>")
    tok.add_tokens([AddedToken("[INST]", normalized=True), AddedToken("[/INST]", normalized=True),
                    AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False, special=True),
                    AddedToken("word", single_word=True, normalized=False)])
    return tok


def make_sp_metaspace() -> Tokenizer:
    tok = sentencepiece_bpe(byte_fallback=True, vocab_size=1300)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = bos_template(tok, "<s> $A")
    return drop_byte_added_tokens(tok)


def merges_as_strings(text: str) -> str:
    """Rewrites ["a", "b"] merge pairs into the older "a b" string form."""
    data = json.loads(text)
    merges = data["model"]["merges"]
    assert all(" " not in a and " " not in b for a, b in merges), "a merge token holds a space"
    data["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    return json.dumps(data, ensure_ascii=False, indent=2)


VARIANTS = {
    "gpt2": make_gpt2,
    "llama3": make_llama3,
    "qwen2": make_qwen2,
    "llama2": make_llama2,
    "mistral": make_mistral,
    "sp-metaspace": make_sp_metaspace,
}
STRING_MERGES = {"gpt2"}


def main(out_dir: str) -> None:
    out = Path(out_dir)
    for name, make in VARIANTS.items():
        tok = make()
        text = tok.to_str(pretty=True)
        if name in STRING_MERGES:
            text = merges_as_strings(text)
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "tokenizer.json").write_text(text, encoding="utf-8")
        Tokenizer.from_file(str(out / name / "tokenizer.json"))  # the library reads back what it wrote
        print(f"{name}: vocab {tok.get_vocab_size()} -> {out / name / 'tokenizer.json'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
