"""tutor.checkpoints: the one place that says what a checkpoint is, where a run's checkpoints and the
accepted exports are, which base an adapter was trained on, and its held-out perplexity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tutor.checkpoints as checkpoints
from tutor.catalog import list_models
from tutor.config import Settings
from tutor.models import DEFAULT_HUB_ID


def adapter(folder: Path, base: str | None = None, provenance: dict | str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
    if isinstance(provenance, dict):
        (folder / "quimbot-provenance.json").write_text(json.dumps(provenance))
    elif isinstance(provenance, str):
        (folder / "quimbot-provenance.json").write_text(provenance)
    return folder


@pytest.fixture
def bundled(monkeypatch, tmp_path):
    """The bundled model's transformers folder, without converting the GGUF."""
    folder = tmp_path / "bundled"
    monkeypatch.setattr(checkpoints, "default_hf_dir", lambda cache_dir: folder)
    return str(folder)


def test_a_runs_checkpoints_in_step_order(tmp_path):
    run = tmp_path / "run"
    for step in (100, 50, 7):
        adapter(run / f"checkpoint-{step}")
    (run / "checkpoint-9").mkdir()                      # no adapter: not a checkpoint
    adapter(run / "best-checkpoint-3")                  # not named checkpoint-STEP
    assert [s for s, _ in checkpoints.checkpoints_of(run)] == [7, 50, 100]
    assert checkpoints.checkpoints_of(tmp_path / "missing") == []
    assert checkpoints.step_of(run / "checkpoint-50") == 50 and checkpoints.step_of(run / "final") is None


def test_the_picker_lists_checkpoints_not_the_extra_adapters_inside_them(tmp_path):
    runs = tmp_path / "runs"
    adapter(runs / "dpo" / "checkpoint-100")
    adapter(runs / "dpo" / "checkpoint-100" / "ref")    # PEFT's extra adapter (DPO's frozen reference)
    adapter(runs / "dpo" / "checkpoint-50")
    adapter(runs / "dpo" / ".hidden")
    adapter(runs / ".trash" / "old" / "checkpoint-5")  # inside a hidden folder
    found = checkpoints.list_checkpoints(runs)
    assert found == [runs / "dpo" / "checkpoint-50", runs / "dpo" / "checkpoint-100"]
    specs = [c.spec for c in list_models(Settings(runs_dir=runs, exports_dir=tmp_path / "exports"))]
    assert f"hf:{runs / 'dpo' / 'checkpoint-100'}" in specs and not [s for s in specs if s.endswith("/ref")]


def test_only_accepted_exports_are_listed(tmp_path):
    exports = tmp_path / "exports" / "run-checkpoint-4"
    exports.mkdir(parents=True)
    for name in ("model-q8_0.gguf", "model-q4_0.gguf.rejected", "model-f16.gguf.part", ".model.gguf",
                 "adapter-f16.lora.gguf"):
        (exports / name).write_bytes(b"GGUF")
    merging = tmp_path / "exports" / ".merge-run-checkpoint-5"  # an export still converting its merged model
    merging.mkdir()
    (merging / "model-f16.gguf").write_bytes(b"GGUF")
    found = checkpoints.list_exports(tmp_path / "exports")
    assert [p.name for p in found] == ["adapter-f16.lora.gguf", "model-q8_0.gguf"]
    assert [checkpoints.is_lora_export(p) for p in found] == [True, False]


def test_the_base_model_comes_from_provenance_then_the_adapter_config(tmp_path, bundled):
    base = tmp_path / "my-base"
    base.mkdir()
    other = tmp_path / "other-base"
    other.mkdir()
    settings = Settings(cache_dir=tmp_path / "cache")
    trained = adapter(tmp_path / "a", base=str(other), provenance={"base_model": {"adapter_name": str(base)}})
    assert checkpoints.recorded_base(trained) == str(base)
    assert checkpoints.base_weights(trained, settings) == str(base)
    plain = adapter(tmp_path / "b", base=str(other))                       # no provenance: the adapter config
    assert checkpoints.base_weights(plain, settings) == str(other)
    broken = adapter(tmp_path / "c", base=str(other), provenance="{not json")
    assert checkpoints.base_weights(broken, settings) == str(other)
    bundled_run = adapter(tmp_path / "d", base=DEFAULT_HUB_ID, provenance={"base_model": {"adapter_name": DEFAULT_HUB_ID}})
    assert checkpoints.base_weights(bundled_run, settings) == bundled
    nothing = adapter(tmp_path / "e")                                       # nothing recorded: the bundled model
    assert checkpoints.recorded_base(nothing) is None and checkpoints.base_weights(nothing, settings) == bundled
    # last resort, as before: a missing folder whose name says SmolLM2-135M is the bundled model
    copy = adapter(tmp_path / "f", base=str(tmp_path / "gone" / "SmolLM2-135M-Instruct"))
    assert checkpoints.base_weights(copy, settings) == bundled
    assert checkpoints.base_weights(adapter(tmp_path / "g", base="org/model"), settings) == "org/model"


def test_a_checkpoints_perplexity_is_read_from_its_run(tmp_path):
    run = tmp_path / "run"
    ckpt = adapter(run / "checkpoint-4")
    assert checkpoints.checkpoint_perplexity(ckpt) == (4, None)
    (run / "perplexity.json").write_text(json.dumps({"results": [
        {"step": 0, "checkpoint": "base", "perplexity": 30.0},
        {"step": 4, "checkpoint": "checkpoint-4", "perplexity": 4.5}]}))
    assert checkpoints.checkpoint_perplexity(ckpt) == (4, 4.5)
    assert checkpoints.checkpoint_perplexity(run / "checkpoint-8") == (8, None)


def test_a_checkpoint_training_has_not_finished_writing_is_not_offered(tmp_path):
    """In a quimbot run folder, provenance is written last: a checkpoint without it (being written, or cut
    off by a crash or a cancel) is not in the picker; adapters trained elsewhere still are."""
    runs = tmp_path / "runs"
    run = runs / "stage2"
    run.mkdir(parents=True)
    (run / checkpoints.RUN_FILE).write_text("{}")
    adapter(run / "checkpoint-2", provenance={"step": 2})
    adapter(run / "checkpoint-4")                       # cut off: adapter written, provenance not yet
    adapter(runs / "elsewhere" / "checkpoint-9")        # no quimbot-run.json: trained elsewhere
    assert checkpoints.list_checkpoints(runs) == [runs / "elsewhere" / "checkpoint-9", run / "checkpoint-2"]
    assert not checkpoints.is_complete(run / "checkpoint-4") and checkpoints.is_complete(run / "checkpoint-2")
    specs = [c.spec for c in list_models(Settings(runs_dir=runs, exports_dir=tmp_path / "exports"))]
    assert f"hf:{run / 'checkpoint-4'}" not in specs and f"hf:{run / 'checkpoint-2'}" in specs
