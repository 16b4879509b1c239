"""Which tokens a row trains: the assistant replies, exactly as the chat template renders them.

Loss is on assistant tokens only. The mask is built here, by rendering the chat template prefix
by prefix, because many templates (SmolLM2's and Qwen3's among them) have no ``{% generation %}``
markers for TRL's ``assistant_only_loss``; the rows reach TRL already tokenized, with ``labels``.
Templates that render an earlier turn differently once later turns follow (Qwen3 drops the
``<think>`` block of every assistant turn before the last user message) are handled by locating each
reply in the rendered text instead (``_spans_by_text``). For Qwen3 the last reply is trained with
the empty ``<think>\n\n</think>\n\n`` block its template writes before it, so a checkpoint served with
the default template (hf:, GGUF, Ollama) answers without thinking; assistant turns that carry
``<think>`` tags themselves are refused (a tutor reply is never reasoning).

The held-out perplexity (train.fit.perplexity) scores the very same tokens.
"""

from __future__ import annotations

import re
from typing import Any

from core.errors import DataError

THINK_TAG = re.compile(r"</?think>")


def chat_messages(items: list[dict]) -> list[dict]:
    """Role and content of each message, nothing else (what the chat template is given)."""
    return [{"role": m["role"], "content": m["content"]} for m in items]


def template_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt,
                                        return_dict=True)
    return list(out["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def encode_messages(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a conversation, exactly as the chat template renders it at inference;
    labels are -100 everywhere except on assistant replies and their end-of-turn token.

    Each assistant span is found by rendering the conversation up to the reply (with the generation
    prompt) and through the reply: the tokens in between are the reply. Works for any template that
    renders earlier turns the same way whatever follows (SmolLM2, Llama, Qwen2.5, ...)."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    for message in messages:
        if message["role"] == "assistant" and THINK_TAG.search(message["content"]):
            raise DataError("An assistant turn contains <think>/</think> tags; Quimbot trains tutor replies, not "
                            "reasoning (a Qwen3-style template would also drop them from earlier turns). Remove "
                            f"the reasoning from the row: {message['content'][:80]!r}")
    ids = template_ids(tokenizer, messages)
    labels = [-100] * len(ids)
    eos = tokenizer.eos_token_id
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = template_ids(tokenizer, messages[:i], add_generation_prompt=True)
        through = template_ids(tokenizer, messages[: i + 1])
        start, end = _common_prefix(before, ids), _common_prefix(through, ids)
        if start < len(before) - 1 or end < len(through) - 1 or end <= start:
            return ids, _spans_by_text(tokenizer, messages, ids)
        # keep the end-of-turn token, not the whitespace some templates put after it
        while end - 1 > start and ids[end - 1] != eos and eos in ids[start:end - 1] \
                and not tokenizer.decode(ids[end - 1:end]).strip():
            end -= 1
        labels[start:end] = ids[start:end]
    return ids, labels


def _spans_by_text(tokenizer, messages: list[dict], ids: list[int]) -> list[int]:
    """Labels for a template that renders earlier turns differently when later turns follow (Qwen3:
    the thinking block of every assistant turn before the last user message is dropped). Each reply is
    found in the rendered text: it starts where the generation prompt of the conversation so far ends
    (that prompt is a prefix of the full text), and ends after the reply's own text and the end-of-turn
    token. What lies between the start and the reply (Qwen3's empty ``<think>`` block on the last turn)
    is what the model writes at inference, so it is trained too."""
    name = getattr(tokenizer, "name_or_path", "this model")
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoded["input_ids"]) != list(ids):
        raise DataError(f"The chat template of {name} renders earlier turns differently when later turns follow, "
                        "and its text does not tokenize to the same ids, so the assistant tokens cannot be located.")
    eot = tokenizer.eos_token or ""
    labels = [-100] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        content = message["content"].strip()
        at = text.find(content, len(prompt)) if text.startswith(prompt) else -1
        if at < 0 or not content:
            raise DataError(f"The chat template of {name} renders earlier turns differently when later turns follow, "
                            f"and reply {i} cannot be found after its prompt; use a prefix-preserving template.")
        stop = at + len(content)
        if eot and text.startswith(eot, stop):
            stop += len(eot)
        for k, (a, b) in enumerate(encoded["offset_mapping"]):
            if b > len(prompt) and a < stop:
                labels[k] = ids[k]
    return labels


def conversation_of(row: dict[str, Any]) -> list[dict]:
    """The messages a perplexity is measured on: SFT messages, or prompt + chosen reply."""
    if "messages" in row:
        return row["messages"]
    if "chosen" in row:
        return row["prompt"] + row["chosen"]
    return row["prompt"] + row["completion"]
