"""The app exposed to strangers: Host/Origin checks, request and spec limits, event numbers,
run history, the tester login's back-off and password rules, and writers of the same database.
Real app subprocesses, real Gradio clients, real SQLite."""

import os
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from conftest import ROOT, serve_subprocess
from fakes import FakeOpenAI, free_port
from gradio_client import Client

from core.errors import QuimbotError
from tutor.auth import MIN_PASSWORD_CHARS, LoginLimiter, hash_line, load_testers, make_auth

GOOD_PASSWORD = "correct horse battery staple"
TIMEOUT = 30  # seconds, for every single HTTP call


def start_app(tmp_path, name: str, *args: str, db=None, env_extra: dict | None = None):
    """`quimbot app` in a subprocess; returns (context manager, base URL, log path)."""
    port = free_port()
    env = {**os.environ, "QUIMBOT_DB": str(db or tmp_path / f"{name}.db"),
           "QUIMBOT_RUNS_DIR": str(tmp_path / "runs"), "QUIMBOT_EXPORTS_DIR": str(tmp_path / "exports")}
    env.pop("QUIMBOT_TESTERS", None)
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "quimbot.cli", "app", "--port", str(port), *args]
    log = tmp_path / f"{name}.log"
    return serve_subprocess(cmd, f"http://127.0.0.1:{port}/", log, env), f"http://127.0.0.1:{port}", log


def rows(db, sql, args=()):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def alive(proc):
    assert proc.poll() is None, f"the app exited with code {proc.returncode}"


# -- issue 17.5: /tester without the slash ------------------------------------------------------------
@pytest.mark.slow
def test_tester_without_trailing_slash_opens_the_tester_view(running_app):
    base = running_app["url"].rstrip("/")
    first = httpx.get(base + "/tester", timeout=TIMEOUT)
    assert first.status_code in (301, 302, 307, 308) and first.headers["location"].endswith("/tester/")
    page = httpx.get(base + "/tester", timeout=TIMEOUT, follow_redirects=True)
    assert page.status_code == 200 and str(page.url).endswith("/tester/")
    assert "Quimbot · tester" in page.text


# -- item 4: Host and Origin --------------------------------------------------------------------------
@pytest.mark.slow
def test_a_foreign_host_or_origin_cannot_read_the_dialogue(running_app):
    base = running_app["url"].rstrip("/")
    secret = "My secret dialogue about Lisbon"
    Client(running_app["url"], verbose=False).predict(secret, "default", "beginner", api_name="/send")
    (cid,) = rows(running_app["db"], "SELECT id FROM conversations")[0]
    rebound = {"Host": f"rebind.attacker.example:{running_app['port']}"}
    for path in ("/", "/config", "/tester/", "/tester/config", "/tester/gradio_api/info"):
        r = httpx.get(base + path, headers=rebound, timeout=TIMEOUT)
        assert r.status_code == 403 and secret not in r.text, path
    # The tester view's load_conversation event, as a rebinding page would call it.
    config = httpx.get(base + "/tester/config", timeout=TIMEOUT).json()
    load = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "load_conversation")
    call = {"data": [cid, None], "fn_index": load, "session_hash": "rebind1", "event_data": None}
    r = httpx.post(base + "/tester/gradio_api/queue/join", json=call, headers=rebound, timeout=TIMEOUT)
    assert r.status_code == 403
    r = httpx.get(base + "/tester/gradio_api/queue/data?session_hash=rebind1", headers=rebound, timeout=TIMEOUT)
    assert r.status_code == 403 and secret not in r.text
    # A page on another site posting to the real address is refused too (its Origin is foreign).
    for origin in ("http://rebind.attacker.example", "null"):
        r = httpx.post(base + "/tester/gradio_api/queue/join", json=call, timeout=TIMEOUT,
                       headers={"Origin": origin})
        assert r.status_code == 403, origin
    # The app's own address, with or without its own Origin, still works.
    for headers in ({}, {"Origin": base}, {"Host": f"localhost:{running_app['port']}"}):
        assert httpx.get(base + "/tester/config", headers=headers, timeout=TIMEOUT).status_code == 200
    alive(running_app["proc"])


# -- item 3: request bodies and specs ----------------------------------------------------------------
@pytest.mark.slow
def test_oversized_bodies_are_refused_before_they_are_read(running_app):
    port = running_app["port"]
    # A 16 MB Content-Length with no body sent: the answer must come without the body being waited for.
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(f"POST /gradio_api/queue/join HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 16777216\r\n\r\n".encode())
        answer = sock.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413")
    # A chunked body (no length announced) is cut off once it passes the limit.
    def chunks():
        for _ in range(256):
            yield b"x" * 65536
    r = httpx.post(running_app["url"] + "gradio_api/queue/join", content=chunks(), timeout=TIMEOUT)
    assert r.status_code == 413
    r = httpx.post(running_app["url"] + "tester/gradio_api/queue/join", content=b"{" + b" " * 200_000 + b"}",
                   timeout=TIMEOUT)
    assert r.status_code == 413
    alive(running_app["proc"])


def send(url: str, message: str, spec: str):
    out = Client(url, verbose=False).predict(message, spec, "beginner", api_name="/send")
    return out[2]  # the status line


@pytest.mark.slow
def test_shared_app_learners_pick_only_listed_models_with_listed_options(tmp_path):
    with FakeOpenAI() as fake:
        listed = f"openai:{fake.model}?base_url={fake.base_url}&timeout=60"
        server, base, log = start_app(tmp_path, "shared", "--host", "0.0.0.0", "--extra-model", listed)
        with server as proc:
            url = base + "/"
            for spec in ("gguf:default?n_ctx=65536", "gguf:default?n_ctx=1000000000", "hf:gpt2",
                         "gguf:default?n_ctx=2048", "gguf:default?x=1", listed.replace("timeout=60", "timeout=600"),
                         f"openai:{fake.model}?base_url=http://10.1.2.3/v1"):
                status = send(url, "I has a cat", spec)
                assert "pick a model from the list" in status, spec
            status = send(url, "I has a cat", "gguf:default?" + "a" * 600)
            assert "the limit is 512" in status
            db = tmp_path / "shared.db"
            assert rows(db, "SELECT COUNT(*) FROM turns") == [(0,)] and fake.chat_count == 0
            details = rows(db, "SELECT detail FROM events WHERE kind = 'refused_model_spec'")
            assert len(details) == 8 and max(len(d) for (d,) in details) < 1000  # a long spec is not stored whole
            # The listed spec, with its listed options, works.
            status = send(url, "I has a cat", listed)
            assert "⚠️" not in status and fake.chat_count == 1
            assert rows(db, "SELECT status FROM turns WHERE role = 'assistant'") == [("ok",)]
            alive(proc)


@pytest.mark.slow
def test_localhost_typed_specs_have_bounds_and_keys_stay_home(tmp_path):
    server, base, log = start_app(tmp_path, "local", env_extra={"HOME_SECRET_FOR_TEST": "x"})
    with server as proc:
        url = base + "/"
        cases = {
            "gguf:default?n_ctx=65536": "out of bounds",
            "gguf:default?n_ctx=1000000000": "out of bounds",
            "gguf:default?n_threads=4096": "out of bounds",
            "gguf:default?n_gpu_layers=99": "not one the app accepts",
            "hf:gpt2": "not in the local model cache",
            "openai:m?base_url=http://127.0.0.1:9/v1&api_key_env=HOME": "not a key variable",
            "openai:m?base_url=http://attacker.example/v1&api_key_env=OPENAI_API_KEY": "host of the model list",
            "openai:m?base_url=http://attacker.example/v1": "host of the model list",
        }
        for spec, reason in cases.items():
            status = send(url, "I has a cat", spec)
            assert reason in status, (spec, status)
        assert rows(tmp_path / "local.db", "SELECT COUNT(*) FROM turns") == [(0,)]
        assert "Traceback" not in log.read_text()
        alive(proc)


# -- item 9b: an event number that does not exist -----------------------------------------------------
@pytest.mark.slow
def test_a_bad_event_number_is_refused_without_a_traceback(running_app):
    for prefix in ("", "tester/"):
        for fn_index in (9999, -1, "abc"):
            r = httpx.post(running_app["url"] + prefix + "gradio_api/queue/join", timeout=TIMEOUT,
                           json={"data": [], "fn_index": fn_index, "session_hash": "bad1"})
            assert r.status_code == 422 and "no event number" in r.json()["detail"]
    alive(running_app["proc"])
    log = running_app["log"].read_text()
    assert "Traceback" not in log and "KeyError" not in log


# -- item 5: run history ---------------------------------------------------------------------------
@pytest.mark.slow
def test_run_history_is_off(running_app):
    for prefix in ("", "tester/"):
        config = httpx.get(running_app["url"] + prefix + "config", timeout=TIMEOUT).json()
        assert config["run_history"] is False
        assert httpx.get(running_app["url"] + prefix + "gradio_api/runs", timeout=TIMEOUT).status_code == 404


# -- item 8: tester logins -------------------------------------------------------------------------
def test_accounts_need_long_passwords_and_files_hold_hashes(tmp_path):
    with pytest.raises(QuimbotError, match=f"at least {MIN_PASSWORD_CHARS} characters"):
        load_testers("ana:s3cret")
    plain = tmp_path / "testers.txt"
    plain.write_text(f"ana:{GOOD_PASSWORD}\n")
    with pytest.raises(QuimbotError, match="plain password.*python -m tutor.auth hash ana"):
        load_testers("", plain)
    hashed = tmp_path / "hashed.txt"
    hashed.write_text("# accounts\n" + hash_line("ana", GOOD_PASSWORD) + "\n")
    accounts = load_testers(f"ben:{GOOD_PASSWORD}2,cy:{GOOD_PASSWORD}3", hashed)
    assert sorted(accounts) == ["ana", "ben", "cy"] and all(h.startswith("$argon2id$") for h in accounts.values())
    assert GOOD_PASSWORD not in "".join(accounts.values())
    check = make_auth(accounts)
    assert check("ana", GOOD_PASSWORD) and check("ben", GOOD_PASSWORD + "2")
    assert not check("ana", GOOD_PASSWORD + "x") and not check("nobody", GOOD_PASSWORD)
    # hashes in QUIMBOT_TESTERS too, commas inside them included
    assert sorted(load_testers(hash_line("dee", GOOD_PASSWORD) + "," + f"eve:{GOOD_PASSWORD}")) == ["dee", "eve"]
    with pytest.raises(QuimbotError, match="not a valid argon2 hash"):
        load_testers("ana:$argon2id$garbage")


def test_hash_command_prints_a_line_the_app_accepts(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tutor.auth", "hash", "ana"], input=GOOD_PASSWORD + "\n",
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("ana:$argon2id$")
    (tmp_path / "t.txt").write_text(line + "\n")
    assert make_auth(load_testers("", tmp_path / "t.txt"))("ana", GOOD_PASSWORD)
    short = subprocess.run([sys.executable, "-m", "tutor.auth", "hash", "ana"], input="short\n",
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert short.returncode == 2 and "at least 12 characters" in short.stderr


def test_login_limiter_backs_off_per_account_and_per_address():
    now = [1000.0]
    limiter = LoginLimiter(free=3, base=1.0, cap=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.begin("ana", "10.0.0.1") == 0
    assert limiter.begin("ana", "10.0.0.1") == pytest.approx(1.0)  # 4th: wait 1 s
    assert limiter.begin("ana", "10.0.0.2") == pytest.approx(1.0)  # same account, another address
    assert limiter.begin("ben", "10.0.0.1") == pytest.approx(1.0)  # same address, another account
    assert limiter.begin("ben", "10.0.0.2") == 0                    # neither has failed yet
    now[0] += 1.0
    assert limiter.begin("ana", "10.0.0.3") == 0   # allowed again after the wait; counted
    assert limiter.begin("ana", "10.0.0.3") == pytest.approx(2.0)  # and the wait doubles
    now[0] += 2.0
    for _ in range(10):
        limiter.begin("ana", "10.0.0.3")
        now[0] += 60.0
    assert limiter.begin("ana", "10.0.0.4") <= 60.0  # capped
    limiter.succeeded("ana", "10.0.0.4")
    assert limiter.begin("ana", "10.0.0.4") == 0
    now[0] += 10 * 86_400
    assert limiter.begin("ben", "10.0.0.1") == 0  # old failures are forgotten


@pytest.mark.slow
def test_tester_login_backs_off_after_wrong_guesses(tmp_path):
    # The first wait is an hour here, so no wait can pass while the test runs, however slow the machine.
    server, base, log = start_app(tmp_path, "login", "--host", "0.0.0.0",
                                  env_extra={"QUIMBOT_TESTERS": f"ana:{GOOD_PASSWORD}",
                                             "QUIMBOT_LOGIN_BACKOFF_S": "3600"})
    with server as proc:
        login = base + "/tester/login"
        answers = [httpx.post(login, data={"username": "ana", "password": f"guess{i}"}, timeout=TIMEOUT).status_code
                   for i in range(200)]
        assert answers[:5] == [400] * 5 and set(answers[5:]) == {429}
        # Even the right password is not checked while the back-off lasts, for this account ...
        right = httpx.post(login, data={"username": "ana", "password": GOOD_PASSWORD}, timeout=TIMEOUT)
        assert right.status_code == 429 and int(right.headers["retry-after"]) >= 1
        assert "try again in" in right.json()["detail"]
        # ... and for any account from this address (multipart, as the login page posts it).
        other = httpx.post(login, files={"username": (None, "ben"), "password": (None, "x" * 12)},
                           timeout=TIMEOUT)
        assert other.status_code == 429
        with pytest.raises(Exception):
            Client(base + "/tester/", auth=("ana", GOOD_PASSWORD), verbose=False)
        alive(proc)


@pytest.mark.slow
def test_a_short_tester_password_stops_the_app_with_a_clear_error(tmp_path):
    env = {**os.environ, "QUIMBOT_DB": str(tmp_path / "x.db"), "QUIMBOT_TESTERS": "ana:s3cret"}
    out = subprocess.run([sys.executable, "-m", "quimbot.cli", "app", "--host", "0.0.0.0", "--port", str(free_port())],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "at least 12 characters" in out.stdout + out.stderr


# -- item 7: two apps on one database ------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_app_leaves_the_first_apps_live_reply_alone(tmp_path):
    db = tmp_path / "shared.db"
    with FakeOpenAI(mode="slow", delay=600) as fake:
        spec = f"openai:{fake.model}?base_url={fake.base_url}&timeout=600"
        first, base1, _ = start_app(tmp_path, "first", db=db)
        with first as proc1:
            job = Client(base1 + "/", verbose=False).submit("I has a cat", spec, "beginner", api_name="/send")
            deadline = time.monotonic() + 120
            while not rows(db, "SELECT id FROM turns WHERE status = 'pending'"):
                alive(proc1)
                assert time.monotonic() < deadline, "the reply never became pending"
                time.sleep(0.1)
            second, _, log2 = start_app(tmp_path, "second", db=db)
            with second as proc2:
                alive(proc2)
                assert rows(db, "SELECT status, error FROM turns WHERE role = 'assistant'") == [("pending", None)]
                assert "marked" not in log2.read_text()
                fake._release.set()  # the fake server answers now
                final = job.result(timeout=120)
                assert "⚠️" not in final[2]
            assert rows(db, "SELECT status, error FROM turns WHERE role = 'assistant'") == [("ok", None)]
