"""The LM head on the scored positions only: the SFT loss (train.fit.sft) and the held-out
perplexity (train.fit.perplexity) both score the labelled tokens of a batch this way."""

from __future__ import annotations


def scored_logits(model, input_ids, attention_mask, labels, position_ids=None, share_prefix: bool = False):
    """(logits, targets) at the positions whose next token has a label - the LM head runs on those
    rows only, not on the whole (batch, length, vocabulary) block. Works on PEFT-wrapped models.
    ``share_prefix`` (right-padded rows, no position_ids): the token prefix rows share runs once
    (train.fit.prefix); the targets then come group by group, not row by row."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if share_prefix and position_ids is None:
        from train.fit.prefix import shared_prefix_hidden

        hidden, targets = shared_prefix_hidden(base.get_decoder(), input_ids, attention_mask, labels)
        return base.get_output_embeddings()(hidden).float(), targets
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    hidden = base.get_decoder()(**kwargs).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    mask = targets != -100
    return base.get_output_embeddings()(hidden[mask]).float(), targets[mask]
