"""A learner seed of the offline lane (what the learner said, and what a tutor needs to answer it), and
the small text helpers the frames share."""

from __future__ import annotations

from dataclasses import dataclass, field

from train.data import synth_vocab as V


@dataclass
class Seed:
    """One learner turn: what they said, and what a tutor needs to answer it."""

    learner: str                 # the learner's message (with the error, if any)
    tutor_form: str              # the corrected content as the tutor says it ("you went to the beach")
    error_type: str | None       # None: the learner made no error
    wrong: str | None = None     # the learner's wrong words
    right: str | None = None     # the corrected words, as they appear in the tutor's reply
    topic: str = ""
    followups: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    tails: list[tuple[str, list[str] | None]] = field(default_factory=list)  # correct clauses to add, own follow-ups
    leads: list[str] = field(default_factory=list)  # lead-ins that fit before the clause
    hints: list[str] = field(default_factory=list)  # metalinguistic hints, when HINTS[error_type] does not fit
    reactions: list[str] = field(default_factory=list)  # replies to the correct sentence, when cheerful ones don't fit


def fill(template: str, p: str, pos: str, obj: str) -> str:
    third = p in ("he", "she", "it")
    do, were, have = ("does", "was", "has") if third else ("do", "were", "have")
    return template.format(p=p, pos=pos, obj=obj, do=do, Do=do.capitalize(), were=were, Were=were.capitalize(),
                           have=have)


def topic_followups(topic: str, p: str, pos: str, obj: str) -> list[str]:
    return [fill(t, p, pos, obj) for t in V.TOPIC_FOLLOWUPS[topic]]


def context_words(tutor: str, words: list[str]) -> str:
    """The corrected words with one word of context from the tutor's sentence."""
    tokens = tutor.split()
    for i, token in enumerate(tokens):
        if words and token == words[0]:
            return " ".join(tokens[i:i + len(words) + 1])
    return " ".join(words)


def tails_for(key: str, **names: str) -> list[tuple[str, list[str] | None]]:
    """The correct tails of a frame's entry, with the tails that fit any turn."""
    own = [(t.format(**names), [f.format(**names) for f in fs] if fs else None) for t, fs in V.EXTRA_TAILS.get(key, [])]
    return own + [(t, None) for t in V.COMMENT_TAILS]


def lower_first(text: str) -> str:
    return text if text.startswith(("I ", "I'", "English")) else text[:1].lower() + text[1:]


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]
