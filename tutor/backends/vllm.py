"""``hf:`` checkpoints through one supervised vLLM server, for a GPU machine (``QUIMBOT_ENGINE=vllm``).

The same supervision that runs llama-server starts ``vllm serve BASE --enable-lora`` with every
training checkpoint of that base under the runs folder as a LoRA module, so one GPU server serves
many learners and every checkpoint of a run: vLLM batches requests for different adapters together.
A checkpoint that appears later (a new training step) starts a server that holds it too; the old
one stops once its replies have finished.

    QUIMBOT_ENGINE=vllm quimbot app --host 0.0.0.0          (QUIMBOT_VLLM names the vllm command)
"""

from __future__ import annotations

import json
import re
import shlex
import threading
from collections.abc import Iterator
from pathlib import Path

from core.errors import BackendError
from tutor.backends.base import Chunk, GenerationOptions, Message
from tutor.backends.hf import split_adapter
from tutor.backends.openai_compat import OpenAICompatBackend
from tutor.checkpoints import list_checkpoints
from tutor.config import Settings
from tutor.engine import EngineConfig, EngineServer, supervisor_for
from tutor.specs import ModelSpec

MAX_LORA_RANK = 64
_lock = threading.Lock()


def module_name(adapter: Path, runs_dir: Path) -> str:
    """A stable LoRA module name for vLLM: the checkpoint's path under the runs folder."""
    try:
        rel = adapter.resolve().relative_to(Path(runs_dir).resolve())
    except ValueError:
        rel = Path(adapter.name)
    return re.sub(r"[^A-Za-z0-9._/-]", "_", str(rel))


def run_adapters(base: str, settings: Settings) -> dict[str, Path]:
    """Every checkpoint the picker offers (tutor.checkpoints) whose recorded base model is ``base``."""
    found: dict[str, Path] = {}
    runs = Path(settings.runs_dir)
    for folder in list_checkpoints(runs):
        try:
            if split_adapter(ModelSpec("hf", str(folder)), settings)[0] == base:
                found[module_name(folder, runs)] = folder
        except Exception:  # noqa: BLE001 - a broken checkpoint must not stop the others being served
            continue
    return found


def lora_rank(folders) -> int:
    ranks = [json.loads((Path(f) / "adapter_config.json").read_text()).get("r", 16) for f in folders]
    return max([16, *ranks])


def vllm_command(config: EngineConfig, base: str, adapters: dict[str, Path]):
    def argv(port: int) -> list[str]:
        args = [*shlex.split(config.vllm_command), "serve", base, "--host", "127.0.0.1", "--port", str(port),
                "--served-model-name", "base", "--max-model-len", str(config.ctx_per_slot),
                "--max-num-seqs", str(config.slots)]
        if adapters:
            args += ["--enable-lora", "--max-loras", str(min(len(adapters), 8)),
                     "--max-lora-rank", str(min(lora_rank(adapters.values()), MAX_LORA_RANK)), "--lora-modules",
                     *[f"{name}={path}" for name, path in adapters.items()]]
        return [*args, *config.extra_args]
    return argv


class VLLMBackend(OpenAICompatBackend):
    """An ``hf:`` spec (base model, or base + adapter) answered by the supervised vLLM server."""

    engine = "hf"

    def __init__(self, spec: ModelSpec, settings: Settings):
        self.spec, self.settings = spec, settings
        self.config = getattr(settings, "engine", None) or EngineConfig.from_env(kind="vllm")
        self.base, adapter = split_adapter(spec, settings)
        self.adapter = Path(adapter) if adapter else None
        self.supervisor = supervisor_for(Path(settings.db_path).parent / "engine-logs")
        self.key = f"vllm:{self.base}"
        self.timeout = self.config.reply_timeout_s
        self.base_url = "vLLM"
        self.model = module_name(self.adapter, Path(settings.runs_dir)) if self.adapter else "base"
        self.server = self._server()

    def _server(self) -> EngineServer:
        with _lock:
            adapters = run_adapters(self.base, self.settings)
            if self.adapter is not None:
                adapters.setdefault(self.model, self.adapter)
            server = self.supervisor.server(self.key, "vllm", vllm_command(self.config, self.base, adapters))
            if not hasattr(server, "adapters"):
                server.adapters = adapters
            if self.adapter is not None and self.model not in server.adapters:
                adapters = {**server.adapters, self.model: self.adapter}
                server = self.supervisor.replace(self.key, "vllm", vllm_command(self.config, self.base, adapters))
                server.adapters = adapters
            return server

    @property
    def checkpoint(self) -> str:
        return str(self.adapter) if self.adapter else self.base

    def stream(self, messages: list[Message], options: GenerationOptions) -> Iterator[Chunk]:
        import openai

        server = self.server
        if not server.alive() or self.supervisor._servers.get(self.key) is not server:
            self.server = server = self._server()
        client = getattr(server, "client", None)
        if client is None:
            client = server.client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="not-needed",
                                                   max_retries=0, timeout=openai.Timeout(self.timeout, connect=5.0))
        with server.lock:
            server.active += 1
        try:
            yield from self._stream_openai(messages, options, client=client, model=self.model)
        except BackendError as exc:
            if exc.status is not None and exc.status < 500:
                raise
            reason = self.supervisor.failed(server)
            raise BackendError(f"The vLLM engine failed during this reply ({reason}); please send your message "
                               "again.") from exc
        finally:
            with server.lock:
                server.active -= 1

    def close(self) -> None:
        """The server is shared by every checkpoint of this base; the supervisor stops it."""
