#!/usr/bin/env python3
"""`make bench`: freehold against HF transformers + PEFT on the same work, in one run (issue 9).

Runs, in order:
  1. training steps, side by side (bench/train_bench.py): tokens/s, the step split into data / forward /
     backward / comm / optimizer, peak RSS and MFU of each side, over a grid of model shapes, sequence lengths,
     precisions and thread counts;
  2. export against PEFT merge_and_unload + save_pretrained (bench/export_bench.py, which rewrites its own
     section of docs/benchmarks.md);
  3. prepare against tokenizers' encode_batch (bench/prepare_bench.py);
  4. 1 against 2 ranks on the same global batch (bench/dist_bench.py), when that script exists.
Then writes bench/results/<date>.json (<date>-quick.json with --quick) with the versions of torch, transformers
and peft, the machine and the commit, and rewrites the training section of docs/benchmarks.md (table, step
split and docs/benchmarks-train[-quick].svg). Other sections of the page are left as they are.

    .venv/bin/python bench/run.py [--quick] [--freehold build/bin/freehold] [--only train|export|prepare|dist ...]
    make bench [ARGS=--quick]

--quick: SmolLM2-135M's shape, seq 512, fp32 and bf16, 2 threads, small export/prepare runs (under 10 minutes).
The full grid (SmolLM2-135M and Qwen2.5-0.5B shapes, seq 512 and 2048, fp32 and bf16, 1 and 2 threads) takes
hours on 2 cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_bench  # noqa: E402
import train_bench  # noqa: E402

REPO = train_bench.REPO
DOCS = REPO / "docs" / "benchmarks.md"


def machine(freehold: Path) -> dict:
    """export_bench's machine record, plus whether the tree had local changes and the binary's --version."""
    info = export_bench.machine()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    info["freehold_commit"] += "+local changes" if dirty else ""
    info["freehold_version"] = subprocess.run([str(freehold), "--version"], capture_output=True,
                                              text=True).stdout.strip()
    return info


def write_chart_and_docs(result: dict, date: str, quick: bool) -> None:
    """Writes the training chart and rewrites the docs section from `result`."""
    chart = f"benchmarks-train{'-quick' if quick else ''}.svg"
    title = f"freehold vs HF PEFT, LoRA training, {date}{' (quick grid)' if quick else ''}"
    (DOCS.parent / chart).write_text(svg_chart(result["train"], title))
    section = markdown(result, chart)
    update_docs(section, quick)
    print(section)


# ─── the other benches, as subprocesses ─────────────────────────────────────────────────────────────────────────

def run_script(script: str, args: list[str]) -> dict:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], capture_output=True, text=True)
    out = {"command": f"bench/{script} {' '.join(args)}".strip(), "returncode": proc.returncode,
           "wall_s": time.perf_counter() - start}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr[-2000:]
        print(f"bench/{script} failed ({proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
    return out


def newest_result(suffix: str) -> dict | None:
    files = sorted((REPO / "bench" / "results").glob(f"*-{suffix}.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text()) if files else None


def run_export(args) -> dict:
    # The quick run's single repetition reports in the quick section only; the full run rewrites the export section.
    out = run_script("export_bench.py", ["--reps", "1" if args.quick else "3", "--freehold", str(args.freehold),
                                         "--work", str(args.work)] + ([] if args.quick else ["--update-docs"]))
    if out["returncode"] == 0:
        r = newest_result("export")
        out.update({k: r[k] for k in ("time_ratio", "cpu_ratio", "rss_ratio")})
        out["freehold"] = {k: r["freehold"][k] for k in ("wall_s_median", "peak_rss_bytes_median")}
        out["peft"] = {k: r["peft"][k] for k in ("wall_s_median", "peak_rss_bytes_median")}
    return out


def run_prepare(args) -> dict:
    extra = ["--megabytes", "5", "--reps", "1"] if args.quick else ["--megabytes", "20", "--reps", "3"]
    out = run_script("prepare_bench.py", [*extra, "--threads", "2", "--freehold", str(args.freehold)])
    if out["returncode"] == 0:
        out["results"] = newest_result("prepare")
    return out


def run_dist(args) -> dict | None:
    script = REPO / "bench" / "dist_bench.py"
    if not script.exists():
        return None
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True).stdout
    extra = []
    if "--quick" in help_text and args.quick:
        extra.append("--quick")
    if "--freehold" in help_text:
        extra += ["--freehold", str(args.freehold)]
    target = REPO / "bench" / "results" / f"{datetime.date.today().isoformat()}-dist.json"
    if "--json" in help_text:
        extra += ["--json", str(target)]
    out = run_script("dist_bench.py", extra)
    if out["returncode"] == 0 and target.exists():
        out["results"] = json.loads(target.read_text())
    return out


# ─── docs ───────────────────────────────────────────────────────────────────────────────────────────────────────

def svg_chart(cases: list[dict], title: str) -> str:
    """Two panels of horizontal bars, one row per grid point: tokens/s and peak RSS, freehold ÷ PEFT, with the
    issue's targets (1.5× and 0.6×) and parity drawn as lines. Hand-written SVG: no plotting dependency."""
    row_h, label_w, panel_w, gap, top = 22, 210, 300, 40, 46
    height = top + row_h * len(cases) + 36
    width = label_w + 2 * panel_w + gap + 20
    # (title, [(key, colour)], target): the speedup panel shows wall time (dark) and CPU time (light) bars.
    panels = [("tokens/s, freehold ÷ PEFT (higher is better)", [("speedup", "#2b7bba"), ("cpu_speedup", "#9ecae1")],
               1.5),
              ("peak RSS, freehold ÷ PEFT (lower is better)", [("rss_ratio", "#d9822b")], 0.6)]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           'font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="18" font-size="14" font-weight="bold">{title}</text>']
    for i, (name, series, target) in enumerate(panels):
        x0 = label_w + i * (panel_w + gap)
        vmax = max(max(c[key] for c in cases for key, _ in series), target, 1.0) * 1.2
        scale = panel_w / vmax
        out.append(f'<text x="{x0}" y="{top - 10}">{name}</text>')
        bar_h = (row_h - 6) / len(series)
        for j, c in enumerate(cases):
            for k, (key, color) in enumerate(series):
                y = top + j * row_h + 3 + k * bar_h
                w = c[key] * scale
                out.append(f'<rect x="{x0}" y="{y:.1f}" width="{w:.1f}" height="{bar_h:.1f}" fill="{color}"/>')
                out.append(f'<text x="{x0 + w + 4:.1f}" y="{y + bar_h - 1:.1f}" font-size="{10 if len(series) > 1 else 12}">'
                           f'{c[key]:.2f}×</text>')
        for value, dash, label in ((1.0, "2,2", "1×"), (target, "6,3", f"target {target}×")):
            x = x0 + value * scale
            y1 = top + row_h * len(cases)
            out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{y1}" stroke="black" '
                       f'stroke-dasharray="{dash}"/>')
            out.append(f'<text x="{x:.1f}" y="{y1 + (14 if value == 1.0 else 28)}" text-anchor="middle">{label}</text>')
    for j, c in enumerate(cases):
        out.append(f'<text x="{label_w - 8}" y="{top + j * row_h + row_h - 7}" text-anchor="end">{case_label(c)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def case_label(c: dict) -> str:
    return f"{c['model']} T={c['seq_len']} {c['dtype']} {c['threads']}t"


def mfu(side: dict) -> str:
    return f"{100 * side['mfu_cpu']:.1f}%" if "mfu_cpu" in side else "—"


def peak_text(c: dict) -> str:
    return f"{c['matmul_peak_flops_per_cpu_s'] / 1e9:.0f}" if "matmul_peak_flops_per_cpu_s" in c else "—"


def markdown(result: dict, chart_name: str) -> str:
    m = result["machine"]
    cases = result["train"]
    mb = 1e6
    lines = [
        f"## training: freehold vs HF transformers + PEFT{' (quick grid)' if result['quick'] else ''}",
        "",
        f"Measured {result['date']} by `{result['command']}` ({result['wall_s'] / 60:.0f} min). "
        f"Machine: {m['cpu']}, {m['cpus_available']} CPUs available, {m['memory_bytes'] / 2**30:.0f} GiB, shared "
        f"with other jobs (load average {result['load_average'][0]:.1f} at start, {result['load_average'][1]:.1f} "
        f"at end); torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}; freehold "
        f"{', '.join(dict.fromkeys(c.get('freehold_commit', m['freehold_commit']) for c in cases))}.",
        "Same work on both sides: random-weight checkpoints of the real shapes stored in the compute dtype, LoRA r 16 "
        "alpha 32 dropout 0.05 on q/k/v/o/gate/up/down of every layer (adapters and AdamW state fp32), the same "
        "token rows (micro-batch 1, every token a target), clip 1.0, AdamW; the same thread count. "
        f"{cases[0].get('rounds', 1)} process(es) per side, the sides alternating; in each, "
        f"{cases[0]['warmup']} warm-up step(s) dropped; medians of the {cases[0]['steps'] - cases[0]['warmup']} "
        f"measured steps of every round (\"by round\": the ratio of each round alone); "
        f"{result.get('jobs', 1)} grid point(s) at a time. Peak RSS: the whole process (GNU time), "
        "load included. MFU: FLOPs per token (formula in the MFU section) × tokens per CPU-second ÷ the best "
        "GEMM rate per CPU-second measured on this machine in the same dtype and thread count, torch.mm's or oneDNN's "
        "linear's, whichever is faster (the wall-clock "
        "MFU is in the JSON; on a loaded machine it means little).",
        "",
        f"![tokens/s and peak RSS ratios]({chart_name})",
        "",
        "Chart: dark bars wall-clock tokens/s, light bars tokens per CPU-second of the process.",
        "",
        "| model | seq | dtype | threads | freehold tok/s | PEFT tok/s | speedup | by round | speedup, CPU time "
        "| freehold RSS (MB) | PEFT RSS (MB) | RSS ratio | MFU freehold (CPU time) | MFU PEFT (CPU time) "
        "| matmul peak (GFLOP/CPU-s) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        f, p = c["freehold"], c["peft"]
        lines.append(f"| {c['model']} | {c['seq_len']} | {c['dtype']} | {c['threads']} | {f['tokens_per_s']:.0f} | "
                     f"{p['tokens_per_s']:.0f} | **{c['speedup']:.2f}×** | "
                     f"{', '.join(f'{r:.2f}' for r in c.get('round_speedups', [c['speedup']]))} | "
                     f"{c['cpu_speedup']:.2f}× | {f['peak_rss_bytes'] / mb:.0f} | "
                     f"{p['peak_rss_bytes'] / mb:.0f} | **{c['rss_ratio']:.2f}×** | {mfu(f)} | {mfu(p)} | "
                     f"{peak_text(c)} |")
    lines += [
        "",
        "Step time split (median seconds per phase; freehold from metrics.jsonl `time_s`, PEFT from timers around "
        "the same calls; comm is 0 with one process; data share = data ÷ step; CPU step = process CPU seconds):",
        "",
        "| model | seq | dtype | threads | side | data | forward | backward | optimizer | comm | step | CPU step "
        "| data share |",
        "|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        for side in ("freehold", "peft"):
            s = c[side]["median_s"]
            lines.append(f"| {c['model']} | {c['seq_len']} | {c['dtype']} | {c['threads']} | {side} | "
                         f"{s['data'] * 1e3:.2f} ms | {s['forward']:.3f} | {s['backward']:.3f} | "
                         f"{s['optimizer']:.3f} | {s['comm']:.3f} | {s['step']:.3f} | "
                         f"{c[side]['median_cpu_s']['step']:.3f} | "
                         f"{100 * c[side]['data_share']:.4f}% |")
    ld = result.get("loader")
    if ld:
        how = f" (`{ld['run']['command']}`)" if "run" in ld else ""
        lines += ["", f"Data loader share with the real data path{how}: {ld['source']}, SmolLM2-135M shape, fp32, seq "
                      f"{ld['seq_len']}, {ld['threads']} thread(s): median data phase {ld['median_data_s'] * 1e3:.2f} "
                      f"ms of a {ld['median_step_s']:.2f} s step = **{100 * ld['share']:.5f}%** (target < 2%)."]
    ex, pr, di = result.get("export"), result.get("prepare"), result.get("dist")
    if ex or pr or di:
        lines += ["", "Other benches of the same run (details in their sections and JSON files):", ""]
    if ex and ex.get("returncode") == 0:
        lines.append(f"- export (`{ex['command']}`): freehold {ex['freehold']['wall_s_median']:.2f} s, "
                     f"{ex['freehold']['peak_rss_bytes_median'] / mb:.0f} MB; PEFT {ex['peft']['wall_s_median']:.2f} s, "
                     f"{ex['peft']['peak_rss_bytes_median'] / mb:.0f} MB (time {ex['time_ratio']:.2f}×, peak RSS "
                     f"{ex['rss_ratio']:.2f}×).")
    elif ex:
        lines.append(f"- export (`{ex['command']}`): failed with exit code {ex['returncode']}.")
    if pr and pr.get("returncode") == 0 and pr.get("results"):
        for kind, r in pr["results"]["results"].items():
            lines.append(f"- prepare, {kind} (`{pr['command']}`): freehold {r['freehold']['tokens_per_s'] / 1e6:.2f} M "
                         f"tokens/s, tokenizers encode_batch {r['tokenizers']['tokens_per_s'] / 1e6:.2f} M tokens/s "
                         f"({r['freehold']['tokens_per_s'] / r['tokenizers']['tokens_per_s']:.2f}×, "
                         f"{r['megabytes']:.0f} MB of JSONL).")
    elif pr:
        lines.append(f"- prepare (`{pr['command']}`): failed with exit code {pr['returncode']}.")
    if di:
        lines.append(f"- dist (`{di['command']}`): exit code {di['returncode']}; results in bench/results/*-dist.json.")
    return "\n".join(lines) + "\n"


def update_docs(section: str, quick: bool) -> None:
    tag = "train-bench-quick" if quick else "train-bench"
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\nTimings live here, never in tests (DESIGN.md §7).\n"
    block = f"{begin}\n{section}{end}\n"
    if begin in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end) + 1:]
    else:
        # New sections go right after the page's introduction, before the other benches.
        anchor = "<!-- export-bench:begin -->"
        if anchor in text:
            text = text[:text.index(anchor)] + block + "\n" + text[text.index(anchor):]
        else:
            text = text.rstrip("\n") + "\n\n" + block
    DOCS.write_text(text)


def render(args) -> int:
    date = datetime.date.today().isoformat()
    path = REPO / "bench" / "results" / f"{date}{'-quick' if args.quick else ''}.json"
    result = json.loads(path.read_text())
    peaks: dict = {}
    for c in result["train"]:
        if "matmul_peak_kernel" in c:
            continue
        # Results from before the peak took the faster of torch.mm and oneDNN (or before the CPU-time peak was
        # measured at all): measure it now, on the same machine.
        key = (c["dtype"], c["threads"])
        if key not in peaks:
            env = dict(os.environ, OMP_NUM_THREADS=str(c["threads"]), MKL_NUM_THREADS=str(c["threads"]))
            peaks[key] = train_bench.matmul_peak(c["dtype"], c["threads"], env)
        c["matmul_peak_flops_per_cpu_s"] = peaks[key]["flops_per_cpu_s"]
        c["matmul_peak_flops_per_s"] = peaks[key]["flops_per_s"]
        c["matmul_peak_kernel"] = peaks[key]["kernel"] + " (measured by --render)"
        for side in ("freehold", "peft"):
            s = c[side]
            s["mfu_cpu"] = s["tokens_per_cpu_s"] * c["flops_per_token"] / c["matmul_peak_flops_per_cpu_s"]
            s["mfu"] = s["tokens_per_s"] * c["flops_per_token"] / c["matmul_peak_flops_per_s"]
    path.write_text(json.dumps(result, indent=1) + "\n")
    write_chart_and_docs(result, date, args.quick)
    return 0


# ─── main ───────────────────────────────────────────────────────────────────────────────────────────────────────

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    train_bench.add_arguments(ap)
    ap.add_argument("--only", nargs="+", choices=["train", "loader", "export", "prepare", "dist"],
                    default=["train", "loader", "export", "prepare", "dist"])
    ap.add_argument("--no-docs", action="store_true", help="write the JSON only")
    ap.add_argument("--add", action="store_true",
                    help="add this run's training grid points to the day's results (a point measured again replaces "
                         "the earlier one) instead of replacing them: a grid measured in several runs")
    ap.add_argument("--render", action="store_true",
                    help="rewrite the docs section and chart from the day's results JSON without running anything")
    args = ap.parse_args()
    if args.render:
        return render(args)
    for tool, why in ((train_bench.TIME, "GNU time measures each side's peak RSS (apt install time)"),
                      (args.freehold, "build the freehold target or pass --freehold")):
        if not Path(tool).is_file():
            raise SystemExit(f"{tool} does not exist: {why}")
    start = time.perf_counter()
    date = datetime.date.today().isoformat()
    result = {"date": date, "bench": "run", "quick": args.quick,
              "command": "make bench" + (" ARGS=--quick" if args.quick else "") if os.environ.get("MAKELEVEL")
              else "bench/run.py " + " ".join(sys.argv[1:]),
              "machine": machine(args.freehold), "load_average": [os.getloadavg()[0]]}
    if "train" in args.only:
        cases = train_bench.cases_from(args)
        print(f"training: {len(cases)} grid points, {args.jobs} at a time", flush=True)
        # The matmul peaks first, alone, so that no grid point running beside them lowers them.
        peaks: dict = {}
        for c in cases:
            key = (c["dtype"], c["threads"])
            if key not in peaks:
                env = dict(os.environ, OMP_NUM_THREADS=str(c["threads"]), MKL_NUM_THREADS=str(c["threads"]))
                peaks[key] = train_bench.matmul_peak(c["dtype"], c["threads"], env)
        run = lambda c: train_bench.run_case(c, args.freehold, args.work, peaks, log=lambda s: print(s, flush=True))
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            result["train"] = list(pool.map(run, cases))
        for c in result["train"]:
            c["freehold_commit"] = result["machine"]["freehold_commit"]
        result["jobs"] = args.jobs
        result["formula"] = train_bench.lora_train_flops_per_token.__doc__
    if "loader" in args.only:
        print("data loader share ...", flush=True)
        result["loader"] = train_bench.loader_share(args.freehold, args.work)
        print(f"data loader: {100 * result['loader']['share']:.3f}% of the step", flush=True)
    if "export" in args.only:
        print("export bench ...", flush=True)
        result["export"] = run_export(args)
    if "prepare" in args.only:
        print("prepare bench ...", flush=True)
        result["prepare"] = run_prepare(args)
    if "dist" in args.only:
        result["dist"] = run_dist(args)
    result["load_average"].append(os.getloadavg()[0])
    result["wall_s"] = time.perf_counter() - start

    out = REPO / "bench" / "results" / f"{date}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # a run of some parts (--only) keeps the other parts of the same day's file
        earlier = json.loads(out.read_text())
        if "train" not in args.only and "train" in earlier:
            # The page's header describes the training run; this part keeps its own command and load.
            this_run = {k: result[k] for k in ("command", "wall_s", "load_average")}
            for part in args.only:
                if isinstance(result.get(part), dict):
                    result[part]["run"] = this_run
            for key in ("command", "wall_s", "load_average", "machine"):
                result[key] = earlier[key]
        elif args.add and "train" in earlier:
            key_of = lambda c: (c["model"], c["seq_len"], c["dtype"], c["threads"])
            measured = {key_of(c) for c in result["train"]}
            for c in earlier["train"]:  # each point keeps the build it measured
                c.setdefault("freehold_commit", earlier["machine"]["freehold_commit"])
            result["train"] = [c for c in earlier["train"] if key_of(c) not in measured] + result["train"]
            result["command"] = f"{earlier['command']}; then {result['command']}"
            result["wall_s"] += earlier["wall_s"]
            result["load_average"] = [earlier["load_average"][0], result["load_average"][-1]]
        for key in ("train", "formula", "jobs", "loader", "export", "prepare", "dist"):
            if key not in result and key in earlier:
                result[key] = earlier[key]
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    if "train" in result and not args.no_docs:
        write_chart_and_docs(result, date, args.quick)
    worst = [c for c in result.get("train", []) if c["speedup"] < 1.5 or c["rss_ratio"] > 0.6]
    for c in worst:
        print(f"below target: {case_label(c)}: {c['speedup']:.2f}× tokens/s, {c['rss_ratio']:.2f}× peak RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
