"""Offline proof and private outputs (issue #10). `freehold prepare`, `train` and `export` of the tiny model run
inside a network namespace that has only a loopback interface (`unshare --net`), each under strace: they
succeed, and no socket call of theirs names an address outside the machine. Everything the three commands
write (prepared dataset, rejects file, run directory, checkpoints, adapter, merged export) is readable by its
owner only, with the umask of a user who shares everything (022)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_util import FREEHOLD_BIN, REPO, TEXT, TINY_CONFIG, WORK, expand, require_binary, tiny_model  # noqa: E402

# Socket calls that name a peer address; strace prints the address in the call's arguments.
NETWORK_CALLS = ("connect", "sendto", "sendmsg", "sendmmsg", "bind")
LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|inet_pton\(AF_INET6, "::ffff:127\.')


class OfflineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        require_binary()
        for tool in ("unshare", "strace", "ip"):
            if not shutil.which(tool):
                raise AssertionError(f"{tool} is missing: run scripts/bootstrap.sh (util-linux, strace, iproute2)")
        cls.work = WORK / "offline"
        shutil.rmtree(cls.work, ignore_errors=True)
        cls.work.mkdir(parents=True)
        cls.model = tiny_model()  # made outside: Python is the test's oracle, not part of freehold's path

        # Text records with one that is not JSON, so that prepare writes a rejects file.
        records = [json.dumps({"text": line}) for line in TEXT.read_text().splitlines() if line.strip()]
        records.insert(3, '{"text": "a record cut short')
        cls.records = cls.work / "records.jsonl"
        cls.records.write_text("\n".join(records) + "\n")
        cls.prepared = cls.work / "train.h5"
        cls.run_dir = cls.work / "run"
        cls.merged = cls.work / "merged"
        cls.traces = {name: cls.work / f"{name}.strace" for name in ("prepare", "train", "export")}

        commands = {
            "prepare": expand("offline_prepare", FREEHOLD=FREEHOLD_BIN, TOKENIZER=cls.model / "tokenizer.json",
                              RECORDS=cls.records, PREPARED=cls.prepared),
            "train": expand("offline_train", FREEHOLD=FREEHOLD_BIN, CONFIG=TINY_CONFIG, OVERRIDES=[
                f"model.path={cls.model}", f"output.dir={cls.run_dir}", f"data.train=[{cls.prepared}]",
                "train.max_steps=3", "train.warmup_steps=1", "output.save_every=2", "output.log_every=1"]),
            "export": expand("offline_export", FREEHOLD=FREEHOLD_BIN, MODEL=cls.model, ADAPTER=cls.run_dir / "adapter",
                             MERGED=cls.merged),
        }
        # Inside the namespace: bring loopback up (it starts down), show what the namespace has, then the three
        # commands, each traced (-f: every thread and child) for the socket calls that name an address.
        script = ["set -e", "umask 022", "ip link set lo up", "echo '== links'", "ip -o link show",
                  "echo '== routes'", "ip -4 route show table all", "ip -6 route show table all"]
        # The control: a connect to a closed loopback port, which the trace must show (a tracer that saw nothing
        # would prove nothing).
        cls.traces["control"] = cls.work / "control.strace"
        commands["control"] = ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9 || true"]
        for name, command in commands.items():
            script.append(f"echo '== {name}'")
            script.append(shlex.join(["strace", "-f", "-qq", "-e", f"trace={','.join(NETWORK_CALLS)}", "-e",
                                      "signal=none", "-o", str(cls.traces[name]), *command]))
        command = expand("offline_namespace", SCRIPT="\n".join(script))
        if os.geteuid() != 0:
            command[1:1] = ["--map-root-user"]  # another user maps itself to root inside a user namespace first
        cls.proc = subprocess.run(command, capture_output=True,
                                  text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)

    def test_commands_succeed_with_only_loopback(self) -> None:
        out = self.proc.stdout
        self.assertEqual(self.proc.returncode, 0, f"{out}\n{self.proc.stderr[-4000:]}")
        links = out.split("== links\n")[1].split("== routes\n")[0].strip().splitlines()
        self.assertEqual([line.split(":")[1].strip() for line in links], ["lo"], out)
        routes = out.split("== routes\n")[1].split("== prepare\n")[0]
        for route in routes.strip().splitlines():
            # Only the kernel's local and loopback routes: nothing reaches beyond the machine.
            self.assertRegex(route, r"^(local|broadcast|multicast)? ?(127\.|::1|fe80::|ff00::)|dev lo", route)
            self.assertIn("dev lo", route)
        self.assertTrue((self.run_dir / "adapter" / "adapter_model.safetensors").exists())
        self.assertTrue((self.merged / "config.json").exists())

    def test_no_socket_call_names_an_outside_address(self) -> None:
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-4000:])
        control = self.traces["control"].read_text()
        self.assertRegex(control, r'connect\(.*AF_INET.*inet_addr\("127\.0\.0\.1"\)', "strace saw no connect")
        for name, trace in self.traces.items():
            lines = trace.read_text().splitlines()
            outside = [line for line in lines
                       if re.search(r"AF_INET6?\b", line) and not LOOPBACK.search(line)]
            self.assertEqual(outside, [], f"freehold {name} named an address off this machine")

    def test_outputs_are_owner_only(self) -> None:
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr[-4000:])
        rejects = Path(f"{self.prepared}.rejects.jsonl")
        self.assertTrue(rejects.exists(), "prepare wrote no rejects file for the record cut short")
        checked = [self.prepared, rejects]
        for root in (self.run_dir, self.merged):
            checked.append(root)
            checked.extend(sorted(root.rglob("*")))
        self.assertTrue(any("checkpoints/step-" in str(p) for p in checked), "no checkpoint was written")
        wrong = []
        for path in checked:
            mode = stat.S_IMODE(path.lstat().st_mode)
            want = 0o700 if path.is_dir() else 0o600
            if mode != want:
                wrong.append(f"{path.relative_to(self.work)}: {mode:o}, expected {want:o}")
        self.assertEqual(wrong, [], "files that can hold private data must be readable by their owner only")


if __name__ == "__main__":
    unittest.main()
