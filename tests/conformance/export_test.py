"""Conformance: `freehold export` against transformers and PEFT on random-weight checkpoints (DESIGN.md §3, issue 3,
RELIABILITY.md N6, N7, S19, S24).

(a) PEFT-saved adapters with random non-zero A, B (and DoRA magnitudes) — LoRA on a sharded Llama, DoRA on the
    tied-embedding Qwen2, rsLoRA, rank_pattern + alpha_pattern on Qwen3 — exported by freehold in fp32 load in
    AutoModelForCausalLM.from_pretrained with no missing or unexpected keys, give PEFT's base + adapter logits and
    PEFT's merge_and_unload logits within FP32_TOL, and hold the tensors PEFT's merge holds (the same names, the
    same values within FP32_WEIGHT_TOL; tied embeddings stay tied, no lm_head.weight).
(b) A bf16 export of an fp32 base: every weight is PEFT's fp32 merged weight to within one bf16 rounding step (it is
    rounded once), and its logits are as close to the fp32 reference as those of PEFT's own bf16 merge (BF16_SLACK)
    and within --verify's bf16 tolerance. On a bf16 base, the weights are PEFT's bf16 merge_and_unload weights to
    within one bf16 step (both round W + ΔW once).
(c) Files: a forced-small --max-shard-size gives shards and an index that transformers loads, with the same logits
    as the single-file export; config.json differs from the base only in the dtype fields (byte for byte for a
    transformers 5 config; torch_dtype updated and dtype added for a 4.x one); tokenizer and generation files are
    copied byte for byte; without --dtype a bf16 base stays bf16 and its config.json is copied unchanged.
(d) Refusals: a merge that overflows and an adapter with NaN are refused by module/tensor name and leave no OUT_DIR
    (and no temporary directory); an adapter for another base, or with a rank its config does not declare, is
    refused naming the tensor with the expected and found shapes; an adapter on the tied LM head is refused; an
    existing OUT_DIR is refused without --overwrite.
(e) --verify passes on a good export and fails — exit code 1, the max difference and the tolerance in the message,
    no OUT_DIR — on an export with one module deliberately left unmerged (--test-skip-merge, a testing-only flag).
    What this shows: verify catches an export that is wrong by one module's adapter; it does not show which other
    corruptions it would catch (it compares logits on three probe sequences, nothing more).

    FREEHOLD_BIN=build/bin/freehold .venv/bin/python -m unittest -v tests/conformance/export_test.py

Environment: FREEHOLD_BIN, FREEHOLD_CONFORMANCE_DIR as for model_logits_test.py (checkpoints are shared with it).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import unittest
import zlib
from pathlib import Path

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("FREEHOLD_CONFORMANCE_DIR", REPO / "build" / "conformance"))
FREEHOLD_BIN = Path(os.environ.get("FREEHOLD_BIN", REPO / "build" / "bin" / "freehold"))
RUNS = WORK / "export"

# fp32 on both sides: merged W + s·BA against PEFT's separate W x + s·B(A x) differs by summation order only (the
# base models themselves agree with transformers to ~3e-6, model_logits_test.py).
FP32_TOL = 1e-4
# Merged weights, fp32: the same products and sums as PEFT's merge, up to BLAS blocking; entries are O(0.1-1).
FP32_WEIGHT_TOL = 1e-5
# bf16: freehold's logits may be at most this much further from the fp32 reference than PEFT's own bf16 merge is.
# freehold rounds W + ΔW to bf16 once; PEFT's bf16 merge rounds the base first and the sum again, so freehold is
# normally closer; the slack covers probes where PEFT's two roundings happen to cancel in its favour.
BF16_SLACK = 1.25
FEATURE_MIN_EFFECT = 100 * FP32_TOL
LINE_LENGTHS = (1, 9, 40)

transformers.utils.logging.disable_progress_bar()
torch.set_num_threads(min(2, os.cpu_count() or 1))


sys.path.insert(0, str(REPO / "tests" / "conformance"))
from oracle_util import checkpoint, quiet, randomize_adapter  # noqa: E402
import oracle_util  # noqa: E402


def token_lines(base: str) -> tuple[tuple[int, ...], ...]:
    return oracle_util.token_lines(base, "export", LINE_LENGTHS)


def load_model(model_dir: Path, dtype=torch.float32):
    """AutoModelForCausalLM.from_pretrained, checking that every tensor of the directory was used and none missed."""
    with quiet():
        model, info = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager",
                                                           output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info[kind], f"{model_dir}: {kind} {info[kind]}"
    return model.eval()


def logits_of(model, lines) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(torch.tensor([ids])).logits[0].float() for ids in lines]


def max_abs_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not FREEHOLD_BIN.is_file():  # never skipped: a run without the binary fails
        raise AssertionError(f"{FREEHOLD_BIN} does not exist; build it (make build) or set FREEHOLD_BIN")
    proc = subprocess.run([str(FREEHOLD_BIN), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"freehold {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def export(base: Path, adapter: Path, out: Path, *flags: str, check: bool = True) -> subprocess.CompletedProcess:
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    return run("export", "--base", base, "--adapter", adapter, "--out", out, *flags, check=check)


ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# name -> (base variant, LoraConfig kwargs)
CASES = {
    "sharded-llama-lora": ("llama-sharded", dict(r=8, lora_alpha=16, target_modules=ALL_PROJECTIONS)),
    "tied-qwen2-dora": ("qwen2-bias-tied", dict(r=4, lora_alpha=8, use_dora=True,
                                                target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"])),
    "llama3-rslora": ("llama-gqa-llama3", dict(r=4, lora_alpha=8, use_rslora=True,
                                               target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"])),
    "qwen3-rank-pattern": ("qwen3", dict(r=4, lora_alpha=8, target_modules=ALL_PROJECTIONS,
                                         rank_pattern={"q_proj": 2, r"layers\.1\.mlp\..*": 6},
                                         alpha_pattern={"v_proj": 3, "down_proj": 20})),
}


def save_peft_adapter(name: str, base_name: str, **kwargs) -> Path:
    """An adapter made by PEFT on the base with random weights (seeded by `name`), saved with save_pretrained."""
    with quiet():
        model = get_peft_model(load_model(checkpoint(base_name)), LoraConfig(task_type="CAUSAL_LM", **kwargs))
    randomize_adapter(model, zlib.crc32(name.encode()))
    out = RUNS / "adapters" / name
    shutil.rmtree(out, ignore_errors=True)
    with quiet():
        model.save_pretrained(out)
    return out


@functools.lru_cache(maxsize=None)
def peft_adapter(case: str) -> Path:
    base_name, kwargs = CASES[case]
    return save_peft_adapter(case, base_name, **kwargs)


def peft_model(base_name: str, adapter: Path, dtype=torch.float32):
    with quiet():
        return PeftModel.from_pretrained(load_model(checkpoint(base_name), dtype), adapter).eval()


@functools.lru_cache(maxsize=None)
def peft_reference(case: str) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], dict]:
    """PEFT's fp32 base + adapter logits, its merge_and_unload logits and merged state dict."""
    base_name, _ = CASES[case]
    lines = token_lines(base_name)
    model = peft_model(base_name, peft_adapter(case))
    adapted = tuple(logits_of(model, lines))
    with quiet():
        merged = model.merge_and_unload()
    return adapted, tuple(logits_of(merged, lines)), {k: v.clone() for k, v in merged.state_dict().items()}


@functools.lru_cache(maxsize=None)
def freehold_export(case: str, *flags: str) -> Path:
    out = RUNS / "out" / (case + "".join(f.replace("-", "_") for f in flags))
    export(checkpoint(CASES[case][0]), peft_adapter(case), out, *flags)
    return out


def exported_tensors(out: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for f in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    return tensors


# ---------------------------------------------------------------------------------------------------------------
# (a) fp32 exports


class Fp32ExportTest(unittest.TestCase):
    def test_exports_give_peft_logits(self):
        for case, (base_name, _) in CASES.items():
            with self.subTest(case=case):
                adapted, merged, _ = peft_reference(case)
                lines = token_lines(base_name)
                self.assertGreater(max_abs_diff(adapted, logits_of(load_model(checkpoint(base_name)), lines)),
                                   FEATURE_MIN_EFFECT, "the adapter changes the logits")
                self.assertLessEqual(max_abs_diff(adapted, merged), FP32_TOL, "PEFT's own merge (the oracle)")
                got = logits_of(load_model(freehold_export(case, "--dtype", "fp32")), lines)
                d_adapted, d_merged = max_abs_diff(got, adapted), max_abs_diff(got, merged)
                print(f"\n  {case}: max |export - PEFT base+adapter| = {d_adapted:.2e}, "
                      f"|export - PEFT merge_and_unload| = {d_merged:.2e}", end="")
                self.assertLessEqual(d_adapted, FP32_TOL)
                self.assertLessEqual(d_merged, FP32_TOL)

    def test_exported_tensors_are_peft_merged_tensors(self):
        for case, (base_name, _) in CASES.items():
            with self.subTest(case=case):
                _, _, state = peft_reference(case)
                ours = exported_tensors(freehold_export(case, "--dtype", "fp32"))
                tied = json.loads((checkpoint(base_name) / "config.json").read_text()).get("tie_word_embeddings")
                expected_names = set(state) - ({"lm_head.weight"} if tied else set())
                self.assertEqual(set(ours), expected_names)
                worst = max((ours[k] - state[k]).abs().max().item() for k in ours)
                self.assertLessEqual(worst, FP32_WEIGHT_TOL)
                base = exported_tensors(checkpoint(base_name))
                changed = {k for k in ours if not torch.equal(ours[k], base[k])}
                self.assertTrue(changed and all(k.endswith("_proj.weight") for k in changed), sorted(changed))

    def test_tied_embeddings_stay_tied(self):
        out = freehold_export("tied-qwen2-dora", "--dtype", "fp32")
        self.assertNotIn("lm_head.weight", exported_tensors(out))
        model = load_model(out)
        self.assertEqual(model.lm_head.weight.data_ptr(), model.model.embed_tokens.weight.data_ptr())


# ---------------------------------------------------------------------------------------------------------------
# (b) bf16


def bf16_ulp(reference: torch.Tensor) -> torch.Tensor:
    """One bf16 rounding step (8 significant bits) at each value of `reference`."""
    return torch.exp2(torch.floor(torch.log2(reference.float().abs().clamp_min(1e-30))) - 7)


def assert_within_one_bf16_step(test, ours: dict, reference: dict):
    for name, t in ours.items():
        ref = reference[name].float()
        test.assertTrue(bool(((t.float() - ref).abs() <= bf16_ulp(ref)).all()), name)


class Bf16ExportTest(unittest.TestCase):
    def test_bf16_export_of_fp32_bases(self):
        for case in ("sharded-llama-lora", "tied-qwen2-dora"):
            with self.subTest(case=case):
                base_name, _ = CASES[case]
                lines = token_lines(base_name)
                adapted, _, fp32_state = peft_reference(case)
                out = freehold_export(case, "--dtype", "bf16", "--verify")  # and export --verify accepts it
                ours = exported_tensors(out)
                self.assertTrue(all(t.dtype == torch.bfloat16 for t in ours.values()))
                # Each weight is PEFT's fp32 merged weight rounded once to bf16: within one bf16 step of it.
                assert_within_one_bf16_step(self, ours, fp32_state)
                # PEFT's bf16 merge rounds the base to bf16 first and the sum again (two roundings), so it is the
                # yardstick for the logits, not for the bits.
                with quiet():
                    peft_bf16 = PeftModel.from_pretrained(load_model(checkpoint(base_name), torch.bfloat16),
                                                          peft_adapter(case)).merge_and_unload()
                # Logits computed in fp32 from the bf16 weights: only the weights' rounding differs from the reference.
                got = logits_of(load_model(out), lines)
                peft_got = logits_of(peft_bf16.float(), lines)
                d_ours, d_peft = max_abs_diff(got, adapted), max_abs_diff(peft_got, adapted)
                max_logit = max(x.abs().max().item() for x in adapted)
                print(f"\n  {case} bf16: max |export - fp32 reference| = {d_ours:.2e} (PEFT's bf16 merge: "
                      f"{d_peft:.2e}; max |logit| {max_logit:.2f})", end="")
                self.assertLessEqual(d_ours, BF16_SLACK * d_peft + FP32_TOL)
                config = json.loads((out / "config.json").read_text())
                self.assertEqual(config["dtype"], "bfloat16")


# ---------------------------------------------------------------------------------------------------------------
# (c) files


def with_tokenizer_files(base_name: str) -> Path:
    """A copy of the base with tokenizer and generation files (contents arbitrary but distinct; copied verbatim)."""
    out = RUNS / "bases" / f"{base_name}-tokenizer"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(checkpoint(base_name), out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                 "chat_template.jinja", "tokenizer.model"):
        (out / name).write_bytes(f"{name} of {base_name}: \u00e9\n".encode() + bytes(range(256)))
    return out


class FilesTest(unittest.TestCase):
    def test_small_max_shard_size_gives_an_index_transformers_loads(self):
        case = "tied-qwen2-dora"
        single = freehold_export(case, "--dtype", "fp32")
        sharded = freehold_export(case, "--dtype", "fp32", "--max-shard-size", "60KB")
        shards = sorted(p.name for p in sharded.glob("*.safetensors"))
        self.assertGreaterEqual(len(shards), 3, shards)
        self.assertFalse((sharded / "model.safetensors").exists())
        index = json.loads((sharded / "model.safetensors.index.json").read_text())
        self.assertEqual(set(index["weight_map"].values()), set(shards))
        self.assertEqual(set(index["weight_map"]), set(exported_tensors(single)))
        for name in shards:
            self.assertLessEqual(sum(t.numel() * t.element_size() for t in load_file(str(sharded / name)).values()),
                                 max(60_000, 1000 * 64 * 4))  # a tensor larger than the limit gets its own shard
        ours, single_tensors = exported_tensors(sharded), exported_tensors(single)
        self.assertTrue(all(torch.equal(ours[k], single_tensors[k]) for k in single_tensors))
        # Same values; the loaded tensors' memory alignment may change BLAS summation order, hence not exactly 0.
        lines = token_lines(CASES[case][0])
        self.assertLessEqual(max_abs_diff(logits_of(load_model(sharded), lines), logits_of(load_model(single), lines)),
                             1e-5)

    def test_config_and_tokenizer_files(self):
        base = with_tokenizer_files("llama-sharded")
        out = RUNS / "out" / "files-bf16"
        export(base, peft_adapter("sharded-llama-lora"), out, "--dtype", "bf16")
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                     "chat_template.jinja", "tokenizer.model"):
            self.assertEqual((out / name).read_bytes(), (base / name).read_bytes(), name)
        source = (base / "config.json").read_text()
        self.assertIn('"dtype": "float32"', source)
        self.assertEqual((out / "config.json").read_text(), source.replace('"dtype": "float32"', '"dtype": "bfloat16"'))
        self.assertFalse(any(p.name.startswith(".") for p in out.parent.iterdir()), "temporary directories left")

    def test_legacy_config_gets_torch_dtype_and_dtype(self):
        base_name = "llama-legacy-config"  # llama-gqa-llama3's weights, a transformers 4.x config.json
        out = RUNS / "out" / "legacy-fp16"
        export(checkpoint(base_name), peft_adapter("llama3-rslora"), out, "--dtype", "fp16")
        source = json.loads((checkpoint(base_name) / "config.json").read_text())
        got = json.loads((out / "config.json").read_text())
        self.assertEqual(source["torch_dtype"], "float32")
        self.assertEqual({k: v for k, v in got.items() if k not in ("dtype", "torch_dtype")},
                         {k: v for k, v in source.items() if k != "torch_dtype"})
        self.assertEqual((got["dtype"], got["torch_dtype"]), ("float16", "float16"))
        model = load_model(out, dtype=torch.float16)
        self.assertEqual(model.dtype, torch.float16)

    def test_default_dtype_is_the_base_dtype(self):
        base_name = "llama-bf16"
        adapter = save_peft_adapter("bf16-base", base_name, r=4, target_modules=["q_proj", "down_proj"])
        out = RUNS / "out" / "bf16-default"
        export(checkpoint(base_name), adapter, out, "--verify")
        ours = exported_tensors(out)
        self.assertTrue(all(t.dtype == torch.bfloat16 for t in ours.values()))
        # On a bf16 base PEFT's bf16 merge rounds once too (W + ΔW in fp32, then bf16): the same weights.
        with quiet():
            peft_bf16 = PeftModel.from_pretrained(load_model(checkpoint(base_name), torch.bfloat16),
                                                  adapter).merge_and_unload()
        assert_within_one_bf16_step(self, ours, peft_bf16.state_dict())
        same = sum(int(torch.equal(t, peft_bf16.state_dict()[k])) for k, t in ours.items())
        print(f"\n  bf16 base: {same} of {len(ours)} tensors bit-identical to PEFT's bf16 merge", end="")
        self.assertEqual((out / "config.json").read_bytes(), (checkpoint(base_name) / "config.json").read_bytes())


# ---------------------------------------------------------------------------------------------------------------
# (d) refusals


def edited_adapter(case: str, tag: str, edit_tensors=None, edit_config=None) -> Path:
    src = peft_adapter(case)
    out = RUNS / "adapters" / f"{case}-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src, out)
    if edit_tensors:
        tensors = load_file(str(out / "adapter_model.safetensors"))
        edit_tensors(tensors)
        save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    if edit_config:
        config = json.loads((out / "adapter_config.json").read_text())
        edit_config(config)
        (out / "adapter_config.json").write_text(json.dumps(config))
    return out


class RefusalTest(unittest.TestCase):
    def assert_refused(self, proc, out: Path, *needles: str):
        self.assertEqual(proc.returncode, 1, proc.stderr)
        for needle in needles:
            self.assertIn(needle, proc.stderr)
        self.assertFalse(out.exists(), "a refused export left OUT_DIR")
        self.assertEqual([p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], [],
                         "a refused export left a temporary directory")

    def test_non_finite_merge_and_adapter_are_refused(self):
        module = "model.layers.1.mlp.up_proj"

        def overflow(t):  # finite tensors whose product overflows float32
            t[f"base_model.model.{module}.lora_A.weight"].fill_(1e19)
            t[f"base_model.model.{module}.lora_B.weight"].fill_(1e19)

        def nan(t):
            t[f"base_model.model.{module}.lora_B.weight"][0, 0] = float("nan")

        base = checkpoint("llama-sharded")
        out = RUNS / "refused" / "merged"
        self.assert_refused(export(base, edited_adapter("sharded-llama-lora", "overflow", overflow), out, check=False),
                            out, module, "NaN or Inf")
        self.assert_refused(export(base, edited_adapter("sharded-llama-lora", "nan", nan), out, check=False),
                            out, f"base_model.model.{module}.lora_B.weight")

    def test_misfit_adapters_are_refused_by_tensor_name_with_both_shapes(self):
        out = RUNS / "refused" / "misfit"
        # llama-gqa-llama3 has hidden 128, qwen3 64.
        proc = export(checkpoint("qwen3"), peft_adapter("llama3-rslora"), out, check=False)
        self.assert_refused(proc, out, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                            "[4, 128]", "[4, 64]")
        # A rank the config does not declare.
        wrong_r = edited_adapter("llama3-rslora", "r2", edit_config=lambda c: c.update(r=2))
        proc = export(checkpoint("llama-gqa-llama3"), wrong_r, out, check=False)
        self.assert_refused(proc, out, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                            "[4, 128]", "[2, 128]")

    def test_adapter_on_the_tied_lm_head_is_refused(self):
        adapter = save_peft_adapter("tied-lm-head", "qwen2-bias-tied", r=4, target_modules=["q_proj", "lm_head"])
        out = RUNS / "refused" / "lm-head"
        self.assert_refused(export(checkpoint("qwen2-bias-tied"), adapter, out, check=False), out, "lm_head")

    def test_existing_out_dir_needs_overwrite(self):
        out = RUNS / "refused" / "existing"
        export(checkpoint("llama-sharded"), peft_adapter("sharded-llama-lora"), out)
        (out / "marker").write_text("old")
        proc = run("export", "--base", checkpoint("llama-sharded"), "--adapter", peft_adapter("sharded-llama-lora"),
                   "--out", out, check=False)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("--overwrite", proc.stderr)
        self.assertTrue((out / "marker").exists())
        run("export", "--base", checkpoint("llama-sharded"), "--adapter", peft_adapter("sharded-llama-lora"),
            "--out", out, "--overwrite")
        self.assertFalse((out / "marker").exists())
        load_model(out)


# ---------------------------------------------------------------------------------------------------------------
# (e) --verify


class VerifyTest(unittest.TestCase):
    def test_verify_passes_on_good_exports(self):
        for case, dtype in (("tied-qwen2-dora", "fp32"), ("qwen3-rank-pattern", "bf16"), ("llama3-rslora", "fp16")):
            with self.subTest(case=case, dtype=dtype):
                out = RUNS / "out" / f"verify-{case}-{dtype}"
                proc = export(checkpoint(CASES[case][0]), peft_adapter(case), out, "--dtype", dtype, "--verify")
                self.assertIn("export --verify: max |merged - (base + adapter)| = ", proc.stderr)
                self.assertIn(": ok", proc.stderr)
                print("\n  " + next(l for l in proc.stderr.splitlines() if "--verify" in l).split("] ")[-1], end="")

    def test_verify_fails_on_an_export_with_a_module_left_unmerged(self):
        for dtype in ("fp32", "bf16"):
            with self.subTest(dtype=dtype):
                out = RUNS / "refused" / f"unmerged-{dtype}"
                proc = export(checkpoint("llama-sharded"), peft_adapter("sharded-llama-lora"), out, "--dtype", dtype,
                              "--verify", "--test-skip-merge", "model.layers.2.self_attn.o_proj", check=False)
                RefusalTest.assert_refused(self, proc, out, "export --verify failed",
                                           "max |merged - (base + adapter)| = ", "tolerance")
                line = next(l for l in proc.stderr.splitlines() if "failed" in l)
                print(f"\n  {dtype}: " + line[line.index("max |"):].split(" over ")[0]
                      + "; tolerance" + line.split("; tolerance")[1].split(" = ")[0], end="")


if __name__ == "__main__":
    unittest.main()
