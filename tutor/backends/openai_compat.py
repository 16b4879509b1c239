"""Any OpenAI-compatible chat server (vLLM, llama.cpp server, OpenRouter ...).

    openai:MODEL?base_url=http://127.0.0.1:8000/v1       key from $OPENAI_API_KEY if set
    openrouter:meta-llama/llama-3.1-8b-instruct           key from $OPENROUTER_API_KEY
Options: ``base_url``, ``api_key_env`` (name of the variable holding the key), ``timeout``
(seconds, default 120), ``retries`` (default 1; never unbounded).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx

from core.errors import BackendError, ModelSpecError
from tutor.backends.base import Backend, Chunk, GenerationOptions, Message
from tutor.config import Settings
from tutor.specs import ModelSpec

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"

STATUS_HINTS = {
    401: "the API key was refused; set the variable named by api_key_env",
    402: "the account is out of credits; top it up or pick a local model",
    404: "the server does not know this model name",
    429: "the server is rate-limiting; wait a moment and try again",
}


def stream_errors() -> tuple[type[BaseException], ...]:
    """The HTTP errors a stream may raise while it is read: httpx's, and those of httpx2, which the openai
    package uses from its 3.x releases (its own wrapping covers only the request, not the reading)."""
    try:
        import httpx2
    except ImportError:
        return (httpx.HTTPError,)
    return (httpx.HTTPError, httpx2.HTTPError)


class OpenAICompatBackend(Backend):
    engine = "openai"

    def __init__(self, spec: ModelSpec, settings: Settings):
        super().__init__(spec, settings)
        import openai

        is_openrouter = spec.engine == "openrouter"
        self.base_url = spec.get("base_url") or (
            OPENROUTER_BASE_URL if is_openrouter else os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL)
        )
        key_env = spec.get("api_key_env") or ("OPENROUTER_API_KEY" if is_openrouter else "OPENAI_API_KEY")
        if not key_env.endswith("_KEY"):
            raise ModelSpecError(f"Spec {spec}: api_key_env must name a variable meant for a key (NAME_KEY), not "
                                 f"{key_env!r}: any other server variable would be sent as a bearer token.")
        from tutor.catalog import api_key_allowed

        # A key goes only to the host of a listed spec or the backend's default host, never to a typed URL.
        api_key = (os.environ.get(key_env) if api_key_allowed(spec, settings) else None) or "not-needed"
        try:
            timeout = float(spec.get("timeout", "120"))
            retries = int(spec.get("retries", "1"))
        except ValueError as exc:
            raise ModelSpecError(f"Spec {spec}: timeout must be a number, retries a whole number.") from exc
        self.timeout = timeout
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key, timeout=timeout, max_retries=max(0, min(retries, 5))
        )

    @property
    def checkpoint(self) -> str:
        return f"{self.spec.target}@{self.base_url}"

    def stream(self, messages: list[Message], options: GenerationOptions) -> Iterator[Chunk]:
        yield from self._stream_openai(messages, options)

    def _stream_openai(self, messages: list[Message], options: GenerationOptions,
                       extra_body: dict | None = None, client=None, model: str | None = None) -> Iterator[Chunk]:
        import openai

        client = client or self.client

        kwargs = dict(
            model=model or self.spec.target,
            messages=messages,
            temperature=options.temperature,
            top_p=options.top_p,
            max_tokens=options.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        if options.seed is not None:
            kwargs["seed"] = options.seed
        if options.stop:
            kwargs["stop"] = options.stop
        if extra_body:
            kwargs["extra_body"] = extra_body
        stream = None
        try:
            finish = None
            usage = None
            stream = client.chat.completions.create(**kwargs)
            for event in stream:
                if getattr(event, "usage", None):
                    usage = event.usage
                for choice in event.choices or []:
                    text = choice.delta.content if choice.delta else None
                    finish = choice.finish_reason or finish
                    if text:
                        yield Chunk(text=text)
            yield Chunk(
                prompt_tokens=getattr(usage, "prompt_tokens", None),
                completion_tokens=getattr(usage, "completion_tokens", None),
                finish_reason=finish,
            )
        except openai.APIStatusError as exc:
            hint = STATUS_HINTS.get(exc.status_code, "the server reported an error")
            if exc.status_code == 404:
                hint = f"the server does not know the model {self.spec.target!r}; check the name"
            detail = _server_message(exc)
            raise BackendError(
                f"The server at {self.base_url} answered HTTP {exc.status_code}: {hint}."
                + (f" It said: {detail}" if detail else ""), status=exc.status_code
            ) from exc
        except openai.APITimeoutError as exc:
            raise BackendError(
                f"The server at {self.base_url} did not answer in time (waited {self.timeout:g} s; a slow "
                "model may need a larger timeout=SECONDS in the model spec)."
            ) from exc
        except openai.APIConnectionError as exc:
            if stream is not None:  # the answer had started: the connection broke mid-reply
                raise BackendError(
                    f"The connection to {self.base_url} was lost before the reply finished."
                ) from exc
            raise BackendError(f"Cannot reach {self.base_url}: is the server running?") from exc
        except openai.APIResponseValidationError as exc:
            raise BackendError(f"The server at {self.base_url} sent a broken answer: {exc}") from exc
        except openai.APIError as exc:  # an error event inside a 200 stream (OpenRouter does this)
            raise BackendError(
                f"The server at {self.base_url} reported an error during the reply: {exc.message}"
            ) from exc
        except stream_errors() as exc:  # raised while reading a stream, outside the client's own wrapping
            raise BackendError(f"The connection to {self.base_url} was lost before the reply finished "
                               f"({type(exc).__name__}).") from exc
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            raise BackendError(f"The server at {self.base_url} sent a broken answer: {exc}") from exc
        finally:
            if stream is not None:
                stream.close()

    def close(self) -> None:
        self.client.close()


def _server_message(exc) -> str:
    """The error text a server put in its JSON body ({"error": {"message": ...}}), shortened."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        body = body.get("error", body)
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail") or ""
    text = " ".join(str(body or "").split())
    return text[:300] + ("..." if len(text) > 300 else "")
