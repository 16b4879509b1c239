"""Shared-prefix training forward (train/fit/prefix.py): grouping, and the same loss and gradients as a
full forward on real starter rows with the bundled model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from train.fit.prefix import prefix_groups  # noqa: E402


def _batch(rows: list[list[int]], labelled_from: list[int], pad: int = 0):
    length = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (length - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
    labels = torch.tensor([[-100] * f + r[f:] + [-100] * (length - len(r)) for r, f in zip(rows, labelled_from)])
    return ids, mask, labels


def test_groups_share_only_tokens_before_the_first_label():
    system = list(range(100, 120))                 # 20 shared tokens
    a = system + [1, 2, 3, 4, 5]
    b = system + [1, 2, 9, 9]
    c = [7] * 25                                   # shares nothing
    d = system[:10] + [8] * 10                     # shares 10 < min_prefix
    ids, _, labels = _batch([a, b, c, d], [23, 22, 20, 15])
    groups = prefix_groups(ids, labels, min_prefix=16)
    shared = [g for g in groups if len(g.rows) > 1]
    assert len(shared) == 1 and sorted(shared[0].rows) == [0, 1]
    # a and b agree on 22 tokens, but b's first label is at 22: its prediction comes from position 21,
    # which must run per row, so the shared prefix stops at 21
    assert shared[0].prefix == 21
    assert sorted(r for g in groups if len(g.rows) == 1 for r in g.rows) == [2, 3]


def test_a_row_whose_label_starts_early_is_not_forced_into_a_group():
    system = list(range(100, 140))
    ids, _, labels = _batch([system + [1, 2], system + [3, 4]], [41, 5])
    groups = prefix_groups(ids, labels, min_prefix=16)
    assert all(len(g.rows) == 1 for g in groups)   # the second row's prefix can only be 4 tokens


@pytest.mark.slow
def test_same_loss_and_gradients_as_a_full_forward():
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.data.synth import make_row
    from train.fit.loss_mask import encode_messages
    from train.fit.scoring import scored_logits
    from tutor.checkpoints import resolve_base
    from tutor.config import Settings

    path = resolve_base("default", Settings())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:                       # a trained-looking adapter, so every LoRA weight matters
            torch.nn.init.normal_(p, std=0.02)
    rows = [make_row(i, seed_value=3, rotate_every=2) for i in range(6)]   # three learner levels, 1-2 exchanges
    encoded = [encode_messages(tokenizer, r["messages"]) for r in rows]
    ids, mask, _ = _batch([e[0] for e in encoded], [0] * len(encoded), pad=tokenizer.pad_token_id)
    labels = torch.tensor([e[1] + [-100] * (ids.shape[1] - len(e[1])) for e in encoded])
    groups = prefix_groups(ids, labels)
    assert any(len(g.rows) > 1 and g.prefix > 50 for g in groups), groups   # the system prompt is shared
    def loss_and_grads(shared: bool):
        model.zero_grad()
        logits, targets = scored_logits(model, ids, mask, labels, share_prefix=shared)  # the trainer's call
        loss = F.cross_entropy(logits.float(), targets, reduction="sum") / targets.numel()
        loss.backward()
        return loss.item(), targets.numel(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    full_loss, full_n, full_grads = loss_and_grads(False)
    shared_loss, shared_n, shared_grads = loss_and_grads(True)
    assert shared_n == full_n
    assert shared_loss == pytest.approx(full_loss, rel=1e-5)
    for name, grad in full_grads.items():
        scale = grad.abs().max().item() or 1.0
        assert (shared_grads[name] - grad).abs().max().item() / scale < 1e-4, name
