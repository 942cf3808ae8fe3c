"""docs/distributed.md's "Tested under Slurm" section shows the exact commands the tests under tests/slurm/ run
(slurm_util.COMMANDS, in order): the first ```bash block under that heading, comments and blank lines aside."""

from __future__ import annotations

import re
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_util import COMMANDS, REPO  # noqa: E402

DOC = REPO / "docs" / "distributed.md"
HEADING = "## Tested under Slurm"


def documented_commands(text: str) -> list[str]:
    if HEADING not in text:
        raise AssertionError(f"{DOC}: no '{HEADING}' section")
    section = text.split(HEADING, 1)[1]
    section = re.split(r"^## ", section, maxsplit=1, flags=re.MULTILINE)[0]
    block = re.search(r"^```bash\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    if block is None:
        raise AssertionError(f"{DOC}: '{HEADING}' has no ```bash block")
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


class DocsSyncTest(unittest.TestCase):
    def test_documented_commands_are_the_tested_ones(self) -> None:
        documented = documented_commands(DOC.read_text())
        self.assertEqual(documented, list(COMMANDS.values()),
                         f"{DOC} '{HEADING}' and tests/slurm/slurm_util.py COMMANDS differ: change both together")

    def test_the_extraction_sees_a_changed_command(self) -> None:
        # The check itself can fail: a doc with one command changed is told apart.
        text = DOC.read_text()
        first = next(iter(COMMANDS.values()))
        self.assertIn(first, text)
        changed = documented_commands(text.replace(first, first + " --extra", 1))
        self.assertNotEqual(changed, list(COMMANDS.values()))


if __name__ == "__main__":
    unittest.main()
