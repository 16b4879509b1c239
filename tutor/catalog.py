"""The model picker's list: the bundled model, every GGUF in the exports folder, every
training checkpoint (a folder with ``adapter_config.json``) in the runs folder, and extra
specs from settings. Nothing has to be registered by hand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tutor.checkpoints import (
    is_adapter,
    is_lora_export,
    list_checkpoints,
    list_exports,
    names_bundled_model,
    recorded_base,
)
from tutor.config import Settings


@dataclass(frozen=True)
class ModelChoice:
    label: str
    spec: str


def list_models(settings: Settings) -> list[ModelChoice]:
    choices = [
        ModelChoice("SmolLM2-135M-Instruct (bundled GGUF, llama-cpp)", "default"),
        ModelChoice("SmolLM2-135M-Instruct (bundled, transformers)", "hf:default"),
    ]
    exports = Path(settings.exports_dir)
    for path in list_exports(exports):
        if is_lora_export(path):  # an adapter alone: served on the bundled base
            choices.append(ModelChoice(f"GGUF LoRA on the bundled model: {path.relative_to(exports)}",
                                       f"gguf:default?lora={path}"))
        else:
            choices.append(ModelChoice(f"GGUF export: {path.relative_to(exports)}", f"gguf:{path}"))
    runs = Path(settings.runs_dir)
    for folder in list_checkpoints(runs):
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


def _hub_base(parsed, folders: list[Path]) -> str | None:
    """The hub id an ``hf:`` spec would load its base model from, or None when it loads from disk."""
    target, adapter = parsed.target, parsed.get("adapter")
    if adapter is None and is_adapter(Path(target).expanduser()):
        try:
            target = recorded_base(Path(target).expanduser()) or "default"
        except (OSError, ValueError):
            return None  # the backend reports a broken adapter folder itself
    if names_bundled_model(target) or target.lower() == "smollm2":
        return None
    if Path(target).expanduser().exists() or target.startswith((".", "/", "~")):
        return None
    return target


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id is simply not cached
        return False


def check_ui_spec(spec: str, settings: Settings, local: bool) -> str:
    """A model spec from the UI, checked before anything is loaded or stored.

    - Its length is bounded (MAX_SPEC_CHARS), checked first.
    - A listed spec (the picker list: bundled model, exports, checkpoints, QUIMBOT_MODELS) is taken
      as the operator listed it.
    - On a shared app (``local`` False) nothing else is: learners pick listed models with their
      listed options only.
    - On localhost a typed spec may use only the options the engine knows, within bounds
      (``specs.OPTION_BOUNDS``); files and checkpoints must lie inside the runs and exports folders
      (or be the bundled model); an ``hf:`` hub id must already be in the local hub cache unless
      QUIMBOT_ALLOW_HUB=1; and an OpenAI-compatible server, which gets an API key, must be on a host
      of the model list or the backend's default."""
    from core.errors import ModelSpecError
    from tutor.specs import MAX_SPEC_CHARS, check_api_key_destination, check_option_bounds, key_hosts, parse_spec

    text = spec.strip() if isinstance(spec, str) else ""
    if len(text) > MAX_SPEC_CHARS:
        raise ModelSpecError(f"Model spec is {len(text):,} characters long; the limit is {MAX_SPEC_CHARS}. "
                             "Pick a model from the list.")
    choices = list_models(settings)
    if text in {c.spec for c in choices}:
        return text
    parsed = parse_spec(text)
    listed = []
    for choice in choices:
        try:
            listed.append(parse_spec(choice.spec))
        except ModelSpecError:
            continue
    if str(parsed) in {str(s) for s in listed}:
        return text
    if not local:
        raise ModelSpecError("This app is shared: pick a model from the list (models and their options are "
                             "chosen by whoever runs the app, with --extra-model or QUIMBOT_MODELS).")
    check_option_bounds(parsed)
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
    if parsed.engine == "hf":
        hub_id = _hub_base(parsed, folders)
        if hub_id is not None and not settings.allow_hub and not _in_hub_cache(hub_id):
            raise ModelSpecError(f"{hub_id} is not in the local model cache, and the app does not download from "
                                 "the model hub (start it with QUIMBOT_ALLOW_HUB=1 to allow that).")
    check_api_key_destination(parsed, key_hosts(listed))
    return text


def api_key_allowed(spec, settings: Settings) -> bool:
    """Whether an OpenAI-compatible spec may send its API key to its server: only to a host of the
    listed specs or of the backend's defaults (for backends to call before reading the key)."""
    from core.errors import ModelSpecError
    from tutor.specs import api_key_host, key_hosts, parse_spec

    parsed = spec if not isinstance(spec, str) else parse_spec(spec)
    listed = []
    for choice in list_models(settings):
        try:
            listed.append(parse_spec(choice.spec))
        except ModelSpecError:
            continue
    host = api_key_host(parsed)
    return host is None or host in key_hosts(listed)
