"""Model spec strings: one string names a model and the engine that serves it.

    ENGINE:TARGET[?key=value&key=value]

    default                                   the bundled SmolLM2-135M-Instruct GGUF (llama-cpp)
    gguf:exports/tutor-q8_0.gguf              any GGUF file through llama-cpp
    hf:default                                the bundled weights through transformers
    hf:default?adapter=runs/stage1/checkpoint-50   ... plus a PEFT LoRA adapter (any training step)
    hf:runs/stage1/checkpoint-50              an adapter directory; the base comes from its config
    ollama:llama3.2?host=http://127.0.0.1:11434
    openai:my-model?base_url=http://127.0.0.1:8000/v1
    openrouter:meta-llama/llama-3.1-8b-instruct   (OpenAI-compatible, key from OPENROUTER_API_KEY)

A bare path also works: a ``.gguf`` file means ``gguf:PATH``, a directory holding
``adapter_config.json`` means ``hf:PATH``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

from core.errors import ModelSpecError
from tutor.checkpoints import is_adapter

# The longest spec string accepted anywhere (a spec with a long checkpoint path still fits);
# checked before anything else, so a huge string costs nothing and is never stored.
MAX_SPEC_CHARS = 512
# ``api_key_env`` may name only a variable meant for a key (OPENAI_API_KEY, MY_TUTOR_KEY), never
# an arbitrary server variable (HOME, PATH, DATABASE_URL) that would be sent as a bearer token.
KEY_VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*_KEY$")

ALIASES = {"default": "gguf:default", "smollm2": "gguf:default"}
ENGINE_ALIASES = {"transformers": "hf", "llamacpp": "gguf", "llama-cpp": "gguf"}


@dataclass(frozen=True)
class ModelSpec:
    engine: str
    target: str
    params: tuple[tuple[str, str], ...] = field(default=())

    @property
    def options(self) -> dict[str, str]:
        return dict(self.params)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def __str__(self) -> str:
        text = f"{self.engine}:{self.target}"
        if self.params:
            text += "?" + "&".join(
                f"{quote(k, safe='')}={quote(v, safe='/:.-_~')}" for k, v in self.params
            )
        return text


def parse_spec(text: str) -> ModelSpec:
    """Parse a model spec string; raise ModelSpecError with an example when it is malformed."""
    if text is None or not str(text).strip():
        raise ModelSpecError("No model spec given. Try 'default', 'gguf:PATH', 'hf:default' or 'ollama:NAME'.")
    raw = str(text).strip()
    if len(raw) > MAX_SPEC_CHARS:
        raise ModelSpecError(f"Model spec is {len(raw):,} characters long; the limit is {MAX_SPEC_CHARS}.")
    raw = ALIASES.get(raw, raw)
    engine, sep, rest = raw.partition(":")
    if not sep or "/" in engine or "." in engine or not engine:
        return _parse_bare_path(raw)
    engine = ENGINE_ALIASES.get(engine.lower(), engine.lower())
    target, _, query = rest.partition("?")
    if not target:
        raise ModelSpecError(f"Model spec {text!r} names no model after '{engine}:'.")
    try:
        params = tuple(sorted(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))))
    except ValueError as exc:
        raise ModelSpecError(
            f"Model spec {text!r} has a malformed option list after '?': use key=value&key=value."
        ) from exc
    spec = ModelSpec(engine, target, params)
    check_api_key_env(spec)
    return spec


def check_api_key_env(spec: ModelSpec) -> None:
    """Refuse an ``api_key_env`` that does not name a key variable (``*_KEY``, e.g. OPENAI_API_KEY)."""
    name = spec.get("api_key_env")
    if name is not None and not KEY_VARIABLE.match(name):
        raise ModelSpecError(f"api_key_env={name!r} is not a key variable: it must name a variable ending in "
                             "_KEY (for example OPENAI_API_KEY).")


def _parse_bare_path(raw: str) -> ModelSpec:
    path = Path(raw).expanduser()
    if raw.endswith(".gguf"):
        return ModelSpec("gguf", raw)
    if is_adapter(path):
        return ModelSpec("hf", raw)
    raise ModelSpecError(
        f"Cannot tell which engine serves {raw!r}. Write ENGINE:TARGET, for example "
        "'default', 'gguf:exports/model.gguf', 'hf:default?adapter=runs/x/checkpoint-50', "
        "'ollama:llama3.2' or 'openai:MODEL?base_url=http://127.0.0.1:8000/v1'."
    )


# -- what a spec typed in the app may ask for ------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """An option's allowed values: whole numbers or numbers in [low, high], or one of ``choices``;
    ``kind="text"`` is any short value that other checks look at (paths, URLs)."""

    kind: str  # int | float | choice | text
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, key: str, value: str) -> None:
        if self.kind == "choice":
            if value not in self.choices:
                raise ModelSpecError(f"Option {key}={value!r} is not allowed; use one of {', '.join(self.choices)}.")
            return
        if self.kind == "text":
            return
        try:
            number = int(value) if self.kind == "int" else float(value)
        except ValueError:
            raise ModelSpecError(f"Option {key}={value!r} must be a {'whole ' if self.kind == 'int' else ''}"
                                 "number.") from None
        if not (self.low <= number <= self.high):
            raise ModelSpecError(f"Option {key}={value} is out of bounds: it must be between {self.low:g} and "
                                 f"{self.high:g}.")


# Contexts and threads bound what one learner's spec can make the server allocate: at most 8,192
# tokens of context (SmolLM2's training context; n_ctx=65,536 took the server from 0.4 to 2 GB) and
# no more threads than cores. Remote calls: at most 10 minutes and 5 retries.
MAX_UI_N_CTX = 8192
OPTION_BOUNDS: dict[str, dict[str, Bound]] = {
    "gguf": {"n_ctx": Bound("int", 256, MAX_UI_N_CTX), "n_threads": Bound("int", 1, os.cpu_count() or 1),
             "lora": Bound("text")},
    "hf": {"adapter": Bound("text"), "device": Bound("choice", choices=("cpu", "cuda", "cuda:0", "mps")),
           "dtype": Bound("choice", choices=("float32", "bfloat16", "float16"))},
    "ollama": {"host": Bound("text"), "timeout": Bound("float", 1, 600)},
    "openai": {"base_url": Bound("text"), "api_key_env": Bound("text"), "timeout": Bound("float", 1, 600),
               "retries": Bound("int", 0, 5)},
}
OPTION_BOUNDS["openrouter"] = OPTION_BOUNDS["openai"]


def check_option_bounds(spec: ModelSpec, bounds: dict[str, dict[str, Bound]] | None = None) -> None:
    """Refuse options an engine does not know and values outside their bounds. An engine with no
    entry in ``bounds`` takes no options from the app."""
    table = (OPTION_BOUNDS if bounds is None else bounds).get(spec.engine, {})
    for key, value in spec.params:
        if key not in table:
            known = ", ".join(sorted(table)) or "none"
            raise ModelSpecError(f"Option {key!r} is not one the app accepts for {spec.engine}: models "
                                 f"(accepted: {known}). Pick a model from the list.")
        table[key].check(key, value)


def url_host(url: str | None) -> str | None:
    """The lower-case host name of a URL (None when there is none)."""
    if not url:
        return None
    try:
        return (urlsplit(url if "//" in url else "//" + url).hostname or "").lower() or None
    except ValueError:
        return None


def api_key_host(spec: ModelSpec) -> str | None:
    """The host an OpenAI-compatible spec would send its API key to (the backend's defaults:
    OpenRouter, $OPENAI_BASE_URL, or 127.0.0.1)."""
    if spec.engine not in ("openai", "openrouter"):
        return None
    default = ("https://openrouter.ai/api/v1" if spec.engine == "openrouter"
               else os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"))
    return url_host(spec.get("base_url") or default)


def key_hosts(listed: list[ModelSpec]) -> set[str]:
    """Hosts that may receive an API key: those of the listed (operator-chosen) specs and of the
    backends' defaults."""
    hosts = {url_host("https://openrouter.ai/api/v1"),
             url_host(os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"))}
    hosts |= {api_key_host(s) for s in listed}
    return {h for h in hosts if h}


def check_api_key_destination(spec: ModelSpec, allowed_hosts: set[str]) -> None:
    """Refuse a spec that would send an API key to a host not in ``allowed_hosts``."""
    host = api_key_host(spec)
    if host is not None and host not in allowed_hosts:
        raise ModelSpecError(f"{spec.engine}: servers typed in the app get an API key, so they must be on a host "
                             f"of the model list ({', '.join(sorted(allowed_hosts))}); {host} is not. Add the "
                             "model with --extra-model or QUIMBOT_MODELS.")
