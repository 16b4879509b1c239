"""One backend interface, several engines, chosen by a spec string through a registry."""

from tutor.backends.base import Backend, Chunk, GenerationOptions, Message
from tutor.backends.registry import BACKENDS, BackendPool, load_backend, register_backend

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendPool",
    "Chunk",
    "GenerationOptions",
    "Message",
    "load_backend",
    "register_backend",
]
