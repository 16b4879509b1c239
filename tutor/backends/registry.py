"""Backends are chosen by the engine part of a spec string through this registry."""

from __future__ import annotations

import importlib
import threading
from collections import OrderedDict

from core.errors import ModelSpecError
from tutor.backends.base import Backend
from tutor.config import Settings
from tutor.specs import ModelSpec, parse_spec

# engine name -> "module:Class"; modules are imported on first use so that the CLI starts
# quickly and an engine whose optional dependency is missing breaks only itself.
BACKENDS: dict[str, str] = {
    "gguf": "tutor.backends.llamacpp:LlamaCppBackend",
    "hf": "tutor.backends.hf:TransformersBackend",
    "ollama": "tutor.backends.ollama:OllamaBackend",
    "openai": "tutor.backends.openai_compat:OpenAICompatBackend",
    "openrouter": "tutor.backends.openai_compat:OpenAICompatBackend",
}


def register_backend(engine: str, dotted: str) -> None:
    """Add an engine: ``register_backend("myengine", "mypkg.mod:MyBackend")``."""
    BACKENDS[engine] = dotted


# What serves GGUF specs, by QUIMBOT_ENGINE: the app's default is llama-server in a supervised child process.
# (With QUIMBOT_ENGINE=vllm, GGUF specs stay on llama-server and hf: specs go to one vLLM server.)
GGUF_ENGINES = {
    "llama-server": "tutor.backends.llama_server:LlamaServerBackend",
    "in-process": "tutor.backends.llamacpp:LlamaCppBackend",
}


def configure_engine(settings: Settings, kind: str | None = None, say=None) -> str:
    """Choose the engine behind ``gguf:`` (and, for vllm, ``hf:``) specs for this process; the app
    calls this at start. Returns the engine kind in use. Without a built llama-server, GGUF models
    fall back to the in-process engine, and it says so."""
    from tutor.engine import EngineConfig

    config = EngineConfig.from_env(kind=kind)
    gguf = "in-process" if config.kind == "in-process" else "llama-server"
    if gguf == "llama-server":
        from tutor.llama_build import server_binary

        if server_binary() is None:
            if say:
                say("quimbot: llama-server is not built (run `bash scripts/setup.sh`); serving GGUF models "
                    "in-process instead, one reply at a time")
            gguf = "in-process"
    register_backend("gguf", GGUF_ENGINES[gguf])
    if config.kind == "vllm":
        register_backend("hf", "tutor.backends.vllm:VLLMBackend")
    settings.engine = config
    return config.kind if config.kind == "vllm" else gguf


def backend_class(engine: str) -> type[Backend]:
    try:
        dotted = BACKENDS[engine]
    except KeyError:
        raise ModelSpecError(
            f"Unknown engine {engine!r}. Known engines: {', '.join(sorted(BACKENDS))}."
        ) from None
    module_name, _, class_name = dotted.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def load_backend(spec: str | ModelSpec, settings: Settings) -> Backend:
    """Build the backend a spec names. Raises ModelSpecError or BackendError with a fix."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    return backend_class(parsed.engine)(parsed, settings)


class BackendPool:
    """Keeps the most recently used backends loaded, so a chat does not reload its model
    on every message. Thread-safe; loading happens at most once per spec at a time."""

    def __init__(self, settings: Settings, max_loaded: int = 2):
        self.settings = settings
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, Backend] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: str | ModelSpec) -> Backend:
        parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
        key = str(parsed)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            backend = load_backend(parsed, self.settings)
            self._loaded[key] = backend
            while len(self._loaded) > self.max_loaded:
                _, old = self._loaded.popitem(last=False)
                old.close()
            return backend

    def close(self) -> None:
        with self._lock:
            for backend in self._loaded.values():
                backend.close()
            self._loaded.clear()
