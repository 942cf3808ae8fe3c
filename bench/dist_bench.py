#!/usr/bin/env python3
"""Benchmark: data-parallel `freehold train` under mpirun, 2 ranks against 1 on the same global batch (issue 6).

Same work on both sides: the tiny Llama of examples/demo_reference.py (or --model DIR with its tokenizer.json),
the bundled text through data/'s loader (packed, seq_len --seq), LoRA r 8 on all linear layers, fp32, global
batch G rows per step: 1 rank with micro-batch G against 2 ranks with micro-batch G/2 (the same rows, data/sampler.h).
Each rank gets --threads LibTorch threads (OMP_NUM_THREADS), so 2 ranks use twice the cores of 1.

freehold writes per-phase step times to metrics.jsonl ("time_s": data, forward, backward, comm, optimizer;
trainer/step_timer.h); rank 0 writes them. "comm" is the time rank 0 spends in the step's collectives: the token
counts, the bucketed gradient all-reduce and the loss, which includes waiting for the slower rank. The first
--warmup steps are dropped; medians over the rest are reported.

    .venv/bin/python bench/dist_bench.py [--steps 30] [--global-batch 8] [--seq 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(ranks: int, args, model: Path, out: Path) -> list:
    overrides = [f"model.path={model}", f"data.seq_len={args.seq}", f"train.micro_batch_size={args.global_batch // ranks}",
                 f"train.max_steps={args.steps}", "train.grad_accum_steps=1", "output.log_every=1",
                 "output.save_every=0", "output.tensorboard=false", "output.export=none", "resume=never",
                 f"output.dir={out}"]
    command = [str(args.freehold), "train", str(REPO / "configs" / "tiny-cpu.yaml"), *overrides]
    if ranks > 1:
        command = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks),
                   "-x", f"OMP_NUM_THREADS={args.threads}", *command]
        if os.geteuid() == 0:
            command.insert(1, "--allow-run-as-root")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "time_s" in r][args.warmup:]


def summary(records: list) -> dict:
    step = statistics.median(r["time_s"]["step"] for r in records)
    comm = statistics.median(r["time_s"]["comm"] for r in records)
    return {"step_s": step, "comm_s": comm, "comm_share": comm / step if step else 0.0,
            "loss_last": records[-1]["loss"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--freehold", type=Path, default=REPO / "build" / "bin" / "freehold")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.global_batch % 2:
        raise SystemExit("--global-batch must be even (2 ranks split it)")
    work = Path(tempfile.mkdtemp(prefix="dist_bench."))
    try:
        model = args.model
        if model is None:
            model = work / "tiny-llama"
            subprocess.run([sys.executable, str(REPO / "examples" / "demo_reference.py"), "prepare", "--text",
                            str(REPO / "examples" / "data" / "pride_and_prejudice_ch1.txt"), "--out", str(model)],
                           check=True, capture_output=True)
        results = {ranks: summary(run(ranks, args, model, work / f"run-{ranks}")) for ranks in (1, 2)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"global batch {args.global_batch} x {args.seq} tokens, {args.threads} thread(s) per rank, "
          f"median of {args.steps - args.warmup} steps")
    print(f"{'ranks':>5} {'step ms':>9} {'comm ms':>9} {'comm %':>7} {'speed-up':>9}")
    for ranks, r in results.items():
        print(f"{ranks:>5} {1e3 * r['step_s']:>9.1f} {1e3 * r['comm_s']:>9.2f} {100 * r['comm_share']:>6.1f}% "
              f"{results[1]['step_s'] / r['step_s']:>8.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
