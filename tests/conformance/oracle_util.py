"""Helpers every Python oracle and bench shares: where the repository, the freehold binary and the generated
checkpoints are, the checkpoint generator, and small PEFT/transformers utilities. Tests import it after putting
this folder on sys.path."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import sys
import warnings
import zlib
from pathlib import Path

import torch
import transformers

REPO = Path(__file__).resolve().parents[2]
# FREEHOLD_CONFORMANCE_DIR (default build/conformance) holds the generated checkpoints, reused across runs.
WORK = Path(os.environ.get("FREEHOLD_CONFORMANCE_DIR", REPO / "build" / "conformance"))
CHECKPOINTS = WORK / "checkpoints"
# FREEHOLD_BIN (default build/bin/freehold): the binary under test.
FREEHOLD_BIN = Path(os.environ.get("FREEHOLD_BIN", REPO / "build" / "bin" / "freehold"))

sys.path.insert(0, str(REPO / "scripts"))
import make_random_checkpoints as gen  # noqa: E402  (the checked-in generator of the test checkpoints)


@functools.lru_cache(maxsize=None)
def checkpoint(name: str) -> Path:
    """The generator's variant `name`, written under CHECKPOINTS unless already there."""
    return gen.write_variant(gen.VARIANTS[name], CHECKPOINTS)


@functools.lru_cache(maxsize=None)
def token_lines(base: str, salt: str, lengths: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Random token ids of the given lengths for the variant `base`, seeded by `salt` and the name."""
    vocab = json.loads((checkpoint(base) / "config.json").read_text())["vocab_size"]
    rng = random.Random(zlib.crc32(f"{salt}/{base}".encode()))
    return tuple(tuple(rng.randrange(vocab) for _ in range(n)) for n in lengths)


@contextlib.contextmanager
def quiet():
    """Silences warnings and transformers' logging (for loads whose warnings are not under test)."""
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(previous)


def randomize_adapter(model, seed: int, b_std: float = 0.05) -> None:
    """Random non-zero adapter weights for a PEFT model: A ~ N(0, 1/in), B ~ N(0, b_std²), DoRA magnitudes
    × (1 + 0.1 N(0, 1)). With the default b_std, large enough to move the test models' logits by ~1e-1, small
    enough that they stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if ".lora_A." in name:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif ".lora_B." in name:
                p.copy_(b_std * torch.randn(p.shape, generator=g))
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g))


def threads_taking_signal(pid: int, signum: int) -> tuple[int, int]:
    """(threads of process `pid` that do not block `signum`, all its threads), from /proc/PID/task/*/status SigBlk.

    freehold blocks SIGUSR1 and SIGTERM in every thread but one (core/stop_signals.h): a handled signal's frame must
    never land on a thread running oneDNN's GEMM kernels, which point rsp at the heap."""
    taking = total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:  # the thread ended while we looked
            continue
        total += 1
        if not (int(fields["SigBlk"], 16) >> (signum - 1)) & 1:
            taking += 1
    return taking, total
