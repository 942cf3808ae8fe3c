#!/usr/bin/env python3
"""The Python half of `make demo`: makes the tiny model, and checks freehold's answers with transformers.

    demo_reference.py prepare --text FILE --out DIR      tiny tokenizer + random-weight Llama + tokens.jsonl
    demo_reference.py check --model DIR --tokens FILE --scores FILE
    demo_reference.py perplexity --scores FILE [--label TEXT]

`prepare` trains a byte-level BPE tokenizer (tokenizers library) on the bundled public-domain text, builds a
small Llama-shaped model with random weights (transformers; nothing is downloaded) and writes the text's lines
as token ids. `check` recomputes the per-token log-probabilities with transformers and compares them with what
`freehold score` wrote. Python here is the oracle, never part of freehold's own path.
"""

import argparse
import json
import math
import sys
from pathlib import Path


def prepare(text_path: Path, out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    lines = [line.strip() for line in text_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # <|im_start|> and <|im_end|> make the chatml template usable for the chat example (examples/chat/).
    specials = ["<|begin|>", "<|end|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(lines, trainer)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))

    torch.manual_seed(1234)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=128, intermediate_size=344,
                         num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.08)
    model.save_pretrained(out, safe_serialization=True)

    with open(out / "tokens.jsonl", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps({"tokens": [0] + tokenizer.encode(line).ids}) + "\n")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"demo: tokenizer ({tokenizer.get_vocab_size()} tokens) and a {n_params / 1e6:.2f}M-parameter Llama "
          f"in {out}; {len(lines)} lines of text as token ids")


def check(model_dir: Path, tokens_path: Path, scores_path: Path) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    records = [json.loads(l) for l in tokens_path.read_text().splitlines() if l.strip()]
    scores = [json.loads(l) for l in scores_path.read_text().splitlines() if l.strip()]
    if len(records) != len(scores):
        print(f"demo: {len(scores)} scores for {len(records)} inputs", file=sys.stderr)
        return 1
    worst, total_nll, total_tokens = 0.0, 0.0, 0
    with torch.no_grad():
        for record, score in zip(records, scores):
            ids = torch.tensor([record["tokens"]])
            logprobs = torch.log_softmax(model(ids).logits[0].float(), -1)
            expected = logprobs[:-1].gather(1, ids[0, 1:, None])[:, 0]
            got = torch.tensor(score["logprobs"], dtype=torch.float32)
            worst = max(worst, (expected - got).abs().max().item())
            total_nll -= got.sum().item()
            total_tokens += got.numel()
    ok = worst <= 1e-4
    print(f"demo: transformers on {model_dir}: max |Δ log p| against freehold's scores over {total_tokens} "
          f"tokens = {worst:.2e} ({'OK' if ok else 'MISMATCH'}, tolerance 1e-4)")
    return 0 if ok else 1


def perplexity(scores_path: Path, label: str) -> int:
    scores = [json.loads(l) for l in scores_path.read_text().splitlines() if l.strip()]
    nll = -sum(sum(s["logprobs"]) for s in scores)
    tokens = sum(len(s["logprobs"]) for s in scores)
    print(f"demo: {label}: perplexity {math.exp(nll / tokens):.1f} over {tokens} tokens")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--text", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("check")
    c.add_argument("--model", type=Path, required=True)
    c.add_argument("--tokens", type=Path, required=True)
    c.add_argument("--scores", type=Path, required=True)
    q = sub.add_parser("perplexity")
    q.add_argument("--scores", type=Path, required=True)
    q.add_argument("--label", default="model")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.text, args.out)
        return 0
    if args.command == "perplexity":
        return perplexity(args.scores, args.label)
    return check(args.model, args.tokens, args.scores)


if __name__ == "__main__":
    sys.exit(main())
