"""MFU: the FLOPs formula's parameter counts against real models, the GPU table, the meter."""

import pytest

from train.fit.mfu import ModelShape, ThroughputMeter, mfu, peak_flops, training_flops_per_token

QWEN3_8B = dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                head_dim=128, intermediate_size=12288, vocab_size=151936, tie_word_embeddings=False)


def linear_weight_count(model) -> int:
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_matmul_params_are_the_linear_weights_of_the_published_qwen3_8b():
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**QWEN3_8B)
    with torch.device("meta"):  # the full shape, no memory
        model = Qwen3ForCausalLM(config)
    shape = ModelShape.from_config(config)
    assert shape.matmul_params() == linear_weight_count(model)
    total = sum(p.numel() for p in model.parameters())
    assert 8.1e9 < total < 8.3e9  # the published 8.2B: matmuls + embedding + norms
    # 4N + attention at 512 tokens: ~3.06e10 FLOPs per token
    per_token = training_flops_per_token(shape, 512, shape.lora_params(16))
    assert per_token == pytest.approx(4 * 7.57e9 + 12 * 36 * 32 * 128 * 512 + 6 * shape.lora_params(16), rel=1e-2)


def test_lora_params_match_what_peft_trains():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, intermediate_size=96, vocab_size=500, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = get_peft_model(Qwen3ForCausalLM(config), LoraConfig(r=16, target_modules="all-linear",
                                                                 task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert ModelShape.from_config(config).lora_params(16) == trainable
    assert ModelShape.from_config(config).lora_params(16, ["q_proj", "v_proj"]) == 2 * 16 * ((64 + 64) + (64 + 32))


def test_peak_table_and_override(monkeypatch):
    monkeypatch.delenv("QUIMBOT_PEAK_TFLOPS", raising=False)
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("NVIDIA L40S") == 362e12 and peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("Some Future GPU") is None and peak_flops(None) is None
    monkeypatch.setenv("QUIMBOT_PEAK_TFLOPS", "500")
    assert peak_flops("Some Future GPU") == 500e12


def test_meter_reports_tokens_per_s_and_mfu_between_logging_steps():
    shape = ModelShape.from_config(type("C", (), dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32,
                                                      num_key_value_heads=8, head_dim=128, intermediate_size=12288,
                                                      vocab_size=151936, hidden_act="silu"))())
    meter = ThroughputMeter(shape, lora_params=shape.lora_params(16), peak_per_gpu=989e12, gpus=1)
    meter.start(10.0, tokens=0, sequences=0)
    out = meter.update(12.0, tokens=20_000, sequences=80)  # 10,000 tokens/s at 250 tokens a row
    assert out["tokens_per_s"] == 10_000
    expected = mfu(10_000, training_flops_per_token(shape, 250, shape.lora_params(16)), 989e12)
    assert out["mfu"] == pytest.approx(expected) and 0.2 < out["mfu"] < 0.4
    cpu = ThroughputMeter(shape, 0, peak_per_gpu=None)
    cpu.start(0.0, 0, 0)
    assert cpu.update(1.0, 500, 2) == {"tokens_per_s": 500.0}  # no MFU without a known peak


def test_training_on_a_listed_gpu_reports_mfu(monkeypatch):
    """The trainer's meter: MFU from the model's config, the trainable (LoRA) count and the GPU's name."""
    from types import SimpleNamespace

    import torch
    from transformers import Qwen3Config

    from train.fit.trainer_setup import throughput_meter

    monkeypatch.delenv("QUIMBOT_PEAK_TFLOPS", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    config = Qwen3Config(**QWEN3_8B)
    run = SimpleNamespace(device=SimpleNamespace(device="cuda"), model=SimpleNamespace(config=config),
                          info={"trainable_parameters": 43_646_976}, world_size=2)
    meter = throughput_meter(run)
    meter.start(0.0, 0, 0)
    out = meter.update(1.0, 20_000, 64)
    shape = ModelShape.from_config(config)
    assert out["mfu"] == pytest.approx(20_000 * training_flops_per_token(shape, 312.5, 43_646_976) / (2 * 989e12))
    run.device.device = "cpu"
    cpu = throughput_meter(run)
    cpu.start(0.0, 0, 0)
    assert set(cpu.update(1.0, 100, 1)) == {"tokens_per_s"}
