"""Helpers for the tests under a real Slurm (issue #10): the one-node cluster of scripts/slurm_local_cluster.sh,
the tiny model the demo uses, and the tiny training's command line. Tests import it after putting this folder on
sys.path. The cluster lives in a short directory under /tmp (Unix socket paths are limited to 108 bytes); the
runs live under FREEHOLD_SLURM_WORK (default build/slurm)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FREEHOLD_BIN = Path(os.environ.get("FREEHOLD_BIN", REPO / "build" / "bin" / "freehold"))
WORK = Path(os.environ.get("FREEHOLD_SLURM_WORK", REPO / "build" / "slurm"))
CLUSTER_SCRIPT = REPO / "scripts" / "slurm_local_cluster.sh"
TINY_CONFIG = REPO / "configs" / "tiny-cpu.yaml"
TEXT = REPO / "examples" / "data" / "pride_and_prejudice_ch1.txt"
PYTHON = REPO / ".venv" / "bin" / "python"


# Every command the tests under tests/slurm/ run, in the order docs/distributed.md ("Tested under Slurm") shows
# them; docs_sync_test.py keeps the two equal. Upper-case words are filled in by expand(): DIR the cluster's
# directory, FREEHOLD the binary under test, CONFIG configs/tiny-cpu.yaml, OVERRIDES its key=value overrides
# (several arguments), the rest paths and ids of the test.
COMMANDS = {
    "cluster_start": "scripts/slurm_local_cluster.sh start DIR",
    "cluster_env": "export SLURM_CONF=DIR/slurm.conf",
    "srun_train": "srun --ntasks=1 FREEHOLD train CONFIG OVERRIDES",
    "salloc_mpirun_train": "salloc --ntasks=1 mpirun --allow-run-as-root --oversubscribe -np 1 FREEHOLD train CONFIG "
                           "OVERRIDES",
    "srun_ranks": "srun --ntasks=4 --label FREEHOLD train CONFIG OVERRIDES",
    "salloc_mpirun_ranks": "salloc --ntasks=2 mpirun --allow-run-as-root --oversubscribe -np 2 FREEHOLD train CONFIG "
                           "OVERRIDES",
    "example_sbatch": "env FREEHOLD_BIN=FREEHOLD FREEHOLD_SLURM_DIR=REPO/launch/slurm sbatch --parsable --nodes=1 "
                      "--ntasks-per-node=2 --partition=debug REPO/launch/slurm/train_1node_8gpu.sbatch CONFIG "
                      "OVERRIDES",
    "preempt_signal": "scancel --signal=USR1 --batch JOB_ID",
    "cluster_stop": "scripts/slurm_local_cluster.sh stop DIR",
    "offline_namespace": "unshare --net bash -c SCRIPT",
    "offline_prepare": "FREEHOLD prepare --tokenizer TOKENIZER --input RECORDS --out PREPARED --format text "
                       "--max-bad-fraction 0.5",
    "offline_train": "FREEHOLD train CONFIG OVERRIDES",
    "offline_export": "FREEHOLD export --base MODEL --adapter ADAPTER --out MERGED --dtype fp32",
}


PLACEHOLDERS = ("DIR", "REPO", "FREEHOLD", "CONFIG", "OVERRIDES", "JOB_ID", "SCRIPT", "TOKENIZER", "RECORDS",
                "PREPARED", "MODEL", "ADAPTER", "MERGED")


def expand(name: str, **values) -> list[str]:
    """COMMANDS[name] as an argument list: each placeholder replaced by its value, OVERRIDES by several arguments.
    A placeholder left without a value is an error (the documented command would not be the one that ran)."""
    template = COMMANDS[name]
    missing = [p for p in PLACEHOLDERS if re.search(rf"\b{p}\b", template) and p not in values]
    if missing:
        raise AssertionError(f"{name}: no value for {missing}")
    pattern = re.compile(r"\b(" + "|".join(k for k in values if k != "OVERRIDES") + r")\b")
    args = []
    for word in template.split():
        if word == "OVERRIDES":
            args.extend(values["OVERRIDES"])
        else:  # one pass, so a value is never searched for placeholders itself
            args.append(pattern.sub(lambda m: str(values[m.group(1)]), word))
    return args


def require_binary() -> None:
    if not FREEHOLD_BIN.exists():
        raise AssertionError(f"{FREEHOLD_BIN} is missing: build the freehold target first")


def tiny_model() -> Path:
    """The demo's tiny Llama and tokenizer (examples/demo_reference.py; nothing is downloaded), made once under
    WORK and reused while the generator is unchanged."""
    generator = REPO / "examples" / "demo_reference.py"
    out = WORK / "tiny-llama"
    stamp = out / ".generator"
    key = f"{generator.stat().st_mtime_ns} {generator.stat().st_size} {TEXT.stat().st_size}"
    if stamp.exists() and stamp.read_text() == key:
        return out
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([str(PYTHON), str(generator), "prepare", "--text", str(TEXT), "--out", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"making the tiny model failed:\n{proc.stdout}\n{proc.stderr}")
    stamp.write_text(key)
    return out


def tiny_train_overrides(model: Path, out: Path, steps: int = 6, save_every: int = 2) -> list[str]:
    """configs/tiny-cpu.yaml shortened to a few steps, checkpointing every `save_every`."""
    return [f"model.path={model}", f"output.dir={out}", f"train.max_steps={steps}", "train.warmup_steps=1",
            f"output.save_every={save_every}", "output.keep_last=10", "output.log_every=1",
            f"data.train=[{TEXT}]"]


# One intra-op thread per rank: 2 cores shared by up to 4 ranks would otherwise spin against each other.
THREADS = {"OMP_NUM_THREADS": "1"}


def fresh_work_dir(name: str) -> Path:
    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def train_plain(env: dict, overrides: list[str]) -> None:
    """`freehold train CONFIG OVERRIDES` outside Slurm: the reference a run under Slurm is compared with."""
    proc = subprocess.run([str(FREEHOLD_BIN), "train", str(TINY_CONFIG), *overrides], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"the plain run failed:\n{proc.stderr[-3000:]}")


def metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class LocalCluster:
    """scripts/slurm_local_cluster.sh start/stop around a test class; env() is the environment for its clients."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fhslurm.", dir="/tmp"))
        self.started = False

    def start(self) -> None:
        # A second try in a new directory: the free ports the script picks can be taken before the daemons bind them.
        for attempt in (1, 2):
            proc = subprocess.run(expand("cluster_start", DIR=self.dir), capture_output=True, text=True, timeout=120,
                                  cwd=REPO)
            if proc.returncode == 0:
                self.started = True
                return
            shutil.rmtree(self.dir, ignore_errors=True)
            if attempt == 1:
                print(f"the local Slurm cluster did not start; trying again:\n{proc.stderr}", file=sys.stderr)
                self.dir = Path(tempfile.mkdtemp(prefix="fhslurm.", dir="/tmp"))
        raise AssertionError(f"the local Slurm cluster did not start:\n{proc.stdout}\n{proc.stderr}")

    def stop(self) -> None:
        if self.started:
            subprocess.run(expand("cluster_stop", DIR=self.dir), timeout=120, cwd=REPO)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        proc = subprocess.run(["bash", str(CLUSTER_SCRIPT), "logs", str(self.dir)], capture_output=True, text=True)
        return proc.stderr

    def env(self, **extra: str) -> dict:
        env = dict(os.environ)
        # A test run inside someone's own allocation must not inherit its job's variables.
        for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))]:
            del env[key]
        variable, _, value = expand("cluster_env", DIR=self.dir)[1].partition("=")
        env[variable] = value
        env.update(extra)
        return env

    def run(self, args: list[str], timeout: float = 180, env: dict | None = None,
            **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=env or self.env(), capture_output=True, text=True, timeout=timeout, **kwargs)

    def job_state(self, job_id: str) -> dict:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...)."""
        proc = self.run(["scontrol", "show", "job", "-o", job_id])
        fields = {}
        for token in proc.stdout.split():
            key, _, value = token.partition("=")
            fields[key] = value
        return fields

    def wait_for_job(self, job_id: str, states: tuple[str, ...], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.job_state(job_id)
            if state.get("JobState") in states:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {state}")
            time.sleep(0.5)


class ClusterTestCase(unittest.TestCase):
    """Starts one cluster for the class, stops it afterwards; a failed test prints the Slurm logs."""

    cluster: LocalCluster

    @classmethod
    def setUpClass(cls) -> None:
        require_binary()
        if not shutil.which("slurmctld") or not shutil.which("munged"):
            raise AssertionError("Slurm is not installed: run scripts/bootstrap.sh (Debian slurmctld slurmd "
                                 "slurm-client munge)")
        cls.cluster = LocalCluster()
        # A class cleanup runs even when a subclass's setUpClass fails after this point (tearDownClass would not).
        cls.addClassCleanup(cls.cluster.stop)
        cls.cluster.start()

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            print(f"\n===== Slurm logs for {self.id()} =====\n{self.cluster.logs()}", file=sys.stderr)
        return out
