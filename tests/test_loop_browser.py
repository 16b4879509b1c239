"""The whole loop in real headless Chromium on the bundled model (issue 17): a learner chats; a tester flags the
replies inline with rewrites, exports them, trains 4 Stage 2 steps from a tiny Stage 1 checkpoint made here,
compares, and promotes the new checkpoint; a new learner conversation is then answered by it, and the turn's
checkpoint in SQLite says so. A screenshot of each tab is kept in $QUIMBOT_TEST_ARTIFACTS (default
var/test-artifacts/loop/)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
import test_browser
from conftest import app_server
from test_inline_flags import click_flag
from test_train import quiet, stage1_rows, tiny, write_jsonl

from tutor.config import Settings
from webui.chat import model_choices

pytestmark = [pytest.mark.slow, pytest.mark.browser]
page = test_browser.page  # the headless Chromium fixture
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("QUIMBOT_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts")) / "loop"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
JOB_WAIT_MS = 900_000  # a training or comparison job on this CPU takes minutes, never a quarter of an hour
LEARNER = ["Yesterday I go to the store", "I has two brother"]
# Not the system prompt's own example reply ("Oh, you went to the store yesterday? What did you buy?"): the
# model samples and can answer with exactly that, and a rewrite equal to the reply makes no preference row
# (the likely cause of one CI run's "3 new rows").
REWRITES = ["Oh, so you went to the store yesterday? What did you get there?",
            "You have two brothers? How old are they?"]


def stage1_checkpoint(runs: Path) -> Path:
    """A tiny Stage 1 run (4 steps, one checkpoint), trained here as `quimbot train sft` trains."""
    import torch

    from train.fit.training import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = write_jsonl(runs.parent / "stage1.jsonl", stage1_rows(24))
        result = train(tiny(runs.parent, data, run_name="stage1-tiny", save_steps=4), say=quiet)
    finally:
        torch.set_num_threads(before)
    (checkpoint,) = result.checkpoints
    return Path(checkpoint)


def app_settings(tmp_path: Path) -> Settings:
    """The settings the app under test runs with (its runs and exports folders), for its model list."""
    settings = Settings()
    settings.runs_dir, settings.exports_dir, settings.extra_models = tmp_path / "runs", tmp_path / "exports", []
    return settings


def pick(page, dropdown: str, option: str, refresh: str) -> None:
    """Pick an option of a dropdown whose list the tab fills on opening (asking again, a bounded few times)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(5):
        page.locator(f"{dropdown} input").click()
        try:
            page.get_by_role("option", name=option).click(timeout=5_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
            page.locator(refresh).click()
            page.wait_for_timeout(1000)
    page.locator(f"{dropdown} input").click()
    offered = page.locator("[role=option]").all_inner_texts()
    raise AssertionError(f"{option!r} is not offered in {dropdown}: {offered}")


def shot(page, n: int, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{n}-{name}.png"), full_page=True)


def replies(db: Path) -> list[tuple]:
    """Finished tutor replies: (id, conversation, model_spec, checkpoint, status), oldest first."""
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT id, conversation_id, model_spec, checkpoint, status FROM turns WHERE role = "
                        "'assistant' AND status != 'pending' ORDER BY id").fetchall()
    conn.close()
    return rows


def say(page, db: Path, text: str, count: int) -> tuple:
    """Send a learner message in the page; the reply once it is stored (bounded)."""
    page.locator("#message textarea").fill(text)
    page.locator("#message textarea").press("Enter")
    deadline = time.monotonic() + 180
    while len(done := replies(db)) < count:
        assert time.monotonic() < deadline, f"no reply to {text!r} within 180 s"
        time.sleep(0.5)
    page.wait_for_function("() => document.querySelector('#status').innerText.trim()", timeout=60_000)
    assert done[-1][4] == "ok", done[-1]
    return done[-1]


@pytest.fixture
def shot_on_failure(page, tmp_path):
    """The page as it was when a step failed, next to the other screenshots."""
    yield
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / "last-page.png"), full_page=True)
    except Exception:  # noqa: BLE001  (a closed page has nothing to show)
        pass


def test_flag_export_train_compare_promote_in_the_browser(tmp_path, page, shot_on_failure):
    ckpt1 = stage1_checkpoint(tmp_path / "runs")
    # Short replies: the exported rows (system prompt and dialogue before) stay within Stage 2's max_length.
    with app_server(tmp_path, "--max-tokens", "40", env=ONE_THREAD) as app:
        db, url = app["db"], app["url"]
        # 1. A learner chats.
        page.goto(url)
        page.locator("#message textarea").wait_for(timeout=60_000)
        for n, text in enumerate(LEARNER, 1):
            first = say(page, db, text, n)
        conversation, base_spec = first[1], first[2]
        shot(page, 1, "learner")

        # 2. The tester flags both replies inline, with rewrites.
        page.goto(url + "tester/")
        page.get_by_role("button", name="Refresh lists").first.click(timeout=60_000)  # the learner's conversation
        page.wait_for_timeout(1000)
        page.locator("#past-conversations input").click()
        page.get_by_role("option").filter(has_text=LEARNER[0]).first.click()
        page.wait_for_function("() => document.querySelectorAll('#chat .extra-feedback').length === 2",
                               timeout=60_000)
        page.locator("#tester-name textarea, #tester-name input").first.fill("loop-tester")
        for n, rewrite in enumerate(REWRITES):
            click_flag(page, n)
            page.wait_for_function(f"() => document.querySelector('#flag-status').innerText.includes('Flagging "
                                   f"reply #{replies(db)[n][0]}')", timeout=60_000)
            if not page.locator("#flag-reasons input[type=checkbox]:checked").count():
                page.get_by_label("missed the learner's error (missed_error)").check()  # the detector found none
            page.locator("#flag-rewrite textarea").fill(rewrite)
            page.locator("#save-flag").click()
            page.wait_for_function(f"() => document.querySelector('#flag-status').innerText.includes('Saved flag "
                                   f"#{n + 1}')", timeout=60_000)
        page.wait_for_function("() => [...document.querySelectorAll(\"#chat [data-testid='bot']\")].every("
                               "m => m.innerText.includes('Flagged'))", timeout=60_000)
        shot(page, 2, "chat-and-flag")

        # 3. Export.
        page.get_by_role("tab", name="Export").click()
        page.locator("#export").wait_for(timeout=60_000)  # the tab is drawn: a value typed now is not reset
        box = page.locator("#export-folder input, #export-folder textarea").first
        for _ in range(5):  # a bounded few tries, in case the tab was still being drawn on a loaded machine
            box.fill("loop")
            box.press("Tab")
            page.wait_for_timeout(200)
            if box.input_value() == "loop":
                break
        page.locator("#export").click()
        page.wait_for_function("() => document.querySelector('#export-status').innerText.includes('Exported to')",
                               timeout=60_000)
        status = page.locator("#export-status").inner_text()
        assert "loop" in status, status  # into the folder typed, not the default
        assert "4 new rows" in status, status  # 2 SFT + 2 preference rows
        shot(page, 3, "export")

        # 4. Train 4 Stage 2 steps from the Stage 1 checkpoint.
        page.get_by_role("tab", name="Train").click()
        pick(page, "#train-source", "export loop", refresh="#train-refresh")
        page.wait_for_function("() => document.querySelector('#train-check').innerText.includes('Ready: SFT')",
                               timeout=60_000)
        pick(page, "#train-init", "stage1-tiny/checkpoint-4", refresh="#train-refresh")
        for box, number in (("#train-max-steps", "4"), ("#train-save-steps", "4")):
            page.locator(f"{box} input").fill(number)
            page.locator(f"{box} input").press("Tab")
        run_name = page.locator("#train-run-name textarea, #train-run-name input").first.input_value()
        page.locator("#train-start").click()
        page.locator("#train-status").get_by_text("Started job #").wait_for(timeout=60_000)
        page.wait_for_function("() => /✅ done|⛔ failed/.test(document.querySelector('#train-job').innerText)",
                               timeout=JOB_WAIT_MS)
        job = page.locator("#train-job").inner_text()
        assert "✅ done" in job and "Step 4 / 4" in job and "checkpoint-4" in job, \
            f"{job}\n{page.locator('#train-log textarea').input_value()}"
        ckpt2 = tmp_path / "runs" / run_name / "checkpoint-4"
        provenance = json.loads((ckpt2 / "quimbot-provenance.json").read_text())
        assert str(ckpt1) in json.dumps(provenance)  # Stage 2 started from the Stage 1 checkpoint
        page.wait_for_timeout(1500)  # the plots draw after their data arrives
        shot(page, 4, "train")

        # 5. Compare (a reload: the newest run's checkpoints are pre-ticked).
        page.reload()
        page.get_by_role("tab", name="Compare").click(timeout=60_000)
        spec2 = f"hf:{ckpt2}"
        page.wait_for_function(f"() => [...document.querySelectorAll('#compare-models input:checked')].some("
                               f"b => b.closest('label').innerText.includes({json.dumps(run_name)}))",
                               timeout=60_000)
        page.locator("#compare-limit input").fill("2")
        page.locator("#compare-limit input").press("Tab")
        page.locator("#compare-run").click()
        page.wait_for_function("() => /✅ done|❌ failed/.test(document.querySelector('#compare-job').innerText)",
                               timeout=JOB_WAIT_MS)
        assert "✅ done" in page.locator("#compare-job").inner_text(), page.locator("#compare-log textarea").input_value()
        page.locator("#compare-recommendation").get_by_text("Recommended").wait_for(timeout=60_000)
        assert spec2 in page.locator("#compare-summary").inner_text()
        (folder,) = (tmp_path / "exports" / "compare").glob("*/report.json")
        suggested = json.loads(folder.read_text())["recommendation"]["model"]
        assert suggested in page.locator("#compare-recommendation").inner_text()
        shown = {spec: label for label, spec in model_choices(app_settings(tmp_path))}.get(suggested, suggested)
        assert page.locator("#promote-model input").input_value() == shown  # the recommendation is suggested
        shot(page, 5, "compare")

        # 6. Promote the new checkpoint.
        page.locator("#promote-model input").fill(spec2)
        page.locator("#promote-model input").press("Enter")
        page.locator("#promote").click()
        page.locator("#promote-status").get_by_text("Promoted").wait_for(timeout=60_000)
        assert run_name in page.locator("#promote-current").inner_text()
        shot(page, 6, "promote")

        # A new learner conversation is answered by the promoted checkpoint.
        page.goto(url)
        page.wait_for_function(f"() => document.querySelector('#model input')?.value.includes({json.dumps(run_name)})",
                               timeout=60_000)
        after = say(page, db, "She go to school yesterday", len(LEARNER) + 1)
        shot(page, 7, "learner-promoted")
    assert after[1] != conversation and base_spec != spec2
    assert (after[2], after[3]) == (spec2, str(ckpt2))  # the turn's checkpoint says which model answered
    conn = sqlite3.connect(db)
    (by,) = conn.execute("SELECT by FROM promotions ORDER BY id DESC LIMIT 1").fetchone()
    conn.close()
    assert by == "tester"

