"""eval compare of many checkpoints through one vLLM server (--enable-lora, checkpoints as LoRA modules),
against the wire-protocol fake OpenAI-compatible server: in this process (a running server, --vllm-url) and
started as `vllm serve ...` (the fake takes vLLM's command line)."""

import json
import sys
from pathlib import Path

import httpx
import pytest
from fakes import FakeOpenAI, reply_for

from train.evaluate.compare import prompt_messages
from train.evaluate.compare_vllm import VllmError, compare_with_vllm, plan_models, vllm_command
from train.evaluate.prompt_sets import load_prompts

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["base", "stage1-checkpoint-50", "stage1-checkpoint-100"]


@pytest.fixture
def run_dir(tmp_path):
    """A base model folder and a run with two checkpoints (adapter configs only: vLLM loads them, not us)
    and the held-out perplexity training wrote."""
    base = tmp_path / "qwen3-base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"]}))
    run = tmp_path / "runs" / "stage1"
    for step in (50, 100):
        ckpt = run / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_config.json").write_text(json.dumps(
            {"base_model_name_or_path": str(base), "r": 16, "lora_alpha": 32, "peft_type": "LORA",
             "target_modules": ["q_proj", "v_proj"]}))
    (run / "perplexity.json").write_text(json.dumps({"results": [
        {"step": 0, "perplexity": 9.5}, {"step": 50, "perplexity": 3.1}, {"step": 100, "perplexity": 2.4}]}))
    specs = [f"hf:{base}", f"hf:{run / 'checkpoint-50'}", f"hf:{run / 'checkpoint-100'}"]
    return base, run, specs


def test_vllm_command_serves_the_base_once_and_every_checkpoint_as_a_lora_module(run_dir, settings):
    base, run, specs = run_dir
    plan = plan_models(specs, settings)
    assert [m.name for m in plan.models] == NAMES and plan.max_rank == 16
    assert vllm_command(plan, 8000, executable="vllm") == [
        "vllm", "serve", str(base.resolve()), "--host", "127.0.0.1", "--port", "8000", "--served-model-name", "base",
        "--seed", "0", "--generation-config", "vllm", "--enable-lora", "--max-loras", "2", "--max-cpu-loras", "2",
        "--max-lora-rank", "16", "--lora-modules",
        f"stage1-checkpoint-50={(run / 'checkpoint-50').resolve()}",
        f"stage1-checkpoint-100={(run / 'checkpoint-100').resolve()}"]


def test_compare_through_one_running_server(run_dir, settings, tmp_path):
    _, _, specs = run_dir
    prompts = load_prompts()[:5]
    # Qwen3 served with its default template writes an empty thinking block first: it is not the reply
    with FakeOpenAI(models=NAMES, reply=lambda m: "<think>\n\n</think>\n\n" + reply_for(m)) as server:
        report = compare_with_vllm(specs, prompts, tmp_path / "out", base_url=server.base_url, settings=settings,
                                   progress=False, say=lambda *a: None)
        bodies = server.chat_bodies
    assert len(bodies) == 15 and sorted({b["model"] for b in bodies}) == sorted(NAMES)  # one server, 3 models
    for body in bodies:
        assert body["temperature"] == 0.0 and body["max_tokens"] == 80 and body["seed"] == 0
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
    by_spec = {m["spec"]: m for m in report["models"]}
    assert list(by_spec) == specs
    for m in report["models"]:
        assert m["replies"] == [reply_for(prompt_messages(p)) for p in prompts]  # in prompt order, no <think>
        assert len(m["per_reply"]) == 5 and "pedagogy_score" in m["metrics"]
    assert [by_spec[s]["step"] for s in specs[1:]] == [50, 100]
    assert [by_spec[s]["perplexity"] for s in specs[1:]] == [3.1, 2.4]  # held-out perplexity from training
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["served_by"]["engine"] == "vllm" and saved["served_by"]["models"] == dict(zip(specs, NAMES))
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "out" / "report.html").is_file()


def test_compare_starts_vllm_with_enable_lora_and_stops_it(run_dir, settings, tmp_path, monkeypatch):
    _, _, specs = run_dir
    monkeypatch.setenv("QUIMBOT_VLLM", f"{sys.executable} {ROOT / 'tests' / 'fakes.py'} vllm")
    prompts = load_prompts()[:3]
    report = compare_with_vllm(specs, prompts, tmp_path / "out", settings=settings, progress=False,
                               say=lambda *a: None, start_timeout=120)
    assert [m["replies"] for m in report["models"]] == [[reply_for(prompt_messages(p)) for p in prompts]] * 3
    with pytest.raises(httpx.HTTPError):  # the server it started is gone
        httpx.get(f"{report['served_by']['base_url']}/models", timeout=2)


def test_vllm_compare_refuses_what_one_server_cannot_serve(run_dir, settings, tmp_path):
    base, run, specs = run_dir
    other = tmp_path / "other-base"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(VllmError, match="one base model"):
        plan_models([*specs, f"hf:{other}"], settings)
    with pytest.raises(VllmError, match="gguf:"):
        plan_models([*specs, "gguf:default"], settings)
    with FakeOpenAI(models=NAMES[:2]) as server:  # a running server without checkpoint-100
        with pytest.raises(VllmError, match="does not serve stage1-checkpoint-100"):
            compare_with_vllm(specs, load_prompts()[:2], tmp_path / "o", base_url=server.base_url,
                              settings=settings, progress=False, say=lambda *a: None)
        assert server.chat_count == 0


def test_eval_compare_vllm_url_from_the_command_line(run_dir, tmp_path, capsys, monkeypatch):
    from quimbot.cli import main

    _, _, specs = run_dir
    monkeypatch.setenv("QUIMBOT_DB", str(tmp_path / "q.db"))
    with FakeOpenAI(models=NAMES) as server:
        url = server.base_url
        code = main(["eval", "compare", *specs, "--vllm-url", url, "--limit", "2", "--out", str(tmp_path / "cli")])
        assert code == 0 and server.chat_count == 6
    assert "recommended:" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli" / "report.json").read_text())["served_by"]["base_url"] == url
