"""freehold under a real Slurm (issue #10): a one-node cluster on localhost (scripts/slurm_local_cluster.sh) runs
`srun freehold train`, `mpirun` inside an allocation, and a preempted job that requeues itself and resumes to the
adapter of an uninterrupted run. The commands are slurm_util.COMMANDS, which docs/distributed.md shows."""

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

class SlurmTrainTest(ClusterTestCase):
    """One task: `srun freehold train` and `mpirun` inside `salloc` give the run a plain `freehold train` gives."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.work = fresh_work_dir("train")
        cls.model = tiny_model()
        cls.reference = cls.work / "plain"
        train_plain(cls.cluster.env(**THREADS), tiny_train_overrides(cls.model, cls.reference, steps=4))

    def assert_same_run(self, run: Path, proc: subprocess.CompletedProcess) -> None:
        self.assertEqual(proc.returncode, 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        # One task: SLURM_PROCID 0, SLURM_LOCALID 0, SLURM_NTASKS 1, as freehold says at start-up.
        self.assertIn("rank 0 of 1, local rank 0", proc.stderr)
        self.assertEqual([m["step"] for m in metrics(run) if "loss" in m], [1, 2, 3, 4])
        rel = "adapter/adapter_model.safetensors"
        self.assertEqual((run / rel).read_bytes(), (self.reference / rel).read_bytes(),
                         f"{run / rel} differs from the plain run's")

    def test_srun_train(self) -> None:
        run = self.work / "srun"
        proc = subprocess.run(expand("srun_train", FREEHOLD=FREEHOLD_BIN, CONFIG=TINY_CONFIG,
                                     OVERRIDES=tiny_train_overrides(self.model, run, steps=4)),
                              capture_output=True, text=True, cwd=REPO, env=self.cluster.env(**THREADS), timeout=300)
        self.assert_same_run(run, proc)

    def test_mpirun_inside_salloc(self) -> None:
        run = self.work / "salloc-mpirun"
        proc = subprocess.run(expand("salloc_mpirun_train", FREEHOLD=FREEHOLD_BIN, CONFIG=TINY_CONFIG,
                                     OVERRIDES=tiny_train_overrides(self.model, run, steps=4)),
                              capture_output=True, text=True, cwd=REPO, env=self.cluster.env(**THREADS), timeout=300)
        self.assert_same_run(run, proc)
        self.assertRegex(proc.stderr, r"Granted job allocation \d+", "mpirun ran outside an allocation")


class PreemptionTest(ClusterTestCase):
    """A job submitted with --requeue and --signal=B:USR1@N gets USR1 early (`scancel --signal=USR1 --batch`): the
    job script's trap forwards it to the ranks, which checkpoint at one step and exit 75; the script requeues the
    job, which resumes from that checkpoint and ends with the adapter of a run that was never interrupted."""

    STEPS = 30

    def test_preempted_job_requeues_and_resumes_to_the_same_adapter(self) -> None:
        work = fresh_work_dir("preempt")
        model = tiny_model()
        whole, preempted = work / "whole", work / "preempted"
        train_plain(self.cluster.env(**THREADS), tiny_train_overrides(model, whole, steps=self.STEPS, save_every=0))

        log = work / "job.log"
        submit = self.cluster.run(
            expand("preempt_submit", LOG=log, FREEHOLD=FREEHOLD_BIN, CONFIG=TINY_CONFIG,
                   OVERRIDES=tiny_train_overrides(model, preempted, steps=self.STEPS, save_every=0)),
            cwd=REPO, env=self.cluster.env(**THREADS))
        self.assertEqual(submit.returncode, 0, submit.stderr)
        job_id = submit.stdout.strip().split(";")[0]

        # Signal once the run has taken a step (so the stop is mid-run).
        deadline = time.monotonic() + 240
        while not [m for m in metrics(preempted) if "loss" in m]:
            state = self.cluster.job_state(job_id).get("JobState")
            if state not in ("PENDING", "CONFIGURING", "RUNNING"):
                self.fail(f"job {job_id} is {state} before it was signalled:\n{self.read(log)}")
            if time.monotonic() > deadline:
                self.fail(f"job {job_id} took no step in 240 s:\n{self.read(log)}")
            time.sleep(0.2)
        signal = self.cluster.run(expand("preempt_signal", JOB_ID=job_id))
        self.assertEqual(signal.returncode, 0, signal.stderr)

        final = self.cluster.wait_for_job(job_id, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"),
                                          timeout=300)
        text = self.read(log)
        self.assertEqual(final.get("JobState"), "COMPLETED", f"{final}\n{text}")
        self.assertEqual(final.get("Restarts"), "1", f"the job was not requeued exactly once: {final}\n{text}")
        stops = re.findall(r"checkpointing at step (\d+) and exiting", text)
        self.assertEqual(len(stops), 1, text)
        self.assertLess(int(stops[0]), self.STEPS, f"the signal came after the last step:\n{text}")
        self.assertIn("exit code 75: requeueing", text)
        self.assertIn(f"resumed from {preempted}/checkpoints/step-{int(stops[0]):06d}", text)
        rel = "adapter/adapter_model.safetensors"
        self.assertEqual((preempted / rel).read_bytes(), (whole / rel).read_bytes(),
                         "the requeued job's adapter differs from the uninterrupted run's")

    @staticmethod
    def read(path: Path) -> str:
        return path.read_text(errors="replace") if path.exists() else f"({path} not written)"


if __name__ == "__main__":
    unittest.main()
