"""Preference training (DPO) on prompt/chosen/rejected rows, with TRL's DPOTrainer, on a LoRA adapter.

Used by ``quimbot train dpo`` (the same options as ``quimbot train sft``). The rows are the
preference rows ``quimbot export stage2`` writes (tester rewrite = chosen, model reply = rejected)
or any other rows in that format. With ``--init-adapter CHECKPOINT`` training continues from a
Stage 1 checkpoint, and TRL keeps a frozen copy of that adapter as the reference policy; without
it, a fresh adapter is trained and the reference is the base model.

Everything else - schema gate, length check, held-out split, checkpoints with provenance, resume,
perplexity (of the held-out *chosen* replies) - is shared with SFT (train.fit.prepare,
train.fit.trainer_setup, train.fit.training).
"""

from __future__ import annotations

from train.fit.loss_mask import chat_messages
from train.fit.prepare import PreparedRun
from train.fit.trainer_setup import OrderLogMixin, log_data_order, make_callbacks, training_arguments, use_progress


def build_dpo_trainer(run: PreparedRun, extra_callbacks=()):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    class QuimbotDPOTrainer(OrderLogMixin, DPOTrainer):
        pass

    dataset = Dataset.from_list([{"prompt": chat_messages(ex.row["prompt"]), "chosen": chat_messages(ex.row["chosen"]),
                                  "rejected": chat_messages(ex.row["rejected"])} for ex in run.train])
    args = training_arguments(run, DPOConfig)
    provenance, progress = make_callbacks(run)
    trainer = QuimbotDPOTrainer(model=run.model, ref_model=None, args=args, train_dataset=dataset,
                                processing_class=run.tokenizer, callbacks=[provenance, *extra_callbacks])
    use_progress(trainer, progress)
    log_data_order(trainer, run, None)
    return trainer
