"""The Train tab in the real app (`quimbot app` in a subprocess), through gradio_client and headless
Chromium: the row counts and the schema gate's verdict before anything starts, an empty export and one
the gate refuses are refused with a clear message, a real Stage 2 SFT run on the bundled model is
started, a second is refused naming it, and the run's progress (step, loss, perplexity) is shown until
it is done. A screenshot of the tab is kept in $QUIMBOT_ARTIFACTS (default: <tmp>/quimbot-artifacts)."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

import pytest
from conftest import app_server
from test_browser import CHROMIUM, FLAGS
from test_train import preference_rows, stage2_rows, write_jsonl

from core.hashing import content_hash

pytestmark = [pytest.mark.slow, pytest.mark.browser]
JOB_WAIT_S = 900
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def artifacts() -> Path:
    folder = Path(os.environ.get("QUIMBOT_ARTIFACTS") or Path(tempfile.gettempdir()) / "quimbot-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def exports(tmp_path: Path) -> None:
    stage2 = tmp_path / "exports" / "stage2"
    for name in ("empty", "bad", "flags"):
        (stage2 / name).mkdir(parents=True)
    (stage2 / "empty" / "sft.jsonl").write_text("")
    bad = stage2_rows(3)
    bad[1]["messages"][-1]["content"] = "edited after it was hashed"   # its content_hash no longer matches
    write_jsonl(stage2 / "bad" / "sft.jsonl", bad + ['{"messages": "not a list"}'])
    time.sleep(0.05)
    write_jsonl(stage2 / "flags" / "sft.jsonl", stage2_rows(16))  # the newest export: picked first


def test_train_tab_checks_the_data_refuses_bad_exports_and_runs_a_stage2_job(tmp_path):
    exports(tmp_path)
    with app_server(tmp_path, env=ONE_THREAD) as app:
        client = app["client"]("tester/")
        text, run_name = client.predict("export:flags", "sft", api_name="/train_check")
        assert "**SFT** `sft.jsonl`: 16 rows, ✅ passes the schema gate" in text and "Ready: SFT" in text
        assert re.fullmatch(r"stage2-sft-flags-\d{8}-\d{4}", run_name)
        text, _ = client.predict("export:flags", "dpo", api_name="/train_check")
        assert "no preference.jsonl for DPO" in text
        text, _ = client.predict("export:empty", "sft", api_name="/train_check")
        assert "0 rows, ⚠️ no rows" in text and "has no rows: nothing to train on" in text
        text, _ = client.predict("export:bad", "sft", api_name="/train_check")
        assert "2 rows, ⛔ the schema gate refuses 2 row(s)" in text and "sft.jsonl:2: metadata.content_hash" in text

        def start(source, name, steps=2):
            return client.predict(source, "", "sft", steps, 5e-4, 2, name, "ana", api_name="/train_start")

        for source, why in (("export:empty", "has no rows"), ("export:bad", "the schema gate refuses 2 row(s)")):
            status, job_md, *_ = start(source, "refused")
            assert status.startswith("⛔") and why in status and job_md == "No training job yet."
        status, *_ = start("export:flags", "bad name!")
        assert "Run name: letters, digits" in status
        assert not (tmp_path / "runs").exists()  # nothing refused left anything behind

        status, job_md, *_ = start("export:flags", "stage2-test")
        job_id = int(re.match(r"Started job #(\d+): `quimbot train sft`", status).group(1))
        assert f"**Job #{job_id}**" in job_md and "🔄 running" in job_md
        status, *_ = start("export:flags", "stage2-second")
        assert re.search(rf"job #{job_id} \(train sft, started \d\d:\d\d by ana\) is still running", status)
        status, *_ = start("export:flags", "stage2-test")
        assert "exists already" in status or "still running" in status

        deadline, seen = time.monotonic() + JOB_WAIT_S, []
        while time.monotonic() < deadline:
            job_md, ppl, loss, log = client.predict(api_name="/train_poll")
            seen.append(job_md)
            if "✅ done" in job_md or "⛔ failed" in job_md:
                break
            time.sleep(2)
        assert "✅ done" in job_md, f"{job_md}\n{log}"
        assert f"**Job #{job_id}**" in job_md and "Step **2 / 2** · loss **" in job_md
        assert "Checkpoints (in the model pickers): `checkpoint-2`" in job_md
        assert [row[0] for row in ppl["data"]] == [0, 2] and [row[0] for row in loss["data"]] == [1, 2]
        assert "done: 2 steps" in log
        assert any("Step **" in md for md in seen)
        run = tmp_path / "runs" / "stage2-test"
        provenance = (run / "checkpoint-2" / "quimbot-provenance.json").read_text()
        assert json.dumps(str(tmp_path / "exports" / "stage2" / "flags" / "sft.jsonl")) in provenance
        _, checkpoints = client.predict("export:flags", api_name="/train_refresh")
        assert str(run / "checkpoint-2") in json.dumps(checkpoints)

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app["url"] + "tester/", timeout=60_000)
            page.get_by_role("tab", name="Train").click(timeout=30_000)
            page.locator("#train-job").get_by_text("✅ done").wait_for(timeout=60_000)
            page.locator("#train-check").get_by_text("passes the schema gate").wait_for(timeout=60_000)
            page.locator("#train-perplexity").scroll_into_view_if_needed()
            page.wait_for_timeout(1500)  # the plots draw after their data arrives
            assert page.locator("#train-start").is_enabled() and page.locator("#train-resume").is_disabled()
            assert page.locator("#train-cancel").is_disabled()
            page.screenshot(path=str(artifacts() / "train_tab.png"), full_page=True)
            browser.close()


def too_long(row: dict, words: int = 400) -> dict:
    """The row with its last reply (or chosen reply) made longer than training's 320 tokens, hashed again."""
    replies = row["messages"] if "messages" in row else row["chosen"]
    replies[-1]["content"] = " ".join(f"word{i}" for i in range(words))
    row["metadata"].pop("content_hash", None)
    row["metadata"]["content_hash"] = content_hash(row)
    return row


def test_the_train_tab_refuses_rows_longer_than_training_allows_before_start(tmp_path):
    folder = tmp_path / "exports" / "stage2" / "long"
    folder.mkdir(parents=True)
    sft = stage2_rows(6)
    sft[2], sft[4] = too_long(sft[2]), too_long(sft[4], 600)   # lines 3 and 5
    write_jsonl(folder / "sft.jsonl", sft)
    preference = preference_rows(4)
    preference[1] = too_long(preference[1])                    # line 2
    write_jsonl(folder / "preference.jsonl", preference)
    with app_server(tmp_path, env=ONE_THREAD) as app:
        client = app["client"]("tester/")
        text, _ = client.predict("export:long", "sft", api_name="/train_check")
        assert "**SFT** `sft.jsonl`: 6 rows, ✅ passes the schema gate" in text  # the gate alone would let it by
        assert "Ready" not in text and "2 row(s) too long to train on" in text, text
        assert "longer than training's limit of 320 tokens" in text  # data/train_default.toml's max_length
        lines = re.findall(r"`([^`]+):(\d+)` \(([\d,]+) tokens\)", text)
        assert [(Path(p).name, int(n)) for p, n, _ in lines] == [("sft.jsonl", 3), ("sft.jsonl", 5)], text
        assert all(int(tokens.replace(",", "")) > 320 for _, _, tokens in lines)
        text, _ = client.predict("export:long", "dpo", api_name="/train_check")
        assert "1 row(s) too long to train on" in text and "preference.jsonl:2`" in text and "Ready" not in text

        status, job_md, *_ = client.predict("export:long", "", "sft", 2, 5e-4, 2, "too-long", "ana",
                                            api_name="/train_start")
        assert status.startswith("⛔ **2 row(s) too long") and "Nothing was started." in status, status
        assert job_md == "No training job yet." and not (tmp_path / "runs").exists()

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app["url"] + "tester/", timeout=60_000)
            page.get_by_role("tab", name="Train").click(timeout=30_000)
            page.locator("#train-check").get_by_text("too long to train on").wait_for(timeout=120_000)
            assert "sft.jsonl:3" in page.locator("#train-check").inner_text()
            assert page.locator("#train-start").is_disabled()
            page.screenshot(path=str(artifacts() / "train_tab_too_long.png"), full_page=True)
            browser.close()


def test_a_train_tab_built_before_any_export_offers_a_new_one_without_a_restart(tmp_path):
    with app_server(tmp_path, env=ONE_THREAD) as app:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app["url"] + "tester/", timeout=60_000)
            page.get_by_role("tab", name="Train").click(timeout=30_000)
            page.locator("#train-check").get_by_text("not built yet").wait_for(timeout=60_000)
            source = page.locator("#train-source input")
            assert source.input_value().startswith("mix ")  # no export yet: only the mix config

            (tmp_path / "exports" / "stage2" / "flags").mkdir(parents=True)
            write_jsonl(tmp_path / "exports" / "stage2" / "flags" / "sft.jsonl", stage2_rows(8))
            # A new API session is checked against the lists as they are now, not as the page was built.
            text, _ = app["client"]("tester/").predict("export:flags", "sft", api_name="/train_check")
            assert "Ready: SFT" in text, text
            # The open page: back on the tab, the new export is offered and picked (the tester picked none).
            page.get_by_role("tab", name="Chat & flag").click(timeout=30_000)
            page.get_by_role("tab", name="Train").click(timeout=30_000)
            page.wait_for_function("() => document.querySelector('#train-source input').value === 'export flags'",
                                   timeout=60_000)
            page.locator("#train-check").get_by_text("Ready: SFT").wait_for(timeout=120_000)
            assert page.locator("#train-start").is_enabled()
            # A page opened now (its load event reads the lists) offers it before the tab is opened.
            page.reload()
            page.get_by_role("tab", name="Train").click(timeout=30_000)
            page.wait_for_function("() => document.querySelector('#train-source input').value === 'export flags'",
                                   timeout=60_000)
            # A pick of the tester's is kept when the lists are read again, even with a newer export.
            source.click()
            page.get_by_role("option").filter(has_text="mix ").first.click()
            page.locator("#train-check").get_by_text("not built yet").wait_for(timeout=60_000)
            (tmp_path / "exports" / "stage2" / "newer").mkdir()
            write_jsonl(tmp_path / "exports" / "stage2" / "newer" / "sft.jsonl", stage2_rows(4))
            page.locator("#train-refresh").click()
            source.click()
            page.get_by_role("option").filter(has_text="export newer").wait_for(timeout=60_000)
            page.keyboard.press("Escape")
            assert source.input_value().startswith("mix ")
            browser.close()
