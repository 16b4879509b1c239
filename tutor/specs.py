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

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote

from .errors import ModelSpecError

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
    return ModelSpec(engine, target, params)


def _parse_bare_path(raw: str) -> ModelSpec:
    path = Path(raw).expanduser()
    if raw.endswith(".gguf"):
        return ModelSpec("gguf", raw)
    if path.is_dir() and (path / "adapter_config.json").exists():
        return ModelSpec("hf", raw)
    raise ModelSpecError(
        f"Cannot tell which engine serves {raw!r}. Write ENGINE:TARGET, for example "
        "'default', 'gguf:exports/model.gguf', 'hf:default?adapter=runs/x/checkpoint-50', "
        "'ollama:llama3.2' or 'openai:MODEL?base_url=http://127.0.0.1:8000/v1'."
    )
