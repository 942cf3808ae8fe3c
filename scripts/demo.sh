#!/usr/bin/env bash
# `make demo`: freehold end to end on a bundled tiny default. Until training lands (issue 5) the demo makes a tiny
# random-weight Llama and a tokenizer from the bundled text, scores the text with `freehold score`, and checks
# the result against transformers.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${1:-build}"
freehold="$repo_root/$build_dir/bin/freehold"
python="$repo_root/.venv/bin/python"
out="$repo_root/runs/demo"
model="$out/tiny-llama"

mkdir -p "$out"
echo "== 1/4 a tiny Llama and tokenizer from examples/data (no downloads)"
"$python" "$repo_root/examples/demo_reference.py" prepare --text "$repo_root/examples/data/pride_and_prejudice_ch1.txt" --out "$model"
echo "== 2/4 freehold inspect"
"$freehold" inspect "$model"
echo "== 3/4 freehold score"
"$freehold" score --model "$model" --input "$model/tokens.jsonl" --out "$out/scores.jsonl" --logits-out "$out/logits.safetensors"
head -c 300 "$out/scores.jsonl"; echo " ..."
echo "== 4/4 check against transformers"
"$python" "$repo_root/examples/demo_reference.py" check --model "$model" --tokens "$model/tokens.jsonl" --scores "$out/scores.jsonl"
echo
echo "demo: done. Everything is in $out"
