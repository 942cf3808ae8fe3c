#!/usr/bin/env python3
"""examples/cpp_api built against an INSTALLED freehold, and its numbers checked against transformers + PEFT.

Installs the build into a temporary prefix (`cmake --install`), configures and builds examples/cpp_api with
find_package(freehold) from that prefix only, runs it on the tiny demo model with a random (non-zero) PEFT
adapter, and recomputes base and adapter NLL with transformers and PEFT: the installed package must be usable
as it is, and the program must compute what the references compute.

    cpp_api_test.py --build-dir BUILD
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


def run(command, **kwargs):
    print("+", " ".join(str(c) for c in command), flush=True)
    subprocess.run([str(c) for c in command], check=True, **kwargs)


def reference_nll(model_dir: Path, adapter_dir: Path, text: str):
    """Mean NLL of the text's tokens under the base (transformers) and base + adapter (PEFT)."""
    import torch
    from peft import PeftModel
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text).ids])

    def nll(model):
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].float(), -1)
        return -logprobs[:-1].gather(1, ids[0, 1:, None]).mean().item()

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    base_nll = nll(base)
    adapted = PeftModel.from_pretrained(base, adapter_dir).eval()
    return ids.shape[1], base_nll, nll(adapted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", type=Path, required=True)
    args = parser.parse_args()
    build = args.build_dir.resolve()
    freehold = build / "bin" / "freehold"
    with tempfile.TemporaryDirectory(prefix="freehold_cpp_api_") as work:
        work = Path(work)
        prefix = work / "prefix"
        run(["cmake", "--install", build, "--prefix", prefix], stdout=subprocess.DEVNULL)
        for must in ["lib/cmake/freehold/freeholdConfig.cmake", "include/model/transformer.h", "bin/freehold"]:
            if not (prefix / must).exists():
                print(f"the install is missing {must}", file=sys.stderr)
                return 1
        # The example sees only the installed prefix, not the source tree or the build directory.
        example = work / "cpp_api"
        shutil.copytree(REPO / "examples" / "cpp_api", example)
        configure = ["cmake", "-S", example, "-B", work / "build", f"-DCMAKE_PREFIX_PATH={prefix}",
                     "-DCMAKE_BUILD_TYPE=RelWithDebInfo"]
        if shutil.which("ccache"):
            configure.append("-DCMAKE_CXX_COMPILER_LAUNCHER=ccache")
        run(configure, stdout=subprocess.DEVNULL)
        run(["cmake", "--build", work / "build", "-j2"])
        program = work / "build" / "score_with_adapter"

        model, adapter = work / "tiny", work / "adapter"
        run([PYTHON, REPO / "examples" / "demo_reference.py", "prepare", "--text",
             REPO / "examples" / "data" / "pride_and_prejudice_ch1.txt", "--out", model], stdout=subprocess.DEVNULL)
        run([prefix / "bin" / "freehold", "adapter", "init", "--model", model, "--out", adapter, "--r", "4",
             "--target-modules", "q_proj", "v_proj", "down_proj", "--randomize-b", "0.05"])
        out = subprocess.run([program, model, adapter, TEXT], check=True, capture_output=True, text=True).stdout
        print(out, end="")
        got = json.loads(out)
        tokens, base_nll, adapter_nll = reference_nll(model, adapter, TEXT)
        print(f"reference: tokens {tokens}, base nll {base_nll:.6f}, adapter nll {adapter_nll:.6f}")
        problems = []
        if got["tokens"] != tokens:
            problems.append(f"tokens: {got['tokens']} vs {tokens}")
        for key, expected in [("base_nll", base_nll), ("adapter_nll", adapter_nll)]:
            if abs(got[key] - expected) > 1e-4:
                problems.append(f"{key}: {got[key]} vs {expected} (tolerance 1e-4)")
        if abs(base_nll - adapter_nll) < 1e-3:
            problems.append("the adapter does not change the NLL; the test would not see a missing adapter")
        if problems:
            print("MISMATCH: " + "; ".join(problems), file=sys.stderr)
            return 1
    print("examples/cpp_api: built against the installed package, agrees with transformers and PEFT")
    return 0


if __name__ == "__main__":
    sys.exit(main())
