"""Promotion: the learners' default model, recorded in real SQLite with who and when, rolled back step by
step, refused for anything half-done; the command line; and, through the real app in Chromium, a learner's
next conversation answered by the promoted checkpoint while the one already going keeps its model."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import ModelSpecError, NotFoundError
from quimbot.cli import main
from tutor.checkpoints import PROVENANCE_FILE, RUN_FILE
from tutor.promotion import check_promotable, learners_default, promote, rollback
from tutor.store import Store

ROOT = Path(__file__).resolve().parent.parent


def fake_checkpoint(runs: Path, run: str, step: int, provenance: bool = True) -> Path:
    """A checkpoint folder as training lays it out (the weights are not read by these checks)."""
    folder = runs / run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder.parent / RUN_FILE).write_text("{}")
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "default"}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    if provenance:
        (folder / PROVENANCE_FILE).write_text(json.dumps({"step": step}))
    return folder


@pytest.fixture
def db(settings) -> Store:
    return Store.open(settings.db_path)


def test_promotions_are_recorded_and_rolled_back_step_by_step(settings, db):
    a = fake_checkpoint(settings.runs_dir, "r1", 4)
    b = fake_checkpoint(settings.runs_dir, "r2", 8)
    assert learners_default(db).spec == "default" and learners_default(db).promotion is None
    first = promote(db, f"hf:{a}", settings, "ana", note="compare report x")
    second = promote(db, f"hf:{b}", settings, "bo")
    assert (first.spec, first.previous, first.by, first.note) == (f"hf:{a}", None, "ana", "compare report x")
    assert (second.spec, second.previous, second.by) == (f"hf:{b}", f"hf:{a}", "bo")
    assert second.created_at >= first.created_at and "T" in second.created_at
    # Another Store on the same file (the app and the command line) sees the same default.
    other = Store.open(settings.db_path)
    assert learners_default(other).spec == f"hf:{b}" and "promoted by bo" in learners_default(other).describe()
    assert rollback(other, settings, "cy").spec == f"hf:{a}"
    back = rollback(db, settings, "cy")
    assert back.spec == "default" and back.promotion.action == "rollback" and back.promotion.previous == f"hf:{a}"
    with pytest.raises(ModelSpecError, match="Nothing to roll back"):
        rollback(db, settings, "cy")
    rows = sqlite3.connect(settings.db_path).execute(
        "SELECT action, spec, previous, by FROM promotions ORDER BY id").fetchall()
    assert rows == [("promote", f"hf:{a}", None, "ana"), ("promote", f"hf:{b}", f"hf:{a}", "bo"),
                    ("rollback", f"hf:{a}", f"hf:{b}", "cy"), ("rollback", None, f"hf:{a}", "cy")]


def test_half_done_or_missing_models_are_refused(settings, db):
    runs, exports = Path(settings.runs_dir), Path(settings.exports_dir)
    good = fake_checkpoint(runs, "r", 4)
    partial = fake_checkpoint(runs, "r", 6, provenance=False)  # the run stopped while saving it
    no_weights = fake_checkpoint(runs, "r", 8)
    (no_weights / "adapter_model.safetensors").unlink()
    hidden = fake_checkpoint(runs, ".trash", 2)
    (exports / "e").mkdir(parents=True)
    (exports / "e" / "model-q8_0.gguf.rejected").write_bytes(b"x")
    (exports / "e" / "model-f16.gguf.part").write_bytes(b"x")
    (exports / "e" / "model-q4.gguf").write_bytes(b"gguf")
    outside = fake_checkpoint(settings.db_path.parent / "elsewhere", "r", 1)
    cases = [
        (f"hf:{runs / 'r' / 'checkpoint-99'}", NotFoundError, "no longer exists"),
        (f"hf:{partial}", ModelSpecError, "partial checkpoint"),
        (f"hf:{no_weights}", ModelSpecError, "not a complete checkpoint"),
        (f"hf:{hidden}", ModelSpecError, "not offered"),
        (f"hf:{outside}", ModelSpecError, "outside the runs folder"),
        (f"gguf:{exports / 'e' / 'model-q8_0.gguf'}", ModelSpecError, "did not pass its parity check"),
        (f"gguf:{exports / 'e' / 'model-f16.gguf'}", ModelSpecError, "still being written"),
        (f"gguf:{exports / 'e' / 'gone.gguf'}", NotFoundError, "no longer exists"),
        ("ollama:llama3.2", ModelSpecError, "ollama: models cannot"),
        (f"hf:{good}?device=cuda", ModelSpecError, "cannot be part of the learners' default"),
        ("", ModelSpecError, "Name the model to promote"),
    ]
    for spec, error, words in cases:
        with pytest.raises(error, match=words):
            promote(db, spec, settings, "ana")
    assert db.promotions.history() == []  # nothing was recorded
    assert check_promotable(f"gguf:{exports / 'e' / 'model-q4.gguf'}", settings).endswith("model-q4.gguf")
    promote(db, f"hf:{good}", settings, "ana")
    with pytest.raises(ModelSpecError, match="already the learners' default"):
        promote(db, f"hf:{good}", settings, "bo")
    # A checkpoint promoted once and deleted since: promoting it again, or rolling back to it, is refused.
    newer = fake_checkpoint(runs, "r", 10)
    promote(db, f"hf:{newer}", settings, "ana")
    shutil.rmtree(good)
    with pytest.raises(NotFoundError, match=r"Cannot roll back to .*no longer exists"):
        rollback(db, settings, "ana")
    assert learners_default(db).spec == f"hf:{newer}"


def test_models_promote_and_rollback_on_the_command_line(settings, capsys):
    ckpt = fake_checkpoint(settings.runs_dir, "r", 4)
    paths = ["--db", str(settings.db_path), "--runs-dir", str(settings.runs_dir),
             "--exports-dir", str(settings.exports_dir)]
    assert main(["models", "promote", f"hf:{ckpt}", "--by", "ana", *paths]) == 0
    assert f"promoted hf:{ckpt}" in capsys.readouterr().out
    assert main(["models", *paths]) == 0
    out, err = capsys.readouterr()
    assert f"hf:{ckpt}\tCheckpoint: r/checkpoint-4\t[learners' default]" in out.splitlines()
    assert f"learners' default: hf:{ckpt} (promoted by ana" in err
    assert main(["models", "promote", f"hf:{settings.runs_dir}/r/checkpoint-9", *paths]) == 2
    assert "no longer exists" in capsys.readouterr().err
    assert main(["models", "rollback", "--by", "bo", *paths]) == 0
    assert "learners' default: default (the app's own default; rolled back by bo)" in capsys.readouterr().out
    assert main(["models", "rollback", *paths]) == 2
    assert "Nothing to roll back" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "quimbot", "models", "promote", "hf:default", *paths],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "promoted hf:default" in done.stdout


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory) -> Path:
    """A real (random) LoRA checkpoint of the bundled model, saved as training does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tutor.config import Settings
    from tutor.models import default_hf_dir

    runs = tmp_path_factory.mktemp("promoted") / "runs"
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(default_hf_dir(Settings().cache_dir)),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(runs / "stage2" / "checkpoint-4")
    return runs


@pytest.mark.slow
@pytest.mark.browser
def test_paths_given_before_the_models_sub_command_are_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QUIMBOT_DB", raising=False)
    db = tmp_path / "given.db"
    assert main(["models", "--db", str(db), "rollback", "--by", "ana"]) == 2
    assert "Nothing to roll back" in capsys.readouterr().err
    assert db.exists() and not (tmp_path / "var").exists()  # not the default ./var/quimbot.db


def test_learner_gets_the_promoted_model_from_the_next_conversation(tmp_path, lora_runs):
    from conftest import app_server
    from test_browser import CHROMIUM, FLAGS

    runs = tmp_path / "runs"
    shutil.copytree(lora_runs, runs)
    ckpt = runs / "stage2" / "checkpoint-4"
    from playwright.sync_api import sync_playwright

    with app_server(tmp_path) as app, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def say(text: str, replies: int) -> None:
            """Send a message and wait (bounded) until the log holds ``replies`` finished replies."""
            page.locator("#message textarea").fill(text)
            page.locator("#message textarea").press("Enter")
            deadline = time.monotonic() + 180
            while finished() < replies:
                assert time.monotonic() < deadline, f"no reply to {text!r} within 180 s"
                time.sleep(0.5)
            page.wait_for_function("() => document.querySelector('#status').innerText.trim()", timeout=60_000)

        def finished() -> int:
            conn = sqlite3.connect(app["db"])
            (n,) = conn.execute("SELECT COUNT(*) FROM turns WHERE role = 'assistant' AND status != 'pending'").fetchone()
            conn.close()
            return n

        def last_reply():
            conn = sqlite3.connect(app["db"])
            row = conn.execute("SELECT conversation_id, model_spec, checkpoint, status FROM turns "
                               "WHERE role = 'assistant' ORDER BY id DESC LIMIT 1").fetchone()
            conn.close()
            return row

        page.goto(app["url"])
        page.locator("#message textarea").wait_for(timeout=60_000)
        say("I has a cat", 1)
        first = last_reply()
        assert first[1] == "gguf:default" and first[3] == "ok"
        tester = app["client"]("tester/")
        message, current, _ = tester.predict(f"hf:{ckpt}", "ana", None, api_name="/promote")
        assert "Promoted" in message and "promoted by ana" in current
        say("She go to school yesterday", 2)  # the conversation already going keeps its model
        kept = last_reply()
        assert kept[0] == first[0] and kept[1] == "gguf:default"
        page.locator("#new-conversation").click()
        page.wait_for_function("() => document.querySelector('#model input').value.includes('checkpoint-4')",
                               timeout=30_000)
        say("I goed to the park", 3)
        promoted = last_reply()
        assert promoted[0] != first[0] and promoted[3] == "ok"
        assert promoted[1] == f"hf:{ckpt}" and promoted[2] == str(ckpt)  # the turn's checkpoint says which answered
        page.reload()
        page.locator("#model input").wait_for(timeout=60_000)
        # the model box is filled by the page's load event (the learners' default as it is now), after it renders
        page.wait_for_function("() => document.querySelector('#model input').value.includes('checkpoint-4')",
                               timeout=30_000)
        browser.close()
