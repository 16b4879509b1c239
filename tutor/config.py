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
    QUIMBOT_ALLOWED_HOSTS  host names the app answers to besides its own address (for a reverse
                         proxy or a DNS name), separated by commas
    QUIMBOT_ALLOW_HUB    1 lets typed specs reach the Hugging Face hub (off: offline, cached only)
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
    allowed_hosts: list[str] = field(
        default_factory=lambda: [
            s.strip().lower() for s in os.environ.get("QUIMBOT_ALLOWED_HOSTS", "").split(",") if s.strip()
        ]
    )
    allow_hub: bool = field(default_factory=lambda: os.environ.get("QUIMBOT_ALLOW_HUB", "") == "1")
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT


LOCAL_NAMES = {"localhost", "ip6-localhost"}


def settings_from_args(args) -> Settings:
    """Settings with the command line's --db, --runs-dir, --exports-dir and --extra-model applied (any
    command's parsed arguments; an option the command does not have is left at its default)."""
    settings = Settings()
    for name in ("db", "runs_dir", "exports_dir"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(settings, "db_path" if name == "db" else name, value)
    for spec in getattr(args, "extra_model", None) or []:
        settings.extra_models.append(spec)
    return settings


def is_local(host: str) -> bool:
    """True when only this machine can reach the address (loopback)."""
    import ipaddress

    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# The largest request body the app reads (a learner message is at most 4,000 characters; nothing
# in the app uploads files). Larger bodies are refused before they are read.
MAX_BODY_BYTES = 64 * 1024


def allowed_host_names(settings: Settings) -> set[str] | None:
    """The host names (Host and Origin headers) the app answers to, or None for any.

    On a loopback address: the loopback names and the configured ones, so a page on another site
    cannot reach the app through DNS rebinding. Beyond localhost: the address itself and the
    configured names, or any name when it listens on all addresses and none are configured."""
    extra = {h.strip().lower().strip("[]") for h in settings.allowed_hosts if h.strip()}
    host = settings.host.strip().lower().strip("[]")
    if is_local(settings.host):
        return {"localhost", "127.0.0.1", "::1", host} | extra
    if host in ("0.0.0.0", "::", "") and not extra:
        return None
    return ({host} - {"0.0.0.0", "::", ""}) | extra
