#!/usr/bin/env python3
"""Writes tests/data/chat_templates/expected.json: how transformers' apply_chat_template renders a set of
conversations with the built-in templates freehold implements, and which characters are training targets.

    .venv/bin/python scripts/make_chat_template_expectations.py

For each template, TEMPLATES holds the model's tokenizer_config.json Jinja template as shipped (Meta-Llama-3-8B-
Instruct, Qwen2-7B-Instruct, Mistral-7B-Instruct-v0.1), and a variant that renders the same text with
{% generation %} around each assistant turn's content and end-of-turn token. transformers renders both (the test
checks they agree), and its return_assistant_tokens_mask on the marked variant gives the target tokens; their
character spans (from the fast tokenizer's offsets, as UTF-8 byte offsets) are written out as `targets`.
Tokenizers are the small ones scripts/make_tokenizers.py trains locally; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "chat_templates" / "expected.json"

TEMPLATES = {
    "llama3": {
        "tokenizer": "llama3", "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "shipped": (
            "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
            "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
            "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
            "{% endif %}"),
        "marked": (
            "{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
            "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
            "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}"
            "{% endgeneration %}{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}{% endfor %}"),
    },
    "chatml": {
        "tokenizer": "qwen2", "bos_token": None, "eos_token": "<|im_end|>",
        "shipped": (
            "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
            "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
        "marked": (
            "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
            "{{'<|im_start|>' + message['role'] + '\n'}}{% if message['role'] == 'assistant' %}{% generation %}"
            "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}"
            "{% endif %}{{ '\n' }}{% endfor %}"),
    },
    "mistral": {
        "tokenizer": "mistral", "bos_token": "<s>", "eos_token": "</s>",
        "shipped": (
            "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
            "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
            "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
            "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"),
        "marked": (
            "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
            "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{% generation %}"
            "{{ message['content'] + eos_token }}{% endgeneration %}{% endif %}{% endfor %}"),
    },
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"},
     {"role": "assistant", "content": "6, of course."}],
    [{"role": "user", "content": "  padded question \n"}, {"role": "assistant", "content": "\n  padded answer  \t"}],
    [{"role": "user", "content": "Übersetze: 猫 und 🐈"}, {"role": "assistant", "content": "Katze — 猫 🐈!"},
     {"role": "user", "content": "Code?"}, {"role": "assistant", "content": "def f(x):\n    return x * 2\n"}],
    [{"role": "user", "content": "Say nothing."}, {"role": "assistant", "content": "ok"},
     {"role": "user", "content": "Last turn without an answer"}],
]


def load_make_tokenizers():
    spec = importlib.util.spec_from_file_location("make_tokenizers", REPO / "scripts" / "make_tokenizers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def hf_tokenizer(tokenizer_dir: Path, spec: dict):
    from transformers import PreTrainedTokenizerFast
    kwargs = {"tokenizer_file": str(tokenizer_dir / spec["tokenizer"] / "tokenizer.json"), "eos_token": spec["eos_token"]}
    if spec["bos_token"]:
        kwargs["bos_token"] = spec["bos_token"]
    return PreTrainedTokenizerFast(**kwargs)


def byte_offset(text: str, char_index: int) -> int:
    return len(text[:char_index].encode("utf-8"))


def cases(tokenizer_dir: Path) -> list[dict]:
    out = []
    for name, spec in TEMPLATES.items():
        tok = hf_tokenizer(tokenizer_dir, spec)
        for messages in CONVERSATIONS:
            if name == "mistral" and messages[0]["role"] == "system":
                continue  # the template raises
            rendered = tok.apply_chat_template(messages, chat_template=spec["shipped"], tokenize=False)
            marked = tok.apply_chat_template(messages, chat_template=spec["marked"], tokenize=False)
            assert rendered == marked, (name, rendered, marked)
            result = tok.apply_chat_template(messages, chat_template=spec["marked"], tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)
            ids, mask = result["input_ids"], result["assistant_masks"]
            encoding = tok(rendered, add_special_tokens=False, return_offsets_mapping=True)
            assert encoding["input_ids"] == ids, name
            spans = []
            for (start, end), m in zip(encoding["offset_mapping"], mask):
                if not m:
                    continue
                begin, stop = byte_offset(rendered, start), byte_offset(rendered, end)
                if spans and begin <= spans[-1][1]:  # adjacent, or sharing a character split across tokens
                    spans[-1][1] = max(spans[-1][1], stop)
                else:
                    spans.append([begin, stop])
            out.append({"template": name, "messages": messages, "rendered": rendered, "targets": spans})
    return out


def main() -> None:
    gen = load_make_tokenizers()
    with tempfile.TemporaryDirectory() as tmp:
        gen.main(tmp)
        data = {"generator": "scripts/make_chat_template_expectations.py", "cases": cases(Path(tmp))}
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(data['cases'])} cases -> {OUT}")


if __name__ == "__main__":
    main()
