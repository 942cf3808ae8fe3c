"""Several ranks under a real Slurm (issues #6 and #10): `srun` of 4 tasks and `mpirun` inside `salloc` give ranks,
local ranks and world size equal to Slurm's view, printed at start-up, and train what one rank with the whole
batch trains; the example job script launch/slurm/train_1node_8gpu.sbatch runs as it is (only node, task and
partition counts passed in) as a 2-task job that trains the tiny config, exports and exits 0; and the same job,
preempted with USR1, checkpoints on both ranks at one step, exits 75, requeues itself and ends with the adapter
of the uninterrupted job, byte for byte. The commands are slurm_util.COMMANDS, which docs/distributed.md shows."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_util import (FREEHOLD_BIN, REPO, THREADS, TINY_CONFIG, ClusterTestCase, expand,  # noqa: E402
                        fresh_work_dir, metrics, tiny_model, tiny_train_overrides, train_plain)
ADAPTER = "adapter/adapter_model.safetensors"
# configs/tiny-cpu.yaml has micro_batch_size 4: W ranks of 4 / W rows train the same global batch as one rank.
GLOBAL_BATCH = 4
STEPS = 4
PREEMPT_STEPS = 24


def losses(run: Path) -> list[float]:
    return [m["loss"] for m in metrics(run) if "loss" in m]


def start_up_lines(output: str) -> dict[int, tuple[int, int, int]]:
    """srun --label's task id -> (rank, world size, local rank) from freehold's start-up line of that task."""
    found = {}
    for task, rank, size, local in re.findall(r"^\s*(\d+): .*?rank (\d+) of (\d+), local rank (\d+)", output,
                                              flags=re.MULTILINE):
        found[int(task)] = (int(rank), int(size), int(local))
    return found


class MultiRankTest(ClusterTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.work = fresh_work_dir("multirank")
        cls.model = tiny_model()
        # One rank with the whole batch: what every multi-rank run must reproduce (to summation order).
        cls.single = cls.work / "single"
        train_plain(cls.cluster.env(**THREADS), tiny_train_overrides(cls.model, cls.single, steps=STEPS))

    def overrides(self, run: Path, ranks: int, steps: int = STEPS, save_every: int = 2) -> list[str]:
        return [*tiny_train_overrides(self.model, run, steps=steps, save_every=save_every),
                f"train.micro_batch_size={GLOBAL_BATCH // ranks}"]

    def assert_same_training(self, run: Path, reference: Path) -> None:
        got, want = losses(run), losses(reference)
        self.assertEqual(len(got), len(want), f"{run}: {got} vs {want}")
        for step, (a, b) in enumerate(zip(got, want), start=1):
            self.assertAlmostEqual(a, b, delta=1e-5 * abs(b), msg=f"loss of step {step}: {a} vs {b}")

    def test_srun_ranks_agree_with_slurm(self) -> None:
        run = self.work / "srun-4"
        proc = subprocess.run(expand("srun_ranks", FREEHOLD=FREEHOLD_BIN, CONFIG=TINY_CONFIG,
                                     OVERRIDES=self.overrides(run, 4)),
                              capture_output=True, text=True, cwd=REPO, env=self.cluster.env(**THREADS), timeout=300)
        self.assertEqual(proc.returncode, 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        # srun --label numbers lines by task: the task id is SLURM_PROCID; on one node SLURM_LOCALID equals it, and
        # SLURM_NTASKS is the 4 asked for.
        self.assertEqual(start_up_lines(proc.stdout + proc.stderr), {t: (t, 4, t) for t in range(4)},
                         proc.stderr[-3000:])
        self.assert_same_training(run, self.single)

    def test_mpirun_inside_salloc_two_ranks(self) -> None:
        run = self.work / "salloc-mpirun-2"
        proc = subprocess.run(expand("salloc_mpirun_ranks", FREEHOLD=FREEHOLD_BIN, CONFIG=TINY_CONFIG,
                                     OVERRIDES=self.overrides(run, 2)),
                              capture_output=True, text=True, cwd=REPO, env=self.cluster.env(**THREADS), timeout=300)
        self.assertEqual(proc.returncode, 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        self.assertRegex(proc.stderr, r"Granted job allocation \d+", "mpirun ran outside an allocation")
        for rank in range(2):
            self.assertRegex(proc.stdout + proc.stderr, rf"rank {rank} of 2, local rank {rank}")
        self.assert_same_training(run, self.single)

    def submit_example(self, run: Path, steps: int) -> tuple[str, Path]:
        proc = self.cluster.run(expand("example_sbatch", FREEHOLD=FREEHOLD_BIN, REPO=REPO, CONFIG=TINY_CONFIG,
                                       OVERRIDES=[*self.overrides(run, 2, steps=steps, save_every=0),
                                                  "output.export=both", "output.export_dtype=fp32"]),
                                cwd=self.work, env=self.cluster.env(**THREADS))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        job_id = proc.stdout.strip().split(";")[0]
        return job_id, self.work / f"freehold-freehold-{job_id}.out"

    def test_example_job_script_trains_exports_and_requeues_after_preemption(self) -> None:
        # The uninterrupted job: 2 tasks, the tiny config, both exports, exit 0.
        whole = self.work / "sbatch-whole"
        job_id, log = self.submit_example(whole, PREEMPT_STEPS)
        final = self.cluster.wait_for_job(job_id, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=300)
        self.assertEqual((final.get("JobState"), final.get("ExitCode")), ("COMPLETED", "0:0"), read(log))
        self.assertTrue((whole / ADAPTER).exists() and (whole / "merged" / "config.json").exists(), read(log))
        self.assertRegex(read(log), r"rank 1 of 2, local rank 1")

        # The same job, sent USR1 once both ranks have taken a step.
        preempted = self.work / "sbatch-preempted"
        job_id, log = self.submit_example(preempted, PREEMPT_STEPS)
        deadline = time.monotonic() + 240
        while not losses(preempted):
            state = self.cluster.job_state(job_id).get("JobState")
            self.assertIn(state, ("PENDING", "CONFIGURING", "RUNNING"), f"before the signal:\n{read(log)}")
            self.assertLess(time.monotonic(), deadline, f"no step in 240 s:\n{read(log)}")
            time.sleep(0.2)
        signal = self.cluster.run(expand("preempt_signal", JOB_ID=job_id))
        self.assertEqual(signal.returncode, 0, signal.stderr)
        final = self.cluster.wait_for_job(job_id, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=300)
        text = read(log)
        self.assertEqual((final.get("JobState"), final.get("Restarts")), ("COMPLETED", "1"), f"{final}\n{text}")
        stops = re.findall(r"\[rank (\d)\] .*checkpointing at step (\d+)", text)
        self.assertEqual(sorted(rank for rank, _ in stops), ["0", "1"], f"both ranks stop once:\n{text}")
        self.assertEqual(len({step for _, step in stops}), 1, f"the ranks stopped at different steps:\n{text}")
        self.assertLess(int(stops[0][1]), PREEMPT_STEPS, f"the signal came after the last step:\n{text}")
        self.assertIn("requeueing", text)
        self.assertIn(f"checkpoints/step-{int(stops[0][1]):06d}", text)
        self.assertEqual((preempted / ADAPTER).read_bytes(), (whole / ADAPTER).read_bytes(),
                         "the requeued job's adapter differs from the uninterrupted job's")


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else f"({path} not written)"


if __name__ == "__main__":
    unittest.main()
