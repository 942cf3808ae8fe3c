#!/usr/bin/env bash
# `make demo`: freehold end to end on a bundled tiny default, in a few minutes on a laptop CPU. It makes a tiny
# random-weight Llama and a tokenizer from the bundled public-domain text (no downloads), trains a LoRA adapter on
# that text with configs/tiny-cpu.yaml, exports the merged model, and checks freehold's numbers against
# transformers loading that export.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
build_dir="${1:-build}"
freehold="$repo_root/$build_dir/bin/freehold"
python="$repo_root/.venv/bin/python"
out=runs/demo                # configs/tiny-cpu.yaml reads and writes here
model="$out/tiny-llama"
text=examples/data/pride_and_prejudice_ch1.txt

rm -rf "$out"
mkdir -p "$out"
echo "== 1/6 a tiny Llama and its tokenizer from $text (no downloads)"
"$python" examples/demo_reference.py prepare --text "$text" --out "$model"
echo "== 2/6 freehold inspect"
"$freehold" inspect "$model"
echo "== 3/6 freehold validate + train (configs/tiny-cpu.yaml: LoRA r 8 on every projection)"
"$freehold" validate configs/tiny-cpu.yaml | sed -n '1,8p'
"$freehold" train configs/tiny-cpu.yaml resume=never
echo "== 4/6 freehold export: merge the adapter into the base, verified against base + adapter"
"$freehold" export --base "$model" --adapter "$out/train/adapter" --out "$out/merged" --dtype fp32 --verify
echo "== 5/6 freehold score, before and after"
"$freehold" score --model "$model" --input "$model/tokens.jsonl" --out "$out/scores-base.jsonl"
"$freehold" score --model "$out/merged" --input "$model/tokens.jsonl" --out "$out/scores-merged.jsonl"
"$python" examples/demo_reference.py perplexity --scores "$out/scores-base.jsonl" --label "base model (random weights)"
"$python" examples/demo_reference.py perplexity --scores "$out/scores-merged.jsonl" --label "after LoRA training"
echo "== 6/6 transformers loads the merged export and agrees with freehold"
"$python" examples/demo_reference.py check --model "$out/merged" --tokens "$model/tokens.jsonl" --scores "$out/scores-merged.jsonl"
echo
echo "demo: done. The run is in $out/train (config.yaml, metrics.jsonl, checkpoints/, adapter/ in PEFT format);"
echo "      the merged model, which transformers loads as it is, is in $out/merged."
