"""The model picker's list: the bundled model, every GGUF in the exports folder, every
training checkpoint (a folder with ``adapter_config.json``) in the runs folder, and extra
specs from settings. Nothing has to be registered by hand."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .config import Settings


@dataclass(frozen=True)
class ModelChoice:
    label: str
    spec: str


def _step_key(path: Path) -> tuple:
    """Sort checkpoint-50 before checkpoint-100."""
    parts = re.split(r"(\d+)", str(path))
    return tuple(int(p) if p.isdigit() else p for p in parts)


def list_models(settings: Settings) -> list[ModelChoice]:
    choices = [
        ModelChoice("SmolLM2-135M-Instruct (bundled GGUF, llama-cpp)", "default"),
        ModelChoice("SmolLM2-135M-Instruct (bundled, transformers)", "hf:default"),
    ]
    exports = Path(settings.exports_dir)
    if exports.is_dir():
        for path in sorted(exports.rglob("*.gguf"), key=_step_key):
            if path.is_file() and not path.name.startswith("."):
                choices.append(ModelChoice(f"GGUF export: {path.relative_to(exports)}", f"gguf:{path}"))
    runs = Path(settings.runs_dir)
    if runs.is_dir():
        for config in sorted(runs.rglob("adapter_config.json"), key=_step_key):
            folder = config.parent
            if folder.name.startswith("."):
                continue
            choices.append(ModelChoice(f"Checkpoint: {folder.relative_to(runs)}", f"hf:{folder}"))
    for spec in settings.extra_models:
        choices.append(ModelChoice(spec, spec))
    seen: set[str] = set()
    unique = []
    for choice in choices:
        if choice.spec not in seen:
            seen.add(choice.spec)
            unique.append(choice)
    return unique
