"""The Qwen3 code path on CPU: a tiny randomly initialised Qwen3ForCausalLM (built from a config here,
with the bundled SmolLM2 tokenizer and a Qwen3-style template with <think> handling) is trained with
the normal command, served through hf:, exported to GGUF by llama.cpp's converter, and passes the
parity check. Also: the assistant-only mask under a template that rewrites earlier turns."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import labelled_spans

from train.fit.random_model import QWEN3_STYLE_TEMPLATE, build_random_model, qwen3_style_tokenizer

ROOT = Path(__file__).resolve().parent.parent
CONVERSATION = [{"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Yesterday I go to the store."},
                {"role": "assistant", "content": "Oh, you went to the store yesterday? What did you buy?"},
                {"role": "user", "content": "I buyed two apple."},
                {"role": "assistant", "content": "You bought two apples! Are they for a pie?"}]




@pytest.fixture(scope="module")
def tokenizer():
    return qwen3_style_tokenizer()


@pytest.mark.slow
def test_assistant_mask_under_a_template_that_drops_earlier_thinking_blocks(tokenizer):
    from core.errors import DataError
    from train.fit.loss_mask import encode_messages, template_ids

    assert tokenizer.chat_template == QWEN3_STYLE_TEMPLATE and "{% generation %}" not in QWEN3_STYLE_TEMPLATE
    full = template_ids(tokenizer, CONVERSATION)
    through_first = template_ids(tokenizer, CONVERSATION[:3])  # reply 1 as the last turn: with <think></think>
    assert full[:len(through_first)] != through_first  # the prefix rule fails: why the text search exists
    ids, labels = encode_messages(tokenizer, CONVERSATION)
    assert ids == full
    # an earlier reply is rendered (and trained) as history is; the last one with the empty thinking block
    # Qwen3's template writes, which the model itself produces when served with the default template
    assert labelled_spans(tokenizer, ids, labels) == [
        CONVERSATION[2]["content"] + "<|im_end|>",
        "<think>\n\n</think>\n\n" + CONVERSATION[4]["content"] + "<|im_end|>"]
    text = tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True,
                                         enable_thinking=False)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # the template's non-thinking switch
    with pytest.raises(DataError, match="think"):
        encode_messages(tokenizer, CONVERSATION[:2] + [{"role": "assistant",
                                                         "content": "<think>went</think>Oh, you went?"}])


@pytest.mark.slow
def test_tiny_qwen3_trains_serves_exports_to_gguf_and_passes_parity(tmp_path):
    from gguf import GGUFReader

    from train.data.generate import GenerateConfig, run_generation
    from tutor.backends import GenerationOptions, load_backend
    from tutor.config import Settings

    base = build_random_model(tmp_path / "qwen3-tiny", "tiny")
    config = json.loads((base / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["tie_word_embeddings"] is False
    data = tmp_path / "rows.jsonl"
    run_generation(GenerateConfig(out=data, n=40, rotate_every=10), progress=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    train = subprocess.run(
        [sys.executable, "-m", "quimbot.cli", "train", "sft", "--base", str(base), "--dataset", str(data),
         "--runs-dir", str(tmp_path / "runs"), "--run-name", "q3", "--max-steps", "3", "--save-steps", "3",
         "--per-device-train-batch-size", "4", "--gradient-accumulation-steps", "1", "--logging-steps", "1",
         "--max-length", "400", "--learning-rate", "1e-2", "--warmup-steps", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    checkpoint = tmp_path / "runs" / "q3" / "checkpoint-3"
    adapter = json.loads((checkpoint / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == base.resolve()
    log = [json.loads(line) for line in (tmp_path / "runs" / "q3" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 3 and all(r["tokens_per_s"] > 0 for r in steps)  # tokens/s on every logging line
    assert "tok/s" in train.stdout + train.stderr

    backend = load_backend(f"hf:{checkpoint}", Settings())  # served through hf: (base from the adapter)
    try:
        chunks = list(backend.stream([{"role": "user", "content": "Yesterday I go to the store."}],
                                     GenerationOptions(temperature=0.0, max_tokens=8)))
    finally:
        backend.close()
    assert chunks[-1].completion_tokens and chunks[-1].completion_tokens > 0
    assert backend.checkpoint == str(checkpoint)

    out = tmp_path / "export"
    export = subprocess.run(
        [sys.executable, "-m", "quimbot.cli", "export", "gguf", str(checkpoint), "--type", "f16", "--out", str(out),
         "--parity-prompts", "6", "--parity-tokens", "24"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert export.returncode == 0, export.stdout[-3000:] + export.stderr[-3000:]
    gguf_file = out / "model-f16.gguf"
    assert gguf_file.is_file()
    reader = GGUFReader(str(gguf_file))
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "qwen3"
    parity = json.loads((out / "parity-f16.json").read_text())
    assert parity["passed"] and not parity["problems"]
    assert parity["same_prompt_tokens_rate"] == 1.0  # same template, BOS and <think> tokens in both engines


def test_the_seed_run_config_and_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    from train.fit.config import ConfigError, load_config, resolve_effective_batch

    c = load_config(ROOT / "data" / "train_qwen3_8b.toml")
    assert (c.base, c.lora_r, c.lora_target_modules, c.learning_rate, c.save_steps, c.precision) == (
        "Qwen/Qwen3-8B", 16, ["all-linear"], 1e-4, 50, "bf16")
    for gpus in (1, 4, 8):  # effective batch 64 on 1, 4 or 8 GPUs
        r = resolve_effective_batch(c, gpus)
        assert r.per_device_train_batch_size * r.gradient_accumulation_steps * gpus == 64
    with pytest.raises(ConfigError, match="not a multiple"):
        resolve_effective_batch(c, 3)
    kinds = {}
    for path in sorted((ROOT / "configs" / "accelerate").glob("*.yaml")):
        config = load_config_from_file(str(path))
        kinds[path.name] = (str(config.distributed_type).split(".")[-1], config.num_processes, config.mixed_precision)
    assert kinds == {"1gpu.yaml": ("NO", 1, "bf16"), "4gpu-ddp.yaml": ("MULTI_GPU", 4, "bf16"),
                     "8gpu-ddp.yaml": ("MULTI_GPU", 8, "bf16"), "8gpu-fsdp.yaml": ("FSDP", 8, "bf16")}
