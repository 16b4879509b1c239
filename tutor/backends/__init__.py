"""One backend interface, several engines, chosen by a spec string through a registry."""

from .base import Backend, Chunk, GenerationOptions, Message
from .registry import BACKENDS, BackendPool, load_backend, register_backend

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
