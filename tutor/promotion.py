"""Promotion: one call makes a checkpoint (or a passing GGUF export of one, or the bundled model) the
learners' default model, recorded in SQLite with who and when; a rollback returns to the default before.

The learner page asks ``learners_default`` when a conversation starts (tutor.session.ChatService), so a
promotion reaches learners from their next conversation on; a conversation already going keeps its model,
and each reply's logged model spec and checkpoint say which model answered.

What may be promoted is checked against what tutor.checkpoints lists, so nothing half-done becomes the
default: a checkpoint that no longer exists, an adapter folder whose weights or provenance training never
finished writing, a GGUF export that failed its parity check (``.gguf.rejected``) or is still being written
(``.part``), and anything outside the runs and exports folders are refused with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelSpecError, NotFoundError
from tutor.checkpoints import PROVENANCE_FILE, RUN_FILE, is_adapter, list_checkpoints, list_exports
from tutor.config import Settings
from tutor.specs import parse_spec
from tutor.store import Promotion, Store

BASE_SPECS = ("default", "gguf:default", "hf:default")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True)
class Default:
    """The learners' default now: its spec, and the promotion that made it so (None: the app's own)."""

    spec: str
    promotion: Promotion | None

    def describe(self) -> str:
        p = self.promotion
        if p is None or p.spec is None:
            return f"{self.spec} (the app's own default{'; rolled back by ' + (p.by or '?') if p else ''})"
        verb = "promoted" if p.action == "promote" else "restored by a rollback"
        return f"{self.spec} ({verb} by {p.by or 'unknown'} at {p.created_at[:16].replace('T', ' ')} UTC)"


def learners_default(store: Store, app_default: str = "default") -> Default:
    """The model a learner's new conversation gets: the promoted one, else the app's own default."""
    promotion = store.promotions.current()
    spec = promotion.spec if promotion is not None and promotion.spec else app_default
    return Default(spec, promotion)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(Path(folder).resolve())


def _listed(path: Path, listed: list[Path]) -> bool:
    return path.resolve() in {p.resolve() for p in listed}


def check_checkpoint(folder: Path, settings: Settings) -> None:
    """Refuse an adapter folder that is not a complete checkpoint of the runs folder."""
    if not _inside(folder, Path(settings.runs_dir)):
        raise ModelSpecError(f"{folder} is outside the runs folder ({settings.runs_dir}); only its checkpoints, "
                             "accepted GGUF exports and the bundled model can be promoted.")
    if not folder.exists():
        raise NotFoundError(f"Checkpoint {folder} no longer exists (deleted or moved); pick one from the list.")
    if not is_adapter(folder) or not any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
        raise ModelSpecError(f"{folder} is not a complete checkpoint (no adapter_config.json and adapter weights): "
                             "a run that crashed or was cancelled while saving leaves such a folder.")
    if (folder.parent / RUN_FILE).is_file() and not (folder / PROVENANCE_FILE).is_file():
        raise ModelSpecError(f"{folder} is a partial checkpoint: training never wrote its {PROVENANCE_FILE} "
                             "(the run stopped while saving it).")
    if not _listed(folder, list_checkpoints(settings.runs_dir)):
        raise ModelSpecError(f"{folder} is not offered as a checkpoint (a hidden folder, or an adapter nested in "
                             "another one); pick one from the list.")


def check_export(path: Path, settings: Settings) -> None:
    """Refuse a GGUF file that is not an accepted export of the exports folder."""
    if not _inside(path, Path(settings.exports_dir)):
        raise ModelSpecError(f"{path} is outside the exports folder ({settings.exports_dir}); only its accepted "
                             "GGUF exports, the runs' checkpoints and the bundled model can be promoted.")
    if not path.is_file():
        if Path(f"{path}.rejected").is_file():
            raise ModelSpecError(f"GGUF export {path} did not pass its parity check (it was kept as "
                                 f"{path.name}.rejected); it cannot be promoted.")
        if Path(f"{path}.part").is_file():
            raise ModelSpecError(f"GGUF export {path} is still being written; promote it once the export is done.")
        raise NotFoundError(f"GGUF export {path} no longer exists (deleted or moved); pick one from the list.")
    if not _listed(path, list_exports(settings.exports_dir)):
        raise ModelSpecError(f"{path} is not an accepted GGUF export (it sits in a hidden folder of one being "
                             "converted); pick one from the list.")


def check_promotable(spec: str, settings: Settings) -> str:
    """The spec as it will be stored, or a ModelSpecError / NotFoundError saying why it cannot be promoted."""
    text = (spec or "").strip() if isinstance(spec, str) else ""
    if not text:
        raise ModelSpecError("Name the model to promote: a checkpoint (hf:runs/RUN/checkpoint-N), an accepted GGUF "
                             "export (gguf:exports/...gguf) or the bundled model (default).")
    if text in BASE_SPECS:
        return text
    parsed = parse_spec(text)
    if parsed.engine == "hf":
        adapter = parsed.get("adapter")
        if adapter and parsed.target not in ("default", "smollm2"):
            raise ModelSpecError(f"{text}: only adapters on the bundled model can be promoted.")
        unknown = {k for k, _ in parsed.params} - {"adapter"}
        if unknown:
            raise ModelSpecError(f"{text}: options {sorted(unknown)} cannot be part of the learners' default.")
        check_checkpoint(Path(adapter or parsed.target).expanduser(), settings)
        return text
    if parsed.engine == "gguf":
        unknown = {k for k, _ in parsed.params} - {"lora"}
        if unknown:
            raise ModelSpecError(f"{text}: options {sorted(unknown)} cannot be part of the learners' default.")
        lora = parsed.get("lora")
        if lora and parsed.target not in ("default", "smollm2"):
            raise ModelSpecError(f"{text}: a GGUF LoRA export is served on the bundled model only.")
        check_export(Path(lora or parsed.target).expanduser(), settings)
        return text
    raise ModelSpecError(f"{text}: only a checkpoint of the runs folder, an accepted GGUF export or the bundled "
                         f"model can be the learners' default ({parsed.engine}: models cannot).")


def promote(store: Store, spec: str, settings: Settings, by: str | None, note: str | None = None,
            app_default: str = "default") -> Promotion:
    """Make ``spec`` the learners' default (checked first, see ``check_promotable``)."""
    spec = check_promotable(spec, settings)
    if spec == learners_default(store, app_default).spec:
        raise ModelSpecError(f"{spec} is already the learners' default.")
    return store.promotions.promote(spec, (by or "").strip() or None, note)


def rollback(store: Store, settings: Settings, by: str | None, app_default: str = "default") -> Default:
    """Return to the default before the newest promotion; a ModelSpecError when nothing was promoted, and a
    refusal (the reason why) when that default cannot be served any more (its checkpoint was deleted)."""
    top = store.promotions.current()
    under = store.promotions.get(top.restores) if top is not None else None
    if under is not None and under.spec:
        try:
            check_promotable(under.spec, settings)
        except (ModelSpecError, NotFoundError) as exc:
            raise type(exc)(f"Cannot roll back to {under.spec}: {exc}") from exc
    if store.promotions.rollback((by or "").strip() or None) is None:
        raise ModelSpecError(f"Nothing to roll back: the learners' default is the app's own ({app_default}).")
    return learners_default(store, app_default)
