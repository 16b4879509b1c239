import pytest

from tutor.catalog import list_models
from tutor.errors import ModelSpecError
from tutor.specs import ModelSpec, parse_spec


@pytest.mark.parametrize("text, engine, target, params", [
    ("default", "gguf", "default", {}),
    ("gguf:exports/a.gguf", "gguf", "exports/a.gguf", {}),
    ("hf:default?adapter=runs/s1/checkpoint-50", "hf", "default", {"adapter": "runs/s1/checkpoint-50"}),
    ("transformers:HuggingFaceTB/SmolLM2-135M-Instruct", "hf", "HuggingFaceTB/SmolLM2-135M-Instruct", {}),
    ("ollama:qwen3:8b?host=http://127.0.0.1:11434", "ollama", "qwen3:8b", {"host": "http://127.0.0.1:11434"}),
    ("openai:m?base_url=http://127.0.0.1:8000/v1&timeout=5", "openai", "m",
     {"base_url": "http://127.0.0.1:8000/v1", "timeout": "5"}),
    ("exports/tutor-q8_0.gguf", "gguf", "exports/tutor-q8_0.gguf", {}),
])
def test_parse_spec(text, engine, target, params):
    spec = parse_spec(text)
    assert (spec.engine, spec.target, spec.options) == (engine, target, params)
    assert parse_spec(str(spec)) == spec  # canonical form round-trips


def test_bare_adapter_directory(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    assert parse_spec(str(tmp_path)) == ModelSpec("hf", str(tmp_path))


@pytest.mark.parametrize("text, message", [
    ("", "No model spec given"),
    ("   ", "No model spec given"),
    ("hf:", "names no model"),
    ("nonsense", "Cannot tell which engine"),
    ("gguf:x.gguf?novalue", "malformed option list"),
])
def test_bad_specs_explain_themselves(text, message):
    with pytest.raises(ModelSpecError, match=message):
        parse_spec(text)


def test_catalog_finds_exports_and_checkpoints_without_registration(settings):
    (settings.exports_dir / "sub").mkdir(parents=True)
    (settings.exports_dir / "sub" / "tutor-q8_0.gguf").write_bytes(b"GGUF")
    (settings.exports_dir / ".half-written.gguf").write_bytes(b"GG")
    for step in (100, 50):
        ckpt = settings.runs_dir / "stage1" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_config.json").write_text("{}")
    settings.extra_models = ["ollama:llama3.2"]
    specs = [c.spec for c in list_models(settings)]
    assert specs[:2] == ["default", "hf:default"]
    assert f"gguf:{settings.exports_dir / 'sub' / 'tutor-q8_0.gguf'}" in specs
    assert not any(".half-written" in s for s in specs)
    ckpts = [s for s in specs if "checkpoint-" in s]
    assert ckpts == [f"hf:{settings.runs_dir}/stage1/checkpoint-50", f"hf:{settings.runs_dir}/stage1/checkpoint-100"]
    assert specs[-1] == "ollama:llama3.2"


def test_ui_specs_cannot_escape_the_configured_folders(settings):
    from tutor.catalog import check_ui_spec

    inside = settings.exports_dir / "a.gguf"
    assert check_ui_spec("default", settings, local=False) == "default"
    assert check_ui_spec(f"gguf:{inside}", settings, local=False) == f"gguf:{inside}"
    assert check_ui_spec(f"hf:default?adapter={settings.runs_dir}/r/checkpoint-5", settings, local=False)
    for spec in ("gguf:/etc/passwd", f"gguf:{settings.exports_dir}/../../x.gguf",
                 "hf:default?adapter=/tmp/evil", f"hf:{settings.runs_dir}/../../elsewhere"):
        with pytest.raises(ModelSpecError, match="outside the runs and exports folders"):
            check_ui_spec(spec, settings, local=True)
    with pytest.raises(ModelSpecError, match="Remote models must be in the model list"):
        check_ui_spec("openai:x?base_url=http://10.0.0.1/v1", settings, local=False)
    assert check_ui_spec("ollama:llama3.2", settings, local=True) == "ollama:llama3.2"
    settings.extra_models = ["ollama:llama3.2"]
    assert check_ui_spec("ollama:llama3.2", settings, local=False) == "ollama:llama3.2"
