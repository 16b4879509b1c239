"""Engine servers in their own processes, started and supervised by the app.

The app serves GGUF models through llama.cpp's own ``llama-server`` (parallel slots with continuous
batching, a unified KV cache, a prompt cache per slot, LoRA chosen per request), or, by configuration
alone, through vLLM's OpenAI-compatible server on a GPU. A server that crashes (SIGILL, SIGKILL, out
of memory) takes only itself down: the reply in flight fails with a clear message, and the next
request starts a fresh server.

One ``EngineServer`` is one child process; the ``Supervisor`` keeps one per distinct command (model +
LoRA set) and replaces a dead or hung one. Everything here has a bound: start-up, health checks,
stopping.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.errors import BackendError
from tutor.llama_build import stop_process

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the engine gets SIGKILL when the app dies, even by kill -9, so no server outlives it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


# Linux delivers the parent-death signal when the *thread* that forked exits, so every engine is
# spawned from this one long-lived thread, never from a request's worker thread.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quimbot-engine-spawner")


def spawn(argv: list[str], log_path: Path) -> subprocess.Popen:
    def start() -> subprocess.Popen:
        with open(log_path, "ab") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    return _spawner.submit(start).result(timeout=60)


@dataclass(frozen=True)
class EngineConfig:
    """How the app serves models in server processes. Set from the environment or `quimbot app` flags.

    QUIMBOT_ENGINE            llama-server (default for GGUF in the app) | in-process | vllm
    QUIMBOT_ENGINE_SLOTS      parallel sequences per server (llama-server -np; default 8)
    QUIMBOT_ENGINE_CTX        context tokens per learner (default 2048)
    QUIMBOT_ENGINE_TIMEOUT    seconds a reply may go without a new token before it fails (default 60)
    QUIMBOT_ENGINE_THREADS    CPU threads of llama-server (default: all cores)
    QUIMBOT_ENGINE_BATCH      tokens per llama-server step (-b and -ub; default 64): a small step lets a
                              new learner's prompt in between the others' decoding steps sooner
    QUIMBOT_VLLM              the vLLM command (default `vllm`), for QUIMBOT_ENGINE=vllm
    QUIMBOT_ENGINE_ARGS       more flags for the engine's command line, split as a shell would
                              (e.g. "-fa on" for llama-server, "--max-num-seqs 64" for vLLM); they come
                              last, so they override the app's own choices
    QUIMBOT_ENGINE_WEIGHTS    q8_0 (default): llama-server serves a Q4_1 or Q5_1 GGUF from a Q8_0 copy,
                              which the CPU kernels batch (tutor/weights.py); as-is: every file as it is
    """

    kind: str = "llama-server"
    slots: int = 8
    ctx_per_slot: int = 2048
    reply_timeout_s: float = 60.0
    threads: int | None = None
    batch: int = 64
    vllm_command: str = "vllm"
    extra_args: tuple[str, ...] = field(default=())
    weights: str = "q8_0"

    @classmethod
    def from_env(cls, **overrides) -> EngineConfig:
        env = os.environ
        values = dict(
            kind=env.get("QUIMBOT_ENGINE", "llama-server"),
            slots=int(env.get("QUIMBOT_ENGINE_SLOTS", "8")),
            ctx_per_slot=int(env.get("QUIMBOT_ENGINE_CTX", "2048")),
            reply_timeout_s=float(env.get("QUIMBOT_ENGINE_TIMEOUT", "60")),
            threads=int(env["QUIMBOT_ENGINE_THREADS"]) if env.get("QUIMBOT_ENGINE_THREADS") else None,
            batch=int(env.get("QUIMBOT_ENGINE_BATCH", "64")),
            vllm_command=env.get("QUIMBOT_VLLM", "vllm"),
            extra_args=engine_args(env.get("QUIMBOT_ENGINE_ARGS", "")),
            weights=env.get("QUIMBOT_ENGINE_WEIGHTS", "q8_0").strip().lower() or "q8_0",
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        if config.kind not in ("llama-server", "in-process", "vllm"):
            raise BackendError(f"QUIMBOT_ENGINE={config.kind!r} is not an engine; use llama-server, in-process or vllm.")
        if not 1 <= config.slots <= 64 or not 256 <= config.ctx_per_slot <= 32768:
            raise BackendError("The engine needs 1-64 slots and 256-32768 context tokens per slot.")
        if not 16 <= config.batch <= 8192:
            raise BackendError(f"QUIMBOT_ENGINE_BATCH={config.batch} is out of range; use 16-8192 tokens per step.")
        if config.weights not in ("q8_0", "as-is"):
            raise BackendError(f"QUIMBOT_ENGINE_WEIGHTS={config.weights!r} is not a choice; use q8_0 (the default: "
                               "a Q4_1 or Q5_1 GGUF is served from a Q8_0 copy, which the CPU kernels batch) or as-is.")
        return config


# Flags the app sets itself and supervises: another value would break its health checks and requests.
OWNED_FLAGS = frozenset({"-m", "--model", "--host", "--port", "--api-key", "--api-key-file"})


def engine_args(text: str) -> tuple[str, ...]:
    """QUIMBOT_ENGINE_ARGS split as a shell would; a clear error for unbalanced quotes or a flag the app owns."""
    try:
        args = tuple(shlex.split(text))
    except ValueError as exc:
        raise BackendError(f"QUIMBOT_ENGINE_ARGS={text!r} cannot be split into flags: {exc}.") from exc
    owned = sorted({a.split("=", 1)[0] for a in args} & OWNED_FLAGS)
    if owned:
        raise BackendError(f"QUIMBOT_ENGINE_ARGS sets {', '.join(owned)}, which the app sets itself "
                           "(the model is chosen in the app, host and port by the supervisor, "
                           "and its requests carry no API key).")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class EngineServer:
    """One engine process on a loopback port. ``start()`` returns once ``/health`` answers 200."""

    def __init__(self, name: str, command: Callable[[int], list[str]], log_dir: Path,
                 start_timeout: float = START_TIMEOUT_S):
        self.name = name
        self._command = command
        self.port = free_port()
        self.argv = command(self.port)
        self.base_url = f"http://127.0.0.1:{self.port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=log_dir)
        os.close(fd)
        self.log_path = Path(path)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.active = 0  # requests in flight, for draining before a replacement stops it
        self.lock = threading.Lock()

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def start(self) -> EngineServer:
        try:
            self.proc = spawn(self.argv, self.log_path)
        except OSError as exc:
            raise BackendError(f"Cannot start the engine ({self.argv[0]}): {exc.strerror}.") from exc
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BackendError(f"The engine {self.name} did not start ({exit_reason(self.proc.returncode)}). "
                                   f"Its log ends:\n{self.log_tail()}")
            if self.healthy(timeout=2.0):
                return self
            time.sleep(0.2)
        self.stop()
        raise BackendError(f"The engine {self.name} did not answer within {self.start_timeout:.0f} s of starting. "
                           f"Its log ends:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, timeout: float = 2.0) -> bool:
        if not self.alive():
            return False
        try:
            return httpx.get(f"{self.base_url}/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, STOP_TIMEOUT_S)

    def describe_failure(self) -> str:
        """Why the process is gone or not answering, for a message in the chat."""
        if self.proc is not None and self.proc.poll() is not None:
            return exit_reason(self.proc.returncode)
        return "not answering"


class Supervisor:
    """Starts engine servers on demand, one per key, and replaces any that died or hung.
    Thread-safe: concurrent sessions asking for the same model start it once."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self._servers: dict[str, EngineServer] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.restarts: dict[str, int] = {}
        atexit.register(self.close)

    def server(self, key: str, name: str, command: Callable[[int], list[str]]) -> EngineServer:
        """The running server for ``key``, started (or restarted) with ``command`` when needed."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            current = self._servers.get(key)
            if current is not None and current.alive():
                return current
            if current is not None:
                self.restarts[key] = self.restarts.get(key, 0) + 1
                current.stop()
            fresh = EngineServer(name, command, self.log_dir).start()
            with self._lock:
                self._servers[key] = fresh
            return fresh

    def replace(self, key: str, name: str, command: Callable[[int], list[str]]) -> EngineServer:
        """Start a new server for ``key`` with another command (e.g. one more LoRA), switch new
        requests to it, and stop the old one once its requests in flight have finished."""
        fresh = EngineServer(name, command, self.log_dir).start()
        with self._lock:
            old = self._servers.get(key)
            self._servers[key] = fresh
        if old is not None:
            threading.Thread(target=self._drain, args=(old,), daemon=True).start()
        return fresh

    @staticmethod
    def _drain(server: EngineServer, limit_s: float = 300.0) -> None:
        deadline = time.monotonic() + limit_s
        while server.active > 0 and time.monotonic() < deadline and server.alive():
            time.sleep(0.2)
        server.stop()

    def failed(self, server: EngineServer) -> str:
        """Called when a request to ``server`` failed: stop it if it is dead or hung, so that the next
        request starts a fresh one. Returns why it failed, for the learner's message."""
        if server.proc is not None:
            try:  # a process that was just killed may not have been reaped yet: give it a moment
                server.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        if server.alive() and server.healthy(timeout=3.0):
            return "answering again"
        reason = server.describe_failure()
        server.stop()
        return reason

    def pids(self) -> list[int]:
        with self._lock:
            return [s.proc.pid for s in self._servers.values() if s.proc is not None and s.alive()]

    def close(self) -> None:
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            clean = server.alive()
            server.stop()
            if clean:  # a server that ran to the end leaves no log; a crashed one keeps it for reading
                server.log_path.unlink(missing_ok=True)


_supervisors: dict[Path, Supervisor] = {}
_supervisors_lock = threading.Lock()


def supervisor_for(log_dir: Path) -> Supervisor:
    """One supervisor per log folder (in practice: per app process)."""
    key = Path(log_dir).resolve()
    with _supervisors_lock:
        if key not in _supervisors:
            _supervisors[key] = Supervisor(key)
        return _supervisors[key]
