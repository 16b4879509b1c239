"""The tester view of the real app: roles, login, flagging through the API, review, export."""

import json
import os
import sqlite3
import sys

import httpx
import pytest
from conftest import serve_subprocess
from fakes import free_port
from gradio_client import Client

from webui.app import is_local, load_testers

pytestmark = pytest.mark.slow


def endpoints(client: Client) -> set[str]:
    return set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])


def config_labels(url: str) -> set[str]:
    config = httpx.get(url.rstrip("/") + "/config", timeout=10).json()
    return {c.get("props", {}).get("label") for c in config["components"]} - {None}


def test_learner_view_has_no_flag_controls_and_tester_view_has_them(running_app):
    learner, tester = running_app["url"], running_app["url"] + "tester/"
    assert "/flag" not in endpoints(Client(learner, verbose=False))
    assert {"/flag", "/review", "/export", "/send"} <= endpoints(Client(tester, verbose=False))
    assert not {"Reasons", "Open suggestions", "Flags on this reply"} & config_labels(learner)
    assert {"Reasons", "Open suggestions", "Flags on this reply"} <= config_labels(tester)


def test_flag_review_and_export_through_the_api(running_app):
    client = running_app["client"]("tester/")
    client.predict("Yesterday I go to the store", "default", "beginner", api_name="/send")
    db = sqlite3.connect(running_app["db"])
    turn_id, reply = db.execute("SELECT id, content FROM turns WHERE role = 'assistant'").fetchone()
    suggested = sorted(r for (r,) in db.execute("SELECT reason FROM suggestions WHERE turn_id = ?", [turn_id]))
    # The reply is sampled, so which flags apply varies; the stored suggestions must be exactly the
    # detector's verdict on the stored reply (the detector itself is tested on fixed replies).
    from tutor.detector import suggest_flags
    expected = sorted(s.reason for s in suggest_flags(reply, "Yesterday I go to the store", "beginner"))
    assert suggested == expected, (reply, suggested, expected)

    status, table = client.predict(turn_id, ["red_pen", "missed_error"], "lectures instead of recasting",
                                   "Oh, you went to the store yesterday? What did you buy?", "ana", api_name="/flag")
    assert status.startswith("Saved flag #")
    row = db.execute("SELECT reasons, tester, note, rewrite FROM flags WHERE turn_id = ?", [turn_id]).fetchone()
    assert json.loads(row[0]) == ["missed_error", "red_pen"] and row[1] == "ana"
    assert row[3] == "Oh, you went to the store yesterday? What did you buy?"

    status, _ = client.predict(turn_id, [], "", "", "ana", api_name="/flag")
    assert "at least one reason" in status

    rows, per_reason, per_checkpoint, summary = client.predict("red_pen", "", "", "", "", api_name="/review")
    assert summary == "1 flagged replies" and rows["data"][0][2] == "ana"
    assert ["red_pen", 1] in per_reason["data"]

    out = client.predict("", "", "", "", "", "run1", True, api_name="/export")
    assert "2 new rows" in out  # an SFT row and a preference row from the rewrite
    export_dir = running_app["db"].parent / "exports" / "stage2" / "run1"
    assert len((export_dir / "sft.jsonl").read_text().splitlines()) == 1
    again = client.predict("", "", "", "", "", "run1", True, api_name="/export")
    assert "0 new rows, 2 duplicates skipped" in again
    refused = client.predict("", "", "", "", "", "../../etc", True, api_name="/export")
    assert "Folder name" in refused and not (running_app["db"].parent / "etc").exists()
    db.close()


def test_arena_through_the_api(running_app):
    client = running_app["client"]("tester/")
    out = client.predict("I has two brother", "default", "gguf:default?n_ctx=1024", "beginner", "ana",
                         api_name="/arena_ask")
    reply_1, reply_2, status = out[0], out[1], out[2]
    assert reply_1.strip() and reply_2.strip() and status.startswith("Round 1")
    status, table = client.predict("ana", api_name="/arena_vote_first")[:2]
    assert "Vote saved. Reply 1 was" in status
    rows = {r[0]: r for r in table["data"]}
    assert set(rows) == {"default", "gguf:default?n_ctx=1024"} and sorted(r[2] for r in rows.values()) == [0, 1]
    status = client.predict("ana", api_name="/arena_vote_tie")[0]
    assert "already has a vote" in status
    db = sqlite3.connect(running_app["db"])
    assert db.execute("SELECT vote, tester FROM arena_rounds").fetchall() == [("first", "ana")]
    db.close()


def test_loopback_detection_and_accounts(tmp_path):
    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1") and is_local("127.0.0.2")
    assert not is_local("0.0.0.0") and not is_local("192.168.1.4") and not is_local("example.org")
    from tutor.auth import hash_line, make_auth
    path = tmp_path / "testers.txt"
    path.write_text("# accounts\n" + hash_line("ana", "s3cret-s3cret") + "\n")
    accounts = load_testers("ben:pw-pw-pw-pw-pw", path)
    assert sorted(accounts) == ["ana", "ben"]
    check = make_auth(accounts)
    assert check("ana", "s3cret-s3cret") and check("ben", "pw-pw-pw-pw-pw") and not check("ana", "pw-pw-pw-pw-pw")
    from core.errors import QuimbotError
    with pytest.raises(QuimbotError, match="not NAME:PASSWORD"):
        load_testers("ben")


def start_public_app(tmp_path, testers: str | None):
    port = free_port()
    env = {**os.environ, "QUIMBOT_DB": str(tmp_path / "pub.db"), "QUIMBOT_EXPORTS_DIR": str(tmp_path / "exports")}
    env.pop("QUIMBOT_TESTERS", None)
    if testers:
        env["QUIMBOT_TESTERS"] = testers
    cmd = [sys.executable, "-m", "quimbot.cli", "app", "--host", "0.0.0.0", "--port", str(port)]
    return serve_subprocess(cmd, f"http://127.0.0.1:{port}/", tmp_path / "pub.log", env), port


def test_beyond_localhost_the_tester_view_needs_a_login(tmp_path):
    server, port = start_public_app(tmp_path, "ana:s3cret-s3cret")
    with server:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/config", timeout=10).status_code == 200  # learners need no login
        assert httpx.get(base + "/tester/config", timeout=10).status_code in (401, 403)
        with pytest.raises(Exception):
            Client(base + "/tester/", verbose=False)
        with pytest.raises(Exception):
            Client(base + "/tester/", auth=("ana", "wrong"), verbose=False)
        client = Client(base + "/tester/", auth=("ana", "s3cret-s3cret"), verbose=False)
        assert "/flag" in endpoints(client)
        assert "tester view at /tester (login required)" in (tmp_path / "pub.log").read_text()


def test_beyond_localhost_without_accounts_there_is_no_tester_view(tmp_path):
    server, port = start_public_app(tmp_path, None)
    with server:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/config", timeout=10).status_code == 200
        assert httpx.get(base + "/tester/config", timeout=10).status_code == 404
        assert "tester view disabled" in (tmp_path / "pub.log").read_text()
