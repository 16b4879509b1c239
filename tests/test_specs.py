import pytest

from core.errors import ModelSpecError
from tutor.catalog import list_models
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
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"GGUF")
    checkpoint = settings.runs_dir / "r" / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_config.json").write_text("{}")
    assert check_ui_spec("default", settings, local=False) == "default"
    assert check_ui_spec(f"gguf:{inside}", settings, local=False) == f"gguf:{inside}"  # listed
    assert check_ui_spec(f"hf:{checkpoint}", settings, local=False) == f"hf:{checkpoint}"
    assert check_ui_spec(f"hf:default?adapter={checkpoint}", settings, local=True)
    for spec in ("gguf:/etc/passwd", f"gguf:{settings.exports_dir}/../../x.gguf",
                 "hf:default?adapter=/tmp/evil", f"hf:{settings.runs_dir}/../../elsewhere"):
        with pytest.raises(ModelSpecError, match="outside the runs and exports folders"):
            check_ui_spec(spec, settings, local=True)
    for spec in ("openai:x?base_url=http://10.0.0.1/v1", f"hf:default?adapter={checkpoint}", "ollama:llama3.2"):
        with pytest.raises(ModelSpecError, match="This app is shared: pick a model from the list"):
            check_ui_spec(spec, settings, local=False)
    assert check_ui_spec("ollama:llama3.2", settings, local=True) == "ollama:llama3.2"
    settings.extra_models = ["ollama:llama3.2"]
    assert check_ui_spec("ollama:llama3.2", settings, local=False) == "ollama:llama3.2"


def test_shared_app_takes_listed_specs_only_with_their_listed_options(settings):
    from tutor.catalog import check_ui_spec

    settings.extra_models = ["gguf:default?n_ctx=1024", "openai:m?timeout=30&base_url=http://10.0.0.5:8000/v1"]
    assert check_ui_spec("gguf:default?n_ctx=1024", settings, local=False)
    # the same spec written in another order is the same listed spec
    assert check_ui_spec("openai:m?base_url=http://10.0.0.5:8000/v1&timeout=30", settings, local=False)
    for spec in ("gguf:default?n_ctx=2048", "gguf:default?n_ctx=65536", "hf:gpt2",
                 "openai:m?base_url=http://10.0.0.5:8000/v1&timeout=600"):
        with pytest.raises(ModelSpecError, match="pick a model from the list"):
            check_ui_spec(spec, settings, local=False)


@pytest.mark.parametrize("spec, message", [
    ("gguf:default?n_ctx=65536", "out of bounds"),
    ("gguf:default?n_ctx=1000000000", "out of bounds"),
    ("gguf:default?n_ctx=lots", "must be a whole number"),
    ("gguf:default?n_threads=0", "out of bounds"),
    ("gguf:default?n_gpu_layers=99", "not one the app accepts"),
    ("hf:default?dtype=float64", "not allowed"),
    ("openai:m?base_url=http://127.0.0.1:8000/v1&retries=50", "out of bounds"),
    ("openai:m?base_url=http://127.0.0.1:8000/v1&timeout=1e9", "out of bounds"),
    ("hf:gpt2", "not in the local model cache"),
    ("openai:m?base_url=http://internal.example/v1", "host of the model list"),
    ("openrouter:m?base_url=http://attacker.example/v1", "host of the model list"),
])
def test_localhost_typed_specs_are_bounded(settings, spec, message, monkeypatch):
    from tutor.catalog import check_ui_spec

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ModelSpecError, match=message):
        check_ui_spec(spec, settings, local=True)


def test_localhost_typed_specs_within_bounds_pass(settings, monkeypatch):
    from tutor.catalog import api_key_allowed, check_ui_spec

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for spec in ("gguf:default?n_ctx=1024&n_threads=1", "openrouter:meta/llama",
                 "openai:m?base_url=http://127.0.0.1:8001/v1&api_key_env=OPENAI_API_KEY&timeout=30&retries=2"):
        assert check_ui_spec(spec, settings, local=True) == spec
    settings.extra_models = ["openai:m?base_url=http://gpu.lan:8000/v1"]
    assert check_ui_spec("openai:other?base_url=http://gpu.lan:9000/v1", settings, local=True)
    assert api_key_allowed("openai:x?base_url=http://gpu.lan/v1", settings)
    assert not api_key_allowed("openai:x?base_url=http://attacker.example/v1", settings)


def test_spec_length_and_key_variables_are_checked_everywhere():
    from tutor.specs import MAX_SPEC_CHARS

    with pytest.raises(ModelSpecError, match=f"the limit is {MAX_SPEC_CHARS}"):
        parse_spec("gguf:default?lora=" + "x" * 1_000_000)
    for name in ("HOME", "PATH", "DATABASE_URL", "openai_api_key", "KEY"):
        with pytest.raises(ModelSpecError, match="not a key variable"):
            parse_spec(f"openai:m?api_key_env={name}")
    assert parse_spec("openai:m?api_key_env=MY_TUTOR_KEY").get("api_key_env") == "MY_TUTOR_KEY"
    assert parse_spec("openai:m?api_key_env=OPENAI_API_KEY").get("api_key_env") == "OPENAI_API_KEY"


def test_ui_spec_length_is_checked_before_anything_else(settings, monkeypatch):
    import tutor.catalog as catalog

    monkeypatch.setattr(catalog, "list_models", lambda s: pytest.fail("listed models for an over-long spec"))
    with pytest.raises(ModelSpecError, match="the limit is 512"):
        catalog.check_ui_spec("x" * 1_000_000, settings, local=True)
