"""What a run records about itself: datasets (sha256), row-hash digests, git state, library versions,
and the provenance file of every checkpoint (``quimbot-provenance.json``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

from core.files import file_sha256

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_state() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("quimbot", "torch", "transformers", "peft", "trl", "datasets", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def dataset_info(paths: list[str]) -> list[dict[str, Any]]:
    return [{"path": str(Path(p).resolve()), "sha256": file_sha256(p), "bytes": Path(p).stat().st_size}
            for p in paths]


def hashes_digest(hashes) -> str:
    return "sha256:" + hashlib.sha256("\n".join(sorted(set(hashes))).encode()).hexdigest()


def bundled_source(path: str) -> dict | None:
    source = Path(path) / "quimbot-source.json"
    return json.loads(source.read_text()) if source.is_file() else None


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def checkpoint_provenance(ckpt: Path, state, info: dict[str, Any]) -> dict[str, Any]:
    """The provenance of a checkpoint just saved: its step (of the trainer ``state``), the last
    logged loss, and the run's ``info`` (config, datasets, base model, git, versions)."""
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    return {"quimbot_provenance": 1, "step": state.global_step, "max_steps": state.max_steps,
            "epoch": state.epoch, "final": state.global_step >= state.max_steps,
            "checkpoint": str(ckpt.resolve()), "time": utc_now(),
            "last_logged_loss": losses[-1] if losses else None, **info}
