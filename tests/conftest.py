"""Shared fixtures. Tests use the real default model, real SQLite and the real app."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlite_utils import Database

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from fakes import free_port  # noqa: E402,F401  (shared with the tests)

from tutor.backends import BackendPool  # noqa: E402
from tutor.config import Settings  # noqa: E402
from tutor.session import ChatService  # noqa: E402
from tutor.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings()
    s.db_path = tmp_path / "quimbot.db"
    s.runs_dir = tmp_path / "runs"
    s.exports_dir = tmp_path / "exports"
    s.extra_models = []
    return s


@pytest.fixture
def store() -> Store:
    return Store(Database(memory=True))


@pytest.fixture(scope="session")
def shared_pool() -> BackendPool:
    """One pool for the whole run, so the real default model loads once."""
    pool = BackendPool(Settings(), max_loaded=3)
    yield pool
    pool.close()


@pytest.fixture
def service(store: Store, shared_pool: BackendPool) -> ChatService:
    return ChatService(store, shared_pool)


def wait_for_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def serve_subprocess(cmd: list[str], ready_url: str, log_path: Path, env: dict | None = None,
                     timeout: float = 180):
    """Run a server command, wait until ``ready_url`` answers, stop it afterwards.
    A server that dies or never answers fails the test with the end of its log."""
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env or dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_http(ready_url, proc, timeout)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{cmd[:4]} did not start ({exc}):\n{Path(log_path).read_text()[-3000:]}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def app_server(tmp_path: Path, *extra: str):
    """The real app (`quimbot app`) in a subprocess on a free port, with its own database."""
    port = free_port()
    db = tmp_path / "app.db"
    env = {**os.environ, "QUIMBOT_DB": str(db), "QUIMBOT_RUNS_DIR": str(tmp_path / "runs"),
           "QUIMBOT_EXPORTS_DIR": str(tmp_path / "exports")}
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "tutor.cli", "app", "--port", str(port), "--preload", *extra]
    with serve_subprocess(cmd, url, tmp_path / "app.log", env) as proc:
        yield {"url": url, "db": db, "proc": proc, "log": tmp_path / "app.log", "port": port, "env": env,
               "cmd": cmd}


@pytest.fixture
def running_app(tmp_path: Path):
    with app_server(tmp_path) as app:
        yield app
