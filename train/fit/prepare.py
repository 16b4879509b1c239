"""Everything a run checks before it trains, and the run folder it then starts.

    prepare_run(config)   every check that can fail, before any training starts: run folder and
                          resume state, base model / adapter, schema gate (file:line), token lengths,
                          held-out split, free disk
    write_run_files(run)  create (or reset, or keep on resume) the run folder: quimbot-run.json, heldout.jsonl
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.files import write_json
from train.fit.config import TrainConfig, resolve_effective_batch
from train.fit.examples import Example, apply_length_limit, encode_examples, gate, preference_lengths, split_heldout
from train.fit.models import (
    BaseModel,
    DeviceChoice,
    choose_device,
    load_model,
    load_tokenizer,
    quiet_library_warnings,
    resolve_models,
)
from train.fit.provenance import bundled_source, dataset_info, git_state, hashes_digest, library_versions, utc_now
from train.fit.run_folder import (
    check_disk,
    estimate_checkpoint_bytes,
    make_run_folder,
    process_world,
    resume_point,
    run_dir_for,
)
from tutor.checkpoints import HELDOUT_FILE, RUN_FILE
from tutor.config import Settings


@dataclass
class PreparedRun:
    config: TrainConfig
    settings: Settings
    run_dir: Path
    base: BaseModel
    device: DeviceChoice
    tokenizer: Any
    train: list[Example]
    heldout: list[Example]
    info: dict[str, Any]             # written to quimbot-run.json and into every provenance file
    resume_from: Path | None = None
    model: Any = None
    is_main: bool = True
    world_size: int = 1
    say: Any = print

    @property
    def total_steps(self) -> int:
        c = self.config
        if c.max_steps > 0:
            return c.max_steps
        per_epoch = math.ceil(len(self.train) / (c.per_device_train_batch_size * self.world_size))
        return max(1, math.ceil(per_epoch / c.gradient_accumulation_steps * c.num_train_epochs))


def prepare_run(config: TrainConfig, settings: Settings | None = None, kind: str = "sft", say=print,
                load=True) -> PreparedRun:
    """Everything that can fail, checked before training; nothing is written until it all passes."""
    quiet_library_warnings()
    settings = settings or Settings()
    is_main, _, world = process_world()
    say = say if is_main else _silent
    config = resolve_effective_batch(config, world)
    config, run_dir = run_dir_for(config, settings)
    resume_from = resume_point(config, run_dir, say)
    base = resolve_models(config, settings)
    device = choose_device(config)
    tokenizer = load_tokenizer(base)

    examples, report = gate(config.dataset, kind, config.skip_bad_rows, say)
    if kind == "sft":
        encode_examples(tokenizer, examples)
        lengths = None
    else:
        lengths = preference_lengths(tokenizer, examples)
    examples, length_stats = apply_length_limit(examples, config.max_length, config.on_long, say, lengths)
    train, heldout = split_heldout(examples, config.heldout_fraction, config.heldout_max, config.seed)
    if not train:
        raise DataError("No rows left to train on after the held-out split.")
    info = {
        "run": config.run_name, "method": config.method, "config": config.to_dict(),
        "datasets": dataset_info(config.dataset),
        "rows": {"accepted": report.accepted, "skipped_bad": len(report.rejected), **length_stats,
                 "train": len(train), "heldout": len(heldout)},
        "content_hashes": {"train": len({ex.hash for ex in train}), "heldout": len({ex.hash for ex in heldout}),
                           "train_digest": hashes_digest(ex.hash for ex in train),
                           "heldout_digest": hashes_digest(ex.hash for ex in heldout)},
        "skipped_rows": [str(err) for err in report.rejected[:200]],
        "base_model": dataclasses.asdict(base) | {"source": bundled_source(base.path)},
        "device": device.describe(), "world_size": world,
        "git": git_state(), "versions": library_versions(),
    }
    run = PreparedRun(config, settings, run_dir, base, device, tokenizer, train, heldout, info, resume_from,
                      is_main=is_main, world_size=world, say=say)
    if load:
        run.model = load_model(base, device, config)
        trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        info["trainable_parameters"] = trainable
        tok_bytes = sum(f.stat().st_size for f in Path(base.init_adapter or base.path).glob("tok*") if f.is_file())
        saves = math.ceil(run.total_steps / config.save_steps) + 1
        needed = estimate_checkpoint_bytes(trainable, max(tok_bytes, 4 << 20)) * saves * 6 // 5 + (64 << 20)
        info["disk_estimate_bytes"] = needed
        check_disk(run_dir, needed)
    return run


def _silent(*args, **kwargs) -> None:
    pass


def write_run_files(run: PreparedRun) -> None:
    """Create (or reset, or keep on resume) the run folder; main process only."""
    if not run.is_main:
        return
    run_dir = run.run_dir
    make_run_folder(run_dir, run.config.overwrite, run.resume_from)
    info = dict(run.info, started=utc_now(), resumed_from=str(run.resume_from) if run.resume_from else None)
    write_json(run_dir / RUN_FILE, info)
    with open(run_dir / HELDOUT_FILE, "w", encoding="utf-8") as fh:
        for ex in run.heldout:
            fh.write(json.dumps(ex.row, ensure_ascii=False) + "\n")
