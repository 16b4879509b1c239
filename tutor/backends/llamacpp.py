"""GGUF files through llama-cpp-python: the bundled default model and any exported GGUF."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from core.errors import BackendError, ModelSpecError
from tutor.backends.base import Backend, Chunk, GenerationOptions, Message
from tutor.config import Settings
from tutor.models import default_gguf_path
from tutor.specs import ModelSpec

DEFAULT_N_CTX = 2048


def resolve_gguf(target: str) -> Path:
    if target in ("default", "smollm2"):
        return default_gguf_path()
    path = Path(target).expanduser()
    if not path.exists():
        raise ModelSpecError(f"GGUF file not found: {path}. Check the path, or pick a model from the list.")
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) != 1:
            raise ModelSpecError(f"{path} is a folder with {len(found)} .gguf files; name one file.")
        path = found[0]
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelSpecError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes).")
    return path


class LlamaCppBackend(Backend):
    """Options in the spec: ``n_ctx`` (context tokens, default 2048), ``n_threads``, and ``lora``: a GGUF
    LoRA (``quimbot export lora``) applied on top, e.g. ``gguf:default?lora=exports/r-checkpoint-80/adapter-f16.lora.gguf``."""

    engine = "gguf"

    def __init__(self, spec: ModelSpec, settings: Settings):
        super().__init__(spec, settings)
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.path = resolve_gguf(spec.target)
        try:
            n_ctx = int(spec.get("n_ctx", DEFAULT_N_CTX))
            n_threads = int(spec.get("n_threads", os.cpu_count() or 2))
        except ValueError as exc:
            raise ModelSpecError(f"Spec {spec}: n_ctx and n_threads must be whole numbers.") from exc
        lora = spec.get("lora")
        self.lora = resolve_gguf(lora) if lora else None
        try:
            self.llm = Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=n_threads, verbose=False,
                             lora_path=str(self.lora) if self.lora else None)
        except Exception as exc:  # llama-cpp raises ValueError/RuntimeError with little detail
            raise BackendError(f"llama-cpp could not load {self.path}: {exc}") from exc
        self._lock = threading.Lock()
        template = self.llm.metadata.get("tokenizer.chat_template")
        self._formatter = None
        if template:
            vocab = self.llm._model
            eos = vocab.token_get_text(self.llm.token_eos()) if self.llm.token_eos() >= 0 else ""
            bos = vocab.token_get_text(self.llm.token_bos()) if self.llm.token_bos() >= 0 else ""
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)

    @property
    def checkpoint(self) -> str:
        return f"{self.path} + {self.lora}" if self.lora else str(self.path)

    @property
    def context_length(self) -> int:
        return self.llm.n_ctx()

    def count_tokens(self, messages: list[Message]) -> int | None:
        if self._formatter is None:
            text = "\n".join(m["content"] for m in messages)
            return len(self.llm.tokenize(text.encode("utf-8"), add_bos=True))
        prompt = self._formatter(messages=messages).prompt
        return len(self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

    def stream(self, messages: list[Message], options: GenerationOptions) -> Iterator[Chunk]:
        with self._lock:
            if self.llm is None:
                raise BackendError("This model was unloaded; pick it again to reload it.")
            try:
                pieces = self.llm.create_chat_completion(
                    messages=messages,
                    temperature=options.temperature,
                    top_p=options.top_p,
                    max_tokens=options.max_tokens,
                    seed=options.seed,
                    stop=options.stop or None,
                    stream=True,
                )
                produced: list[str] = []
                finish = None
                for piece in pieces:
                    choice = piece["choices"][0]
                    text = choice.get("delta", {}).get("content") or ""
                    finish = choice.get("finish_reason") or finish
                    if text:
                        produced.append(text)
                        yield Chunk(text=text)
            except BackendError:
                raise
            except Exception as exc:
                raise BackendError(f"llama-cpp failed while generating: {exc}") from exc
            reply = "".join(produced)
            completion_tokens = len(self.llm.tokenize(reply.encode("utf-8"), add_bos=False)) if reply else 0
            yield Chunk(completion_tokens=completion_tokens, finish_reason=finish)

    def close(self) -> None:
        with self._lock:
            if self.llm is not None:
                self.llm.close()
                self.llm = None
