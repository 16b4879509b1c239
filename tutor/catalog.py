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
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.name.endswith(".lora.gguf"):  # an adapter alone: served on the bundled base
                choices.append(ModelChoice(f"GGUF LoRA on the bundled model: {path.relative_to(exports)}",
                                           f"gguf:default?lora={path}"))
            else:
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


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def check_ui_spec(spec: str, settings: Settings, local: bool) -> str:
    """A model spec typed in the UI, checked before anything is loaded: files and checkpoints
    must lie inside the configured runs and exports folders (or be the bundled model), and
    remote servers must be in the picker list unless the app only listens on this machine."""
    from .errors import ModelSpecError
    from .specs import parse_spec

    listed = {c.spec for c in list_models(settings)}
    text = (spec or "").strip()
    if text in listed:
        return text
    parsed = parse_spec(text)
    folders = [Path(settings.runs_dir), Path(settings.exports_dir)]
    paths = []
    if parsed.engine == "gguf" and parsed.target not in ("default", "smollm2"):
        paths.append(Path(parsed.target))
    if parsed.engine == "gguf" and parsed.get("lora"):
        paths.append(Path(parsed.get("lora")))
    if parsed.engine == "hf":
        if parsed.target not in ("default", "smollm2") and (("/" in parsed.target and Path(parsed.target).exists())
                                                             or parsed.target.startswith((".", "/", "~"))):
            paths.append(Path(parsed.target))
        if parsed.get("adapter"):
            paths.append(Path(parsed.get("adapter")))
    for path in paths:
        if not any(_inside(path.expanduser(), folder) for folder in folders):
            raise ModelSpecError(f"{path} is outside the runs and exports folders; the app only serves models "
                                 "from there (pick one from the list).")
    if parsed.engine in ("ollama", "openai", "openrouter") and not local:
        raise ModelSpecError("Remote models must be in the model list (QUIMBOT_MODELS) when the app is shared.")
    return text
