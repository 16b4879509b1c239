"""The tester view's Compare tab on a real report: a real `quimbot eval compare` of the bundled model and a
LoRA checkpoint, read by the real app (gradio_client), the comparison started as a background job, bad
input refused in the page, and a screenshot of the tab in real Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import app_server
from test_promotion import lora_runs  # noqa: F401  (the module's checkpoint fixture)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("QUIMBOT_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))


@pytest.fixture(scope="module")
def compared(tmp_path_factory, lora_runs):  # noqa: F811
    """runs/ and exports/ with a finished report of hf:default and the checkpoint (3 prompts)."""
    root = tmp_path_factory.mktemp("compare-tab")
    shutil.copytree(lora_runs, root / "runs")
    out = root / "exports" / "compare" / "first"
    ckpt = root / "runs" / "stage2" / "checkpoint-4"
    env = {**os.environ, "QUIMBOT_DB": str(root / "app.db")}
    done = subprocess.run([sys.executable, "-m", "quimbot.cli", "eval", "compare", "hf:default", f"hf:{ckpt}",
                           "--limit", "3", "--max-tokens", "32", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "out": out, "ckpt": ckpt}


def _app(tmp_path: Path, compared):
    """The real app on the compared runs and exports (the report names the checkpoints where they are)."""
    root = compared["root"]
    return app_server(tmp_path, env={"QUIMBOT_RUNS_DIR": str(root / "runs"), "QUIMBOT_EXPORTS_DIR": str(root / "exports")})


def test_the_compare_tab_shows_a_real_report_and_promotes(tmp_path, compared):
    with _app(tmp_path, compared) as app:
        client = app["client"]("tester/")
        folder = str(compared["out"])
        job, _, reports, models, current, history = client.predict(api_name="/compare_load")
        assert job == "" and "default" in current and not any(any(row) for row in history["data"])
        ckpt = str(compared["ckpt"])
        assert value(models) == ["hf:default", f"hf:{ckpt}", "default"]  # the newest run, the base, the learners' default
        status, rec, summary, plot, error_type, replies, link, candidate = client.predict(
            folder, "all error types", False, api_name="/compare_report")
        assert "3 prompts, 2 models" in status and "Recommended" in rec
        assert [row[0] for row in summary["data"]] == ["hf:default", f"hf:{ckpt}"]
        assert summary["data"][1][1] == 4  # the checkpoint's step
        plot = value(plot)
        assert Path(plot["path"] if isinstance(plot, dict) else plot).stat().st_size > 1000  # checkpoints.png: step 0 and step 4
        assert replies.count("<tr>") == 4 and ("✅ good" in replies or "⚠️ weak" in replies)
        assert "Last month I start a pottery class" in replies and "<script" not in replies
        _, _, _, _, _, only, _, _ = client.predict(folder, "past_tense", True, api_name="/compare_report")
        assert only.count("<tr>") == 1 + sum("⚠️ weak" in row for row in replies.split("<tr>")[2:])
        candidate = value(candidate)
        assert candidate in ("hf:default", f"hf:{ckpt}")  # the recommendation is the suggested choice
        # report.html through the tester view's file route (only the compare reports folder is served).
        href = link.split("href='")[1].split("'")[0]
        page = httpx.get(app["url"] + "tester/" + href, timeout=30)
        assert page.status_code == 200 and "Checkpoint comparison" in page.text
        assert httpx.get(app["url"] + "tester/gradio_api/file=" + str(app["db"]), timeout=30).status_code == 403
        assert httpx.get(app["url"] + "gradio_api/file=" + href.split("file=")[1], timeout=30).status_code == 403
        # Bad input, in the page.
        bad, _, _ = client.predict([], 3, "ana", api_name="/compare_run")
        assert "Tick at least one model" in bad
        bad, _, _ = client.predict(["hf:default"], 0, "ana", api_name="/compare_run")
        assert "between 1 and 200" in bad
        missing = f"hf:{compared['root'] / 'runs' / 'stage2' / 'checkpoint-9'}"
        message, _, _ = client.predict(missing, "ana", folder, api_name="/promote")
        assert "no longer exists" in message
        message, current, history = client.predict(candidate, "ana", folder, api_name="/promote")
        assert "Promoted" in message and f"{candidate} (promoted by ana" in current
        assert history["data"][0][2:6] == ["promote", candidate, "(app default)", "ana"]
        message, current, _ = client.predict("", api_name="/rollback")
        assert "Say who you are" in message
        message, current, _ = client.predict("bo", api_name="/rollback")
        assert "Rolled back" in message and "default (the app's own default; rolled back by bo)" in current
        screenshot(app["url"] + "tester/", "compare-tab.png", folder)


def test_a_comparison_runs_as_a_background_job(tmp_path, compared):
    pytest.importorskip("tutor.jobs")
    with _app(tmp_path, compared) as app:
        client = app["client"]("tester/")
        client.predict(api_name="/compare_load")  # as the page does when it opens
        message, _, _ = client.predict(["default"], 2, "ana", api_name="/compare_run")
        assert message.startswith("Started job #")
        job_id = int(message.split("#")[1].split(":")[0])
        again, _, _ = client.predict(["default"], 2, "bo", api_name="/compare_run")
        assert "still running" in again and f"#{job_id}" in again  # one job at a time, naming the running one
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status, *_ = client.predict(api_name="/compare_load")
            if not status:  # no compare job running any more
                break
            time.sleep(2)
        import sqlite3

        conn = sqlite3.connect(app["db"])
        state, out_dir = conn.execute("SELECT state, out_dir FROM jobs WHERE id = ?", [job_id]).fetchone()
        conn.close()
        assert state == "done" and (Path(out_dir) / "report.json").is_file()
        status, _, reports, *_ = client.predict(api_name="/compare_load")
        assert status == "" and [folder for _, folder in reports["choices"]][0] == out_dir  # newest first


def test_a_report_made_after_the_page_was_built_is_read_and_nothing_outside_the_reports_folder(tmp_path, compared):
    exports = tmp_path / "exports"
    reports = exports / "compare"
    shutil.copytree(compared["out"], reports / "first")  # the one report, whichever tests ran before
    env = {"QUIMBOT_RUNS_DIR": str(compared["root"] / "runs"), "QUIMBOT_EXPORTS_DIR": str(exports)}
    with app_server(tmp_path, env=env) as app:
        client = app["client"]("tester/")
        client.predict(api_name="/compare_load")  # as the page does when it opens: the list holds "first"
        later = reports / "later"
        shutil.copytree(reports / "first", later)  # a comparison that finished after that
        for caller in (client, app["client"]("tester/")):  # the open page's session, and a new one
            status, rec, summary, *_, link, _ = caller.predict(str(later), "all error types", False,
                                                                api_name="/compare_report")
            assert status.startswith("Report `later`: 3 prompts, 2 models") and "Recommended" in rec, status
            assert len(summary["data"]) == 2 and str(later / "report.html") in link
        href = link.split("href='")[1].split("'")[0]
        assert httpx.get(app["url"] + "tester/" + href, timeout=30).status_code == 200

        outside = tmp_path / "outside"
        shutil.copytree(reports / "first", outside)  # a finished report, but not in the reports folder
        (reports / "link").symlink_to(outside, target_is_directory=True)
        unfinished = reports / "unfinished"
        unfinished.mkdir()
        shutil.copy(reports / "first" / "report.json", unfinished)  # no report.html: still being written
        refused = {str(outside): "is not a report of the Compare tab",
                   f"{reports}/later/../../outside": "is not a report of the Compare tab",
                   f"{reports}/../compare/later": "is not a report of the Compare tab",
                   str(reports / "link"): "is not a report of the Compare tab",
                   str(reports): "is not a report of the Compare tab",
                   "later": "is not a report of the Compare tab",
                   str(unfinished): "holds no finished report"}
        for folder, why in refused.items():
            status, rec, summary, plot, _, replies, link, _ = client.predict(folder, "all error types", False,
                                                                             api_name="/compare_report")
            assert status.startswith("⚠️") and why in status, (folder, status)
            assert rec == "" and replies == "" and link == "" and not any(summary.get("data") or [])
        _, _, reports_list, *_ = client.predict(api_name="/compare_load")
        assert sorted(folder for _, folder in reports_list["choices"]) == [str(reports / "first"), str(later)]


def test_replies_filter_by_error_type_and_weak_replies(compared):
    from webui.compare_tab import ALL, error_types, replies_html

    report = json.loads((compared["out"] / "report.json").read_text())
    assert error_types(report) == [ALL, "past_tense"]
    shown = replies_html(report, "past_tense")
    assert shown.count("<tr>") == 4 and shown.count("<td class=") == 6  # 3 prompts x 2 models, side by side
    assert "No prompt of this error type" in replies_html(report, "articles")
    weak = sum(not r["good_move"] for m in report["models"] for r in m["per_reply"])
    assert ("⚠️ weak" in shown) == (weak > 0)


def value(output):
    """An output's value, whether the app sent the value or an update (gr.update) holding it."""
    return output.get("value") if isinstance(output, dict) and output.get("__type__") == "update" else output


def screenshot(url: str, name: str, folder: str) -> None:
    """The Compare tab with the report open, as a tester sees it (kept in ARTIFACTS)."""
    from playwright.sync_api import sync_playwright

    from test_browser import CHROMIUM, FLAGS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare-report").wait_for(timeout=60_000)
        page.locator("#compare-report input").click()
        page.get_by_role("option").first.click()
        page.wait_for_function("() => document.querySelector('#compare-replies').innerText.includes('good') || "
                               "document.querySelector('#compare-replies').innerText.includes('weak')", timeout=60_000)
        page.wait_for_function("() => document.querySelector('#compare-plot img')", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / name), full_page=True)
        browser.close()
