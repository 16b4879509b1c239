"""A model behind an Ollama server, through the official ``ollama`` client.

    ollama:llama3.2                               server at $OLLAMA_HOST or http://127.0.0.1:11434
    ollama:qwen3:8b?host=http://10.0.0.5:11434&timeout=60
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from core.errors import BackendError, ModelSpecError
from tutor.backends.base import Backend, Chunk, GenerationOptions, Message
from tutor.config import Settings
from tutor.specs import ModelSpec

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
        self.timeout = timeout
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
        done = False
        try:
            for part in self.client.chat(model=self.spec.target, messages=messages, stream=True, options=opts):
                text = part.message.content if part.message else ""
                if text:
                    yield Chunk(text=text)
                if part.done:
                    done = True
                    yield Chunk(
                        prompt_tokens=part.prompt_eval_count,
                        completion_tokens=part.eval_count,
                        finish_reason=part.done_reason or "stop",
                    )
        except ollama.ResponseError as exc:
            detail = str(exc.error).strip().rstrip(".")
            if exc.status_code < 0:  # an {"error": ...} line inside a 200 stream
                raise BackendError(f"Ollama at {self.host} reported an error during the reply: {detail}.") from exc
            hint = f" Is the model pulled? Run `ollama pull {self.spec.target}`." if exc.status_code == 404 else ""
            raise BackendError(f"Ollama at {self.host} answered {exc.status_code}: {detail}.{hint}",
                               status=exc.status_code) from exc
        except (ConnectionError, httpx.ConnectError) as exc:
            raise BackendError(f"Cannot reach Ollama at {self.host}: is `ollama serve` running?") from exc
        except httpx.TimeoutException as exc:
            raise BackendError(
                f"Ollama at {self.host} did not answer in time (waited {self.timeout:g} s; a slow model "
                "may need a larger timeout=SECONDS in the model spec)."
            ) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise BackendError(
                f"The connection to Ollama at {self.host} was lost before the reply finished ({exc})."
            ) from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise BackendError(f"Ollama at {self.host} sent a broken answer: {exc}") from exc
        if not done:
            raise BackendError(
                f"Ollama at {self.host} stopped the reply before it finished (no final 'done' message)."
            )

    def close(self) -> None:
        inner = getattr(self.client, "_client", None)
        if inner is not None:
            inner.close()
