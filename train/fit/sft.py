"""Supervised fine-tuning (``quimbot train sft``): TRL's SFTTrainer on the tokenized rows, loss on
the assistant tokens only (the mask is train.fit.loss_mask's), with the data-order log.

The run around it (checks, run folder, provenance, perplexity) is train.fit.training's.
"""

from __future__ import annotations

from train.fit.prepare import PreparedRun
from train.fit.scoring import scored_logits
from train.fit.trainer_setup import (
    OrderLogMixin,
    log_data_order,
    make_callbacks,
    token_key,
    training_arguments,
    use_progress,
)


def sft_trainer_class():
    """TRL's SFTTrainer plus the data-order log and, where TRL would score every position (no Triton:
    CPU), a loss computed on the assistant positions only.

    TRL's fused LM head projects only the labelled positions on CUDA/XPU, but on other devices it
    projects all of them and recomputes the projection in the backward pass: on CPU that made a step
    1.4x slower than a plain forward+backward. Here the head runs on the labelled positions alone
    (loss, token accuracy and entropy are the same quantities TRL logs)."""
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer
    from trl.kernels.chunked_logprob import _use_triton

    class QuimbotSFTTrainer(OrderLogMixin, SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            device = inputs["input_ids"].device
            if (return_outputs or _use_triton(device) or self.accelerator.num_processes > 1 or "labels" not in inputs
                    or "attention_mask" not in inputs or self.args.loss_type != "nll" or self.aux_loss_enabled):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            logits, targets = scored_logits(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                                            inputs.get("position_ids"), getattr(self, "share_prefix", False))
            count = targets.numel() if num_items_in_batch is None else num_items_in_batch
            loss = F.cross_entropy(logits, targets, reduction="sum") / torch.as_tensor(count).clamp(min=1)
            mode = "train" if self.model.training else "eval"
            with torch.no_grad():
                if targets.numel():
                    logp = torch.log_softmax(logits, dim=-1)
                    self._metrics[mode]["entropy"].append(float(-(logp.exp() * logp).sum(-1).mean()))
                    self._metrics[mode]["mean_token_accuracy"].append(
                        float((logits.argmax(-1) == targets).float().mean()))
            if mode == "train":
                self._total_train_tokens += int(inputs["attention_mask"].sum())
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return QuimbotSFTTrainer


def build_sft_trainer(run: PreparedRun, extra_callbacks=()):
    from datasets import Dataset
    from trl import SFTConfig

    QuimbotSFTTrainer = sft_trainer_class()

    dataset = Dataset.from_dict({"input_ids": [ex.input_ids for ex in run.train],
                                 "labels": [ex.labels for ex in run.train]})
    args = training_arguments(run, SFTConfig)
    provenance, progress = make_callbacks(run)
    trainer = QuimbotSFTTrainer(model=run.model, args=args, train_dataset=dataset, processing_class=run.tokenizer,
                                callbacks=[provenance, *extra_callbacks])
    use_progress(trainer, progress)
    log_data_order(trainer, run, {token_key(ex.input_ids): ex.hash for ex in run.train})
    trainer.share_prefix = run.config.share_prefix and not run.device.gradient_checkpointing
    return trainer
