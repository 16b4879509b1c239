"""Training runs, their checkpoints and their GGUF exports, as everything that reads them sees them.

The picker (tutor.catalog), serving (tutor.backends.hf), training (train.fit), compare
(train.evaluate.compare) and export (train.export) all ask this module: what is a checkpoint,
where are a run's checkpoints, which base model an adapter was trained on, what held-out
perplexity training measured for it, and which GGUF exports passed their parity check.

A run folder, as ``quimbot train`` writes it (``runs/RUN``)::

    quimbot-run.json          resolved config, datasets, base model, split
    heldout.jsonl             the held-out rows
    perplexity.json           held-out perplexity of the base (step 0) and every checkpoint
    checkpoint-STEP/          a PEFT adapter (adapter_config.json) + quimbot-provenance.json

An export folder (``exports/RUN-checkpoint-STEP``): ``model-TYPE.gguf`` (passed its parity check),
``model-TYPE.gguf.rejected`` (failed it), ``*.part`` (being written), ``adapter-TYPE.lora.gguf``
(the adapter alone, served on the bundled base).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from core.errors import ModelSpecError
from tutor.config import Settings
from tutor.models import DEFAULT_HUB_ID, default_hf_dir

RUN_FILE = "quimbot-run.json"
PROVENANCE_FILE = "quimbot-provenance.json"
HELDOUT_FILE = "heldout.jsonl"
PERPLEXITY_FILE = "perplexity.json"
ADAPTER_CONFIG = "adapter_config.json"
CHECKPOINT = re.compile(r"checkpoint-(\d+)")


# -- what a checkpoint is, and where they are -----------------------------------------------------

def is_adapter(folder: str | Path) -> bool:
    """Whether a folder holds a PEFT adapter (``adapter_config.json``): a checkpoint the app can load."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def step_of(folder: str | Path) -> int | None:
    """The training step a ``checkpoint-STEP`` folder was saved at (None for another name)."""
    match = re.search(CHECKPOINT.pattern + "$", Path(folder).name)
    return int(match.group(1)) if match else None


def checkpoints_of(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint in a run, by step."""
    found = []
    if run_dir.is_dir():
        for path in run_dir.iterdir():
            m = CHECKPOINT.fullmatch(path.name)
            if m and path.is_dir() and is_adapter(path):
                found.append((int(m.group(1)), path))
    return sorted(found)


def _step_key(path: Path) -> tuple:
    """Sort checkpoint-50 before checkpoint-100."""
    parts = re.split(r"(\d+)", str(path))
    return tuple(int(p) if p.isdigit() else p for p in parts)


def list_checkpoints(runs_dir: str | Path) -> list[Path]:
    """Every adapter folder under the runs folder, in step order: what the picker offers.

    Hidden folders are left out, and so is an adapter folder inside another one: PEFT saves a model's
    extra adapters there (DPO's frozen "ref" copy of its starting adapter), which are not checkpoints;
    and so is a checkpoint training has not finished writing (``is_complete``)."""
    runs = Path(runs_dir)
    if not runs.is_dir():
        return []
    found = []
    for config in sorted(runs.rglob(ADAPTER_CONFIG), key=_step_key):
        folder = config.parent
        if _hidden(folder, runs) or (folder.parent / ADAPTER_CONFIG).exists() or not is_complete(folder):
            continue
        found.append(folder)
    return found


def is_complete(folder: str | Path) -> bool:
    """Whether training finished writing a checkpoint. In a run folder ``quimbot train`` made (one with
    quimbot-run.json) the provenance file is the last thing written into ``checkpoint-STEP``, after the
    adapter, optimizer and trainer state: without it the checkpoint is being written, or was cut off by a
    crash or a cancel. Other adapter folders (trained elsewhere) count as complete."""
    folder = Path(folder)
    return (step_of(folder) is None or not (folder.parent / RUN_FILE).is_file()
            or (folder / PROVENANCE_FILE).is_file())


def list_exports(exports_dir: str | Path) -> list[Path]:
    """Every accepted GGUF export under the exports folder, in step order.

    Only finished files that passed their parity check end in ``.gguf``: a file being written is a
    ``.part``, a drifting export a ``.gguf.rejected``, and the merged model an export converts sits in a
    hidden ``.merge-*`` folder until it is done."""
    exports = Path(exports_dir)
    if not exports.is_dir():
        return []
    return [path for path in sorted(exports.rglob("*.gguf"), key=_step_key)
            if path.is_file() and not _hidden(path, exports)]


def _hidden(path: Path, root: Path) -> bool:
    """``path`` or a folder between it and ``root`` is hidden (a name starting with a dot)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def is_lora_export(path: Path) -> bool:
    """An adapter alone (``*.lora.gguf``), served on the bundled base GGUF."""
    return path.name.endswith(".lora.gguf")


# -- what training recorded ----------------------------------------------------------------------

def read_provenance(checkpoint: str | Path) -> dict:
    """The provenance training wrote into a checkpoint (``quimbot-provenance.json``); {} when there is none."""
    path = Path(checkpoint) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def recorded_base(adapter: str | Path) -> str | None:
    """The base model an adapter was trained on, as recorded: first the provenance training wrote
    (``base_model.adapter_name``, which training also writes into adapter_config.json), then
    adapter_config.json's ``base_model_name_or_path``; None when neither records one."""
    try:
        base = read_provenance(adapter).get("base_model") or {}
    except (OSError, ValueError, AttributeError):  # unreadable provenance: the adapter config still says
        base = {}
    if isinstance(base, dict) and isinstance(base.get("adapter_name"), str) and base["adapter_name"]:
        return base["adapter_name"]
    return json.loads((Path(adapter) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")


def names_bundled_model(name: str) -> bool:
    """Whether a recorded base model name is the bundled SmolLM2-135M-Instruct. Training records the
    bundled model by its hub id; any name holding "smollm2-135m" counts too (the last resort, for
    adapters trained elsewhere on a copy of it)."""
    lowered = name.lower()
    return lowered == "default" or "smollm2-135m" in lowered


def resolve_base(target: str, settings: Settings) -> str:
    """A base model name -> something ``from_pretrained`` can open without the network."""
    if target in ("default", "smollm2", DEFAULT_HUB_ID):
        return str(default_hf_dir(settings.cache_dir))
    path = Path(target).expanduser()
    if path.exists():
        return str(path)
    if target.startswith((".", "/", "~")) or target.count("/") > 1:
        raise ModelSpecError(f"Base model folder not found: {target}.")
    return target  # a hub id: from the local hub cache (offline) or downloaded where allowed


def base_weights(adapter: str | Path, settings: Settings) -> str:
    """What ``from_pretrained`` opens as the base of an adapter: the recorded base (see
    ``recorded_base``; the bundled model when nothing is recorded), as a folder that exists, else
    the bundled model when the name says so, else the name itself (a hub id)."""
    recorded = recorded_base(adapter) or "default"
    target = recorded if Path(recorded).exists() else ("default" if names_bundled_model(recorded) else recorded)
    return resolve_base(target, settings)


def checkpoint_perplexity(folder: str | Path) -> tuple[int | None, float | None]:
    """(step, held-out perplexity) that training measured for a checkpoint, from its run's
    perplexity.json (or one inside the folder); the perplexity is None where none was measured."""
    path = Path(folder)
    step = step_of(path)
    for candidate in (path.parent / PERPLEXITY_FILE, path / PERPLEXITY_FILE):
        if candidate.exists():
            data = json.loads(candidate.read_text())
            for point in data.get("results", data.get("points", [])) if isinstance(data, dict) else data:
                if point.get("step") == step or Path(str(point.get("checkpoint", ""))).name == path.name:
                    return step, point.get("perplexity")
    return step, None
