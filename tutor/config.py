"""Where Quimbot keeps things. Every path can be set by an environment variable or a CLI flag;
the defaults are relative to the directory Quimbot is started from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


@dataclass
class Settings:
    """Resolved locations and app options.

    QUIMBOT_DB           SQLite conversation log        (default ./var/quimbot.db)
    QUIMBOT_RUNS_DIR     training runs / checkpoints    (default ./runs)
    QUIMBOT_EXPORTS_DIR  exported GGUF files, datasets  (default ./exports)
    QUIMBOT_CACHE_DIR    converted model cache          (default ~/.cache/quimbot)
    QUIMBOT_MODELS       extra model specs for the picker, separated by commas
    """

    db_path: Path = field(default_factory=lambda: _env_path("QUIMBOT_DB", Path("var/quimbot.db")))
    runs_dir: Path = field(default_factory=lambda: _env_path("QUIMBOT_RUNS_DIR", Path("runs")))
    exports_dir: Path = field(default_factory=lambda: _env_path("QUIMBOT_EXPORTS_DIR", Path("exports")))
    cache_dir: Path = field(
        default_factory=lambda: _env_path("QUIMBOT_CACHE_DIR", Path.home() / ".cache" / "quimbot")
    )
    extra_models: list[str] = field(
        default_factory=lambda: [
            s.strip() for s in os.environ.get("QUIMBOT_MODELS", "").split(",") if s.strip()
        ]
    )
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT


LOCAL_NAMES = {"localhost", "ip6-localhost"}


def is_local(host: str) -> bool:
    """True when only this machine can reach the address (loopback)."""
    import ipaddress

    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
