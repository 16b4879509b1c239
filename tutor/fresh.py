"""The tutor does not ask the learner again what it already asked in the conversation.

Over six turns the default 135M tutor asks one of its stock follow-ups twice ("What do you like about
it?") in about a quarter of its dialogues, and two changes to the training data did not stop it (README,
"Tried and not kept"). So the reply path checks each reply: when it asks something an earlier tutor turn
of the same conversation asked (``tutor.teaching.replies.repeated_question``: a question sentence of two
words or more, or a "Tell me ..." invitation, compared after leading interjections, as the dialogue
evaluation compares follow-ups), it is generated again, sampled (temperature at least 0.8) with another
seed, up to ``tries`` times, and the first reply that asks nothing again is kept. When every try asks
again, the first reply is kept: it is the model's own best guess, and a retry is not better just for being
different.

A retry is streamed after a ``Chunk(restart=True)``: whoever shows the reply drops what it showed. The app
and the CLI chat (``tutor.session``) and ``quimbot eval dialogue`` call ``fresh_stream``, so the
evaluation measures what learners get; single-turn evaluations have no earlier turns and call the engine
directly. ``QUIMBOT_FRESH_TRIES=0`` turns the check off (``eval dialogue --fresh-tries 0`` measures the
model alone)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from core.errors import InputError
from tutor.backends.base import Backend, Chunk, GenerationOptions, Message
from tutor.teaching.replies import repeated_question

DEFAULT_TRIES = 3
RETRY_TEMPERATURE = 0.8


def default_tries() -> int:
    """Retries per reply: ``QUIMBOT_FRESH_TRIES`` (0 turns the check off), else 3."""
    value = os.environ.get("QUIMBOT_FRESH_TRIES", "").strip()
    if not value:
        return DEFAULT_TRIES
    if not value.isdigit():
        raise InputError(f"QUIMBOT_FRESH_TRIES={value!r}: give a whole number of retries (0 turns the check off).")
    return int(value)


def retry_options(options: GenerationOptions, attempt: int) -> GenerationOptions:
    """The options of retry ``attempt`` (1, 2, ...): sampled, and with a fixed seed another fixed seed, so a
    greedy evaluation stays reproducible."""
    return options.model_copy(update={
        "temperature": max(options.temperature, RETRY_TEMPERATURE),
        "seed": None if options.seed is None else options.seed + attempt,
    })


def fresh_stream(backend: Backend, messages: list[Message], options: GenerationOptions, tries: int | None = None,
                 on_retry: Callable[[str, str], None] | None = None) -> Iterator[Chunk]:
    """``backend.stream(messages, options)``, generated again when the reply asks what an earlier assistant
    message asked. ``on_retry(reply, question)`` is called for each reply that asked again."""
    tries = default_tries() if tries is None else tries
    earlier = [m["content"] for m in messages if m["role"] == "assistant"]
    if not tries or not earlier:  # the check is off, or nothing was asked before
        yield from backend.stream(messages, options)
        return
    first: list[Chunk] = []
    for attempt in range(tries + 1):
        chunks = []
        for chunk in backend.stream(messages, options if attempt == 0 else retry_options(options, attempt)):
            chunks.append(chunk)
            yield chunk
        text = "".join(c.text for c in chunks)
        question = repeated_question(text, earlier)
        if question is None:
            return
        first = first or chunks
        if on_retry is not None:
            on_retry(text, question)
        if attempt < tries:
            yield Chunk(restart=True)
    yield Chunk(restart=True)  # every try asked again: back to the first reply
    yield from first


def reply_text(chunks: Iterator[Chunk]) -> str:
    """The text of a streamed reply, honouring restarts."""
    parts: list[str] = []
    for chunk in chunks:
        if chunk.restart:
            parts.clear()
        parts.append(chunk.text)
    return "".join(parts).strip()
