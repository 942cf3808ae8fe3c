#!/usr/bin/env python3
"""Benchmark: `freehold export` against PEFT's merge_and_unload + save_pretrained on the same model (issue 3).

The model is a random-weight Llama with SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads over 3 kv heads,
intermediate 1536, vocab 49152, tied embeddings), stored in bf16, written by scripts/make_random_checkpoints.py's
machinery (the variant is defined here, so the test checkpoints' stamps do not change). The adapter is made by PEFT:
r 16, alpha 32 on all seven projections of every layer, random non-zero A and B, saved in fp32.

Each side runs in its own subprocess under GNU time (/usr/bin/time -f %M), which reports that process's own peak RSS
(see timed() for why not os.wait4 from here); both write a bf16 merged model to a fresh directory on the same disk.
One untimed warm-up run each (page cache, first-import costs), then --reps timed runs, interleaved; medians are
reported. Wall time is the whole process: start-up (LibTorch, or
Python + torch + transformers + peft imports) included, since that is what a user waits for.

    .venv/bin/python bench/export_bench.py [--reps 5] [--work DIR] [--freehold build/bin/freehold] [--update-docs]

Writes bench/results/<date>-export.json; --update-docs rewrites the export section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"  # GNU time: the peak RSS of exactly the command it runs (apt install time)

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                    tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
                    rope_parameters=dict(rope_type="default", rope_theta=100000.0))
ADAPTER = dict(r=16, lora_alpha=32,
               target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

# The PEFT side, run as `python -c PEFT_MERGE base adapter out`.
PEFT_MERGE = r"""
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
base, adapter, out = sys.argv[1:4]
torch.set_num_threads(int(sys.argv[4]))
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
model.save_pretrained(out)
"""


def _generator():
    sys.path.insert(0, str(REPO / "scripts"))
    import make_random_checkpoints  # the checked-in generator of the test checkpoints
    return make_random_checkpoints


def make_inputs(work: Path, save_dtype: str = "bfloat16") -> tuple[Path, Path]:
    """The bench base (cached by a hash of its definition) and its PEFT adapter."""
    gen = _generator()
    tag = hashlib.sha256(json.dumps([SMOLLM2_135M, save_dtype], sort_keys=True).encode()).hexdigest()[:8]
    variant = gen.Variant(name=f"bench-smollm2-135m-{save_dtype}-{tag}",
                          exercises="benchmark only: SmolLM2-135M's shape, random weights",
                          arch="llama", config=SMOLLM2_135M, seed=4242, save_dtype=save_dtype)
    base = gen.write_variant(variant, work / "checkpoints")
    adapter = work / "adapters" / f"{base.name}-r16"
    if not (adapter / "adapter_model.safetensors").exists():
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **ADAPTER))
        sys.path.insert(0, str(REPO / "tests" / "conformance"))
        from oracle_util import randomize_adapter
        randomize_adapter(model, seed=7, b_std=0.02)
        tmp = adapter.with_name(adapter.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tmp.rename(adapter)
    return base, adapter


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds (user + system), peak RSS bytes) of one child process.

    The child runs under GNU time, which reports the exec'd command's own peak RSS. Reaping it from here with
    os.wait4 would not: Linux folds the high-water mark of the pre-exec address space into ru_maxrss, and a child
    forked (or vforked) from this Python process, which has imported torch and transformers, starts with ours."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        start = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "%U %S %M", "-o", rss_file.name, *cmd], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        user, system, rss_kb = rss_file.read().split()[-3:]
        return wall, float(user) + float(system), int(rss_kb) * 1024


def compare_outputs(ours: Path, theirs: Path) -> dict:
    import torch
    from safetensors.torch import load_file
    a = {k: v for f in sorted(ours.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    b = {k: v for f in sorted(theirs.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:10]
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    identical = sum(int(torch.equal(a[k], b[k])) for k in a)
    return {"tensors": len(a), "bit_identical_tensors": identical, "max_abs_weight_diff": diff,
            "bytes": sum(t.numel() * t.element_size() for t in a.values())}


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    mem = next(int(l.split()[1]) * 1024 for l in Path("/proc/meminfo").read_text().splitlines()
               if l.startswith("MemTotal"))
    import peft
    import torch
    import transformers
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"cpu": cpu, "cpus_available": len(os.sched_getaffinity(0)), "memory_bytes": mem,
            "os": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "freehold_commit": commit}


def markdown(result: dict) -> str:
    f, p = result["freehold"], result["peft"]
    m = result["machine"]
    mb = 1e6
    lines = [
        "## export: `freehold export` vs PEFT merge_and_unload + save_pretrained",
        "",
        f"Measured {result['date']} by `bench/export_bench.py` ({result['reps']} timed runs each after one warm-up, "
        f"interleaved; medians; whole process, start-up included; {result['threads']} torch thread(s) each; peak RSS "
        "from GNU time).",
        f"Model: random-weight Llama with SmolLM2-135M's shape, bf16, {result['model_bytes'] / mb:.0f} MB of "
        f"weights; adapter: PEFT LoRA r 16 on all 7 projections of 30 layers ({result['adapter_bytes'] / mb:.1f} MB, "
        "fp32). Both write a bf16 merged model (one shard).",
        f"Machine: {m['cpu']}, {m['cpus_available']} CPUs available, {m['memory_bytes'] / 2**30:.0f} GiB; "
        f"torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}; freehold {m['freehold_commit']}. "
        f"Load average {result['load_average_before'][0]:.1f} before and {result['load_average_after'][0]:.1f} after "
        "(the machine is shared: wall times are noisy, CPU times and peak RSS much less so).",
        "",
        "| | wall time (s) | CPU time (s) | peak RSS (MB) |",
        "|---|---:|---:|---:|",
        f"| freehold export | {f['wall_s_median']:.2f} | {f['cpu_s_median']:.2f} | {f['peak_rss_bytes_median'] / mb:.0f} |",
        f"| PEFT merge_and_unload + save_pretrained | {p['wall_s_median']:.2f} | {p['cpu_s_median']:.2f} | "
        f"{p['peak_rss_bytes_median'] / mb:.0f} |",
        f"| freehold / PEFT | {result['time_ratio']:.2f} | {result['cpu_ratio']:.2f} | {result['rss_ratio']:.2f} |",
        "",
        f"Target (issue 3): freehold's peak RSS at most half of PEFT's — measured ratio {result['rss_ratio']:.2f}. "
        f"Of freehold's peak, {result['freehold_baseline_rss_bytes'] / mb:.0f} MB is the process with LibTorch loaded "
        "(`freehold --version`); the export adds the adapter and a few copies of the largest tensor (the 57 MB "
        "embedding). freehold also fsyncs every file it writes, which save_pretrained does not. "
        f"Outputs: {result['outputs']['bit_identical_tensors']} of {result['outputs']['tensors']} tensors "
        f"bit-identical to PEFT's (max |difference| {result['outputs']['max_abs_weight_diff']:.2g}).",
    ]
    return "\n".join(lines) + "\n"


def update_docs(section: str) -> None:
    path = REPO / "docs" / "benchmarks.md"
    begin, end = "<!-- export-bench:begin -->", "<!-- export-bench:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nTimings live here, never in tests (DESIGN.md §7).\n"
    block = f"{begin}\n{section}{end}\n"
    if begin in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench")
    ap.add_argument("--freehold", type=Path, default=REPO / "build" / "bin" / "freehold")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, both sides (1: on a shared machine, waiting OpenMP threads spin and inflate CPU time)")
    ap.add_argument("--update-docs", action="store_true")
    args = ap.parse_args()
    if not Path(TIME).is_file():
        raise SystemExit(f"{TIME} (GNU time) is missing; it measures each side's peak RSS")
    if not args.freehold.is_file():
        raise SystemExit(f"{args.freehold} does not exist; build it or pass --freehold")

    base, adapter = make_inputs(args.work)
    out_root = args.work / "out"
    out_root.mkdir(parents=True, exist_ok=True)
    ours, theirs = out_root / "freehold", out_root / "peft"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    sides = {
        "freehold": (lambda: [str(args.freehold), "export", "--base", str(base), "--adapter", str(adapter),
                              "--out", str(ours), "--dtype", "bf16"], ours),
        "peft": (lambda: [sys.executable, "-c", PEFT_MERGE, str(base), str(adapter), str(theirs), str(args.threads)],
                 theirs),
    }
    runs = {name: [] for name in sides}
    load_before = os.getloadavg()
    for rep in range(args.reps + 1):
        for name, (cmd, out) in sides.items():
            shutil.rmtree(out, ignore_errors=True)
            wall, cpu, rss = timed(cmd(), env)
            if rep > 0:
                runs[name].append({"wall_s": wall, "cpu_s": cpu, "peak_rss_bytes": rss})
            print(f"{name:8s} rep {rep}{' (warm-up)' if rep == 0 else ''}: {wall:6.2f} s wall, {cpu:6.2f} s CPU, "
                  f"{rss / 1e6:7.0f} MB", flush=True)

    result = {
        "date": datetime.date.today().isoformat(),
        "bench": "export",
        "reps": args.reps,
        "threads": args.threads,
        "model": {"shape": "SmolLM2-135M", **SMOLLM2_135M, "dtype": "bfloat16"},
        "model_bytes": sum(p.stat().st_size for p in base.glob("*.safetensors")),
        "adapter": ADAPTER,
        "adapter_bytes": (adapter / "adapter_model.safetensors").stat().st_size,
        "machine": machine(),
        "outputs": compare_outputs(ours, theirs),
        "load_average_before": load_before,
    }
    for name, rs in runs.items():
        result[name] = {"runs": rs, "wall_s_median": statistics.median(r["wall_s"] for r in rs),
                        "cpu_s_median": statistics.median(r["cpu_s"] for r in rs),
                        "peak_rss_bytes_median": statistics.median(r["peak_rss_bytes"] for r in rs)}
    _, _, result["freehold_baseline_rss_bytes"] = timed([str(args.freehold), "--version"], env)
    result["time_ratio"] = result["freehold"]["wall_s_median"] / result["peft"]["wall_s_median"]
    result["cpu_ratio"] = result["freehold"]["cpu_s_median"] / result["peft"]["cpu_s_median"]
    result["load_average_after"] = os.getloadavg()
    result["rss_ratio"] = result["freehold"]["peak_rss_bytes_median"] / result["peft"]["peak_rss_bytes_median"]

    out = REPO / "bench" / "results" / f"{result['date']}-export.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    section = markdown(result)
    print(f"\nwrote {out}\n\n{section}")
    if args.update_docs:
        update_docs(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
