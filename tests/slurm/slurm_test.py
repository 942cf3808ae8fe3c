"""freehold under a real Slurm (issue #10), one task: a one-node cluster on localhost (scripts/slurm_local_cluster.sh)
runs `srun freehold train` and `mpirun` inside `salloc`, which train what a plain run trains. Several ranks, the
example job script and its preemption: multirank_test.py. The commands are slurm_util.COMMANDS, which
docs/distributed.md shows."""

from __future__ import annotations

import subprocess
import sys
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


if __name__ == "__main__":
    unittest.main()
