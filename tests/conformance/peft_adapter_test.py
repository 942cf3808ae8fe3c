"""Conformance: LoRA/DoRA adapters between freehold and PEFT, on random-weight checkpoints (DESIGN.md §7, issue 3).

(a) Adapters saved by PEFT with random non-zero A, B (and DoRA magnitudes) — LoRA, rsLoRA, DoRA, rank_pattern and
    alpha_pattern, a regex target_modules, all-linear, layers_to_transform with exclude_modules — on Llama (GQA),
    Qwen2 (q/k/v biases) and Qwen3 bases: `freehold score --adapter` gives PEFT's logits within FP32_TOL. Every
    feature a case exists for moves PEFT's logits by far more than the tolerance (checked by ablating it in PEFT),
    so a reader that ignores the feature cannot pass.
(b) Adapters saved by `freehold adapter init` load in `PeftModel.from_pretrained` with no warning beyond those PEFT's
    own saved adapters raise on the same base (captured with warnings and logging at WARNING), target the same
    modules, and give the logits `freehold score --adapter` gives.
(c) pissa and olora: freehold's A, B and residual base equal PEFT's for the same weights.

    FREEHOLD_BIN=build/bin/freehold .venv/bin/python -m unittest -v tests/conformance/peft_adapter_test.py

Environment: FREEHOLD_BIN, FREEHOLD_CONFORMANCE_DIR as for model_logits_test.py (checkpoints are shared with it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import unittest
import warnings
import zlib
from pathlib import Path

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_util import checkpoint, quiet, randomize_adapter  # noqa: E402
import oracle_util  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("FREEHOLD_CONFORMANCE_DIR", REPO / "build" / "conformance"))
FREEHOLD_BIN = Path(os.environ.get("FREEHOLD_BIN", REPO / "build" / "bin" / "freehold"))
RUNS = WORK / "adapters"

# fp32 on both sides; the base models agree to ~3e-6 (model_logits_test.py) and an adapter adds a few small
# matmuls and, for DoRA, a row norm: the remaining difference is summation order.
FP32_TOL = 1e-4
FEATURE_MIN_EFFECT = 100 * FP32_TOL
LINE_LENGTHS = (1, 9, 40)

transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(min(2, os.cpu_count() or 1))


def token_lines(base: str) -> tuple[tuple[int, ...], ...]:
    return oracle_util.token_lines(base, "adapters", LINE_LENGTHS)


def tokens_file(base: str) -> Path:
    path = RUNS / "inputs" / f"{base}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"tokens": list(ids)}) + "\n" for ids in token_lines(base)))
    return path


def load_base(model_dir: Path):
    with quiet():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(f"log {record.name}: {record.getMessage()}")


@contextlib.contextmanager
def capture_warnings():
    """Every warnings.warn and every log record at WARNING or above (root, transformers, peft) inside the block."""
    handler = _Collect()
    loggers = [logging.getLogger(), logging.getLogger("transformers"), logging.getLogger("peft")]
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    for lg in loggers:
        lg.addHandler(handler)
    out: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield out
        out.extend(f"{w.category.__name__}: {w.message}" for w in caught)
        out.extend(handler.messages)
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        transformers.logging.set_verbosity(previous)


def peft_logits(model, lines) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(torch.tensor([ids])).logits[0].float() for ids in lines]


def max_abs_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def require_freehold() -> None:
    if not FREEHOLD_BIN.is_file():  # never skipped: a run without the binary fails
        raise AssertionError(f"{FREEHOLD_BIN} does not exist; build it (make build) or set FREEHOLD_BIN")


def run_freehold(*args: str) -> subprocess.CompletedProcess:
    require_freehold()
    proc = subprocess.run([str(FREEHOLD_BIN), *map(str, args)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"freehold {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def freehold_logits(model_dir: Path, adapter_dir: Path | None, base: str, tag: str) -> list[torch.Tensor]:
    out = RUNS / "scores" / tag
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args = ["score", "--model", model_dir, "--input", tokens_file(base), "--out", out / "scores.jsonl",
            "--logits-out", out / "logits.safetensors", "--dtype", "fp32"]
    if adapter_dir is not None:
        args += ["--adapter", adapter_dir]
    run_freehold(*args)
    tensors = load_file(str(out / "logits.safetensors"))
    return [tensors[f"logits.{k}"] for k in range(len(LINE_LENGTHS))]


def adapter_modules(adapter_dir: Path) -> set[str]:
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    out = set()
    for key in keys:
        for suffix in (".lora_A.weight", ".lora_B.weight", ".lora_magnitude_vector"):
            if key.endswith(suffix):
                out.add(key[len("base_model.model."):-len(suffix)])
    return out


# ---------------------------------------------------------------------------------------------------------------
# (a) PEFT-saved adapters scored by freehold

# name -> (base variant, LoraConfig kwargs, [(feature, config edit that removes it)])
PEFT_CASES = {
    "llama-lora": ("llama-gqa-llama3", dict(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
                   []),
    "llama-rslora": ("llama-gqa-llama3", dict(r=4, lora_alpha=8, use_rslora=True,
                                              target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"]),
                     [("rsLoRA scale alpha/sqrt(r)", {"use_rslora": False})]),
    "qwen2-dora": ("qwen2-bias-tied", dict(r=4, lora_alpha=8, use_dora=True,
                                           target_modules=["q_proj", "k_proj", "v_proj", "up_proj"]),
                   [("DoRA magnitude", {"use_dora": False})]),
    "qwen3-patterns": ("qwen3", dict(r=4, lora_alpha=8,
                                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj"],
                                     rank_pattern={"q_proj": 2, r"layers\.1\.mlp\..*": 6},
                                     alpha_pattern={"v_proj": 3, "down_proj": 20}),
                       [("alpha_pattern", {"alpha_pattern": {}})]),
    "qwen3-regex-dora": ("qwen3", dict(r=4, lora_alpha=8, use_dora=True,
                                       target_modules=r".*\.layers\.1\.(self_attn\.(q|o)_proj|mlp\.up_proj)"), []),
    "llama-all-linear": ("llama-gqa-llama3", dict(r=4, lora_alpha=4, target_modules="all-linear"), []),
    "qwen2-layers-exclude": ("qwen2-bias-tied", dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                                     layers_to_transform=[1],
                                                     exclude_modules=["model.layers.1.self_attn.v_proj"]), []),
}


@functools.lru_cache(maxsize=None)
def peft_saved(case: str) -> tuple[Path, tuple[torch.Tensor, ...]]:
    """Creates the case's adapter in PEFT with random weights, saves it, returns (dir, PEFT's logits)."""
    base_name, kwargs, _ = PEFT_CASES[case]
    with quiet():
        model = get_peft_model(load_base(checkpoint(base_name)),
                               LoraConfig(task_type="CAUSAL_LM", init_lora_weights=True, **kwargs))
    randomize_adapter(model, zlib.crc32(case.encode()))
    model.eval()
    out = RUNS / "peft" / case
    shutil.rmtree(out, ignore_errors=True)
    with quiet():
        model.save_pretrained(out)
    return out, tuple(peft_logits(model, token_lines(base_name)))


def peft_load(base_name: str, adapter_dir: Path, config_edit: dict | None = None):
    if config_edit:
        edited = adapter_dir.parent / (adapter_dir.name + ".ablated")
        shutil.rmtree(edited, ignore_errors=True)
        shutil.copytree(adapter_dir, edited)
        config = json.loads((edited / "adapter_config.json").read_text())
        config.update(config_edit)
        (edited / "adapter_config.json").write_text(json.dumps(config))
        adapter_dir = edited
    with quiet():
        return PeftModel.from_pretrained(load_base(checkpoint(base_name)), adapter_dir).eval()


class PeftAdaptersInFreeholdTest(unittest.TestCase):
    def test_peft_adapters_give_peft_logits(self):
        for case, (base_name, _, ablations) in PEFT_CASES.items():
            with self.subTest(case=case):
                adapter_dir, reference = peft_saved(case)
                lines = token_lines(base_name)
                # The oracle: reloading the saved adapter in PEFT gives the logits it was saved with.
                self.assertLessEqual(max_abs_diff(peft_logits(peft_load(base_name, adapter_dir), lines), reference), 1e-6)
                base = peft_logits(load_base(checkpoint(base_name)), lines)
                self.assertGreater(max_abs_diff(reference, base), FEATURE_MIN_EFFECT, "the adapter changes the logits")
                for feature, edit in ablations:
                    ablated = peft_logits(peft_load(base_name, adapter_dir, edit), lines)
                    self.assertGreater(max_abs_diff(reference, ablated), FEATURE_MIN_EFFECT, f"{feature} matters")
                got = freehold_logits(checkpoint(base_name), adapter_dir, base_name, f"peft-{case}")
                diff = max_abs_diff(got, reference)
                print(f"\n  {case}: max |freehold - PEFT| = {diff:.2e}", end="")
                self.assertLessEqual(diff, FP32_TOL)

    def test_rank_pattern_gives_the_saved_ranks(self):
        adapter_dir, _ = peft_saved("qwen3-patterns")
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
        prefix = "base_model.model.model.layers."
        self.assertEqual(tensors[prefix + "0.self_attn.q_proj.lora_A.weight"].shape[0], 2)
        self.assertEqual(tensors[prefix + "1.mlp.gate_proj.lora_A.weight"].shape[0], 6)
        self.assertEqual(tensors[prefix + "0.mlp.gate_proj.lora_A.weight"].shape[0], 4)

    def test_adapter_on_the_wrong_base_is_refused_by_tensor_name(self):
        adapter_dir, _ = peft_saved("llama-lora")  # hidden 128; qwen3's is 64
        require_freehold()
        out = RUNS / "scores" / "wrong-base"
        out.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([str(FREEHOLD_BIN), "score", "--model", str(checkpoint("qwen3")), "--adapter",
                               str(adapter_dir), "--input", str(tokens_file("qwen3")), "--out", str(out / "s.jsonl")],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", proc.stderr)
        self.assertIn("[8, 128]", proc.stderr)
        self.assertIn("[8, 64]", proc.stderr)


# ---------------------------------------------------------------------------------------------------------------
# (b) freehold-saved adapters in PEFT

# name -> (base variant, `freehold adapter init` flags). --randomize-b is the command's testing-only flag: B = 0 would
# make every adapter a no-op and the logits comparison empty.
FREEHOLD_CASES = {
    "llama-default": ("llama-gqa-llama3", ["--r", "8", "--alpha", "16", "--randomize-b", "0.05"]),
    "qwen2-dora-rslora-patterns": ("qwen2-bias-tied", [
        "--r", "4", "--alpha", "8", "--use-dora", "--use-rslora", "--init", "gaussian", "--randomize-b", "0.05",
        "--rank-pattern", "k_proj=2", r"layers\.1\.mlp\..*=6", "--alpha-pattern", "v_proj=3"]),
    "qwen3-all-linear-layers-exclude": ("qwen3", [
        "--r", "4", "--alpha", "4", "--target-modules", "all-linear", "--layers", "1", "--exclude-modules",
        "mlp.down_proj", "--randomize-b", "0.05"]),
    "llama-regex": ("llama-gqa-llama3", [
        "--r", "4", "--alpha", "8", "--target-modules", r"re:.*\.0\.self_attn\.(k|v)_proj", "--randomize-b", "0.05"]),
}


def freehold_saved(case: str) -> Path:
    base_name, flags = FREEHOLD_CASES[case]
    out = RUNS / "freehold" / case
    shutil.rmtree(out, ignore_errors=True)
    run_freehold("adapter", "init", "--model", checkpoint(base_name), "--out", out, "--seed", "7", *flags)
    return out


@functools.lru_cache(maxsize=None)
def baseline_load_warnings(base_name: str) -> frozenset[str]:
    """What PeftModel.from_pretrained warns when loading an adapter PEFT itself saved on this base: warnings that
    are not about the adapter files (e.g. a transformers deprecation PEFT triggers)."""
    with quiet():
        model = get_peft_model(load_base(checkpoint(base_name)),
                               LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj"]))
        out = RUNS / "peft-baseline" / base_name
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out)
    base = load_base(checkpoint(base_name))
    with capture_warnings() as caught:
        PeftModel.from_pretrained(base, out)
    return frozenset(caught)


class FreeholdAdaptersInPeftTest(unittest.TestCase):
    def test_baseline_warnings_are_library_deprecations_only(self):
        for base_name in {b for b, _ in FREEHOLD_CASES.values()}:
            for message in baseline_load_warnings(base_name):
                self.assertTrue(message.startswith(("FutureWarning", "DeprecationWarning")), message)

    def test_freehold_adapters_load_in_peft_without_warnings_and_agree(self):
        for case, (base_name, _) in FREEHOLD_CASES.items():
            with self.subTest(case=case):
                adapter_dir = freehold_saved(case)
                base = load_base(checkpoint(base_name))
                with capture_warnings() as caught:
                    model = PeftModel.from_pretrained(base, adapter_dir)
                extra = sorted(set(caught) - baseline_load_warnings(base_name))
                self.assertEqual(extra, [], "warnings loading a freehold adapter")
                model.eval()
                # PEFT targets exactly the modules freehold saved tensors for.
                peft_targets = {name for name, module in model.base_model.model.named_modules()
                                if hasattr(module, "lora_A") and "default" in module.lora_A}
                self.assertEqual(peft_targets, adapter_modules(adapter_dir))
                lines = token_lines(base_name)
                reference = peft_logits(model, lines)
                self.assertGreater(max_abs_diff(reference, peft_logits(load_base(checkpoint(base_name)), lines)),
                                   FEATURE_MIN_EFFECT, "the adapter changes the logits")
                got = freehold_logits(checkpoint(base_name), adapter_dir, base_name, f"freehold-{case}")
                diff = max_abs_diff(got, reference)
                print(f"\n  {case}: max |freehold - PEFT| = {diff:.2e}", end="")
                self.assertLessEqual(diff, FP32_TOL)

    def test_layers_exclude_and_patterns_select_what_peft_would(self):
        # The same options given to PEFT directly target the same modules with the same ranks.
        adapter_dir = freehold_saved("qwen3-all-linear-layers-exclude")
        with quiet():
            model = get_peft_model(load_base(checkpoint("qwen3")), LoraConfig(
                task_type="CAUSAL_LM", r=4, lora_alpha=4, target_modules="all-linear", exclude_modules=["mlp.down_proj"]))
        all_layers = {n for n, m in model.base_model.model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A}
        # PEFT ignores layers_to_transform with all-linear; freehold saves the suffix list, which honours layers.
        self.assertEqual(adapter_modules(adapter_dir), {n for n in all_layers if ".layers.1." in n})
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        self.assertEqual(config["layers_to_transform"], [1])

        adapter_dir = freehold_saved("qwen2-dora-rslora-patterns")
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
        with quiet():
            model = get_peft_model(load_base(checkpoint("qwen2-bias-tied")), LoraConfig(
                task_type="CAUSAL_LM", r=4, lora_alpha=8, use_dora=True, use_rslora=True,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                rank_pattern={"k_proj": 2, r"layers\.1\.mlp\..*": 6}, alpha_pattern={"v_proj": 3}))
        with quiet():
            loaded = PeftModel.from_pretrained(load_base(checkpoint("qwen2-bias-tied")), adapter_dir)
        loaded_modules = dict(loaded.base_model.model.named_modules())
        compared = 0
        for name, module in model.base_model.model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                key = f"base_model.model.{name}.lora_A.weight"
                self.assertEqual(tuple(tensors[key].shape), tuple(module.lora_A["default"].weight.shape), key)
                self.assertEqual(loaded_modules[name].scaling["default"], module.scaling["default"], name)
                compared += 1
        self.assertEqual(compared, 14)


# ---------------------------------------------------------------------------------------------------------------
# (c) pissa and olora

# Both sides run torch.linalg.svd / torch.linalg.qr in float32 on the same weight with the same LAPACK, so the
# factors normally agree to rounding. Singular vectors (and Householder QR columns) are defined only up to a sign per
# component, so A's rows and B's columns are compared after aligning each component's sign with PEFT's; B·A and the
# residual base have no such freedom and are compared as they are. Entries of A and B are O(1) (sqrt of singular
# values over scale); float32 SVD of these 128-wide matrices is accurate to ~1e-5 relative for well-separated
# singular values, hence 1e-4.
INIT_TOL = 1e-4


class PissaOloraTest(unittest.TestCase):
    def test_same_factors_and_residual_as_peft(self):
        base_name = "llama-gqa-llama3"
        targets = ["q_proj", "k_proj", "down_proj"]
        for init in ("pissa", "olora"):
            with self.subTest(init=init):
                adapter_dir = RUNS / "init" / init
                residual_dir = RUNS / "init" / f"{init}-residual"
                shutil.rmtree(adapter_dir, ignore_errors=True)
                shutil.rmtree(residual_dir, ignore_errors=True)
                run_freehold("adapter", "init", "--model", checkpoint(base_name), "--out", adapter_dir, "--init", init,
                             "--r", "4", "--alpha", "8", "--target-modules", *targets, "--residual-out", residual_dir)
                with quiet():
                    model = get_peft_model(load_base(checkpoint(base_name)), LoraConfig(
                        task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=targets, init_lora_weights=init))
                ours = load_file(str(adapter_dir / "adapter_model.safetensors"))
                residual = load_file(str(residual_dir / "model.safetensors"))
                original = load_file(str(checkpoint(base_name) / "model.safetensors"))
                compared = 0
                worst = {"A": 0.0, "B": 0.0, "BA": 0.0, "residual": 0.0}
                for name, module in model.base_model.model.named_modules():
                    if not (hasattr(module, "lora_A") and "default" in module.lora_A):
                        continue
                    A_peft = module.lora_A["default"].weight.detach()
                    B_peft = module.lora_B["default"].weight.detach()
                    W_peft = module.base_layer.weight.detach()
                    A = ours[f"base_model.model.{name}.lora_A.weight"]
                    B = ours[f"base_model.model.{name}.lora_B.weight"]
                    sign = torch.sign((A * A_peft).sum(dim=1))  # per component
                    self.assertTrue(bool((sign != 0).all()), name)
                    diffs = {"A": (A * sign[:, None] - A_peft).abs().max().item(),
                             "B": (B * sign[None, :] - B_peft).abs().max().item(),
                             "BA": (B @ A - B_peft @ A_peft).abs().max().item(),
                             "residual": (residual[f"{name}.weight"] - W_peft).abs().max().item()}
                    for what, diff in diffs.items():
                        self.assertLessEqual(diff, INIT_TOL, f"{name} {what}")
                        worst[what] = max(worst[what], diff)
                    # The residual really differs from the original weight (the init did adjust the base).
                    self.assertGreater((residual[f"{name}.weight"] - original[f"{name}.weight"]).abs().max().item(), 1e-2)
                    compared += 1
                self.assertEqual(compared, 2 * len(targets))
                print(f"\n  {init}: max |freehold - PEFT| " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()), end="")
                # Untouched tensors of the residual model are the original ones.
                for key in ("model.embed_tokens.weight", "model.layers.0.self_attn.v_proj.weight"):
                    self.assertTrue(torch.equal(residual[key], original[key]), key)

                # The adapter on the residual base is the original model, in PEFT and in freehold.
                with quiet():
                    peft_model = PeftModel.from_pretrained(load_base(residual_dir), adapter_dir).eval()
                lines = token_lines(base_name)
                reference = peft_logits(load_base(checkpoint(base_name)), lines)
                self.assertLessEqual(max_abs_diff(peft_logits(peft_model, lines), reference), FP32_TOL)
                got = freehold_logits(residual_dir, adapter_dir, base_name, f"init-{init}")
                self.assertLessEqual(max_abs_diff(got, reference), FP32_TOL)


if __name__ == "__main__":
    unittest.main()
