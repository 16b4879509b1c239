"""Preference training (DPO) on prompt/chosen/rejected rows, with TRL's DPOTrainer, on a LoRA adapter.

Used by ``quimbot train dpo`` (the same options as ``quimbot train sft``). The rows are the
preference rows ``quimbot export stage2`` writes (tester rewrite = chosen, model reply = rejected)
or any other rows in that format. With ``--init-adapter CHECKPOINT`` training continues from a
Stage 1 checkpoint, and TRL keeps a frozen copy of that adapter as the reference policy; without
it, a fresh adapter is trained and the reference is the base model.

Everything else - schema gate, length check, held-out split, checkpoints with provenance, resume,
perplexity (of the held-out *chosen* replies) - is shared with SFT in ``train/fit/sft.py``.
"""

from __future__ import annotations

from train.fit.sft import (
    Example,
    OrderLogMixin,
    PreparedRun,
    _setup_order_log,
    _swap_progress,
    _template_ids,
    make_callbacks,
    training_arguments,
)


def _messages(items: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in items]


def preference_lengths(tokenizer, examples: list[Example]) -> dict[int, int]:
    """Tokens of the longer of prompt+chosen and prompt+rejected, per row (keyed by id(example))."""
    lengths = {}
    for ex in examples:
        prompt = _messages(ex.row["prompt"])
        lengths[id(ex)] = max(len(_template_ids(tokenizer, prompt + _messages(ex.row[key])))
                              for key in ("chosen", "rejected"))
    return lengths


def build_dpo_trainer(run: PreparedRun, extra_callbacks=()):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    class QuimbotDPOTrainer(OrderLogMixin, DPOTrainer):
        pass

    dataset = Dataset.from_list([{"prompt": _messages(ex.row["prompt"]), "chosen": _messages(ex.row["chosen"]),
                                  "rejected": _messages(ex.row["rejected"])} for ex in run.train])
    args = training_arguments(run, DPOConfig)
    provenance, progress = make_callbacks(run)
    trainer = QuimbotDPOTrainer(model=run.model, ref_model=None, args=args, train_dataset=dataset,
                                processing_class=run.tokenizer, callbacks=[provenance, *extra_callbacks])
    _swap_progress(trainer, progress)
    _setup_order_log(trainer, run, None)
    return trainer
