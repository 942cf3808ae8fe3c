#!/usr/bin/env python3
"""Writes tests/model/data/sampling_goldens.safetensors: what transformers' TemperatureLogitsWarper followed by
TopPLogitsWarper (the order generate() applies them) make of fixed random logits, and the tokens
torch.multinomial draws from the result with a seeded generator. tests/model/sampling_test.cpp checks freehold's
model/generation.h against it.

    .venv/bin/python tests/model/make_sampling_goldens.py

Tensors: "logits" (R, V) float32; "cases" (K, 2) float64 rows (temperature, top_p); for case k "warped.k" (R, V)
float32 (-inf where filtered) and "draws.k" (R,) int64: row r's token from softmax(warped.k[r]) by
torch.multinomial(probs[None], 1) on one torch.Generator seeded 1234 + k, rows in order."""

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

CASES = [(1.0, 1.0), (0.7, 0.9), (1.0, 0.5), (1.5, 0.95), (0.5, 0.05), (2.0, 0.999)]


def main() -> None:
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(12, 97, generator=g) * 3
    logits[3, 10:14] = logits[3].max() + 1  # ties at the top
    logits[5] = 0.0  # a flat row: everything is tied
    tensors = {"logits": logits, "cases": torch.tensor(CASES, dtype=torch.float64)}
    for k, (temperature, top_p) in enumerate(CASES):
        scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_p < 1.0:
            scores = TopPLogitsWarper(top_p)(None, scores)
        tensors[f"warped.{k}"] = scores.contiguous()
        draw_gen = torch.Generator().manual_seed(1234 + k)
        draws = [torch.multinomial(torch.softmax(scores[r][None], dim=-1), 1, generator=draw_gen).item()
                 for r in range(scores.shape[0])]
        tensors[f"draws.{k}"] = torch.tensor(draws, dtype=torch.int64)
    out = Path(__file__).resolve().parent / "data" / "sampling_goldens.safetensors"
    save_file(tensors, str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
