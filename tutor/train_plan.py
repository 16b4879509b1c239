"""A Stage 2 run as the Train tab starts it: what it can train on (an export folder under
``exports/stage2/`` or a mix config's output), the row counts and the schema gate's verdict before
anything starts, the ``quimbot train sft|dpo`` command line, and the run's progress read back from its
run folder (train_log.jsonl, perplexity.json, the checkpoints) while the job runs."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from core.errors import DataError, InputError, NotFoundError
from core.jsonl import read_jsonl
from core.schema import GateReport, SchemaError, row_kind
from tutor.checkpoints import PERPLEXITY_FILE, RUN_FILE, is_complete, list_checkpoints, step_of
from tutor.config import Settings

ROOT = Path(__file__).resolve().parent.parent
TRAIN_CONFIG = ROOT / "data" / "train_default.toml"
LOG_FILE = "train_log.jsonl"  # train.fit.run_folder.LOG_FILE (train is a layer above)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# What each method trains on, in an export folder: TRL's formats as `quimbot export stage2` writes them.
METHOD_FILES = {"sft": ("sft.jsonl", "sft"), "dpo": ("preference.jsonl", "preference")}
# The Stage 2 defaults: data/train_default.toml's recipe (learning rate, LoRA, batch), fewer steps for the
# small sets flags make, a checkpoint (and a held-out perplexity point) every 10 steps, a log line every step.
STAGE2 = {"max_steps": 40, "save_steps": 10, "learning_rate": 5e-4}


@dataclass
class Source:
    label: str
    value: str   # "export:NAME" or "mix:PATH"
    files: dict[str, Path]  # method -> the JSONL it trains on (those that exist)


@dataclass
class FileCheck:
    path: Path
    kind: str
    accepted: int = 0
    rejected: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.accepted > 0 and not self.rejected


@dataclass
class Check:
    source: Source
    files: dict[str, FileCheck]  # method -> its file's verdict

    def usable(self, method: str) -> FileCheck:
        """The checked file ``method`` trains on, or DataError saying why it cannot."""
        check = self.files.get(method)
        if check is None:
            wanted = METHOD_FILES[method][0] if method in METHOD_FILES else "rows"
            raise DataError(f"{self.source.label} has no {wanted} for {method.upper()}.")
        if not check.path.is_file():
            raise DataError(f"{check.path} does not exist yet: build it first ({_build_hint(self.source)}).")
        if check.accepted == 0 and not check.rejected:
            raise DataError(f"{check.path} has no rows: nothing to train on. Export some flags first.")
        if check.rejected:
            raise DataError(f"{check.path}: the schema gate refuses {len(check.rejected)} row(s), e.g. "
                            f"{check.rejected[0]}. Fix or re-export them; nothing was started.")
        return check


def _build_hint(source: Source) -> str:
    if source.value.startswith("mix:"):
        return f"quimbot data mix {source.value[4:]}"
    return "the Export tab"


def stage2_dir(settings: Settings) -> Path:
    return Path(settings.exports_dir) / "stage2"


def mix_output(config: Path) -> Path | None:
    """The file a mix config (``quimbot data mix``) writes, or None when the TOML is not a mix config."""
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    out = data.get("out")
    return Path(out) if isinstance(out, str) and isinstance(data.get("sources"), list) else None


def sources(settings: Settings, mix_dirs: tuple[Path, ...] = (ROOT / "data",)) -> list[Source]:
    """Every export folder under exports/stage2/ (newest first), then every mix config in data/."""
    found = []
    folder = stage2_dir(settings)
    if folder.is_dir():
        for sub in sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                          key=lambda p: p.stat().st_mtime, reverse=True):
            files = {m: sub / name for m, (name, _) in METHOD_FILES.items() if (sub / name).is_file()}
            found.append(Source(f"export {sub.name}", f"export:{sub.name}", files))
    for mix_dir in mix_dirs:
        for config in sorted(mix_dir.glob("*.toml")):
            out = mix_output(config)
            if out is not None:
                out = out if out.is_absolute() else ROOT / out
                found.append(Source(f"mix {config.name} → {out.name}", f"mix:{config}", {"sft": out}))
    return found


def find_source(settings: Settings, value: str) -> Source:
    """The source a picker value names; anything not offered is refused (no path is taken from the page)."""
    for source in sources(settings):
        if source.value == value:
            return source
    if not value:
        raise InputError("Pick a Stage 2 export folder (or a mix config) first.")
    raise NotFoundError(f"{value!r} is not a Stage 2 export folder or mix config here (any more).")


def check_source(source: Source) -> Check:
    """Row counts and the schema gate's verdict for every file the source offers; rows of the wrong
    kind for their file (a preference row in sft.jsonl) are refused too."""
    files = {}
    for method, path in source.files.items():
        kind = METHOD_FILES[method][1]
        check = FileCheck(path, kind)
        if not path.is_file():
            files[method] = check
            continue
        report = GateReport()
        try:
            for line, row in read_jsonl(path, report):
                if row_kind(row) != kind:
                    report.accepted -= 1
                    report.rejected.append(SchemaError(f"a {row_kind(row)} row; {path.name} holds {kind} rows",
                                                       str(path), line))
        except DataError as exc:
            check.rejected.append(str(exc))
        check.accepted = report.accepted
        check.rejected += [str(e) for e in report.rejected]
        files[method] = check
    return Check(source, files)


def verdict(check: Check) -> str:
    """The check as Markdown lines: one per file, with its count and the gate's verdict."""
    if not check.files:
        return f"**{check.source.label}** holds neither sft.jsonl nor preference.jsonl: nothing to train on."
    lines = []
    for method, f in check.files.items():
        if not f.path.is_file():
            state = f"⚠️ not built yet ({_build_hint(check.source)})"
        elif f.usable:
            state = "✅ passes the schema gate"
        elif not f.rejected:
            state = "⚠️ no rows: nothing to train on"
        else:
            state = f"⛔ the schema gate refuses {len(f.rejected)} row(s): " + "; ".join(f.rejected[:3])
        lines.append(f"- **{method.upper()}** `{f.path.name}`: {f.accepted} rows, {state}")
    return "\n".join(lines)


def checkpoint_choices(settings: Settings) -> list[tuple[str, str]]:
    """The picker's checkpoints (complete ones only), plus the base model (value "")."""
    runs = Path(settings.runs_dir)
    return [("none: start from the base model", "")] + [
        (str(p.relative_to(runs)) if p.is_relative_to(runs) else str(p), str(p)) for p in list_checkpoints(runs)]


def default_run_name(source: Source, method: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", source.value.split(":", 1)[1].rsplit("/", 1)[-1])[:32].strip("-.")
    return f"stage2-{method}-{stem or 'data'}-{datetime.now().strftime('%Y%m%d-%H%M')}"


def train_argv(settings: Settings, check: Check, method: str, init_adapter: str | None, *, max_steps: int,
               learning_rate: float, save_steps: int, run_name: str) -> tuple[list[str], Path]:
    """The `quimbot train sft|dpo` command line (after "quimbot") and the run folder it writes, after
    refusing what would make a bad run: unusable data, an unlisted checkpoint, a run name in use."""
    if method not in METHOD_FILES:
        raise InputError(f"Method: sft or dpo, not {method!r}.")
    data = check.usable(method)
    if init_adapter and init_adapter not in {v for _, v in checkpoint_choices(settings)}:
        raise NotFoundError(f"{init_adapter} is not a complete checkpoint here (any more); pick another.")
    for name, value, low in (("Max steps", max_steps, 1), ("Save every", save_steps, 1)):
        if value is None or int(value) != value or value < low:
            raise InputError(f"{name}: a whole number of at least {low}.")
    if learning_rate is None or not 0 < learning_rate < 1:
        raise InputError("Learning rate: a number between 0 and 1 (e.g. 5e-4).")
    run_name = (run_name or "").strip()
    if not NAME.match(run_name):
        raise InputError("Run name: letters, digits, '.', '_' and '-' only (up to 64).")
    runs = Path(settings.runs_dir).resolve()
    run_dir = runs / run_name
    if run_dir.exists():
        raise InputError(f"A run named {run_name!r} exists already ({run_dir}); choose another name.")
    argv = ["train", method, "--config", str(TRAIN_CONFIG), "--dataset", str(data.path.resolve()),
            "--run-name", run_name, "--runs-dir", str(runs), "--max-steps", str(int(max_steps)),
            "--save-steps", str(int(save_steps)), "--learning-rate", repr(float(learning_rate)),
            "--logging-steps", "1"]
    if init_adapter:
        argv += ["--init-adapter", init_adapter]
    return argv, run_dir


# -- progress -----------------------------------------------------------------------------------

@dataclass
class Progress:
    step: int = 0
    max_steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    trained: bool = False              # the trainer's last line ("train_runtime") is written
    losses: list[tuple[int, float]] = field(default_factory=list)
    perplexity: list[tuple[int, str, float]] = field(default_factory=list)  # (step, checkpoint, perplexity)
    complete: list[str] = field(default_factory=list)    # checkpoint folders training finished writing
    incomplete: list[str] = field(default_factory=list)  # cut off: not offered anywhere


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def progress(argv: list[str], run_dir: str | Path | None) -> Progress:
    """What a training job's run folder says so far (a line being written is skipped)."""
    out = Progress()
    steps = _option(argv, "--max-steps")
    out.max_steps = int(steps) if steps and steps.isdigit() else None
    if not run_dir or not Path(run_dir).is_dir():
        return out
    run_dir = Path(run_dir)
    if out.max_steps is None:  # set in the config file: the run file has the resolved config
        try:
            out.max_steps = int(json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))["config"]["max_steps"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    per_step = None
    try:
        lines = (run_dir / LOG_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "train_runtime" in record:
            out.trained = True
        step = int(record.get("step", 0))
        out.step = max(out.step, step)
        if "loss" in record:
            out.loss = float(record["loss"])
            out.losses.append((step, out.loss))
        per_step = record.get("s_per_step", per_step)
    if per_step and out.max_steps and not out.trained:
        out.eta_s = max(0.0, (out.max_steps - out.step) * float(per_step))
    try:
        data = json.loads((run_dir / PERPLEXITY_FILE).read_text(encoding="utf-8"))
        out.perplexity = [(int(r["step"]), str(r["checkpoint"]), float(r["perplexity"]))
                          for r in data.get("results", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    for folder in sorted(run_dir.glob("checkpoint-*"), key=lambda p: step_of(p) or 0):
        if folder.is_dir() and step_of(folder) is not None:
            (out.complete if is_complete(folder) else out.incomplete).append(folder.name)
    return out
