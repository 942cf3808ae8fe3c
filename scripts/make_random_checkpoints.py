#!/usr/bin/env python3
"""Writes small random-weight Hugging Face checkpoints for freehold's conformance tests (DESIGN.md §7, §9).

Each variant is a real transformers model (Llama, Mistral, Qwen2, Qwen3) of toy size whose weights are drawn
from a fixed seed, saved with `save_pretrained(safe_serialization=True)`. Shapes are small but every structural
feature a reader or forward pass has to get right is present, and each variant says which feature it exercises.
Nothing is downloaded: configs are built in code.

    make_random_checkpoints.py --out DIR [--only NAME ...] [--list] [--force]

Output is deterministic (the same bytes for a name on every run with the same torch and transformers). A
variant directory that already holds a matching `.freehold-stamp` is kept as is, so repeated test runs are fast;
the stamp covers this script's source and the library versions, so any change regenerates.

Facts about transformers 5.24 this script relies on (read from modeling_rope_utils.py and the config classes):
- config.json gets `rope_parameters` = {rope_type, rope_theta, <scaling fields>} and `dtype`; transformers 4.x
  wrote `rope_theta` and `rope_scaling` (older still: `"type"` instead of `"rope_type"`) at top level and
  `torch_dtype`. transformers 5 still reads both, which the legacy variants below rely on.
- llama3 rope divides the low frequencies (wavelength > original_max / low_freq_factor) by `factor`, keeps the
  high ones (wavelength < original_max / high_freq_factor) and interpolates between; it does not depend on length.
- linear rope divides every inverse frequency by `factor`.
- dynamic (NTK) rope uses rope_theta * ((factor * L / max_pos) - (factor - 1)) ** (d / (d - 2)) for a sequence
  of length L > max_position_embeddings and plain rope otherwise, so it is a function of each sequence's length.
- yarn blends interpolated and extrapolated frequencies over a ramp from beta_fast/beta_slow (defaults 32 / 1)
  with `original_max_position_embeddings`, and scales cos/sin by attention_factor (default 0.1 ln(factor) + 1).
- Qwen2/Qwen3 ignore `sliding_window` unless `use_sliding_window` is true.
- With tie_word_embeddings the file holds no `lm_head.weight`; the output projection is `embed_tokens.weight`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

STAMP_FILE = ".freehold-stamp"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    exercises: str                     # what a reader or forward pass must get right to match transformers
    arch: str = "llama"                # llama | mistral | qwen2 | qwen3
    config: dict = dataclasses.field(default_factory=dict)  # config-class kwargs on top of BASE_CONFIG
    seed: int = 0
    save_dtype: str = "float32"        # float32 | bfloat16
    max_shard_size: str | None = None  # None: one file
    legacy_of: str | None = None       # copy that variant, then rewrite its config.json with `rewrite`
    rewrite: Callable[[dict], dict] | None = None


# Shared toy shape; variants override. intermediate_size is deliberately not a multiple of hidden_size.
BASE_CONFIG = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
)


def _legacy_llama31(config: dict) -> dict:
    """config.json as transformers 4.43-4.57 wrote a Llama 3.1: top-level rope_theta and rope_scaling (with
    "rope_type"), torch_dtype, no head_dim (derived as hidden_size / num_attention_heads)."""
    out = {k: v for k, v in config.items() if k not in ("rope_parameters", "dtype", "head_dim")}
    rope = dict(config["rope_parameters"])
    out["rope_theta"] = rope.pop("rope_theta")
    out["rope_scaling"] = rope
    out["torch_dtype"] = config["dtype"]
    out["transformers_version"] = "4.45.0"
    return dict(sorted(out.items()))


def _legacy_llama2_type_key(config: dict) -> dict:
    """config.json as transformers <= 4.38 wrote a Llama 2 with linear scaling: rope_scaling {"type", "factor"}
    (no "rope_type"), top-level rope_theta, neither torch_dtype nor dtype, and none of the keys added later
    (head_dim, attention_bias, mlp_bias), which a reader must default."""
    drop = ("rope_parameters", "dtype", "head_dim", "attention_bias", "mlp_bias", "pretraining_tp")
    out = {k: v for k, v in config.items() if k not in drop}
    rope = config["rope_parameters"]
    assert rope["rope_type"] == "linear", rope
    out["rope_theta"] = rope["rope_theta"]
    out["rope_scaling"] = {"factor": rope["factor"], "type": "linear"}
    out["transformers_version"] = "4.31.0"
    return dict(sorted(out.items()))


def _legacy_qwen25(config: dict) -> dict:
    """config.json as transformers 4.x wrote a Qwen2.5: "rope_scaling": null, top-level rope_theta, torch_dtype,
    and a sliding_window value with use_sliding_window false. The window is set small here (16 < the longest
    test sequence) so a reader that applies it when it should not changes the logits."""
    out = {k: v for k, v in config.items() if k not in ("rope_parameters", "dtype", "layer_types")}
    rope = config["rope_parameters"]
    assert rope["rope_type"] == "default", rope
    out["rope_theta"] = rope["rope_theta"]
    out["rope_scaling"] = None
    out["torch_dtype"] = config["dtype"]
    out["use_sliding_window"] = False
    out["sliding_window"] = 16
    out["max_window_layers"] = 1
    out["transformers_version"] = "4.43.1"
    return dict(sorted(out.items()))


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant(
        "llama-gqa-llama3",
        "Llama 3.1-style: GQA (8 query heads share 2 kv heads, hidden 128, head_dim 16), rope_theta 5e5 and llama3 "
        "rope scaling whose frequencies fall in all three bands (kept, interpolated, divided by factor) for "
        "original_max_position_embeddings 64",
        config=dict(vocab_size=512, hidden_size=128, intermediate_size=344, num_attention_heads=8,
                    num_key_value_heads=2, max_position_embeddings=256,
                    rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                         high_freq_factor=4.0, original_max_position_embeddings=64)),
        seed=101),
    Variant(
        "llama-linear-rope",
        "linear rope scaling (every inverse frequency / factor 4), rope_theta 2e4, multi-head attention "
        "(kv heads = heads), an odd vocabulary (321)",
        config=dict(vocab_size=321, num_key_value_heads=4,
                    rope_parameters=dict(rope_type="linear", rope_theta=20000.0, factor=4.0)),
        seed=102),
    Variant(
        "llama-dynamic-rope",
        "dynamic NTK rope with max_position_embeddings 32: sequences of 33 and 77 tokens each need their own "
        "length-dependent base, shorter ones plain rope",
        config=dict(max_position_embeddings=32,
                    rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0)),
        seed=103),
    Variant(
        "llama-yarn-rope",
        "yarn rope (factor 4, original_max_position_embeddings 32, default beta_fast/beta_slow): the frequency "
        "ramp and the cos/sin attention factor 0.1 ln(4) + 1",
        config=dict(rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                                         original_max_position_embeddings=32)),
        seed=104),
    Variant(
        "llama-mlp-bias",
        "attention_bias and mlp_bias: biases on q/k/v/o and gate/up/down; 6 heads over 3 kv heads, hidden 96",
        config=dict(vocab_size=400, hidden_size=96, intermediate_size=232, num_attention_heads=6,
                    num_key_value_heads=3, attention_bias=True, mlp_bias=True,
                    rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
        seed=105),
    Variant(
        "mistral",
        "MistralForCausalLM with sliding_window null, GQA (6 heads, 2 kv heads), rope_theta 1e6, 3 layers, "
        "rms_norm_eps 5e-3 (large enough that a reader ignoring the configured eps is off by > 1e-2)",
        arch="mistral",
        config=dict(vocab_size=384, hidden_size=96, intermediate_size=264, num_hidden_layers=3,
                    num_attention_heads=6, num_key_value_heads=2, sliding_window=None, rms_norm_eps=5e-3,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        seed=106),
    Variant(
        "qwen2-bias-tied",
        "Qwen2ForCausalLM: q/k/v biases (no o_proj bias), tie_word_embeddings (no lm_head.weight in the file), "
        "rms_norm_eps 1e-6, vocab 1000",
        arch="qwen2",
        config=dict(vocab_size=1000, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        seed=107),
    Variant(
        "qwen3",
        "Qwen3ForCausalLM: RMSNorm on q and k per head (q_norm, k_norm), explicit head_dim 32 != hidden/heads 16",
        arch="qwen3",
        config=dict(vocab_size=384, head_dim=32, rms_norm_eps=1e-6, use_sliding_window=False,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
        seed=108),
    Variant(
        "llama-sharded",
        "a 3-layer Llama saved in several safetensors shards with model.safetensors.index.json",
        config=dict(vocab_size=1000, num_hidden_layers=3,
                    rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
        seed=109, max_shard_size="150KB"),
    Variant(
        "llama-bf16",
        "a Llama stored in bfloat16 (config dtype bfloat16): read bf16 tensors, compute in fp32 or bf16",
        config=dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
        seed=110, save_dtype="bfloat16"),
    Variant(
        "llama-legacy-config",
        "llama-gqa-llama3's weights with a transformers 4.x config.json: top-level rope_theta and rope_scaling "
        "(rope_type llama3), torch_dtype instead of dtype, no head_dim",
        legacy_of="llama-gqa-llama3", rewrite=_legacy_llama31),
    Variant(
        "llama-legacy-type-key",
        "llama-linear-rope's weights with an old transformers 4.x config.json: rope_scaling {\"type\": \"linear\"}, "
        "no dtype key at all, no head_dim / attention_bias / mlp_bias",
        legacy_of="llama-linear-rope", rewrite=_legacy_llama2_type_key),
    Variant(
        "qwen2-legacy-config",
        "qwen2-bias-tied's weights with a Qwen2.5-style 4.x config.json: rope_scaling null, top-level rope_theta, "
        "torch_dtype, and a sliding_window (16) that must be ignored because use_sliding_window is false",
        legacy_of="qwen2-bias-tied", rewrite=_legacy_qwen25),
]}


def _config_class(arch: str):
    import transformers
    return {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
            "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}[arch]


def build_model(variant: Variant):
    """The variant's model in float32 with its random weights (no file written)."""
    import torch
    from transformers import AutoModelForCausalLM

    assert variant.legacy_of is None, variant.name
    torch.manual_seed(variant.seed)
    config = _config_class(variant.arch)(**{**BASE_CONFIG, **variant.config})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    randomize_weights(model, variant.seed)
    return model.eval()


def randomize_weights(model, seed: int) -> None:
    """Replaces transformers' init (zero biases, unit norms) with values that make every parameter matter:
    norm weights 1 + 0.1 N(0,1), biases 0.1 N(0,1), matrices N(0, 1/fan_in), the embedding N(0,1) (N(0, 1/hidden)
    when it is tied to the output projection), so attention is far from uniform and logits are O(1), spread over
    a few units: large enough to make every feature visible, small enough that fp32 rounding stays near 1e-6."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):  # named_parameters lists a tied weight once
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                value = 1.0 + 0.1 * noise
            elif name.endswith(".bias"):
                value = 0.1 * noise
            elif name.endswith("embed_tokens.weight"):
                value = noise / param.shape[1] ** 0.5 if model.config.tie_word_embeddings else noise
            else:
                value = noise / param.shape[1] ** 0.5
            param.copy_(value)


def _stamp(variant: Variant) -> str:
    import torch
    import transformers
    import safetensors

    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(f"{variant.name}|torch {torch.__version__}|transformers {transformers.__version__}"
             f"|safetensors {safetensors.__version__}".encode())
    return h.hexdigest()


def _save(variant: Variant, out_dir: Path) -> None:
    import torch

    if variant.legacy_of is not None:
        _save(VARIANTS[variant.legacy_of], out_dir)
        config_path = out_dir / "config.json"
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps(variant.rewrite(config), indent=2) + "\n")
        return
    model = build_model(variant)
    model = model.to(getattr(torch, variant.save_dtype))
    kwargs = {"max_shard_size": variant.max_shard_size} if variant.max_shard_size else {}
    model.save_pretrained(out_dir, safe_serialization=True, **kwargs)
    if variant.max_shard_size:
        shards = list(out_dir.glob("model-*.safetensors"))
        assert len(shards) >= 3 and (out_dir / "model.safetensors.index.json").exists(), \
            f"{variant.name}: expected >= 3 shards and an index, got {sorted(p.name for p in out_dir.iterdir())}"


def write_variant(variant: Variant, out_root: Path, force: bool = False) -> Path:
    """Writes out_root/NAME unless it already holds this variant's stamp; returns the directory."""
    target = out_root / variant.name
    stamp = _stamp(variant)
    stamp_path = target / STAMP_FILE
    if not force and stamp_path.exists() and stamp_path.read_text().strip() == stamp:
        return target
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{variant.name}.", dir=out_root))
    tmp.chmod(0o755)
    try:
        _save(variant, tmp)
        (tmp / STAMP_FILE).write_text(stamp + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="directory that receives one sub-directory per variant")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="write only these variants")
    parser.add_argument("--list", action="store_true", help="print the variants and what each exercises")
    parser.add_argument("--force", action="store_true", help="rewrite even when the stamp matches")
    args = parser.parse_args(argv)

    if args.list:
        for v in VARIANTS.values():
            print(f"{v.name:24s} {v.exercises}")
        return 0
    if args.out is None:
        parser.error("--out is required (or --list)")
    names = args.only or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    for name in names:
        print(write_variant(VARIANTS[name], args.out, force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
