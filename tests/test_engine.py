"""The chat engine in its own process: llama.cpp's llama-server, supervised by the app.

Real llama-server (built by set-up from the pinned llama-cpp-python sdist), real app, real model.
Kills, hangs and broken files are done for real: SIGKILL and SIGSTOP on the engine process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, app_server, log_tail

from tutor import llama_build
from tutor.weights import weight_type

pytestmark = pytest.mark.slow


def engine_pids(app_proc: subprocess.Popen) -> list[int]:
    """llama-server processes started by the app."""
    try:
        children = psutil.Process(app_proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c.pid for c in children if "llama-server" in " ".join(c.cmdline()[:1])]


def wait_until(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s; the app's log ends:\n{log_tail(log)}")


def rows(db: Path, sql: str, args=()) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_the_app_serves_the_default_model_through_llama_server(tmp_path):
    with app_server(tmp_path, "--max-tokens", "16", "--temperature", "0") as app:
        assert "engine llama-server" in app["log"].read_text()
        pids = engine_pids(app["proc"])
        assert len(pids) == 1, "--preload starts one llama-server for the bundled model"
        cmdline = psutil.Process(pids[0]).cmdline()
        assert "-np" in cmdline and "-no-kvu" in cmdline and "--jinja" in cmdline
        served = Path(cmdline[cmdline.index("-m") + 1])  # the bundled Q4_1 file's Q8_0 copy, which batches
        assert served.name.endswith(".q8_0.gguf") and weight_type(served) == "Q8_0"
        out = app["client"]().predict("Yesterday I go to the store", "default", "beginner", api_name="/send")
        assert "⚠️" not in out[2]
        (status, model, checkpoint), = rows(app["db"], "SELECT status, model_spec, checkpoint FROM turns "
                                                       "WHERE role = 'assistant'")
        assert status == "ok" and model == "gguf:default" and checkpoint.endswith(".gguf")


def test_kill_9_of_the_engine_while_four_sessions_chat(tmp_path):
    """Every session gets an error for its turn in flight, its next turn works, nothing is lost."""
    sessions = 4
    with app_server(tmp_path, "--max-tokens", "400", "--temperature", "0.8") as app:
        clients = [app["client"]() for _ in range(sessions)]
        first = [c.submit(f"Learner {i}: please tell me a very long story about your holiday, I goed to the sea",
                          "default", "beginner", api_name="/send") for i, c in enumerate(clients)]
        wait_until(lambda: rows(app["db"], "SELECT COUNT(*) FROM turns WHERE role = 'assistant' AND "
                                           "status = 'pending'")[0][0] == sessions,
                   120, "four replies in flight", app["log"])
        time.sleep(0.5)
        (pid,) = engine_pids(app["proc"])
        os.kill(pid, signal.SIGKILL)
        finals = [clients[i].wait(job, what=f"session {i}'s cut-off reply") for i, job in enumerate(first)]
        for final in finals:
            assert "engine stopped" in final[2] and "SIGKILL" in final[2], final[2]
        assert app["proc"].poll() is None, "the app itself must survive the engine's death"
        again = [c.submit(f"Learner {i}: and then I swimmed", "default", "beginner", api_name="/send")
                 for i, c in enumerate(clients)]
        seconds = [clients[i].wait(job, what=f"session {i}'s next turn") for i, job in enumerate(again)]
        assert all("⚠️" not in s[2] for s in seconds), [s[2] for s in seconds]
        assert len(engine_pids(app["proc"])) == 1, "a fresh engine replaced the killed one"

    db = app["db"]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    conversations = rows(db, "SELECT id FROM conversations ORDER BY id")
    assert len(conversations) == sessions
    for (cid,) in conversations:
        turns = rows(db, "SELECT role, status, content, error, idx FROM turns WHERE conversation_id = ? ORDER BY idx",
                     [cid])
        assert [(t[0], t[1]) for t in turns] == [("user", "ok"), ("assistant", "error"), ("user", "ok"),
                                                 ("assistant", "ok")]
        assert [t[4] for t in turns] == [0, 1, 2, 3]  # no turn lost or written twice
        learner = turns[0][2].split(":")[0]
        assert turns[2][2].startswith(learner + ":"), "histories never mix"
        assert "SIGKILL" in turns[1][3]


def test_an_engine_that_stops_answering_gives_a_bounded_error_and_is_replaced(tmp_path):
    with app_server(tmp_path, "--max-tokens", "16", env={"QUIMBOT_ENGINE_TIMEOUT": "4"}) as app:
        client = app["client"]()
        assert "⚠️" not in client.predict("I has a cat", "default", "beginner", api_name="/send")[2]
        (pid,) = engine_pids(app["proc"])
        os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
        try:
            started = time.monotonic()
            out = client.predict("I has a dog too", "default", "beginner", api_name="/send", timeout=90)
            waited = time.monotonic() - started
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert "⚠️" in out[2] and ("too slow" in out[2] or "stopped" in out[2]), out[2]
        assert waited < 60, "the wait is bounded by QUIMBOT_ENGINE_TIMEOUT, not by the test's own limit"
        again = client.predict("My dog name is Rex", "default", "beginner", api_name="/send")
        assert "⚠️" not in again[2], again[2]
        assert engine_pids(app["proc"]) and pid not in engine_pids(app["proc"])
    errors = rows(app["db"], "SELECT error FROM turns WHERE role = 'assistant' AND status = 'error'")
    assert len(errors) == 1


def test_a_file_that_is_not_a_model_gives_a_clear_error_and_the_app_goes_on(tmp_path):
    exports = tmp_path / "exports"
    exports.mkdir()
    broken = exports / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(4096))  # the right magic bytes, then garbage
    not_gguf = exports / "notes.gguf"
    not_gguf.write_text("these are my notes, not a model")
    with app_server(tmp_path, "--max-tokens", "8") as app:
        client = app["client"]()
        out = client.predict("I has a cat", f"gguf:{broken}", "beginner", api_name="/send")
        assert "⚠️" in out[2] and "did not start" in out[2], out[2]
        out = client.predict("I has a cat", f"gguf:{not_gguf}", "beginner", api_name="/send")
        assert "not a GGUF file" in out[2]
        assert "⚠️" not in client.predict("I has a cat", "default", "beginner", api_name="/send")[2]


def test_the_port_in_use_is_named_before_anything_loads(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "quimbot.cli", "app", "--port", str(port)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "QUIMBOT_DB": str(tmp_path / "q.db")})
    assert done.returncode != 0
    assert f"Port {port} on 127.0.0.1 is already in use" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_cmake_or_compiler_names_what_to_install(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "QUIMBOT_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("QUIMBOT_LLAMA_SERVER", None)
    done = subprocess.run([sys.executable, "-m", "tutor.llama_build", "server"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "needs cmake, c++, make" in done.stderr and "apt-get install cmake build-essential" in done.stderr


def test_set_up_rebuilds_an_engine_that_dies_with_sigill(tmp_path):
    """A wheel built for another CPU, simulated: its import executes an illegal instruction (SIGILL).
    The check sees the signal in its child process; set-up rebuilds once, then checks again."""
    broken = tmp_path / "broken" / "llama_cpp"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n")
    env = {**os.environ, "PYTHONPATH": str(broken.parent)}
    works, what = llama_build.check_python_engine(env=env)
    assert not works and "SIGILL" in what

    rebuilt, said = [], []

    def check(python):  # the broken wheel first; after the rebuild, the real installed engine
        return llama_build.check_python_engine(python, env=None if rebuilt else env)

    result = llama_build.ensure_python_engine(say=said.append, check=check, rebuild=rebuilt.append)
    assert rebuilt == [sys.executable] and len(said) == 1
    assert "killed by SIGILL" in said[0] and "rebuilding it from source with portable flags" in said[0]
    assert result.startswith("rebuilt portably and checked")


def test_the_engines_reach_no_instruction_beyond_avx2():
    """No AMX tile or AVX-512 instruction in the built engines: nothing needs a grant the OS may refuse."""
    import llama_cpp

    lib = Path(llama_cpp.__file__).parent / "lib"
    cpu_libs = sorted(p for p in lib.glob("libggml-cpu*.so*") if not p.is_symlink())
    assert cpu_libs, f"no libggml-cpu in {lib}"
    server = llama_build.server_binary()
    assert server is not None, "set-up builds llama-server"
    for binary in [*cpu_libs, server]:
        assert llama_build.forbidden_instructions(binary) == {}, binary
    assert "-DGGML_NATIVE=OFF" in llama_build.portable_cmake_args()


def test_the_in_process_engine_is_still_there_behind_the_same_registry(settings):
    from tutor.backends.registry import BACKENDS, configure_engine

    before = dict(BACKENDS)
    try:
        assert configure_engine(settings, "in-process") == "in-process"
        assert BACKENDS["gguf"].endswith("LlamaCppBackend")
        assert configure_engine(settings, "llama-server") == "llama-server"
        assert BACKENDS["gguf"].endswith("LlamaServerBackend")
    finally:
        BACKENDS.clear()
        BACKENDS.update(before)


def test_concurrent_requests_decode_together(settings):
    """Two replies at once through one llama-server: both stream, and their time overlaps."""
    from tutor.backends import GenerationOptions
    from tutor.backends.llama_server import LlamaServerBackend
    from tutor.specs import parse_spec

    backend = LlamaServerBackend(parse_spec("gguf:default"), settings)
    options = GenerationOptions(temperature=0, max_tokens=24)
    spans: dict[int, tuple[float, float, str]] = {}

    def ask(i: int) -> None:
        first, pieces = None, []
        for chunk in backend.stream([{"role": "user", "content": f"Tell me about day {i} of your trip."}], options):
            if chunk.text:
                first = first or time.monotonic()
                pieces.append(chunk.text)
        spans[i] = (first, time.monotonic(), "".join(pieces))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(spans) == 2 and all(s[2].strip() for s in spans.values())
    (a0, a1, _), (b0, b1, _) = spans[0], spans[1]
    assert max(a0, b0) < min(a1, b1), "both replies had their first token before either finished"
    assert backend.count_tokens([{"role": "user", "content": "Hello"}]) > 1
    backend.supervisor.close()


def test_no_engine_outlives_an_app_killed_with_kill_9(tmp_path):
    with app_server(tmp_path, "--max-tokens", "8") as app:
        (pid,) = engine_pids(app["proc"])
        os.kill(app["proc"].pid, signal.SIGKILL)
        app["proc"].wait(timeout=30)
        wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                   20, "the engine's exit after the app's death")
