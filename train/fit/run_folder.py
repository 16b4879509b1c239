"""The run folder (``runs/RUN``): its name, resuming a stopped run, resetting a new one, free disk.

    quimbot-run.json           resolved config, datasets (sha256, content hashes), base model, split
    heldout.jsonl              the held-out rows (never trained on)
    checkpoint-STEP/           PEFT adapter + tokenizer + optimizer/scheduler/RNG state (for --resume)
                               + quimbot-provenance.json
    train_log.jsonl            loss, learning rate, s/step per logging step
    data_order.jsonl           the content hashes of the rows in every micro-batch, in order
    perplexity.csv/.json/.png  held-out perplexity of the base (step 0) and every checkpoint

Where checkpoints are, and what they record, is tutor.checkpoints' (the picker reads them too).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path

from train.fit.config import ConfigError, TrainConfig, TrainError
from train.fit.provenance import dataset_info
from tutor.checkpoints import RUN_FILE, checkpoints_of, step_of
from tutor.config import Settings

ORDER_FILE = "data_order.jsonl"
LOG_FILE = "train_log.jsonl"
RESUME_KEYS = ("method", "dataset", "base", "init_adapter", "skip_bad_rows", "max_length", "on_long",
               "heldout_fraction", "heldout_max", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
               "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "packing", "group_by_length")


def process_world() -> tuple[bool, int, int]:
    """(is main process, rank, number of processes), from the variables torchrun / `accelerate launch`
    set. Read from the environment: creating accelerate's PartialState this early (before the Trainer
    picks the CPU or GPU backend) would fix the wrong distributed type for the whole process."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    return rank == 0, rank, world


def run_dir_for(config: TrainConfig, settings: Settings) -> tuple[TrainConfig, Path]:
    runs = Path(config.runs_dir).expanduser() if config.runs_dir else Path(settings.runs_dir)
    name = config.run_name or f"{config.method}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"run_name {name!r}: use letters, digits, '.', '_' and '-' only.")
    return dataclasses.replace(config, run_name=name, runs_dir=str(runs)), runs / name


def resume_point(config: TrainConfig, run_dir: Path, say) -> Path | None:
    existing = checkpoints_of(run_dir)
    if config.resume:
        if not existing:
            say(f"--resume: {run_dir} has no checkpoint yet; starting at step 0.")
            return None
        saved = json.loads((run_dir / RUN_FILE).read_text()) if (run_dir / RUN_FILE).is_file() else {}
        old = saved.get("config", {})
        changed = [k for k in RESUME_KEYS if k in old and old[k] != getattr(config, k)]
        problems = [f"{k} was {old[k]!r}, now {getattr(config, k)!r}" for k in changed]
        if not changed:
            before = {d["path"]: d["sha256"] for d in saved.get("datasets", [])}
            problems += [f"{d['path']} changed since the run started (sha256 {before[d['path']][:12]} -> "
                         f"{d['sha256'][:12]})" for d in dataset_info(config.dataset)
                         if d["path"] in before and before[d["path"]] != d["sha256"]]
        if problems:
            raise TrainError(f"Cannot resume {run_dir}: " + "; ".join(problems)
                             + ". Resuming needs the same data and batch settings; start a new --run-name instead.")
        complete = [(step, p) for step, p in existing if _resumable(p)]
        if not complete:
            raise TrainError(f"No checkpoint in {run_dir} has the optimizer/trainer state needed to resume exactly; "
                             "use --init-adapter to continue from one as a new run.")
        last_step, last = complete[-1]
        for step, path in existing:
            if step > last_step:
                say(f"--resume: {path.name} is incomplete (killed while saving?); resuming from {last.name}")
        return last
    if existing and not config.overwrite:
        names = ", ".join(p.name for _, p in existing[-3:])
        raise TrainError(f"{run_dir} already has checkpoints ({names}). Pass --resume to continue from "
                         f"{existing[-1][1].name}, --overwrite to start again, or choose another --run-name.")
    return None


def _resumable(ckpt: Path) -> bool:
    names = {p.name for p in ckpt.iterdir()}
    return {"trainer_state.json", "optimizer.pt", "scheduler.pt", "adapter_model.safetensors"} <= names and any(
        n.startswith("rng_state") for n in names)


def make_run_folder(run_dir: Path, overwrite: bool, resume_from: Path | None) -> None:
    """Create the run folder: emptied first with ``overwrite``; on resume, what a killed run wrote
    after the checkpoint it resumes from is forgotten (log lines, incomplete checkpoints); otherwise
    the logs and results of an earlier run of that name are removed."""
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_from is None:
        for stale in (ORDER_FILE, LOG_FILE, "perplexity.json", "perplexity.csv", "perplexity.png"):
            (run_dir / stale).unlink(missing_ok=True)
        for name in os.listdir(run_dir):
            if name.startswith(ORDER_FILE.split(".")[0] + ".rank"):
                (run_dir / name).unlink()
    else:
        step = step_of(resume_from)
        truncate_logs(run_dir, step)
        for later, path in checkpoints_of(run_dir):  # incomplete ones after the resume point: redone
            if later > step:
                shutil.rmtree(path)


def truncate_logs(run_dir: Path, step: int) -> None:
    """On resume, forget what a killed run logged after the checkpoint it resumes from."""
    for path in [run_dir / LOG_FILE, *run_dir.glob("data_order*.jsonl")]:
        if path.is_file():
            keep = [line for line in path.read_text().splitlines() if line.strip()
                    and json.loads(line).get("step", 0) <= step]
            path.write_text("".join(line + "\n" for line in keep))


def estimate_checkpoint_bytes(trainable: int, tokenizer_bytes: int) -> int:
    """Adapter weights + AdamW's two moments (fp32) + tokenizer + trainer state and RNG files."""
    return trainable * 4 * 3 + tokenizer_bytes + (2 << 20)


def check_disk(run_dir: Path, needed: int) -> None:
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise TrainError(f"Not enough free disk for the checkpoints: about {needed / 2**20:,.0f} MiB needed in "
                         f"{run_dir}, {free / 2**20:,.0f} MiB free. Free some space, save less often "
                         "(--save-steps) or train fewer steps.")
