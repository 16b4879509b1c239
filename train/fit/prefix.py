"""Shared-prefix forward for training: the system prompt of a micro-batch is run once, not once a row.

Every Stage 1 row starts with the same system turn for its learner level (about 116 of its ~190 tokens
with the bundled template), and no label falls inside it. Causal attention makes the keys and values
of an identical prefix identical in every row, so they can be computed once on one row and repeated
across the rows that share it; the rest of each row then runs against that cache. The loss and the
gradients are the same as a full forward (``repeat_interleave`` sums the rows' gradients back into
the one prefix computation); only LoRA dropout differs, being drawn once for the prefix.

Rows are grouped by their longest common token prefix that ends before their first labelled token;
a group whose prefix is shorter than ``min_prefix`` tokens, or a row alone, runs the ordinary way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PrefixGroup:
    rows: list[int]
    prefix: int  # tokens shared by every row of the group, all before its first labelled position


def _lcp(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def prefix_groups(input_ids, labels, min_prefix: int = 16) -> list[PrefixGroup]:
    """Group the rows of a (batch, length) micro-batch by a shared unlabelled token prefix.

    A row's prefix may cover positions [0, first_label - 1): the hidden state that predicts the first
    labelled token must come from the part that runs per row."""
    rows = input_ids.tolist()
    labelled = (labels != -100).tolist()
    limits = []
    for ids, lab in zip(rows, labelled):
        first = lab.index(True) if True in lab else len(ids)
        limits.append(max(first - 1, 0))
    order = sorted(range(len(rows)), key=lambda i: rows[i][:limits[i]])
    groups: list[PrefixGroup] = []
    for i in order:
        if groups:
            g = groups[-1]
            n = _lcp(rows[i], rows[g.rows[0]], min(g.prefix, limits[i]))
            if n >= min_prefix:
                g.rows.append(i)
                g.prefix = n
                continue
        groups.append(PrefixGroup([i], limits[i]))
    return groups


def shared_prefix_hidden(decoder, input_ids, attention_mask, labels, min_prefix: int = 16):
    """(hidden states, targets) at every labelled next-token position of the micro-batch, computing
    each group's shared prefix once. ``decoder`` is the base model's decoder (``get_decoder()``);
    right padding, as TRL's collator makes it."""
    import torch

    hidden_parts, target_parts = [], []
    length = input_ids.shape[1]
    for group in prefix_groups(input_ids, labels, min_prefix):
        index = torch.tensor(group.rows, device=input_ids.device)
        ids, mask, lab = input_ids[index], attention_mask[index], labels[index]
        p = group.prefix
        if len(group.rows) == 1:  # a group of several rows shares at least min_prefix tokens
            hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[:, :-1]
            targets = lab[:, 1:]
        else:
            cache = decoder(input_ids=ids[:1, :p], use_cache=True).cache
            cache.batch_repeat_interleave(len(group.rows))
            positions = torch.arange(p, length, device=ids.device).unsqueeze(0).expand(len(group.rows), -1)
            hidden = decoder(input_ids=ids[:, p:], attention_mask=mask, position_ids=positions, cache=cache,
                             use_cache=True).last_hidden_state[:, :-1]
            targets = lab[:, p + 1:]
        keep = targets != -100
        hidden_parts.append(hidden[keep])
        target_parts.append(targets[keep])
    return torch.cat(hidden_parts), torch.cat(target_parts)
