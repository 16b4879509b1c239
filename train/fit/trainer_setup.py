"""What every TRL trainer of a run gets (SFT in train.fit.sft, DPO in train.fit.dpo): its training
arguments, the provenance and progress callbacks, and the data-order log.

Every logging line reports tokens/s (non-padding tokens trained on, all processes), and on a GPU
listed in ``train.fit.mfu`` the model FLOPs utilisation (formula and assumptions there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from core.files import write_json
from train.fit.prepare import PreparedRun
from train.fit.provenance import checkpoint_provenance
from train.fit.run_folder import LOG_FILE, ORDER_FILE, process_world
from tutor.checkpoints import PROVENANCE_FILE, is_adapter


def token_key(ids) -> str:
    return hashlib.sha1(json.dumps([int(i) for i in ids]).encode()).hexdigest()


class OrderLogMixin:
    """Logs, for every micro-batch, the content hashes of its rows (data_order[.rankN].jsonl)."""

    order_lookup: dict[str, str] | None = None
    order_path: Path | None = None
    seen_tokens: int = 0  # non-padding tokens this process trained on (for tokens/s)
    seen_rows: int = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        masks = [v for k, v in inputs.items() if k.endswith("attention_mask") and hasattr(v, "sum")]
        if masks:
            self.seen_tokens += int(sum(int(m.sum()) for m in masks))
            self.seen_rows += int(masks[0].shape[0])
        if self.order_path is not None and "input_ids" in inputs:
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            rows = []
            for r in range(ids.shape[0]):
                row = ids[r][mask[r].bool()] if mask is not None else ids[r]
                key = token_key(row.tolist())
                rows.append(self.order_lookup.get(key, "tok:" + key) if self.order_lookup else "tok:" + key)
            with open(self.order_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": self.state.global_step + 1, "rows": rows}) + "\n")
        return super().training_step(model, inputs, num_items_in_batch)


def log_data_order(trainer, run: PreparedRun, lookup: dict[str, str] | None) -> None:
    """Where ``OrderLogMixin`` writes (data_order.jsonl, one file per process), and how token rows map
    back to content hashes (None: logged as token hashes)."""
    _, rank, world = process_world()
    trainer.order_lookup = lookup
    trainer.order_path = run.run_dir / (ORDER_FILE if world == 1 else f"data_order.rank{rank}.jsonl")


def drop_extra_adapters(ckpt: Path) -> None:
    """Remove the extra adapters PEFT saves inside a checkpoint (DPO's frozen "ref" copy of its starting
    adapter). The picker does not list them (tutor.checkpoints.list_checkpoints); they are removed so
    that a checkpoint holds the trained adapter only, as it always has, at the size of one adapter."""
    for sub in ckpt.iterdir():
        if sub.is_dir() and is_adapter(sub):
            shutil.rmtree(sub)


def make_callbacks(run: PreparedRun):
    from transformers.trainer_callback import ProgressCallback, TrainerCallback

    class Provenance(TrainerCallback):
        """quimbot-provenance.json in every checkpoint; only the main process writes."""

        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if not ckpt.is_dir():
                return
            drop_extra_adapters(ckpt)
            write_json(ckpt / PROVENANCE_FILE, checkpoint_provenance(ckpt, state, run.info))

    class Progress(ProgressCallback):
        """The tqdm bar, plus one readable line per logging step (and train_log.jsonl)."""

        trainer = None  # set by use_progress: where the token counts are

        def on_train_begin(self, args, state, control, **kwargs):
            super().on_train_begin(args, state, control, **kwargs)
            self.t0, self.step0 = time.monotonic(), state.global_step
            self.meter = throughput_meter(run)
            self.meter.start(self.t0, *self._seen())

        def _seen(self) -> tuple[int, int]:
            t = self.trainer
            return (getattr(t, "seen_tokens", 0) * run.world_size, getattr(t, "seen_rows", 0) * run.world_size)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            done = state.global_step - self.step0
            elapsed = time.monotonic() - self.t0
            per_step = elapsed / done if done else None
            speed = self.meter.update(time.monotonic(), *self._seen()) if "train_runtime" not in logs else {}
            record = {"step": state.global_step, **{k: v for k, v in logs.items() if k != "total_flos"}}
            if per_step:
                record["s_per_step"] = round(per_step, 3)
            record.update({k: round(v, 4 if k == "mfu" else 1) for k, v in speed.items()})
            with open(Path(args.output_dir) / LOG_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            parts = [f"step {state.global_step}/{state.max_steps}"]
            for key, fmt in (("loss", "loss {:.4f}"), ("learning_rate", "lr {:.2e}"),
                             ("mean_token_accuracy", "acc {:.3f}"), ("rewards/margins", "margin {:.3f}")):
                if key in logs:
                    parts.append(fmt.format(logs[key]))
            if "tokens_per_s" in speed:
                parts.append(f"{speed['tokens_per_s']:,.0f} tok/s")
            if "mfu" in speed:
                parts.append(f"MFU {100 * speed['mfu']:.1f}%")
            if per_step:
                left = (state.max_steps - state.global_step) * per_step
                parts.append(f"{per_step:.2f} s/step")
                parts.append(f"ETA {_hms(left)}")
            if "train_runtime" in logs:
                parts = [f"done: {state.global_step} steps in {_hms(logs['train_runtime'])}"]
            line = " | ".join(parts)
            if self.training_bar is not None:
                self.training_bar.write(line)
            else:
                print(line, flush=True)

    return Provenance(), Progress


def throughput_meter(run: PreparedRun):
    """tokens/s for every run; MFU too when it trains on a GPU whose peak bf16 FLOP/s is known."""
    from train.fit.mfu import ModelShape, ThroughputMeter, peak_flops

    shape, peak = None, None
    if run.device.device == "cuda" and run.model is not None:
        import torch

        peak = peak_flops(torch.cuda.get_device_name())
        try:
            shape = ModelShape.from_config(run.model.config)
        except AttributeError:  # a config without the usual decoder fields: tokens/s only
            shape = None
    return ThroughputMeter(shape, int(run.info.get("trainable_parameters", 0)), peak, run.world_size)


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def training_arguments(run: PreparedRun, cls):
    """SFTConfig / DPOConfig from the Quimbot config; [trl] keys are passed through last."""
    c = run.config
    kwargs: dict[str, Any] = dict(
        output_dir=str(run.run_dir), per_device_train_batch_size=c.per_device_train_batch_size,
        gradient_accumulation_steps=c.gradient_accumulation_steps, learning_rate=c.learning_rate,
        lr_scheduler_type=c.lr_scheduler_type, warmup_steps=c.warmup_steps, weight_decay=c.weight_decay,
        max_grad_norm=c.max_grad_norm, num_train_epochs=c.num_train_epochs, max_steps=c.max_steps,
        save_strategy="steps", save_steps=c.save_steps, save_total_limit=None, save_only_model=False,
        logging_steps=c.logging_steps, logging_first_step=True, seed=c.seed, data_seed=c.seed,
        bf16=run.device.bf16, fp16=run.device.fp16, use_cpu=run.device.device == "cpu",
        activation_checkpointing=run.device.gradient_checkpointing, report_to="none", disable_tqdm=False,
        max_length=c.max_length, dataloader_num_workers=0, eval_strategy="no",
        train_sampling_strategy="group_by_length" if c.group_by_length else "random",
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient; the search costs a graph walk
    )
    if cls.__name__ == "SFTConfig":
        kwargs.update(packing=c.packing)
    else:
        kwargs.update(beta=c.beta, loss_type=[c.loss_type])
    valid = {f.name for f in dataclasses.fields(cls)}
    kwargs.update({k: v for k, v in c.trl.items() if k in valid})
    return cls(**kwargs)


def use_progress(trainer, progress_cls) -> None:
    """Replace the trainer's tqdm callback by ``progress_cls`` (from ``make_callbacks``)."""
    from transformers.trainer_callback import ProgressCallback

    trainer.remove_callback(ProgressCallback)
    progress = progress_cls()
    progress.trainer = trainer
    trainer.add_callback(progress)
