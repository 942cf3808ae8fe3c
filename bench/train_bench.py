#!/usr/bin/env python3
"""Benchmark: LoRA training steps of `freehold train` against HF transformers + PEFT on the same work (issue 9).

Same work on both sides:
- model: random-weight checkpoints of real shapes (SmolLM2-135M, Qwen2.5-0.5B with its 152k vocabulary,
  TinyLlama-1.1B), written by scripts/make_random_checkpoints.py's generator, stored in the dtype of the run
  (so neither side converts weights at load);
- adapter: LoRA r 16, alpha 32, dropout 0.05 on all seven linear projections of every layer (PEFT's default
  init: A kaiming-uniform, B zero), adapters and AdamW state in fp32 on both sides;
- data: one `.batches.safetensors` file of random token ids (every token is a target, no padding), read by
  freehold's testing-only source (trainer/token_batches.h) and row by row by the PEFT loop, micro-batch 1;
- step: forward, token-mean cross-entropy (logits upcast to fp32), backward, clip_grad_norm_(1.0), AdamW
  (lr 2e-4, betas 0.9/0.999, weight decay 0), zero_grad; the same compute dtype (fp32 or bf16) and thread count.

Each side runs in its own process under GNU time (peak RSS of that process, load included). freehold reports its
per-phase step times in metrics.jsonl ("time_s", trainer/step_timer.h); the PEFT loop times the same phases with
perf_counter and process_time around the same calls (CPU ops are synchronous). The first --warmup steps are dropped;
medians of the remaining --steps steps are reported, in wall time and in process CPU time (on a shared machine the
wall times stretch with the load; CPU times much less, though with 2 threads they include OpenMP spin-waiting). tokens/s counts non-padding tokens (here: all tokens) of one step divided by
the median step time. MFU: FLOPs per token from lora_train_flops_per_token() (docs/benchmarks.md) times tokens/s,
over a matmul peak measured here with torch.mm in the same dtype and thread count.

    .venv/bin/python bench/train_bench.py [--quick] [--models ...] [--seq ...] [--dtypes ...] [--threads ...]

bench/run.py (`make bench`) calls this and writes the results and the docs; alone, it prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"  # GNU time: peak RSS of exactly the command it runs

# Real shapes (from the models' published config.json files); random weights.
SHAPES = {
    "smollm2-135m": dict(arch="llama", config=dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=0, rope_parameters=dict(rope_type="default", rope_theta=100000.0))),
    "qwen2.5-0.5b": dict(arch="qwen2", config=dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
        use_sliding_window=False, bos_token_id=151643, eos_token_id=151643,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0))),
    "tinyllama-1.1b": dict(arch="llama", config=dict(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05)
OPTIM = dict(lr=2e-4, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0, max_grad_norm=1.0)
TORCH_DTYPE = {"fp32": "float32", "bf16": "bfloat16"}

# The PEFT side: `python -c PEFT_TRAIN JSON_ARGS`; prints one JSON line of per-step phase times.
PEFT_TRAIN = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import torch
torch.set_num_threads(args["threads"])
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
dtype = getattr(torch, args["torch_dtype"])
model = AutoModelForCausalLM.from_pretrained(args["base"], dtype=dtype)
config = LoraConfig(task_type="CAUSAL_LM", target_modules=args["targets"], **args["lora"])
model = get_peft_model(model, config)
model.train()
params = [p for p in model.parameters() if p.requires_grad]
o = args["optim"]
optimizer = torch.optim.AdamW(params, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"])
batches = load_file(args["batches"])
ids, labels = batches["input_ids"], batches["labels"]
steps = []
def now():
    return time.perf_counter(), time.process_time()
def split(t):
    return {"data": t[1] - t[0], "forward": t[2] - t[1], "backward": t[3] - t[2], "comm": 0.0,
            "optimizer": t[4] - t[3], "step": t[4] - t[0]}
for step in range(args["steps"]):
    t = [now()]
    x, y = ids[step:step + 1], labels[step:step + 1]
    t.append(now())
    loss = model(input_ids=x, labels=y).loss
    t.append(now())
    loss.backward()
    value = loss.item()
    t.append(now())
    torch.nn.utils.clip_grad_norm_(params, o["max_grad_norm"])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    t.append(now())
    steps.append(dict(split([w for w, _ in t]), cpu=split([c for _, c in t]), loss=value))
print(json.dumps({"steps": steps, "adapter_params": sum(p.numel() for p in params)}))
"""

# Matmul peak of this machine for a dtype and thread count: best of several torch.mm of square matrices.
MATMUL_PEAK = r"""
import json, sys, time, torch
dtype, threads, n = getattr(torch, sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
# The best GEMM this libtorch has for the dtype: its BLAS (torch.mm) or oneDNN (the op inductor's CPU linears use,
# a·bᵀ), whichever is faster here; MKL leaves AVX-512 unused on AMD CPUs, where oneDNN is twice as fast in fp32.
kernels = {"torch.mm": lambda: torch.mm(a, b)}
if torch.backends.mkldnn.is_available():
    kernels["mkldnn._linear_pointwise"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
result = {"n": n}
for name, run in kernels.items():
    run()
    best, best_cpu = float("inf"), float("inf")
    for _ in range(5):
        t, c = time.perf_counter(), time.process_time()
        run()
        best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
    result[name] = {"flops_per_s": 2 * n ** 3 / best, "flops_per_cpu_s": 2 * n ** 3 / best_cpu}
top = max((k for k in result if k != "n"), key=lambda k: result[k]["flops_per_cpu_s"])
result.update(result[top], kernel=top)
print(json.dumps(result))
"""


# ─── FLOPs ──────────────────────────────────────────────────────────────────────────────────────────────────────

def lora_train_flops_per_token(cfg: dict, seq_len: int, r: int = LORA["r"]) -> dict:
    """FLOPs of one training token of LoRA on a frozen base (forward + backward), by parts.

    frozen matmuls: 4 N  (forward 2 N; backward only the input gradient, 2 N: frozen weights get no gradient),
                    N = the projections' and the LM head's weights (the embedding lookup is not a matmul; with tied
                    embeddings the LM head is the embedding matrix);
    adapters:       6 N_lora (forward 2, input gradient 2, weight gradient 2), N_lora = r (in + out) per projection;
    attention:      12 L H D T (QKᵀ and AV are 4 H D T per layer and token forward, twice that backward; the causal
                    mask is not subtracted, PaLM's convention).
    The formula of trainer/flops.h (which writes "mfu" to metrics.jsonl), written again here for the PEFT side.
    """
    c = cfg
    C, L, H, Hkv, I, V = (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                          c["num_key_value_heads"], c["intermediate_size"], c["vocab_size"])
    D = c.get("head_dim") or C // H
    proj_shapes = [(C, H * D), (C, Hkv * D), (C, Hkv * D), (H * D, C), (C, I), (C, I), (I, C)]
    n_proj = L * sum(i * o for i, o in proj_shapes)
    n_lora = L * sum(r * (i + o) for i, o in proj_shapes)
    n_matmul = n_proj + V * C
    parts = {"frozen_matmul": 4 * n_matmul, "adapter": 6 * n_lora, "attention": 12 * L * H * D * seq_len}
    return {"per_token": sum(parts.values()), "parts": parts, "n_matmul": n_matmul, "n_lora": n_lora}


# ─── inputs ─────────────────────────────────────────────────────────────────────────────────────────────────────

def _generator():
    sys.path.insert(0, str(REPO / "scripts"))
    import make_random_checkpoints  # the checked-in generator of the test checkpoints
    return make_random_checkpoints


def make_base(work: Path, shape: str, dtype: str) -> Path:
    """The shape's random-weight checkpoint in `dtype`, cached by a hash of its definition. SmolLM2 in bf16 is the
    very checkpoint bench/export_bench.py writes (same name, seed and stamp), so the two share it."""
    gen = _generator()
    spec, save_dtype = SHAPES[shape], TORCH_DTYPE[dtype]
    tag = hashlib.sha256(json.dumps([spec["config"], save_dtype], sort_keys=True).encode()).hexdigest()[:8]
    variant = gen.Variant(name=f"bench-{shape}-{save_dtype}-{tag}", exercises=f"benchmark only: {shape}'s shape",
                          arch=spec["arch"], config=spec["config"], seed=4242, save_dtype=save_dtype)
    return gen.write_variant(variant, work / "checkpoints")


def make_batches(work: Path, vocab: int, rows: int, seq_len: int, seed: int = 9) -> Path:
    """`rows` sequences of `seq_len` uniform random token ids, every token a target (labels = input_ids)."""
    import torch
    from safetensors.torch import save_file
    path = work / "batches" / f"v{vocab}-r{rows}-t{seq_len}-s{seed}.batches.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        ids = torch.randint(0, vocab, (rows, seq_len), generator=torch.Generator().manual_seed(seed))
        tmp = path.with_suffix(".tmp")
        save_file({"input_ids": ids, "labels": ids.clone()}, str(tmp))
        tmp.rename(path)
    return path


# ─── the two sides ──────────────────────────────────────────────────────────────────────────────────────────────

def timed(cmd: list[str], env: dict, cwd: Path | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of one child process under GNU time (see export_bench.timed for why
    not wait4 from this process)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        start = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "%M", "-o", rss_file.name, *cmd], capture_output=True, env=env, text=True,
                              cwd=cwd)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return wall, int(rss_file.read().split()[-1]) * 1024, proc.stdout


def run_freehold(freehold: Path, base: Path, batches: Path, case: dict, run_dir: Path, env: dict) -> dict:
    config = {
        "model": {"path": str(base), "dtype": case["dtype"]},
        "adapter": {"r": LORA["r"], "alpha": LORA["lora_alpha"], "dropout": LORA["lora_dropout"],
                    "target_modules": TARGETS},
        "data": {"train": [str(batches)], "seq_len": case["seq_len"]},
        "train": {"micro_batch_size": 1, "grad_accum_steps": 1, "max_steps": case["steps"], "lr": OPTIM["lr"],
                  "betas": OPTIM["betas"], "eps": OPTIM["eps"], "weight_decay": OPTIM["weight_decay"],
                  "lr_schedule": "constant", "warmup_steps": 0, "max_grad_norm": OPTIM["max_grad_norm"],
                  "precision": case["dtype"]},
        "output": {"dir": str(run_dir), "log_every": 1, "save_every": 0, "export": "none", "tensorboard": False},
        "resume": "never",
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    config_path = run_dir.with_suffix(".yaml")
    config_path.write_text(json.dumps(config))  # JSON is YAML
    wall, rss, _ = timed([str(freehold), "train", str(config_path)], env)
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [dict(r["time_s"], loss=r["loss"]) for r in records if "time_s" in r and "cpu" in r["time_s"]]
    if len(steps) != case["steps"]:
        raise RuntimeError(f"{run_dir}/metrics.jsonl: {len(steps)} step records with time_s, expected {case['steps']}")
    shutil.rmtree(run_dir, ignore_errors=True)  # the checkpoint of the last step is not needed
    return {"steps": steps, "wall_s": wall, "peak_rss_bytes": rss}


def run_peft(base: Path, batches: Path, case: dict, env: dict) -> dict:
    args = {"base": str(base), "batches": str(batches), "torch_dtype": TORCH_DTYPE[case["dtype"]],
            "threads": case["threads"], "steps": case["steps"], "targets": TARGETS, "lora": LORA, "optim": OPTIM}
    wall, rss, out = timed([sys.executable, "-c", PEFT_TRAIN, json.dumps(args)], env)
    parsed = json.loads(out.strip().splitlines()[-1])
    return {"steps": parsed["steps"], "wall_s": wall, "peak_rss_bytes": rss, "adapter_params": parsed["adapter_params"]}


def matmul_peak(dtype: str, threads: int, env: dict, n: int = 2048) -> dict:
    """{"flops_per_s": wall rate, "flops_per_cpu_s": rate per CPU-second of the process, "kernel": which} of the
    fastest of torch.mm and oneDNN's linear, each kernel's own rates under its name."""
    out = subprocess.run([sys.executable, "-c", MATMUL_PEAK, TORCH_DTYPE[dtype], str(threads), str(n)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


PHASES = ["data", "forward", "backward", "comm", "optimizer", "step"]


def summarize(side: dict, warmup: int, tokens_per_step: int, flops_per_token: float, peak: dict) -> dict:
    measured = side["steps"][warmup:]
    med = {p: statistics.median(s.get(p, 0.0) for s in measured) for p in PHASES}
    cpu = {p: statistics.median(s["cpu"].get(p, 0.0) for s in measured) for p in PHASES}
    tps = tokens_per_step / med["step"]
    return {"median_s": med, "median_cpu_s": cpu, "tokens_per_s": tps, "tokens_per_cpu_s": tokens_per_step / cpu["step"],
            "peak_rss_bytes": side["peak_rss_bytes"], "wall_s": side["wall_s"],
            # MFU in wall time (tokens/s over the wall-clock matmul rate) and in CPU time (tokens per CPU-second
            # over the matmul rate per CPU-second): on a loaded machine only the second means much.
            "mfu": tps * flops_per_token / peak["flops_per_s"],
            "mfu_cpu": tokens_per_step / cpu["step"] * flops_per_token / peak["flops_per_cpu_s"],
            "data_share": med["data"] / med["step"],
            "losses": [s["loss"] for s in side["steps"]], "step_s": [s["step"] for s in measured],
            "step_cpu_s": [s["cpu"]["step"] for s in measured]}


def pool_rounds(rounds: list[dict], warmup: int) -> dict:
    """One side's rounds as one: the first round's warm-up steps (which summarize drops), then every round's
    measured steps; the largest peak RSS; the summed wall time."""
    steps = rounds[0]["steps"][:warmup] + [s for r in rounds for s in r["steps"][warmup:]]
    return dict(rounds[0], steps=steps, wall_s=sum(r["wall_s"] for r in rounds),
                peak_rss_bytes=max(r["peak_rss_bytes"] for r in rounds))


def run_case(case: dict, freehold: Path, work: Path, peaks: dict, log=print) -> dict:
    """One grid point: both sides, in alternating rounds (freehold, PEFT, freehold, PEFT, ...)."""
    shape = SHAPES[case["model"]]["config"]
    base = make_base(work, case["model"], case["dtype"])
    batches = make_batches(work, shape["vocab_size"], case["steps"], case["seq_len"])
    env = dict(os.environ, OMP_NUM_THREADS=str(case["threads"]), MKL_NUM_THREADS=str(case["threads"]))
    key = (case["dtype"], case["threads"])
    if key not in peaks:
        peaks[key] = matmul_peak(case["dtype"], case["threads"], env)
    label = f"{case['model']}-t{case['seq_len']}-{case['dtype']}-{case['threads']}t"
    flops = lora_train_flops_per_token(shape, case["seq_len"])
    tokens = case["seq_len"]  # micro-batch 1, no padding
    load_before = os.getloadavg()[0]
    # Rounds alternate the sides (freehold, PEFT, freehold, PEFT, ...), so that a slow spell of a shared host falls
    # on both; each process drops its own warm-up steps, and the medians are over the measured steps of all rounds.
    fh_rounds, pf_rounds = [], []
    for _ in range(case.get("rounds", 1)):
        fh_rounds.append(run_freehold(freehold, base, batches, case, work / "runs" / f"freehold-{label}", env))
        pf_rounds.append(run_peft(base, batches, case, env))
    fh, pf = pool_rounds(fh_rounds, case["warmup"]), pool_rounds(pf_rounds, case["warmup"])
    result = dict(case, tokens_per_step=tokens, flops_per_token=flops["per_token"], flops_parts=flops["parts"],
                  matmul_peak_flops_per_s=peaks[key]["flops_per_s"],
                  matmul_peak_flops_per_cpu_s=peaks[key]["flops_per_cpu_s"], matmul_peak_kernel=peaks[key]["kernel"], load_average=[load_before, os.getloadavg()[0]],
                  adapter_params=pf["adapter_params"])
    result["freehold"] = summarize(fh, case["warmup"], tokens, flops["per_token"], peaks[key])
    result["peft"] = summarize(pf, case["warmup"], tokens, flops["per_token"], peaks[key])
    result["speedup"] = result["freehold"]["tokens_per_s"] / result["peft"]["tokens_per_s"]
    result["cpu_speedup"] = result["freehold"]["tokens_per_cpu_s"] / result["peft"]["tokens_per_cpu_s"]
    result["rss_ratio"] = result["freehold"]["peak_rss_bytes"] / result["peft"]["peak_rss_bytes"]
    # The ratio of each round on its own: how far one round's answer can be trusted on this machine.
    def median_step(side: dict) -> float:
        return statistics.median(s["step"] for s in side["steps"][case["warmup"]:])
    result["round_speedups"] = [median_step(p) / median_step(f) for f, p in zip(fh_rounds, pf_rounds)]
    if flops["n_lora"] != pf["adapter_params"]:
        raise RuntimeError(f"adapter parameter count: formula {flops['n_lora']}, PEFT {pf['adapter_params']}")
    log(f"{case['model']:14s} T={case['seq_len']:<5d} {case['dtype']} {case['threads']}t | "
        f"freehold {result['freehold']['tokens_per_s']:7.1f} tok/s {result['freehold']['peak_rss_bytes'] / 1e6:6.0f} MB | "
        f"PEFT {result['peft']['tokens_per_s']:7.1f} tok/s {result['peft']['peak_rss_bytes'] / 1e6:6.0f} MB | "
        f"{result['speedup']:.2f}x (CPU time {result['cpu_speedup']:.2f}x; rounds "
        f"{', '.join(f'{r:.2f}x' for r in result['round_speedups'])}), RSS {result['rss_ratio']:.2f}x")
    return result


def loader_share(freehold: Path, work: Path, threads: int = 1, seq_len: int = 512, steps: int = 3) -> dict:
    """The real data path's share of the step: freehold trains the SmolLM2 shape (fp32) from a prepared HDF5 file
    (tests/data/corpus text, the Llama-3-style tokenizer of scripts/make_tokenizers.py, packing, shuffling) instead
    of the testing-only batch file, and reports time_s.data against time_s.step (medians after one warm-up step)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_tokenizers", REPO / "scripts" / "make_tokenizers.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    root = work / "loader"
    tokenizer = root / "tokenizers" / "llama3" / "tokenizer.json"
    if not tokenizer.exists():
        gen.main(str(root / "tokenizers"))
    corpus = root / "corpus.jsonl"
    lines = [l for l in (REPO / "tests/data/corpus/multilingual.txt").read_text(encoding="utf-8",
                                                                              errors="replace").split("\n") if l.strip()]
    with open(corpus, "w", encoding="utf-8") as out:
        for i in range(4000):
            out.write(json.dumps({"text": "\n".join(lines[(i + k) % len(lines)] for k in range(1 + i % 8))},
                                 ensure_ascii=False) + "\n")
    dataset = root / "corpus.h5"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    subprocess.run([str(freehold), "prepare", "--tokenizer", str(tokenizer), "--input", str(corpus), "--out",
                    str(dataset), "--force", "--format", "text"], check=True, env=env, capture_output=True)
    base = make_base(work, "smollm2-135m", "fp32")
    run_dir = root / "run"
    config = {
        "model": {"path": str(base), "dtype": "fp32"},
        "adapter": {"r": LORA["r"], "alpha": LORA["lora_alpha"], "dropout": LORA["lora_dropout"],
                    "target_modules": TARGETS},
        "data": {"train": [str(dataset)], "tokenizer": str(tokenizer), "seq_len": seq_len, "packing": True,
                 "shuffle": True},
        "train": {"micro_batch_size": 1, "max_steps": steps, "lr_schedule": "constant", "precision": "fp32"},
        "output": {"dir": str(run_dir), "log_every": 1, "export": "none", "tensorboard": False},
        "resume": "never",
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    config_path = run_dir.with_suffix(".yaml")
    config_path.write_text(json.dumps(config))
    timed([str(freehold), "train", str(config_path)], env)
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [r["time_s"] for r in records if "time_s" in r][1:]
    data = statistics.median(t["data"] for t in times)
    step = statistics.median(t["step"] for t in times)
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"source": "prepared HDF5, packing, shuffle", "seq_len": seq_len, "threads": threads,
            "median_data_s": data, "median_step_s": step, "share": data / step,
            "data_s": [t["data"] for t in times]}


def grid(models, seqs, dtypes, threads, warmup: int, steps: int, rounds: int = 1) -> list[dict]:
    return [dict(model=m, seq_len=t, dtype=d, threads=n, warmup=warmup, steps=warmup + steps, rounds=rounds)
            for m in models for t in seqs for d in dtypes for n in threads]


QUICK = dict(models=["smollm2-135m"], seqs=[512], dtypes=["fp32", "bf16"], threads=[2], warmup=1, steps=2, rounds=2)
FULL = dict(models=["smollm2-135m", "qwen2.5-0.5b"], seqs=[512, 2048], dtypes=["fp32", "bf16"], threads=[1, 2],
            warmup=1, steps=3, rounds=2)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true", help="SmolLM2 shape, seq 512, fp32 and bf16, 2 threads")
    ap.add_argument("--models", nargs="+", choices=list(SHAPES))
    ap.add_argument("--seq", nargs="+", type=int)
    ap.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"])
    ap.add_argument("--threads", nargs="+", type=int)
    ap.add_argument("--warmup", type=int, help="steps dropped before measuring")
    ap.add_argument("--steps", type=int, help="measured steps")
    ap.add_argument("--rounds", type=int, help="processes per side, alternating freehold and PEFT (default 2)")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench")
    ap.add_argument("--freehold", type=Path, default=REPO / "build" / "bin" / "freehold")
    ap.add_argument("--jobs", type=int, default=1,
                    help="grid points run at once (each still runs freehold, then PEFT); >1 only where the machine is "
                         "already shared, where wall times mean little and the CPU-time columns carry the comparison")


def cases_from(args) -> list[dict]:
    g = dict(QUICK if args.quick else FULL)
    for key, value in (("models", args.models), ("seqs", args.seq), ("dtypes", args.dtypes),
                       ("threads", args.threads), ("warmup", args.warmup), ("steps", args.steps),
                       ("rounds", args.rounds)):
        if value is not None:
            g[key] = value
    if g["rounds"] < 1:
        raise SystemExit(f"--rounds is {g['rounds']}; expected at least 1")
    return grid(g["models"], g["seqs"], g["dtypes"], g["threads"], g["warmup"], g["steps"], g["rounds"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    args = ap.parse_args()
    if not args.freehold.is_file():
        raise SystemExit(f"{args.freehold} does not exist; build the freehold target or pass --freehold")
    peaks: dict = {}
    results = [run_case(c, args.freehold, args.work, peaks) for c in cases_from(args)]
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
