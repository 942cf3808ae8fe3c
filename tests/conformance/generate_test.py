"""`freehold generate` against transformers' generate() on random-weight checkpoints (DESIGN.md §3, §7).

- Greedy token ids equal `generate(do_sample=False)` on Llama (GQA) and Mistral, with and without a PEFT LoRA
  adapter, and freehold stops at the EOS id exactly where transformers does.
- Temperature + top-p sampling with --seed S draws the tokens transformers draws after torch.manual_seed(S)
  (top_k=0; both apply the warpers to float32 logits and draw with torch.multinomial on a generator seeded S).
  Logits agree to ~1e-6, not bitwise, so a draw whose uniform falls within that of a boundary could differ;
  on these fixed models and seeds none does, and the test would fail (never flake) if one started to.
- The streamed text is the tokenizer's decode of the generated ids (skip_special_tokens), with every byte
  run held back until complete; bad inputs exit 2 with the flag named; --help lists every flag with its default.

The tokenizer is a byte-level BPE trained here on the bundled corpus to the model's vocabulary size, so every
generated id decodes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_util import FREEHOLD_BIN, REPO, WORK, checkpoint, quiet, randomize_adapter  # noqa: E402

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

RUNS = WORK / "generate"
PROMPTS = ["The quick brown fox jumps over", "Once upon a time, in a land", "ñandú — 鳥 🐦 bytes"]
MAX_NEW = 24


def make_tokenizer(vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = REPO / "tests" / "data" / "corpus" / "multilingual.txt"  # holds invalid bytes on purpose
    text = corpus.read_bytes().decode("utf-8", errors="replace").splitlines()
    tok.train_from_iterator(text, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def model_with_tokenizer(variant: str, eos: int | None = None) -> Path:
    """The variant's files plus a trained tokenizer.json (and, with `eos`, generation_config's eos_token_id)."""
    src = checkpoint(variant)
    out = RUNS / "models" / (variant + (f"-eos{eos}" if eos is not None else ""))
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src, out)
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    tok = make_tokenizer(vocab)
    assert tok.get_vocab_size() == vocab, (tok.get_vocab_size(), vocab)
    tok.save(str(out / "tokenizer.json"))
    if eos is not None:
        gen = json.loads((out / "generation_config.json").read_text())
        gen["eos_token_id"] = eos
        (out / "generation_config.json").write_text(json.dumps(gen))
    return out


def run_generate(*args: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    if not FREEHOLD_BIN.is_file():  # never skipped: a run without the binary fails
        raise AssertionError(f"{FREEHOLD_BIN} does not exist; build it or set FREEHOLD_BIN")
    proc = subprocess.run([str(FREEHOLD_BIN), "generate", *map(str, args)], capture_output=True, timeout=300)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"freehold generate {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stderr.decode(errors='replace')[-4000:]}")
    return proc


def freehold_ids(model_dir: Path, prompt: str, *extra: str) -> tuple[list[int], list[int], bytes]:
    ids_out = RUNS / "ids.json"
    proc = run_generate("--model", model_dir, "--prompt", prompt, "--ids-out", ids_out, *extra)
    record = json.loads(ids_out.read_text())
    return record["prompt_ids"], record["ids"], proc.stdout


def hf_ids(model, prompt_ids: list[int], **kwargs) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                             max_new_tokens=MAX_NEW, top_k=0, **kwargs)
    return out[0, len(prompt_ids):].tolist()


def load_hf(model_dir: Path):
    with quiet():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


class GenerateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        RUNS.mkdir(parents=True, exist_ok=True)
        cls.llama = model_with_tokenizer("llama-gqa-llama3")
        cls.mistral = model_with_tokenizer("mistral")

    def check_greedy(self, model_dir: Path, hf_model, adapter: Path | None = None):
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        extra = ("--adapter", str(adapter)) if adapter else ()
        for prompt in PROMPTS:
            prompt_ids, ids, stdout = freehold_ids(model_dir, prompt, "--max-new-tokens", str(MAX_NEW), *extra)
            self.assertEqual(prompt_ids, tok.encode(prompt).ids)
            expected = hf_ids(hf_model, prompt_ids, do_sample=False)
            self.assertEqual(ids, expected, f"{model_dir.name} {prompt!r}")
            self.assertEqual(stdout.decode("utf-8"), tok.decode(ids, skip_special_tokens=True) + "\n")

    def test_greedy_equals_transformers(self):
        for model_dir in (self.llama, self.mistral):
            with self.subTest(model=model_dir.name):
                self.check_greedy(model_dir, load_hf(model_dir))

    def test_greedy_with_peft_adapter_equals_peft(self):
        with quiet():
            peft_model = get_peft_model(load_hf(self.llama), LoraConfig(
                task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"]))
        randomize_adapter(peft_model, 11, b_std=0.2)
        adapter = RUNS / "adapter"
        shutil.rmtree(adapter, ignore_errors=True)
        with quiet():
            peft_model.save_pretrained(adapter)
            peft_model = PeftModel.from_pretrained(load_hf(self.llama), adapter).eval()
        # The adapter must change the continuation, or this case would not test it.
        prompt_ids = Tokenizer.from_file(str(self.llama / "tokenizer.json")).encode(PROMPTS[0]).ids
        self.assertNotEqual(hf_ids(peft_model, prompt_ids, do_sample=False),
                            hf_ids(load_hf(self.llama), prompt_ids, do_sample=False))
        self.check_greedy(self.llama, peft_model, adapter)

    def test_stops_at_eos_where_transformers_does(self):
        _, ids, _ = freehold_ids(self.mistral, PROMPTS[1], "--max-new-tokens", str(MAX_NEW))
        eos = ids[6]
        first = ids.index(eos)  # the earliest occurrence is where generation must stop
        model_dir = model_with_tokenizer("mistral", eos=eos)
        prompt_ids, stopped, _ = freehold_ids(model_dir, PROMPTS[1], "--max-new-tokens", str(MAX_NEW))
        self.assertEqual(stopped, ids[:first + 1])
        self.assertEqual(stopped, hf_ids(load_hf(model_dir), prompt_ids, do_sample=False))

    def test_seeded_sampling_equals_transformers(self):
        hf_model = load_hf(self.llama)
        for seed, temperature, top_p in ((3, 0.8, 0.9), (17, 1.3, 0.6), (5, 1.0, 1.0)):
            with self.subTest(seed=seed, temperature=temperature, top_p=top_p):
                args = ("--max-new-tokens", str(MAX_NEW), "--temperature", str(temperature), "--top-p", str(top_p),
                        "--seed", str(seed))
                prompt_ids, ids, _ = freehold_ids(self.llama, PROMPTS[0], *args)
                torch.manual_seed(seed)
                expected = hf_ids(hf_model, prompt_ids, do_sample=True, temperature=temperature, top_p=top_p)
                self.assertEqual(ids, expected)
                self.assertEqual(freehold_ids(self.llama, PROMPTS[0], *args)[1], ids)  # same seed, same tokens
                greedy = freehold_ids(self.llama, PROMPTS[0], "--max-new-tokens", str(MAX_NEW))[1]
                self.assertNotEqual(ids, greedy)

    def test_bad_inputs_exit_2_naming_the_flag(self):
        cases = [
            (["--model", RUNS / "no-such-model", "--prompt", "hi"], "--model"),
            (["--model", self.llama, "--prompt", ""], "--prompt"),
            (["--model", self.llama, "--prompt", "hi", "--temperature", "-0.5"], "--temperature"),
            (["--model", self.llama, "--prompt", "hi", "--temperature", "1", "--top-p", "0"], "--top-p"),
            (["--model", self.llama, "--prompt", "hi", "--temperature", "1", "--top-p", "1.5"], "--top-p"),
            (["--model", self.llama, "--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens"),
            (["--model", self.llama, "--prompt", "hi", "--adapter", RUNS / "no-such-adapter"], "--adapter"),
            (["--model", self.llama], "--prompt"),
        ]
        for args, flag in cases:
            with self.subTest(args=[str(a) for a in args]):
                proc = run_generate(*args, expect_ok=False)
                self.assertEqual(proc.returncode, 2, proc.stderr.decode(errors="replace"))
                self.assertIn(flag, proc.stderr.decode(errors="replace"))

    def test_help_lists_every_flag_with_its_default(self):
        proc = run_generate("--help")
        self.assertEqual(proc.returncode, 0)
        text = proc.stdout.decode()
        for flag in ("--model", "--adapter", "--prompt", "--tokenizer", "--max-new-tokens", "--temperature", "--top-p",
                     "--seed", "--dtype", "--ids-out"):
            self.assertIn(flag, text)
        for default in ("default 128", "default 0", "default 1", "default fp32"):
            self.assertIn(default, text)


if __name__ == "__main__":
    unittest.main()
