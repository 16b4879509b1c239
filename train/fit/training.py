"""A training run end to end: ``train(config)`` prepares (train.fit.prepare), trains with TRL's
SFTTrainer (train.fit.sft) or DPOTrainer (train.fit.dpo), writes a provenance file into every
checkpoint, then computes held-out perplexity (train.fit.perplexity).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from train.fit.config import TrainConfig
from train.fit.dpo import build_dpo_trainer
from train.fit.models import quiet_library_warnings
from train.fit.perplexity import evaluate_run
from train.fit.prepare import prepare_run, write_run_files
from train.fit.sft import build_sft_trainer
from tutor.checkpoints import checkpoints_of, step_of
from tutor.config import Settings


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    checkpoints: list[Path]
    seconds: float
    s_per_step: float | None
    perplexity: list[dict] | None


def train(config: TrainConfig, settings: Settings | None = None, say=print, callbacks=()) -> TrainResult:
    """Run SFT (or DPO, by ``config.method``) end to end; returns where everything went."""
    quiet_library_warnings()
    kind = "sft" if config.method == "sft" else "preference"
    run = prepare_run(config, settings, kind=kind, say=say)
    say, c = run.say, run.config
    say(f"run {run.run_dir}: {len(run.train)} training rows, {len(run.heldout)} held out; "
        f"{run.total_steps} steps of {c.per_device_train_batch_size} rows x {c.gradient_accumulation_steps} "
        f"accumulated{f' x {run.world_size} processes' if run.world_size > 1 else ''}; "
        f"{run.info.get('trainable_parameters', 0):,} trainable parameters; {run.device.describe()}")
    if run.resume_from is not None:
        say(f"resuming from {run.resume_from}")
        run.info["resumed_from"] = str(run.resume_from)
    if c.method == "dpo":
        trainer = build_dpo_trainer(run, callbacks)
    else:
        trainer = build_sft_trainer(run, callbacks)
    write_run_files(run)  # main process only; the others wait for it below
    trainer.accelerator.wait_for_everyone()
    start = time.monotonic()
    output = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    seconds = time.monotonic() - start
    steps = trainer.state.global_step
    done_here = steps - (step_of(run.resume_from) if run.resume_from else 0)
    del trainer, output
    run.model = None
    if not run.is_main:
        return TrainResult(run.run_dir, steps, [], seconds, None, None)
    ppl = None
    if c.perplexity and run.heldout:
        ppl = evaluate_run(run.run_dir, run.settings, batch_size=c.eval_batch_size, say=say,
                           device=run.device.device, dtype=run.device.dtype_name)
    return TrainResult(run.run_dir, steps, [p for _, p in checkpoints_of(run.run_dir)], seconds,
                       seconds / done_here if done_here else None, ppl)
