#!/usr/bin/env bash
# `make demo`: freehold end to end on a bundled tiny default, in a few minutes on a laptop CPU. It makes a tiny
# random-weight Llama and a tokenizer from the bundled public-domain text (no downloads), prepares that text and a
# small chat dataset with `freehold prepare`, trains a LoRA adapter on the text (configs/tiny-cpu.yaml, 2 ranks under
# mpirun) and one on the conversations (examples/chat/chat-tiny.yaml), exports the merged model, checks freehold's
# numbers against transformers loading that export, generates a sample, and prints where everything is.
#   bash scripts/demo.sh [BUILD_DIR]   the text adapter trains as 2 ranks under mpirun (FREEHOLD_DEMO_RANKS=1: one
#                                       process; FREEHOLD_DEMO_STEPS: its step count, default 200)
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
build_dir="${1:-build}"
freehold="$repo_root/$build_dir/bin/freehold"
python="$repo_root/.venv/bin/python"
out=runs/demo                # configs/tiny-cpu.yaml and examples/chat/chat-tiny.yaml read and write here
model="$out/tiny-llama"
text=examples/data/pride_and_prejudice_ch1.txt
steps="${FREEHOLD_DEMO_STEPS:-200}"
ranks="${FREEHOLD_DEMO_RANKS:-2}"
start=$SECONDS

# Multi-rank training goes through mpirun (one rank per process, oversubscribed on a small machine).
launch=()
if [ "$ranks" -gt 1 ]; then
  launch=(mpirun --oversubscribe -np "$ranks")
  if [ "$(id -u)" = 0 ]; then launch+=(--allow-run-as-root); fi
fi

rm -rf "$out"
mkdir -p "$out"
echo "== 1/8 a tiny Llama and its tokenizer from $text (no downloads)"
"$python" examples/demo_reference.py prepare --text "$text" --out "$model"
echo "== 2/8 freehold inspect"
"$freehold" inspect "$model"
echo "== 3/8 freehold prepare: the text, and a small chat dataset (examples/chat/data, chatml template)"
"$freehold" prepare --tokenizer "$model/tokenizer.json" --input "$text" --out "$out/text.h5" --seq-len 64
"$freehold" prepare --tokenizer "$model/tokenizer.json" --format chat --template chatml \
  --input examples/chat/data/train.jsonl --out "$out/chat-train.h5"
"$freehold" prepare --tokenizer "$model/tokenizer.json" --format chat --template chatml \
  --input examples/chat/data/eval.jsonl --out "$out/chat-eval.h5"
echo "== 4/8 freehold validate + train on the text ($steps steps, ${ranks} rank(s); LoRA r 8 on every projection)"
overrides=(resume=never "data.train=[$out/text.h5]" "train.max_steps=$steps" output.log_every=20 output.save_every=100)
"$freehold" validate configs/tiny-cpu.yaml "${overrides[@]}" | sed -n '1,8p'
"${launch[@]}" "$freehold" train configs/tiny-cpu.yaml "${overrides[@]}"
echo "== 5/8 freehold train on the conversations (examples/chat/chat-tiny.yaml: eval every 10 steps)"
"$freehold" train examples/chat/chat-tiny.yaml resume=never
echo "== 6/8 freehold export: merge the text adapter into the base, verified against base + adapter"
"$freehold" export --base "$model" --adapter "$out/train/adapter" --out "$out/merged" --dtype fp32 --verify
echo "== 7/8 freehold score, before and after; transformers loads the merged export and agrees with freehold"
"$freehold" score --model "$model" --input "$model/tokens.jsonl" --out "$out/scores-base.jsonl"
"$freehold" score --model "$out/merged" --input "$model/tokens.jsonl" --out "$out/scores-merged.jsonl"
"$python" examples/demo_reference.py perplexity --scores "$out/scores-base.jsonl" --label "base model (random weights)"
"$python" examples/demo_reference.py perplexity --scores "$out/scores-merged.jsonl" --label "after LoRA training"
"$python" examples/demo_reference.py check --model "$out/merged" --tokens "$model/tokens.jsonl" --scores "$out/scores-merged.jsonl"
echo "== 8/8 freehold generate: a sample from the merged model"
if "$freehold" generate --help >/dev/null 2>&1; then
  "$freehold" generate --model "$out/merged" --prompt "It is a truth universally" --max-new-tokens 40 --seed 1234
else
  echo "(this build has no \`freehold generate\` yet)"
fi
echo
echo "demo: done in $((SECONDS - start)) s."
echo "  text run        $out/train     config.yaml, metrics.jsonl, checkpoints/, adapter/ (PEFT format)"
echo "  loss curve      $out/train/loss_curve.svg   (redraw any time: freehold plot $out/train)"
echo "  chat run        $out/chat      with its eval loss in $out/chat/loss_curve.svg"
echo "  merged model    $out/merged    (transformers, vLLM and llama.cpp's converter load it as it is)"
echo "  TensorBoard     tensorboard --logdir $out"
echo "  next            docs/quickstart.md, examples/chat/README.md, docs/export-and-interop.md"
