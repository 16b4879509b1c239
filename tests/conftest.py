"""Shared fixtures. Tests use the real default model, real SQLite and the real app."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import signal
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
from tutor.llama_build import stop_process  # noqa: E402
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


CALL_TIMEOUT_S = 240  # one client call to the app: a reply on this CPU takes seconds, never minutes


def log_tail(path: Path | None, chars: int = 3000) -> str:
    if path is None:
        return ""
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


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
        stop_process(proc, timeout=20)
        log.close()


class BoundedClient:
    """gradio_client's Client with a bound on every call. While a call waits, the server process is
    watched: when it dies the test fails at once with the end of its log, and a call that outlives
    ``timeout`` fails the same way instead of hanging the suite."""

    def __init__(self, url: str, proc: subprocess.Popen | None = None, log: Path | None = None,
                 timeout: float = CALL_TIMEOUT_S, **kwargs):
        from gradio_client import Client

        self.proc, self.log, self.timeout = proc, log, timeout
        self._check("connecting")
        self.client = Client(url, verbose=False, httpx_kwargs={"timeout": 30}, **kwargs)

    def __getattr__(self, name):  # view_api, endpoints ... of the wrapped client
        return getattr(self.client, name)

    def _check(self, what: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"the app died ({_exit(self.proc.returncode)}) while {what}; its log ends:\n"
                        f"{log_tail(self.log)}", pytrace=False)

    def _dump_threads(self) -> None:
        """Ask a stuck app for every thread's stack (webui.commands registers SIGUSR1 with faulthandler); it
        lands in the app's log, whose tail the failure shows."""
        if self.proc is not None and self.proc.poll() is None and hasattr(signal, "SIGUSR1"):
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)

    def wait(self, job, timeout: float | None = None, what: str = "waiting for a reply"):
        """Block until ``job`` is done (bounded), checking the server every 0.2 s."""
        import concurrent.futures

        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                return job.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                self._check(what)
                if time.monotonic() > deadline:
                    job.cancel()
                    self._dump_threads()
                    pytest.fail(f"no answer within {timeout or self.timeout:.0f} s while {what}; the app's log "
                                f"ends (with every thread's stack):\n{log_tail(self.log, 20000)}", pytrace=False)

    def predict(self, *args, api_name: str, timeout: float | None = None):
        job = self.client.submit(*args, api_name=api_name)
        return self.wait(job, timeout, f"calling {api_name}")

    def submit(self, *args, api_name: str):
        return self.client.submit(*args, api_name=api_name)

    def stream(self, *args, api_name: str, timeout: float | None = None) -> tuple[list, object]:
        """(every streamed output, the final result) of one call."""
        job = self.client.submit(*args, api_name=api_name)
        final = self.wait(job, timeout, f"streaming {api_name}")
        return list(job.outputs()), final


def _exit(code: int | None) -> str:
    import signal

    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


@contextlib.contextmanager
def app_server(tmp_path: Path, *extra: str, env: dict | None = None):
    """The real app (`quimbot app`) in a subprocess on a free port, with its own database."""
    port = free_port()
    db = tmp_path / "app.db"
    env = {**os.environ, "QUIMBOT_DB": str(db), "QUIMBOT_RUNS_DIR": str(tmp_path / "runs"),
           "QUIMBOT_EXPORTS_DIR": str(tmp_path / "exports"), **(env or {})}
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "quimbot.cli", "app", "--port", str(port), "--preload", *extra]
    with serve_subprocess(cmd, url, tmp_path / "app.log", env) as proc:
        info = {"url": url, "db": db, "proc": proc, "log": tmp_path / "app.log", "port": port, "env": env,
                "cmd": cmd}
        info["client"] = lambda path="", **kw: BoundedClient(url + path, proc, tmp_path / "app.log", **kw)
        yield info


@pytest.fixture
def running_app(tmp_path: Path):
    with app_server(tmp_path) as app:
        yield app


def labelled_spans(tokenizer, ids, labels) -> list[str]:
    """The decoded runs of tokens that carry a loss label (the trained replies), checking label == token."""
    spans, current = [], []
    for token, label in zip(ids, labels):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans
