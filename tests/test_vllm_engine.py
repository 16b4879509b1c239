"""QUIMBOT_ENGINE=vllm: the same supervision starts one vLLM server holding every checkpoint of a run
as a LoRA module. vLLM needs a GPU, so a stand-in command speaks its wire protocol (tests/fake_vllm.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import ROOT

from tutor.backends import GenerationOptions
from tutor.backends.registry import BACKENDS, configure_engine, load_backend


def make_run(runs: Path, base: Path, steps=(50, 100)) -> list[Path]:
    folders = []
    for step in steps:
        folder = runs / "stage1" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": 16}))
        folders.append(folder)
    return folders


def test_one_vllm_server_serves_every_checkpoint_of_a_run(settings, tmp_path, monkeypatch):
    base = tmp_path / "base-model"
    base.mkdir()
    ckpt50, ckpt100 = make_run(Path(settings.runs_dir), base)
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("QUIMBOT_VLLM", f"{sys.executable} {ROOT / 'tests' / 'fake_vllm.py'}")
    monkeypatch.setenv("FAKE_VLLM_ARGV_LOG", str(argv_log))
    old = dict(BACKENDS)
    try:
        configure_engine(settings, "vllm")
        assert BACKENDS["hf"].endswith("VLLMBackend")
        first = load_backend(f"hf:{ckpt50}", settings)
        second = load_backend(f"hf:{ckpt100}", settings)
        assert first.server is second.server, "both checkpoints are served by one process"
        started = [json.loads(line) for line in argv_log.read_text().splitlines()]
        assert len(started) == 1
        argv = started[0]
        assert argv[:2] == ["serve", str(base)] and "--enable-lora" in argv
        modules = argv[argv.index("--lora-modules") + 1:]
        assert f"stage1/checkpoint-50={ckpt50}" in modules and f"stage1/checkpoint-100={ckpt100}" in modules
        assert argv[argv.index("--max-lora-rank") + 1] == "16"

        options = GenerationOptions(temperature=0, max_tokens=16)
        reply = "".join(c.text for c in second.stream([{"role": "user", "content": "I goed to Rome"}], options))
        assert reply.startswith("Oh, you went there?")
        base_backend = load_backend(f"hf:{base}", settings)
        assert base_backend.model == "base" and base_backend.server is first.server

        # A checkpoint written after the server started: a new server holding it too replaces the old.
        (ckpt150,) = make_run(Path(settings.runs_dir), base, steps=(150,))
        third = load_backend(f"hf:{ckpt150}", settings)
        assert third.server is not first.server
        reply = "".join(c.text for c in third.stream([{"role": "user", "content": "I goed to Rome"}], options))
        assert reply.strip()
        assert len(argv_log.read_text().splitlines()) == 2
    finally:
        BACKENDS.clear()
        BACKENDS.update(old)
        first.supervisor.close()
