"""A model behind an Ollama server, through the official ``ollama`` client.

    ollama:llama3.2                               server at $OLLAMA_HOST or http://127.0.0.1:11434
    ollama:qwen3:8b?host=http://10.0.0.5:11434&timeout=60
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..config import Settings
from ..errors import BackendError, ModelSpecError
from ..specs import ModelSpec
from .base import Backend, Chunk, GenerationOptions, Message

DEFAULT_HOST = "http://127.0.0.1:11434"


class OllamaBackend(Backend):
    engine = "ollama"

    def __init__(self, spec: ModelSpec, settings: Settings):
        super().__init__(spec, settings)
        import ollama

        self.host = spec.get("host") or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
        try:
            timeout = float(spec.get("timeout", "120"))
        except ValueError as exc:
            raise ModelSpecError(f"Spec {spec}: timeout must be a number of seconds.") from exc
        self.client = ollama.Client(host=self.host, timeout=timeout)

    @property
    def checkpoint(self) -> str:
        return f"{self.spec.target}@{self.host}"

    def stream(self, messages: list[Message], options: GenerationOptions) -> Iterator[Chunk]:
        import httpx
        import ollama

        opts = {"temperature": options.temperature, "top_p": options.top_p, "num_predict": options.max_tokens}
        if options.seed is not None:
            opts["seed"] = options.seed
        if options.stop:
            opts["stop"] = options.stop
        try:
            for part in self.client.chat(model=self.spec.target, messages=messages, stream=True, options=opts):
                text = part.message.content if part.message else ""
                if text:
                    yield Chunk(text=text)
                if part.done:
                    yield Chunk(
                        prompt_tokens=part.prompt_eval_count,
                        completion_tokens=part.eval_count,
                        finish_reason=part.done_reason or "stop",
                    )
        except ollama.ResponseError as exc:
            hint = " Is the model pulled (`ollama pull NAME`)?" if exc.status_code == 404 else ""
            raise BackendError(f"Ollama at {self.host} answered {exc.status_code}: {exc.error}.{hint}") from exc
        except (ConnectionError, httpx.ConnectError) as exc:
            raise BackendError(f"Cannot reach Ollama at {self.host}: is `ollama serve` running?") from exc
        except httpx.TimeoutException as exc:
            raise BackendError(f"Ollama at {self.host} did not answer in time ({exc}).") from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise BackendError(f"Ollama at {self.host} sent a broken answer: {exc}") from exc

    def close(self) -> None:
        inner = getattr(self.client, "_client", None)
        if inner is not None:
            inner.close()
