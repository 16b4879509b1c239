"""Shared fixtures. Tests use the real default model, real SQLite and the real app."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlite_utils import Database

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture
def running_app(tmp_path: Path):
    """The real app (`quimbot app`) in a subprocess on a free port, with its own database."""
    port = free_port()
    db = tmp_path / "app.db"
    env = {**os.environ, "QUIMBOT_DB": str(db), "QUIMBOT_RUNS_DIR": str(tmp_path / "runs"),
           "QUIMBOT_EXPORTS_DIR": str(tmp_path / "exports")}
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tutor.cli", "app", "--port", str(port), "--preload"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", proc)
        yield {"url": f"http://127.0.0.1:{port}/", "db": db, "proc": proc, "log": tmp_path / "app.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
