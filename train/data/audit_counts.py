"""The counters of an audit: one pass over each row of a file (or of a chunk of it) counts turns, reply
lengths, openers, follow-up questions, learner utterances and the style artifacts (Markdown, red pen,
echo; the checks are tutor.teaching's). Counters of chunks and files add up with ``merge``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from train.data.minhash import ASCII_WORDS, words
from tutor.teaching.overt import maybe_red_pen, red_pen_hit
from tutor.teaching.replies import FIRST_PERSON_WORDS, echo_hit, final_question, has_markdown

EXAMPLES = 5  # examples kept of each artifact


def prompt_turns(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The turns the audit reads from a preference or unpaired row: prompt + chosen, or prompt +
    completion when labelled good. Rejected replies are not what a model should learn, so skipped."""
    turns = list(row.get("prompt") or [])
    if "chosen" in row:
        turns += row["chosen"]
    elif row.get("label") is True:
        turns += row.get("completion") or []
    return turns


def quantile(hist: Counter, q: float) -> float:
    total = sum(hist.values())
    if not total:
        return 0.0
    target, seen = q * (total - 1), 0
    for value in sorted(hist):
        seen += hist[value]
        if seen - 1 >= target:
            return float(value)
    return float(max(hist))  # pragma: no cover


@dataclass
class Counts:
    """Mergeable counters of one file (or chunk of a file, or folder). Examples and references hold a
    line number (int) until the file is known, then a "file:line" string."""

    rows: int = 0
    kinds: Counter = field(default_factory=Counter)
    turns: Counter = field(default_factory=Counter)
    tutor_turns: int = 0
    learner_turns: int = 0
    reply_words: Counter = field(default_factory=Counter)
    openers: tuple = field(default_factory=lambda: (Counter(), Counter(), Counter()))
    question_endings: int = 0
    follow_ups: Counter = field(default_factory=Counter)      # question -> rows using it
    row_follow_ups: list = field(default_factory=list)       # per row with follow-ups: its question, or a tuple
    learner_utterances: set = field(default_factory=set)
    learner_openers: Counter = field(default_factory=Counter)
    markdown: int = 0
    red_pen: int = 0
    echo: int = 0
    examples: dict = field(default_factory=lambda: {"markdown": [], "red_pen": [], "echo": []})
    # values collected row by row and added to their counters in bulk by settle(): 1-, 2-, 3-word tutor
    # openers, tutor reply lengths, learner utterances, learner openers
    pending: list = field(default_factory=lambda: [[], [], [], [], [], []], repr=False)

    def settle(self) -> None:
        """Add the pending values to the counters (in the order they came, so ties rank the same)."""
        o1, o2, o3, lengths, utterances, learner_openers = self.pending
        if lengths or utterances:
            for counter, values in zip(self.openers, (o1, o2, o3)):
                counter.update(values)
            self.reply_words.update(lengths)
            self.learner_utterances.update(utterances)
            self.learner_openers.update(learner_openers)
            self.pending = [[], [], [], [], [], []]

    def merge(self, other: Counts, shift: int = 0) -> None:
        self.settle()
        other.settle()
        for name in ("rows", "tutor_turns", "learner_turns", "question_endings", "markdown", "red_pen", "echo"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("kinds", "turns", "reply_words", "follow_ups", "learner_openers"):
            getattr(self, name).update(getattr(other, name))
        for mine, theirs in zip(self.openers, other.openers):
            mine.update(theirs)
        self.row_follow_ups += other.row_follow_ups
        self.learner_utterances |= other.learner_utterances
        for name, found in other.examples.items():
            for example in found[:EXAMPLES - len(self.examples[name])]:
                ref = example["ref"]
                self.examples[name].append({**example, "ref": ref + shift if isinstance(ref, int) else ref})

    def add(self, row: dict[str, Any], kind: str, ref: int | str, flat: list[str], lens: list[int],
            counted: list[bool] | None, learner_words_too: bool = True) -> int:
        """Count one gated row. The words of its assistant turns (and of its user turns when
        ``learner_words_too``) are appended to ``flat`` (with each turn's length in ``lens`` and whether
        it is a tutor turn in ``counted``, unless that is None) for MinHash and 3-gram counting; returns
        the number of turns appended. Call settle() before reading the counters."""
        self.rows += 1
        self.kinds[kind] += 1
        learner_words: list[str] = []
        learner_text = ""
        questions = []
        n_turns = tutor_turns = question_endings = 0
        o1, o2, o3, lengths, utterances, learner_openers = self.pending
        for message in row["messages"] if "messages" in row else prompt_turns(row):
            role = message["role"]
            if role == "system":
                continue
            n_turns += 1
            text = message["content"]
            # train.data.minhash.words(text), its ASCII path inlined
            w = text.encode("ascii").translate(ASCII_WORDS).decode("ascii").split() if text.isascii() else words(text)
            n = len(w)
            if role == "user":
                if learner_words_too:
                    flat += w
                    lens.append(n)
                    if counted is not None:
                        counted.append(False)
                utterances.append(" ".join(w))
                learner_openers.append(" ".join(w[:3]))
                learner_words, learner_text = w, text
                continue
            flat += w
            lens.append(n)
            if counted is not None:
                counted.append(True)
            tutor_turns += 1
            lengths.append(n)
            if n > 2:
                first = w[0] + " " + w[1]
                o1.append(w[0])
                o2.append(first)
                o3.append(first + " " + w[2])
            elif n:
                o1.append(w[0])
                if n > 1:
                    o2.append(w[0] + " " + w[1])
            stripped = text.rstrip()
            if "?" in stripped:
                if stripped[-1] == "?":
                    question_endings += 1
                q = final_question(stripped)
                if q:
                    questions.append(q)
            if has_markdown(text):
                self.markdown += 1
                self._example("markdown", ref, text)
            if maybe_red_pen(text, w) and red_pen_hit(text, learner_text, text.lower()):
                self.red_pen += 1
                self._example("red_pen", ref, text)
            if learner_words and not FIRST_PERSON_WORDS.isdisjoint(w) and echo_hit(w, learner_words):
                self.echo += 1
                self._example("echo", ref, text, learner_text)
        self.tutor_turns += tutor_turns
        self.learner_turns += n_turns - tutor_turns
        self.question_endings += question_endings
        self.turns[n_turns] += 1
        if questions:
            follow_ups = self.follow_ups
            if len(questions) == 1:
                follow_ups[questions[0]] += 1
                self.row_follow_ups.append(questions[0])
            else:
                unique = tuple(dict.fromkeys(questions))
                for q in unique:
                    follow_ups[q] += 1
                self.row_follow_ups.append(unique)
        return n_turns if learner_words_too else tutor_turns

    def _example(self, name: str, ref: int | str, text: str, learner: str = "") -> None:
        found = self.examples[name]
        if len(found) < EXAMPLES:
            shown = " ".join(text.split())[:160]
            found.append({"ref": ref, "text": shown, **({"learner": " ".join(learner.split())[:160]} if learner else {})})

    def place(self, where: Callable[[int | str], str]) -> None:
        """Turn the examples' line numbers into "file:line" references."""
        for found in self.examples.values():
            for example in found:
                example["ref"] = where(example["ref"])
