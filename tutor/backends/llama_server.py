"""GGUF models through llama.cpp's own ``llama-server``, in a supervised child process.

The app registers this class for the ``gguf`` engine (``register_backend``), so the specs stay the
same (``default``, ``gguf:PATH``, ``gguf:default?lora=FILE``) and only the engine behind them changes.
One server runs per base GGUF, with parallel slots (continuous batching: concurrent learners decode
together), each slot with its own share of the KV cache (a unified cache let 8 long conversations fill
it and stall one another for over a minute in the load benchmark) and a prompt cache per slot (a learner's history is not evaluated
again on every turn). GGUF LoRAs for that base are loaded into the same server with
``--lora-init-without-apply`` and chosen per request (``"lora": [{"id", "scale"}]``); picking a new
LoRA starts a server that holds it too, and the old one stops once its replies have finished.

When the server dies (a SIGILL, ``kill -9``, out of memory) or stops answering, the reply in flight
fails with a message saying so, the turn is logged as failed by the chat service, and the next
request starts a fresh server; other learners' conversations are untouched.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx

from core.errors import BackendError, ModelSpecError
from tutor.backends.base import Chunk, GenerationOptions, Message
from tutor.backends.llamacpp import resolve_gguf
from tutor.backends.openai_compat import OpenAICompatBackend
from tutor.config import Settings
from tutor.engine import EngineConfig, EngineServer, supervisor_for
from tutor.specs import ModelSpec
from tutor.weights import served_weights

_lora_lock = threading.Lock()


class SlotTable:
    """Which of a server's slots each request goes to (``id_slot``), so a conversation keeps its slot.

    llama-server alone picks a slot by the longest common prompt prefix, else the least recently used
    one. Once the session layer drops a conversation's oldest exchanges to fit the context, the new
    prompt shares only the system prompt with its own slot's cache, under the server's similarity
    threshold, so it went to another slot: the whole history was evaluated again (1,635 tokens, 6.2 s
    on 2 cores, every 4th turn) and another learner's cache was thrown away. Here a request goes back to
    the slot whose last request ended with the exchange this one continues (its previous learner
    message and the reply as sent), when that slot is free. A new conversation goes to a slot never
    used yet (not to another learner's cache), else to the free slot used longest ago among those whose
    cache starts with the same system prompt (so that is not evaluated again: 160 tokens, about 0.5 s
    here), else to the free slot used longest ago. With
    ``--cache-reuse`` the server shifts a trimmed history's KV instead of evaluating it again.
    """

    def __init__(self, slots: int):
        self.lock = threading.Lock()
        self.busy = [False] * slots
        self.last: list[tuple[str, str] | None] = [None] * slots
        self.system: list[str | None] = [None] * slots
        self.used = [0] * slots
        self.clock = 0

    @staticmethod
    def continues(messages: list[Message]) -> tuple[str, str] | None:
        """(the previous learner message, the reply to it) that ``messages`` continues, if any."""
        if len(messages) >= 3 and messages[-3].get("role") == "user" and messages[-2].get("role") == "assistant":
            return str(messages[-3].get("content")), str(messages[-2].get("content")).strip()
        return None

    def take(self, messages: list[Message]) -> int | None:
        """A free slot for this request (marked busy), or None when every slot is busy (the server queues)."""
        key = self.continues(messages)
        with self.lock:
            free = [i for i, busy in enumerate(self.busy) if not busy]
            if not free:
                return None
            mine = [i for i in free if key is not None and self.last[i] == key]
            empty = [i for i in free if self.used[i] == 0]
            same = [i for i in free if self.system[i] is not None and self.system[i] == _system(messages)]
            slot = mine[0] if mine else empty[0] if empty else min(same or free, key=lambda i: self.used[i])
            self.busy[slot] = True
            self.clock += 1
            self.used[slot] = self.clock
            return slot

    def release(self, slot: int | None, messages: list[Message], reply: str | None) -> None:
        """The request on ``slot`` ended; ``reply`` is None when it failed (its cache is then unknown)."""
        if slot is None:
            return
        with self.lock:
            self.busy[slot] = False
            self.last[slot] = (str(messages[-1].get("content")), reply.strip()) if reply is not None else None
            self.system[slot] = _system(messages) if reply is not None else None


def _system(messages: list[Message]) -> str | None:
    return str(messages[0].get("content")) if messages and messages[0].get("role") == "system" else None


def server_command(binary: Path, model: Path, loras: tuple[Path, ...], config: EngineConfig):
    def argv(port: int) -> list[str]:
        args = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                "-np", str(config.slots), "-c", str(config.slots * config.ctx_per_slot), "-no-kvu",
                "--jinja", "--no-webui", "--cache-ram", "256", "-t", str(config.threads or os.cpu_count() or 2),
                "-b", str(config.batch), "-ub", str(config.batch), "--cache-reuse", "32",
                # no flash attention: on this CPU build it costs more per token as the history grows (Q4_1,
                # 1,020 tokens: 18.5 against 12.6 ms), and the in-process engine the parity check runs has it
                # off too (llama-cpp-python's default); QUIMBOT_ENGINE_ARGS="-fa on" turns it back on
                "-fa", "off"]
        for lora in loras:
            args += ["--lora", str(lora)]
        if loras:
            args.append("--lora-init-without-apply")
        return [*args, *config.extra_args]
    return argv


def find_server_binary() -> Path:
    from tutor.llama_build import server_binary

    binary = server_binary()
    if binary is None:
        raise BackendError("llama-server is not built on this machine. Run `bash scripts/setup.sh` (it builds it "
                           "portably, about 6 minutes once; it needs cmake and a C++ compiler), or start the app "
                           "with QUIMBOT_ENGINE=in-process to serve GGUF models inside the app process.")
    if not binary.exists():
        raise BackendError(f"QUIMBOT_LLAMA_SERVER={binary} does not exist.")
    return binary


class LlamaServerBackend(OpenAICompatBackend):
    """Spec options: ``lora`` (a GGUF LoRA for the base model). Context and slots are the engine's
    (``QUIMBOT_ENGINE_CTX``, ``QUIMBOT_ENGINE_SLOTS``), the same for every learner."""

    engine = "gguf"

    def __init__(self, spec: ModelSpec, settings: Settings):
        unknown = set(spec.options) - {"lora", "n_ctx", "n_threads"}
        if unknown:
            raise ModelSpecError(f"Spec {spec}: the app's engine takes the options lora and n_ctx "
                                 f"(not {', '.join(sorted(unknown))}).")
        self.spec, self.settings = spec, settings
        self.config = getattr(settings, "engine", None) or EngineConfig.from_env()
        try:
            self.n_ctx = int(spec.get("n_ctx", self.config.ctx_per_slot))
        except ValueError as exc:
            raise ModelSpecError(f"Spec {spec}: n_ctx must be a whole number.") from exc
        if not 256 <= self.n_ctx <= self.config.ctx_per_slot:
            raise ModelSpecError(f"Spec {spec}: n_ctx must be between 256 and {self.config.ctx_per_slot}, the "
                                 "context each learner has on this server (QUIMBOT_ENGINE_CTX).")
        self.path = resolve_gguf(spec.target)
        # a Q4_1 or Q5_1 file (the bundled model) is served from a Q8_0 copy, which the CPU kernels batch
        self.served = served_weights(self.path, self.config.weights)
        lora = spec.get("lora")
        self.lora = resolve_gguf(lora) if lora else None
        self.binary = find_server_binary()
        self.supervisor = supervisor_for(Path(settings.db_path).parent / "engine-logs")
        self.key = f"llama-server:{self.path}"
        self.timeout = self.config.reply_timeout_s
        self.server = self._server()
        self.base_url = "llama-server"  # named in messages; each request goes to the live server's port

    # -- which server, with which LoRAs

    def _server(self) -> EngineServer:
        with _lora_lock:
            server = self.supervisor.server(self.key, "llama-server", self._command(self._known_loras()))
            loaded = getattr(server, "loras", ())
            if not hasattr(server, "loras"):
                server.loras = self._known_loras()
                loaded = server.loras
            if self.lora is not None and self.lora not in loaded:
                loras = (*loaded, self.lora)
                server = self.supervisor.replace(self.key, "llama-server", self._command(loras))
                server.loras = loras
            return server

    def _known_loras(self) -> tuple[Path, ...]:
        return (self.lora,) if self.lora is not None else ()

    def _command(self, loras: tuple[Path, ...]):
        return server_command(self.binary, self.served, loras, self.config)

    def _client(self, server: EngineServer):
        import openai

        return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="not-needed", max_retries=0,
                             timeout=openai.Timeout(self.timeout, connect=5.0))

    @property
    def checkpoint(self) -> str:
        return f"{self.path} + {self.lora}" if self.lora else str(self.path)

    @property
    def context_length(self) -> int:
        return self.n_ctx

    def count_tokens(self, messages: list[Message]) -> int | None:
        server = self._current()
        try:
            prompt = httpx.post(f"{server.base_url}/apply-template", json={"messages": messages},
                                timeout=10).json()["prompt"]
            tokens = httpx.post(f"{server.base_url}/tokenize",
                                json={"content": prompt, "add_special": False, "parse_special": True},
                                timeout=10).json()["tokens"]
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise BackendError(self._lost_message(server, "while counting tokens")) from exc
        return len(tokens)

    def _current(self) -> EngineServer:
        """The live server for this model: restarted when the last one died or was replaced."""
        server = self.server
        if not server.alive() or self.supervisor._servers.get(self.key) is not server:
            self.server = server = self._server()
        return server

    def _lora_field(self, server: EngineServer) -> list[dict] | None:
        loras = getattr(server, "loras", ())
        if not loras:
            return None
        return [{"id": i, "scale": 1.0 if path == self.lora else 0.0} for i, path in enumerate(loras)]

    def _lost_message(self, server: EngineServer, when: str = "during this reply") -> str:
        reason = self.supervisor.failed(server)
        if reason == "answering again":
            return (f"The tutor engine was too slow {when} (no new token for {self.timeout:g} s). "
                    "Please send your message again.")
        return (f"The tutor engine stopped {when} ({reason}). It is restarting: please send your message "
                "again in a moment.")

    def stream(self, messages: list[Message], options: GenerationOptions) -> Iterator[Chunk]:
        server = self._current()
        client = getattr(server, "client", None)
        if client is None:
            client = server.client = self._client(server)
        extra = {"cache_prompt": True}
        lora = self._lora_field(server)
        if lora is not None:
            extra["lora"] = lora
        with server.lock:
            server.active += 1
            table = getattr(server, "slot_table", None)
            if table is None:
                table = server.slot_table = SlotTable(self.config.slots)
        slot = table.take(messages)
        if slot is not None:
            extra["id_slot"] = slot
        pieces: list[str] = []
        reply = None
        try:
            finished = False
            for chunk in self._stream_openai(messages, options, extra_body=extra, client=client):
                finished = finished or chunk.finish_reason is not None
                if chunk.text:
                    pieces.append(chunk.text)
                yield chunk
            if not finished:  # the stream ended without saying why: the server went away mid-reply
                raise BackendError("the reply stream ended early")
            reply = "".join(pieces)
        except BackendError as exc:
            if exc.status is not None and exc.status < 500:
                raise
            raise BackendError(self._lost_message(server)) from exc
        finally:
            table.release(slot, messages, reply)
            with server.lock:
                server.active -= 1

    def close(self) -> None:
        """The server is shared by every backend on this base model; the supervisor stops it."""
