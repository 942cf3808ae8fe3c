#!/usr/bin/env python3
"""Runs the commands the documentation shows, so the docs stay true.

A fenced block is run when the line before its opening fence is `<!-- doc-test -->`:

    <!-- doc-test -->
    ```bash
    freehold train configs/tiny-cpu.yaml train.max_steps=20
    ```

`bash` blocks run with `bash -euo pipefail`, `python` blocks with the test virtual environment's Python. The
marked blocks of one Markdown file run in order in one fresh temporary directory that looks like a checkout
(examples/, configs/, scripts/ and .venv link to the repository) with the build's `freehold` first on PATH, so the
docs can use the paths a reader of a fresh clone would. Unmarked blocks (installation, GPU clusters, tools that are
not installed here) are shown, not run.

    doc_commands_test.py --build-dir BUILD FILE.md     run one file's blocks
    doc_commands_test.py --list                        the files that have marked blocks
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- doc-test -->"
FENCE = re.compile(r"^(\s*)```\s*([A-Za-z0-9_+-]*)")
LINKED = ["examples", "configs", "scripts", ".venv"]


def marked_blocks(path: Path):
    """(language, first line number, text) of each marked block, in file order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == MARKER:
            j = i + 1
            m = FENCE.match(lines[j]) if j < len(lines) else None
            if not m:
                raise SystemExit(f"{path}:{i + 1}: {MARKER} must be followed directly by a ``` fence")
            language = m.group(2)
            if language not in ("bash", "python"):
                raise SystemExit(f"{path}:{j + 1}: a marked block must be ```bash or ```python, not ```{language}")
            body = []
            k = j + 1
            while k < len(lines) and not lines[k].strip().startswith("```"):
                body.append(lines[k])
                k += 1
            if k == len(lines):
                raise SystemExit(f"{path}:{j + 1}: the block is never closed")
            blocks.append((language, j + 2, "\n".join(body) + "\n"))
            i = k
        i += 1
    return blocks


def files_with_markers():
    candidates = [REPO / "README.md", REPO / "configs" / "README.md"]
    candidates += sorted((REPO / "docs").glob("*.md")) + sorted((REPO / "examples").rglob("*.md"))
    return [p for p in candidates if p.is_file() and MARKER in p.read_text(encoding="utf-8")]


def run_file(doc: Path, build_dir: Path) -> int:
    blocks = marked_blocks(doc)
    if not blocks:
        print(f"{doc}: no {MARKER} blocks", file=sys.stderr)
        return 1
    freehold_bin = build_dir / "bin"
    if not (freehold_bin / "freehold").exists():
        print(f"{freehold_bin}/freehold does not exist; build the `freehold` target first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="freehold_doc_") as work:
        work = Path(work)
        for name in LINKED:
            (work / name).symlink_to(REPO / name)
        env = dict(os.environ)
        env["PATH"] = f"{freehold_bin}:{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}"
        env["FREEHOLD_SOURCE_DIR"] = str(REPO)
        env["FREEHOLD_BUILD_DIR"] = str(build_dir)
        env.setdefault("OMP_NUM_THREADS", "2")
        for language, line, text in blocks:
            rel = os.path.relpath(doc, REPO)
            print(f"--- {rel}:{line} ({language})\n{text}", flush=True)
            if language == "bash":
                command = ["bash", "-euo", "pipefail", "-c", text]
            else:
                command = [str(REPO / ".venv" / "bin" / "python"), "-c", text]
            result = subprocess.run(command, cwd=work, env=env)
            if result.returncode != 0:
                print(f"FAILED: the {language} block at {rel}:{line} exited with {result.returncode}", file=sys.stderr)
                return 1
    print(f"{os.path.relpath(doc, REPO)}: {len(blocks)} block(s) ran")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", type=Path)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("file", nargs="?", type=Path)
    args = parser.parse_args()
    if args.list:
        for p in files_with_markers():
            print(p.relative_to(REPO))
        return 0
    if args.file is None or args.build_dir is None:
        parser.error("give --build-dir and a Markdown file (or --list)")
    doc = args.file if args.file.is_absolute() else REPO / args.file
    return run_file(doc.resolve(), args.build_dir.resolve())


if __name__ == "__main__":
    sys.exit(main())
