#!/usr/bin/env python3
"""Benchmark: `freehold prepare` against the tokenizers library's batch encoding of the same records (issue 4).

Input: a JSONL corpus of `--megabytes` MB made from the checked-in multilingual corpus (tests/data/corpus), as
{"text": ...} records of 1-8 lines each, and a chat variant ({"messages": [user, assistant]}) of the same texts.
Tokenizer: the Llama-3-style one scripts/make_tokenizers.py trains locally. Both sides use the same number of
threads (--threads; freehold's --threads, RAYON_NUM_THREADS for the library) and the whole process is timed:

  freehold    freehold prepare --input corpus.jsonl --out x.h5 --force (read, parse, tokenize, mask, write HDF5)
  tokenizers  json.loads of every line, then Tokenizer.encode_batch(texts) (chat: apply the llama3 chat format as
              text first) — no masks, nothing written, so a lower bound for any Python pipeline

One untimed warm-up each, then --reps interleaved runs; medians are reported.

    .venv/bin/python bench/prepare_bench.py [--megabytes 50] [--threads 2] [--reps 3] [--freehold build/bin/freehold]

Writes bench/results/<date>-prepare.json.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LIBRARY_SIDE = r"""
import json, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
chat = sys.argv[3] == "chat"
texts = []
for line in open(sys.argv[2], encoding="utf-8"):
    record = json.loads(line)
    if chat:
        texts.append("<|begin_of_text|>" + "".join(
            "<|start_header_id|>" + m["role"] + "<|end_header_id|>\n\n" + m["content"].strip() + "<|eot_id|>"
            for m in record["messages"]))
    else:
        texts.append(record["text"])
n = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=not chat))
print(n)
"""


def make_corpus(work: Path, megabytes: int) -> tuple[Path, Path]:
    lines = (REPO / "tests/data/corpus/multilingual.txt").read_bytes().decode("utf-8", errors="replace").split("\n")
    lines = [l for l in lines if l.strip()]
    text_path, chat_path = work / "corpus.jsonl", work / "chat.jsonl"
    size, i = 0, 0
    with open(text_path, "w", encoding="utf-8") as text_out, open(chat_path, "w", encoding="utf-8") as chat_out:
        while size < megabytes << 20:
            n = 1 + i % 8
            block = "\n".join(lines[(i + k) % len(lines)] for k in range(n))
            record = json.dumps({"text": block}, ensure_ascii=False) + "\n"
            text_out.write(record)
            chat_out.write(json.dumps({"messages": [{"role": "user", "content": lines[i % len(lines)]},
                                                    {"role": "assistant", "content": block}]}, ensure_ascii=False) + "\n")
            size += len(record.encode("utf-8"))
            i += 1
    return text_path, chat_path


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--freehold", default=str(REPO / "build/bin/freehold"))
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("make_tokenizers", REPO / "scripts/make_tokenizers.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gen.main(str(work / "tokenizers"))
        tokenizer = work / "tokenizers/llama3/tokenizer.json"
        text_path, chat_path = make_corpus(work, args.megabytes)
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        results = {}
        for kind, path in (("text", text_path), ("chat", chat_path)):
            records = sum(1 for _ in open(path, encoding="utf-8"))
            sides = {
                "freehold": [args.freehold, "prepare", "--tokenizer", str(tokenizer), "--input", str(path), "--out",
                             str(work / f"{kind}.h5"), "--force", "--threads", str(args.threads), "--format", kind,
                             "--max-bad-fraction", "1"] + (["--template", "llama3"] if kind == "chat" else []),
                "tokenizers": [sys.executable, "-c", LIBRARY_SIDE, str(tokenizer), str(path), kind],
            }
            times = {name: [] for name in sides}
            for name, cmd in sides.items():
                timed(cmd, env)  # warm-up
            for _ in range(args.reps):
                for name, cmd in sides.items():
                    times[name].append(timed(cmd, env))
            tokens = int(subprocess.run(sides["tokenizers"], check=True, env=env, capture_output=True,
                                        text=True).stdout.strip())
            results[kind] = {"records": records, "tokens": tokens, "megabytes": path.stat().st_size / 2**20}
            for name, values in times.items():
                median = statistics.median(values)
                results[kind][name] = {"seconds": values, "median_s": median, "records_per_s": records / median,
                                       "tokens_per_s": tokens / median}
                print(f"{kind:5} {name:10} {median:7.2f} s  {records / median:10.0f} records/s  "
                      f"{tokens / median:12.0f} tokens/s")
    out = REPO / "bench/results" / f"{datetime.date.today().isoformat()}-prepare.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "cpu_count": os.cpu_count(), "results": results}, indent=1) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
