"""Resume at the process level (issue 5, RELIABILITY.md C1, C2, C4, C13, D9): `freehold train` stopped by SIGUSR1 at
an arbitrary step, or killed with SIGKILL at arbitrary moments (with save_every 1 much of each step is a checkpoint write),
then started again with resume: auto, ends with the same loss lines and bit-identical adapter weights and optimizer
state as one uninterrupted run. fp32 on the CPU, dropout on (so the RNG streams must be restored too). The first
two use the testing-only batch file; LoaderResumeTest resumes through data/'s loader (configs/tiny-cpu.yaml: packed
text, shuffled) across epoch boundaries.

    FREEHOLD_BIN=build/bin/freehold .venv/bin/python -m unittest -v tests/conformance/train_resume_test.py
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_util import FREEHOLD_BIN, REPO, WORK, checkpoint, threads_taking_signal  # noqa: E402
RUNS = WORK / "train_resume"
BASE = "llama-gqa-llama3"
STEPS = 16




def write_config(base: Path, batches: Path, out: Path) -> Path:
    config = {
        "model": {"path": str(base), "dtype": "fp32"},
        "adapter": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "down_proj"]},
        "data": {"train": [str(batches)], "seq_len": 16},
        "train": {"micro_batch_size": 2, "grad_accum_steps": 2, "max_steps": STEPS, "lr": 5e-3,
                  "weight_decay": 0.01, "loraplus_lr_ratio": 4, "lr_schedule": "cosine", "warmup_steps": 2,
                  "precision": "fp32", "max_grad_norm": 1.0},
        "output": {"dir": str(out), "save_every": 1, "keep_last": 2, "tensorboard": False},
        "resume": "auto",
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(json.dumps(config))
    return path


def losses(run: Path) -> list:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


class TrainResumeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not FREEHOLD_BIN.exists():
            raise AssertionError(f"{FREEHOLD_BIN} is missing: build the freehold target first")
        cls.base = checkpoint(BASE)
        vocab = json.loads((cls.base / "config.json").read_text())["vocab_size"]
        shutil.rmtree(RUNS, ignore_errors=True)
        RUNS.mkdir(parents=True)
        g = torch.Generator().manual_seed(3)
        cls.batches = RUNS / "train.batches.safetensors"
        ids = torch.randint(0, vocab, (10, 16), generator=g)
        save_file({"input_ids": ids.contiguous()}, str(cls.batches))
        cls.whole = RUNS / "whole"
        proc = subprocess.run([str(FREEHOLD_BIN), "train", str(write_config(cls.base, cls.batches, cls.whole))],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise AssertionError(proc.stderr[-4000:])

    def assert_same_as_whole(self, run: Path):
        self.assertEqual(losses(run), losses(self.whole))
        self.assertEqual(len(losses(run)), STEPS)
        for rel in ("adapter/adapter_model.safetensors", f"checkpoints/step-{STEPS:06d}/optimizer.safetensors"):
            a, b = load_file(str(self.whole / rel)), load_file(str(run / rel))
            self.assertEqual(sorted(a), sorted(b))
            for key in a:
                self.assertTrue(torch.equal(a[key], b[key]), f"{rel}: {key} differs")

    def wait_for_steps(self, run: Path, proc: subprocess.Popen, n: int):
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            metrics = run / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
                return
            time.sleep(0.01)

    def test_sigusr1_then_resume(self):
        run = RUNS / "sigusr1"
        config = write_config(self.base, self.batches, run)
        proc = subprocess.Popen([str(FREEHOLD_BIN), "train", str(config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        self.wait_for_steps(run, proc, 5)
        # Mid-run, with every pool started: one thread takes the stop signals, no computing thread does.
        for signum in (signal.SIGUSR1, signal.SIGTERM):
            taking, total = threads_taking_signal(proc.pid, signum)
            self.assertEqual(taking, 1, f"{total} threads, {taking} of them take signal {signum}")
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=120)
        self.assertEqual(proc.returncode, 75, err[-3000:])
        stopped_at = len(losses(run))
        self.assertLess(stopped_at, STEPS)
        self.assertTrue((run / "checkpoints" / f"step-{stopped_at:06d}" / "manifest.json").exists())
        proc = subprocess.run([str(FREEHOLD_BIN), "train", str(config)], capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertIn(f"resumed from", proc.stderr)
        self.assert_same_as_whole(run)

    def test_sigkill_at_random_moments_then_resume(self):
        run = RUNS / "sigkill"
        config = write_config(self.base, self.batches, run)
        rng = random.Random(5)
        kills = 0
        for _ in range(6):
            proc = subprocess.Popen([str(FREEHOLD_BIN), "train", str(config)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            done = len(losses(run)) if (run / "metrics.jsonl").exists() else 0
            self.wait_for_steps(run, proc, done + 2)
            time.sleep(rng.uniform(0, 0.05))  # somewhere in a step or in a checkpoint write
            if proc.poll() is None:
                proc.kill()
                kills += 1
            proc.wait()
        self.assertGreater(kills, 0)
        proc = subprocess.run([str(FREEHOLD_BIN), "train", str(config)], capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assert_same_as_whole(run)
        leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]
        self.assertEqual(leftovers, [])


class LoaderResumeTest(unittest.TestCase):
    """The same through data/'s loader (text, shuffled, dropout on) across epoch boundaries (C13, C14): a run
    resumed from the uninterrupted run's step-4 checkpoint gives the same steps 5-8, bit for bit."""

    def test_resume_from_a_mid_run_checkpoint(self):
        if not FREEHOLD_BIN.exists():
            raise AssertionError(f"{FREEHOLD_BIN} is missing: build the freehold target first")
        work = WORK / "train_resume_loader"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        model = work / "tiny-llama"
        subprocess.run([sys.executable, str(REPO / "examples" / "demo_reference.py"), "prepare", "--text",
                        str(REPO / "examples" / "data" / "pride_and_prejudice_ch1.txt"), "--out", str(model)],
                       check=True, capture_output=True)
        common = [str(REPO / "configs" / "tiny-cpu.yaml"), f"model.path={model}", "train.max_steps=8",
                  "train.warmup_steps=2", "train.grad_accum_steps=2", "output.save_every=4", "output.keep_last=5",
                  "output.log_every=1", "output.tensorboard=false", "data.shuffle=true", "adapter.dropout=0.1",
                  "resume=auto"]
        whole, part = work / "whole", work / "part"
        for out in (whole, part):
            if out == part:
                (part / "checkpoints").mkdir(parents=True)
                shutil.copytree(whole / "checkpoints" / "step-000004", part / "checkpoints" / "step-000004")
            proc = subprocess.run([str(FREEHOLD_BIN), "train", *common, f"output.dir={out}"], capture_output=True,
                                  text=True, cwd=REPO)
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertEqual(losses(part), losses(whole)[4:])
        for rel in ("adapter/adapter_model.safetensors", "checkpoints/step-000008/optimizer.safetensors"):
            self.assertEqual((whole / rel).read_bytes(), (part / rel).read_bytes(), rel)


if __name__ == "__main__":
    unittest.main()
