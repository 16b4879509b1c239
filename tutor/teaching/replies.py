"""Checks of what a tutor reply does: asks a follow-up question (or one it asked before), echoes the
learner's first person as its own, uses Markdown, takes the learner's error up."""

from __future__ import annotations

import math
import re

from tutor.learner_errors import LearnerError
from tutor.teaching.words import (
    FIRST_PERSON,
    SENTENCE,
    YOU,
    body_words,
    content_words,
    normalize_question,
    sentences,
    speaker_swap_words,
    tokens,
    tutor_form_as_echo,
)


# ---------------------------------------------------------------- follow-up question
def asks_follow_up(reply: str) -> bool:
    """A real follow-up: the reply ends with a question, or asks one of four words or more.
    An echo question alone ("Every morning? Nice.") leaves the learner nothing to answer."""
    text = reply.strip()
    if text.endswith("?"):
        return True
    return any(s.strip().endswith("?") and len(s.split()) >= 4 for s in SENTENCE.findall(text))


def final_question(reply: str) -> str | None:
    """The final question of a reply (lower-cased, spaces collapsed), or None."""
    end = reply.rfind("?")
    if end < 0:
        return None
    start = max(reply.rfind(".", 0, end), reply.rfind("!", 0, end), reply.rfind("?", 0, end),
                reply.rfind("\n", 0, end)) + 1
    question = reply[start:end + 1].lower()
    if "  " in question or "\n" in question or "\t" in question:
        question = " ".join(question.split())
    else:
        question = question.strip()
    return question if len(question) > 1 else None


# An invitation asks as a question does ("Tell me about him!"): a follow-up for the metrics, and a repeat
# when the tutor said it before.
INVITATION = re.compile(r"^(?:\W*(?:oh|so|and|well|now)\W+)*(?:tell me|let me know)\b", re.IGNORECASE)


def asked(reply: str) -> list[str]:
    """What a reply asks the learner: each question sentence of two words or more after leading
    interjections ("Oh, and where ...?"), and each invitation, normalised as the metrics compare them."""
    out = []
    for s in sentences(reply):
        question = normalize_question(s)
        if (s.endswith("?") and len(question.split()) >= 2) or (INVITATION.match(s) and question):
            out.append(question)
    return out


def repeated_question(reply: str, earlier: list[str]) -> str | None:
    """The first thing ``reply`` asks that one of the tutor's ``earlier`` replies already asked, or None."""
    before = {q for text in earlier for q in asked(text)}
    return next((q for q in asked(reply) if q in before), None)

# ---------------------------------------------------------------- Markdown
# Two strengths. The audit counts what a chat window would render as formatting (bold, code, headings,
# lists, *emphasis*); generation rejects a reply with any markup character at all (a lone "*" or "#" too).
_MARKDOWN = re.compile(r"\*\*|__|`|^[ \t]{0,3}#{1,6}[ \t]|^[ \t]*(?:[-*+\u2022]|\d{1,2}[.)])[ \t]+\S"
                       r"|(?<![\w*])\*(?=\S)[^*\n]+(?<=\S)\*(?![\w*])", re.MULTILINE)
_MARKDOWN_START = "-+\u20220123456789"
_MARKUP = re.compile(r"[*#`]|^\s*[-•]\s", re.MULTILINE)


def has_markdown(text: str) -> bool:
    """Formatting a renderer would show (the audit's count); a cheap test of characters first."""
    return ("*" in text or "_" in text or "`" in text or "#" in text or "\n" in text.rstrip()
            or text.lstrip()[:1] in _MARKDOWN_START) and bool(_MARKDOWN.search(text))


def has_markup(text: str) -> bool:
    """Any Markdown character or a list bullet (generation keeps no such reply)."""
    return bool(_MARKUP.search(text))


# ---------------------------------------------------------------- echo of the learner's first person
# Three checks, for three jobs, each as strict as its caller needs:
#   echo_hit             the audit, over millions of turns: word windows after I/my/... (fast, no stems)
#   is_echo              the pedagogy metrics: sentence by sentence, content words and stems
#   echoes_tutor_form    generation, which knows the corrected form: that form said in the first person
FIRST_PERSON_WORDS = frozenset({"i", "my", "i'm", "i've", "i'll", "i'd", "mine"})
_ECHO_STOP = frozenset("a an the to of in on at for and or but so too it is am are was were be been do did does "
                       "have has had not don't didn't really just also very think know see mean guess agree "
                       "like love want this that there".split())


def _close(a: str, b: str) -> bool:
    return a == b or (len(a) >= 3 and len(b) >= 3 and (a.startswith(b) or b.startswith(a)))


def echo_hit(tutor_words: list[str], learner_words: list[str]) -> str | None:
    """The words of a tutor turn that repeat the learner's first-person phrase as the tutor's own: after
    I/my/I'm/..., at least 2 of the 4 words that follow the same pronoun in the learner's turn (equal, or
    one a prefix of the other), one of them not a stop word. Words are train.data.minhash.words."""
    windows: dict[str, list[list[str]]] = {}
    for k, word in enumerate(learner_words):
        if word in FIRST_PERSON_WORDS:
            windows.setdefault(word, []).append(learner_words[k + 1:k + 5])
    if not windows:
        return None
    for k, word in enumerate(tutor_words):
        if word in windows:
            mine = tutor_words[k + 1:k + 5]
            for theirs in windows[word]:
                matched = [a for a, b in zip(mine, theirs) if _close(a, b)]
                if len(matched) >= 2 and any(m not in _ECHO_STOP for m in matched):
                    return " ".join(tutor_words[k:k + 5])
    return None


def is_echo(reply: str, learner: str) -> bool:
    """A sentence of the reply that, after interjections, starts with I / I'm / I've / my / me, while the
    learner spoke in the first person, shares a content word with the learner's turn, says no "you", and
    either is a question ("Oh, I have two brothers?") or repeats at least half of the learner's content
    words (at least two)."""
    if not set(tokens(learner)) & FIRST_PERSON:
        return False
    said = content_words(learner)
    for sentence in sentences(reply):
        words = body_words(sentence)
        if not words or words[0] not in FIRST_PERSON or set(words) & YOU:  # "I'm happy to help you" is the tutor
            continue
        shared = content_words(sentence) & said
        if shared and (sentence.endswith("?") or len(shared) >= max(2, math.ceil(len(said) / 2))):
            return True
    return False


def echoes_tutor_form(tutor_form: str, reply_words: str) -> str | None:
    """The first three words of ``tutor_form`` said in the first person ("you have two" -> "i have two"),
    when that form starts with I/my/I'm and ``reply_words`` (lower-case ``[\\w']+`` words joined by
    spaces) contains them; else None."""
    echo = tutor_form_as_echo(tutor_form)
    echo_words = " ".join(re.findall(r"[\w']+", echo.lower())[:3])
    if echo != tutor_form and echo_words.split()[:1] in (["i"], ["my"], ["i'm"]) and echo_words in reply_words:
        return echo_words
    return None


# ---------------------------------------------------------------- the learner's error taken up
def _words(text: str) -> str:
    return " ".join(re.findall(r"[\w']+", (text or "").lower()))


def takes_up(reply: str, error: LearnerError) -> bool:
    """Whether a reply contains a corrected form of the error (the recast/elicitation move),
    said from either side: "I agree" is taken up by "you agree" too."""
    lowered = _words(reply)
    for correction in error.corrections:
        words = _words(correction).split()
        variants = {" ".join(words), speaker_swap_words(words)}
        if any(re.search(r"\b" + re.escape(v) + r"\b", lowered) for v in variants if v):
            return True
    return False
