"""Conformance: `freehold score` against transformers on random-weight checkpoints (DESIGN.md §3, §7, §9).

For every variant written by scripts/make_random_checkpoints.py, freehold's logits ([N, V] float32 per input
line) and its per-token log-probabilities must equal transformers' for the same token ids. The test also checks
its own oracle: that transformers' eager and sdpa attention agree, that the legacy config.json rewrites mean the
same model to transformers, and that every feature a variant exists for changes the reference logits on these
inputs by far more than the tolerance (so a reader that ignores the feature cannot pass).

    FREEHOLD_BIN=build/bin/freehold .venv/bin/python -m unittest -v tests/conformance/model_logits_test.py

Environment: FREEHOLD_BIN (default build/bin/freehold; the freehold half fails when it does not exist); FREEHOLD_CONFORMANCE_DIR (default build/conformance) holds the
generated checkpoints, reused across runs, and each run's inputs and outputs.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest
import zlib
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_util import FREEHOLD_BIN, WORK, checkpoint, gen  # noqa: E402

# fp32: both sides run the same math in float32; what is left is summation order (measured ~3e-6 between
# transformers' own eager and sdpa paths on these models, whose logits are O(1) and at most ~5).
FP32_TOL = 1e-4
# A feature that moves the reference logits by less than this would not be caught by FP32_TOL with margin.
FEATURE_MIN_EFFECT = 100 * FP32_TOL
# Lengths of the scored lines: a single token (no log-probabilities), short, and two longer than every
# original_max_position_embeddings / max_position_embeddings threshold the rope variants use (32 or 64).
LINE_LENGTHS = (1, 7, 33, 77)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(min(2, os.cpu_count() or 1))


VARIANTS = list(gen.VARIANTS)
REQUIRED_VARIANTS = {"llama-gqa-llama3", "llama-linear-rope", "llama-dynamic-rope", "llama-yarn-rope",
                     "llama-mlp-bias", "mistral", "qwen2-bias-tied", "qwen3", "llama-sharded", "llama-bf16",
                     "llama-legacy-config"}


# ---------------------------------------------------------------------------------------------------------------
# inputs and the transformers reference

def write_tokens_jsonl(path: Path, vocab_size: int, seed: int) -> list[list[int]]:
    """One {"tokens": [...]} line per LINE_LENGTHS entry: random ids, with the first and last ids of the
    vocabulary placed in the longest line so the ends of the embedding and of lm_head are exercised."""
    rng = random.Random(seed)
    lines = [[rng.randrange(vocab_size) for _ in range(n)] for n in LINE_LENGTHS]
    lines[-1][3], lines[-1][-5] = 0, vocab_size - 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"tokens": ids}) + "\n" for ids in lines))
    return lines



@functools.lru_cache(maxsize=None)
def token_lines(name: str) -> tuple[tuple[int, ...], ...]:
    config = json.loads((checkpoint(name) / "config.json").read_text())
    weights = gen.VARIANTS[name].legacy_of or name  # a legacy copy gets the same lines as its source
    lines = write_tokens_jsonl(WORK / "inputs" / f"{name}.jsonl", config["vocab_size"], seed=zlib.crc32(weights.encode()))
    return tuple(tuple(ids) for ids in lines)


def tokens_path(name: str) -> Path:
    token_lines(name)
    return WORK / "inputs" / f"{name}.jsonl"


def load_reference(model_dir: Path, dtype: torch.dtype, attn: str, config=None):
    kwargs = {"config": config} if config is not None else {}
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn, **kwargs).eval()


def forward_lines(model, lines) -> list[torch.Tensor]:
    """Float32 logits [N, V] per line, each line a separate batch-1 forward from a fresh copy of the model:
    transformers' dynamic rope keeps state between calls (it keeps a grown frequency table for a later, shorter
    line), while `score` scores every line on its own; a fresh copy gives the per-line semantics."""
    out = []
    with torch.no_grad():
        for ids in lines:
            fresh = copy.deepcopy(model)
            out.append(fresh(torch.tensor([ids])).logits[0].float())
    return out


@functools.lru_cache(maxsize=None)
def reference_logits(name: str, dtype: torch.dtype = torch.float32, attn: str = "eager") -> tuple[torch.Tensor, ...]:
    return tuple(forward_lines(load_reference(checkpoint(name), dtype, attn), token_lines(name)))


def logprobs_from_logits(logits: torch.Tensor, ids) -> torch.Tensor:
    """logprobs[i] = log p(ids[i+1] | ids[0..i]), in float64; length N - 1."""
    lp = torch.log_softmax(logits.double(), dim=-1)
    return lp[:-1].gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)


def max_abs_diff(a, b) -> float:
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------------------------
# running freehold

def require_freehold() -> None:
    # Never skipped: a conformance run without the binary is a failed run, not a passed one.
    if not FREEHOLD_BIN.is_file():
        raise AssertionError(f"{FREEHOLD_BIN} does not exist; build it (make build) or set FREEHOLD_BIN")


def run_freehold(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(FREEHOLD_BIN), *args], capture_output=True, text=True, timeout=timeout)


@functools.lru_cache(maxsize=None)
def freehold_score(name: str, dtype: str) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Runs `freehold score --logits-out` on the variant; returns the score lines and the logits tensors."""
    out_dir = WORK / "runs" / f"{name}.{dtype}"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    scores, logits = out_dir / "scores.jsonl", out_dir / "logits.safetensors"
    proc = run_freehold("score", "--model", str(checkpoint(name)), "--input", str(tokens_path(name)),
                        "--out", str(scores), "--logits-out", str(logits), "--dtype", dtype)
    if proc.returncode != 0:
        raise AssertionError(f"freehold score on {name} ({dtype}) exited {proc.returncode}:\n"
                             f"{proc.stderr[-4000:]}{proc.stdout[-2000:]}")
    lines = [json.loads(line) for line in scores.read_text().splitlines()]
    with safe_open(str(logits), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    return lines, tensors


def assert_score_lines(test: unittest.TestCase, lines: list[dict], token_ids, ref_logits, tol: float) -> None:
    """Checks `score` output lines against log-probabilities computed from the reference logits."""
    test.assertEqual(len(lines), len(token_ids), "one output line per input line")
    for k, (line, ids, logits) in enumerate(zip(lines, token_ids, ref_logits)):
        with test.subTest(line=k, n_tokens=len(ids)):
            test.assertEqual(set(line), {"n_tokens", "nll", "logprobs"})
            test.assertEqual(line["n_tokens"], len(ids))
            test.assertEqual(len(line["logprobs"]), len(ids) - 1)
            if len(ids) == 1:
                test.assertIsNone(line["nll"], "nll of a single token (no prediction) is null")
                continue
            expected = logprobs_from_logits(logits, ids)
            got = torch.tensor(line["logprobs"], dtype=torch.float64)
            test.assertLessEqual((got - expected).abs().max().item(), tol, "logprobs")
            test.assertAlmostEqual(line["nll"], -expected.mean().item(), delta=tol)
            # nll is defined from the same line's logprobs: mean negative logprob.
            test.assertAlmostEqual(line["nll"], -got.mean().item(), delta=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# the generator

class GeneratorTest(unittest.TestCase):
    def test_required_variants_exist(self):
        self.assertLessEqual(REQUIRED_VARIANTS, set(VARIANTS))
        for v in gen.VARIANTS.values():
            self.assertTrue(v.exercises, v.name)

    def test_same_bytes_on_every_run_and_stamp_skips_rewrite(self):
        name = "qwen2-legacy-config"  # a derived variant: covers the base model and the config rewrite
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            da = gen.write_variant(gen.VARIANTS[name], Path(a), force=True)
            db = gen.write_variant(gen.VARIANTS[name], Path(b), force=True)
            files = sorted(p.name for p in da.iterdir())
            self.assertEqual(files, sorted(p.name for p in db.iterdir()))
            for f in files:
                self.assertEqual((da / f).read_bytes(), (db / f).read_bytes(), f)
            before = (da / "model.safetensors").stat().st_mtime_ns
            gen.write_variant(gen.VARIANTS[name], Path(a))
            self.assertEqual(before, (da / "model.safetensors").stat().st_mtime_ns, "matching stamp: kept")
            (da / gen.STAMP_FILE).write_text("stale\n")
            gen.write_variant(gen.VARIANTS[name], Path(a))
            self.assertEqual((da / gen.STAMP_FILE).read_text(), (db / gen.STAMP_FILE).read_text())

    def test_files_have_the_structure_each_variant_claims(self):
        sharded = checkpoint("llama-sharded")
        index = json.loads((sharded / "model.safetensors.index.json").read_text())
        shards = sorted(sharded.glob("model-*.safetensors"))
        self.assertGreaterEqual(len(shards), 3)
        self.assertEqual(set(index["weight_map"].values()), {p.name for p in shards})
        names = set()
        for shard in shards:
            with safe_open(str(shard), framework="pt") as f:
                names |= set(f.keys())
        self.assertEqual(names, set(index["weight_map"]))

        with safe_open(str(checkpoint("llama-bf16") / "model.safetensors"), framework="pt") as f:
            self.assertEqual({f.get_tensor(k).dtype for k in f.keys()}, {torch.bfloat16})
        self.assertEqual(json.loads((checkpoint("llama-bf16") / "config.json").read_text())["dtype"], "bfloat16")

        tied = load_file(str(checkpoint("qwen2-bias-tied") / "model.safetensors"))
        self.assertNotIn("lm_head.weight", tied)
        self.assertIn("model.layers.0.self_attn.q_proj.bias", tied)
        self.assertNotIn("model.layers.0.self_attn.o_proj.bias", tied)

        qwen3 = json.loads((checkpoint("qwen3") / "config.json").read_text())
        self.assertNotEqual(qwen3["head_dim"], qwen3["hidden_size"] // qwen3["num_attention_heads"])

        rope_types = {"llama-gqa-llama3": "llama3", "llama-linear-rope": "linear", "llama-dynamic-rope": "dynamic",
                      "llama-yarn-rope": "yarn", "qwen3": "default"}
        for name, rope_type in rope_types.items():  # transformers 5 layout
            config = json.loads((checkpoint(name) / "config.json").read_text())
            self.assertEqual(config["rope_parameters"]["rope_type"], rope_type, name)
            self.assertNotIn("rope_scaling", config, name)
            self.assertNotIn("rope_theta", config, name)
            self.assertIn("dtype", config, name)
        for name in ("llama-legacy-config", "llama-legacy-type-key", "qwen2-legacy-config"):
            config = json.loads((checkpoint(name) / "config.json").read_text())
            self.assertNotIn("rope_parameters", config, name)
            self.assertNotIn("dtype", config, name)
            self.assertIn("rope_theta", config, name)
            self.assertIn("rope_scaling", config, name)
        self.assertIn("torch_dtype", json.loads((checkpoint("llama-legacy-config") / "config.json").read_text()))
        self.assertEqual(json.loads((checkpoint("llama-legacy-type-key") / "config.json").read_text())["rope_scaling"],
                         {"factor": 4.0, "type": "linear"})

    def test_llama3_frequencies_fall_in_all_three_bands(self):
        # llama3 rope keeps frequencies with wavelength < original / high_freq_factor, divides those with
        # wavelength > original / low_freq_factor, and blends the band between; the variant must have all three.
        config = json.loads((checkpoint("llama-gqa-llama3") / "config.json").read_text())
        rope = config["rope_parameters"]
        dim = config["head_dim"]
        wavelengths = [2 * math.pi * rope["rope_theta"] ** (i / dim) for i in range(0, dim, 2)]
        original = rope["original_max_position_embeddings"]
        high, low = original / rope["high_freq_factor"], original / rope["low_freq_factor"]
        self.assertTrue(any(w < high for w in wavelengths), wavelengths)
        self.assertTrue(any(high < w < low for w in wavelengths), wavelengths)
        self.assertTrue(any(w > low for w in wavelengths), wavelengths)
        self.assertGreater(max(LINE_LENGTHS), original)


# ---------------------------------------------------------------------------------------------------------------
# the oracle itself (transformers only)

def _ablate_rope(rope_parameters: dict) -> dict:
    return {"rope_type": "default", "rope_theta": rope_parameters["rope_theta"]}


def _zero_biases(model) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.zero_()


def _drop_qk_norm(model) -> None:
    for layer in model.model.layers:
        layer.self_attn.q_norm = torch.nn.Identity()
        layer.self_attn.k_norm = torch.nn.Identity()


def _honour_sliding_window(config) -> None:
    config.use_sliding_window = True
    config.sliding_window = 16
    config.layer_types = ["full_attention"] + ["sliding_attention"] * (config.num_hidden_layers - 1)


# variant -> [(what a careless reader would do, edit of the transformers config, edit of the loaded model)]
FEATURE_ABLATIONS = {
    "llama-gqa-llama3": [("llama3 scaling ignored", lambda c: setattr(c, "rope_parameters", _ablate_rope(c.rope_parameters)), None),
                         ("rope_theta defaulted to 1e4", lambda c: c.rope_parameters.update(rope_theta=10000.0), None)],
    "llama-linear-rope": [("linear scaling ignored", lambda c: setattr(c, "rope_parameters", _ablate_rope(c.rope_parameters)), None)],
    "llama-dynamic-rope": [("dynamic scaling ignored", lambda c: setattr(c, "rope_parameters", _ablate_rope(c.rope_parameters)), None)],
    "llama-yarn-rope": [("yarn scaling ignored", lambda c: setattr(c, "rope_parameters", _ablate_rope(c.rope_parameters)), None),
                        ("yarn attention factor ignored", lambda c: c.rope_parameters.update(attention_factor=1.0), None)],
    "llama-mlp-bias": [("biases ignored", None, _zero_biases)],
    "mistral": [("rms_norm_eps defaulted to 1e-6", lambda c: setattr(c, "rms_norm_eps", 1e-6), None)],
    "qwen2-bias-tied": [("q/k/v biases ignored", None, _zero_biases)],
    "qwen3": [("q/k RMSNorm ignored", None, _drop_qk_norm)],
    "llama-legacy-config": [("top-level rope_scaling ignored", lambda c: setattr(c, "rope_parameters", _ablate_rope(c.rope_parameters)), None),
                            ("top-level rope_theta ignored", lambda c: c.rope_parameters.update(rope_theta=10000.0), None)],
    "llama-legacy-type-key": [("rope_scaling with \"type\" ignored", lambda c: setattr(c, "rope_parameters", _ablate_rope(c.rope_parameters)), None)],
    "qwen2-legacy-config": [("sliding_window applied although use_sliding_window is false", _honour_sliding_window, None),
                            ("top-level rope_theta ignored", lambda c: c.rope_parameters.update(rope_theta=10000.0), None)],
}


class OracleTest(unittest.TestCase):
    """The reference is unambiguous and sensitive: without these, a passing freehold test would mean little."""

    def test_eager_and_sdpa_agree(self):
        for name in VARIANTS:
            with self.subTest(variant=name):
                diff = max_abs_diff(reference_logits(name), reference_logits(name, attn="sdpa"))
                self.assertLessEqual(diff, FP32_TOL / 10)

    def test_logits_are_not_flat(self):
        for name in VARIANTS:
            with self.subTest(variant=name):
                for logits in reference_logits(name):
                    self.assertGreater(logits.std(dim=-1).min().item(), 0.5)

    def test_legacy_configs_mean_the_same_model_to_transformers(self):
        for name in VARIANTS:
            base = gen.VARIANTS[name].legacy_of
            if base is None:
                continue
            with self.subTest(variant=name):
                legacy, modern = AutoConfig.from_pretrained(checkpoint(name)), AutoConfig.from_pretrained(checkpoint(base))
                # transformers keeps an old "type" key next to the "rope_type" it derives from it.
                legacy_rope = {k: v for k, v in legacy.rope_parameters.items() if k != "type"}
                self.assertEqual(legacy_rope, modern.rope_parameters)
                for key in ("head_dim", "num_key_value_heads", "tie_word_embeddings",
                            "sliding_window", "rms_norm_eps", "attention_bias", "mlp_bias"):
                    self.assertEqual(getattr(legacy, key, None), getattr(modern, key, None), key)
                self.assertEqual(max_abs_diff(reference_logits(name), reference_logits(base)), 0.0)

    def test_every_feature_moves_the_logits(self):
        self.assertLessEqual(set(FEATURE_ABLATIONS), set(VARIANTS))
        for name, ablations in FEATURE_ABLATIONS.items():
            ref = reference_logits(name)
            for what, edit_config, edit_model in ablations:
                with self.subTest(variant=name, ablation=what):
                    config = AutoConfig.from_pretrained(checkpoint(name))
                    if edit_config:
                        edit_config(config)
                    model = load_reference(checkpoint(name), torch.float32, "eager", config=config)
                    if edit_model:
                        edit_model(model)
                    ablated = forward_lines(model, token_lines(name))
                    self.assertGreater(max_abs_diff(ref, ablated), FEATURE_MIN_EFFECT)

    def test_dynamic_rope_changes_only_lines_longer_than_max_position_embeddings(self):
        name = "llama-dynamic-rope"
        max_pos = AutoConfig.from_pretrained(checkpoint(name)).max_position_embeddings
        config = AutoConfig.from_pretrained(checkpoint(name))
        config.rope_parameters = _ablate_rope(config.rope_parameters)
        plain = forward_lines(load_reference(checkpoint(name), torch.float32, "eager", config=config), token_lines(name))
        lengths = [len(ids) for ids in token_lines(name)]
        self.assertTrue(any(n > max_pos for n in lengths) and any(n <= max_pos for n in lengths))
        for n, a, b in zip(lengths, reference_logits(name), plain):
            diff = (a - b).abs().max().item()
            if n <= max_pos:
                self.assertEqual(diff, 0.0, f"line of {n} tokens")
            else:
                self.assertGreater(diff, FEATURE_MIN_EFFECT, f"line of {n} tokens")


# ---------------------------------------------------------------------------------------------------------------
# freehold against the oracle

class FreeholdScoreTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_freehold()

    def test_fp32_logits_match_transformers(self):
        for name in VARIANTS:
            with self.subTest(variant=name):
                _, tensors = freehold_score(name, "fp32")
                ids = token_lines(name)
                self.assertEqual(set(tensors), {f"logits.{k}" for k in range(len(ids))})
                got = [tensors[f"logits.{k}"] for k in range(len(ids))]
                for k, (g, r) in enumerate(zip(got, reference_logits(name))):
                    self.assertEqual(g.dtype, torch.float32)
                    self.assertEqual(tuple(g.shape), tuple(r.shape), f"logits.{k}")
                self.assertLessEqual(max_abs_diff(got, reference_logits(name)), FP32_TOL, "vs transformers eager")
                self.assertLessEqual(max_abs_diff(got, reference_logits(name, attn="sdpa")), FP32_TOL, "vs sdpa")

    def test_fp32_scores_match_transformers(self):
        for name in VARIANTS:
            with self.subTest(variant=name):
                lines, _ = freehold_score(name, "fp32")
                assert_score_lines(self, lines, token_lines(name), reference_logits(name), FP32_TOL)

    def test_bf16_matches_transformers_bf16_within_rounding(self):
        # bf16 keeps 8 significant bits, so rounding one logit of size s moves it by up to s/256, and two
        # implementations round at different places through the layers (and transformers returns bf16 logits).
        # Measured on llama-bf16: transformers bf16 eager vs sdpa differ by <= 0.034 max (0.0075 of the largest
        # |logit| 4.5), 0.0053 mean; transformers bf16 vs fp32 by 0.038 max, 0.0055 mean; argmax flips on 1 of
        # 33 positions. The bounds below leave ~4x headroom for a different but sound bf16 forward, and still fail
        # a forward that does rope angles or softmax in bf16 (errors of tenths of a logit).
        name = "llama-bf16"
        lines, tensors = freehold_score(name, "bf16")
        ids = token_lines(name)
        got = [tensors[f"logits.{k}"] for k in range(len(ids))]
        ref32 = reference_logits(name)
        ref16 = reference_logits(name, torch.bfloat16)
        scale = max(r.abs().max().item() for r in ref32)
        for g, r in zip(got, ref32):
            self.assertEqual(g.dtype, torch.float32)
            self.assertEqual(tuple(g.shape), tuple(r.shape))
        self.assertLessEqual(max_abs_diff(got, ref16), 0.03 * scale, "max |freehold bf16 - transformers bf16|")
        # No further from the fp32 answer, on average, than twice transformers' own bf16 error.
        mean_err = lambda xs: torch.cat([(x - r).abs().flatten() for x, r in zip(xs, ref32)]).mean().item()
        self.assertLessEqual(mean_err(got), 2 * mean_err(ref16), "mean |freehold bf16 - fp32 reference|")
        agree = torch.cat([g.argmax(-1) == r.argmax(-1) for g, r in zip(got, ref16)]).float().mean().item()
        self.assertGreaterEqual(agree, 0.95, "argmax agreement with transformers bf16")
        # The scores are those of the written logits, and log-softmax at most doubles the logit error.
        assert_score_lines(self, lines, ids, got, tol=FP32_TOL)
        assert_score_lines(self, lines, ids, ref16, tol=2 * 0.03 * scale)

    def test_pickle_only_checkpoint_is_refused(self):
        # A model directory with only pytorch_model.bin (pickle): freehold never unpickles (DESIGN.md §6) and
        # must say that it needs safetensors.
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = Path(tmp) / "pickle-only"
            model_dir.mkdir()
            source = checkpoint("llama-linear-rope")
            shutil.copy(source / "config.json", model_dir / "config.json")
            torch.save(load_file(str(source / "model.safetensors")), model_dir / "pytorch_model.bin")
            out = Path(tmp) / "scores.jsonl"
            proc = run_freehold("score", "--model", str(model_dir), "--input", str(tokens_path("llama-linear-rope")),
                                "--out", str(out), "--dtype", "fp32")
            self.assertNotEqual(proc.returncode, 0, proc.stdout + proc.stderr)
            self.assertIn("safetensors", (proc.stderr + proc.stdout).lower())
            self.assertFalse(out.exists(), "no output from a failed run")


if __name__ == "__main__":
    unittest.main()
