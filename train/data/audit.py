"""Audit a data file or folder before it goes into a mix: what is in it, and which style artifacts a
model trained on it would learn.

Per file and for the whole folder: rows, exact duplicates (content hash), near duplicates
(MinHash, see train.data.dedup), rows the schema gate rejected (reasons counted), messages per row,
tutor reply length in words (mean/median/p90), and the style artifacts the seed project's data had:

  openers        the most repeated first 1, 2 and 3 words of tutor turns ("that sounds ...")
  trigrams       the most repeated word 3-grams in tutor turns
  "?" endings    the share of tutor turns that end in a question mark
  follow-ups     the final question of each tutor turn; stock questions are the 10 most common ones
                 that occur in more than one row; their share of rows, and distinct follow-ups / rows
  learner side   distinct learner utterances (and their share), the most repeated learner openers
  markdown       **, __, backticks, headings, bullet or numbered lists, *emphasis* in tutor turns
  red pen        explicit correction in tutor turns (tutor.detector's RED_PEN patterns, and its
                 "a small mistake" rule when the learner did not bring up mistakes)
  echo           a tutor turn that says the learner's first-person words as its own: the learner
                 writes "I have two brother", the tutor "Oh, I have two brothers?" (the recast should
                 be "you have two brothers"). Detected when the tutor turn has I/my/I'm/... followed
                 by at least 2 of the 4 words that follow the same pronoun in the previous learner
                 turn (equal, or one a prefix of the other, e.g. brother/brothers), one of them a
                 content word (not think/know/to/the/...).

Style-artifact score in [0, 1] (0 = none of these artifacts; a mix can downweight or drop a source
by it). Each component is a share scaled so that a plainly broken corpus saturates it at 1:

  opener     = min(1, dominant 2-word tutor opener share / 0.5)     weight 0.20
  stock      = min(1, stock follow-up question row share / 0.5)     weight 0.20
  echo       = min(1, echoing tutor turn share / 0.25)              weight 0.20
  red_pen    = min(1, red-pen tutor turn share / 0.25)              weight 0.20
  markdown   = min(1, markdown tutor turn share / 0.25)             weight 0.10
  monotony   = clamp((share of tutor turns ending in "?" - 0.75) / 0.25, 0, 1)   weight 0.10
  score      = sum(weight * component)

(the dominant opener only counts when it opens more than one turn). Everything streams: one pass
over each file keeping counters, one content hash and one MinHash signature per row; no pairwise
comparison. Files of 16 MB or more are read in 8 MB chunks by one worker process per CPU (up to 8),
whose counters are then added up; the result is the same as in one process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataError
from core.files import output_path, write_error
from core.hashing import content_hash
from core.jsonl import iter_json_lines, jsonl_files, line_chunks, no_rows, reason_key
from core.schema import GateReport, SchemaError, check_row
from train.data.dedup import _ASCII_WORDS, MinHasher, near_duplicate_clusters, similarity, words
from tutor.detector import MISTAKE, RED_PEN

ARTIFACT_WEIGHTS = {  # component: (weight, share at which the component reaches 1)
    "opener": (0.20, 0.5), "stock": (0.20, 0.5), "echo": (0.20, 0.25), "red_pen": (0.20, 0.25),
    "markdown": (0.10, 0.25), "monotony": (0.10, None),
}
EXAMPLES = 5
TOP = 10

# Lower-case text without which no RED_PEN pattern can match, keyed by pattern: a reply that holds none
# of them skips the regexes (most replies). "right " stands for "right way/form/word/verb", "n't " and
# "not " for "don't/can't/do not/cannot" + space, "gramma" for grammar/grammatically, ">" for -> and =>.
# A pattern missing from this table (the detector changed) turns the screen off: slower, never wrong;
# tests/test_audit.py checks red_pen_hit against the detector's own patterns.
_RED_PEN_NEEDS = {
    RED_PEN[0]: ("correct",), RED_PEN[1]: ("should",), RED_PEN[2]: ("should",), RED_PEN[3]: ("instead",),
    RED_PEN[4]: ("instead",), RED_PEN[5]: ("n't ", "not ", "never"), RED_PEN[6]: ("sentence", "gramma", "english"),
    RED_PEN[7]: ("you need",), RED_PEN[8]: ("correct", "wrong"), RED_PEN[9]: ("correct",),
    RED_PEN[10]: ("correct",), RED_PEN[11]: ("gramma",), RED_PEN[12]: ("proper", "right "),
    RED_PEN[13]: ("right ", "correct"), RED_PEN[14]: ("not ",), RED_PEN[15]: (">", "\u2192"),
    RED_PEN[16]: ("version",),
} if len(RED_PEN) == 17 else {}
_RED_PEN_RES = [re.compile(p, re.IGNORECASE) for p in RED_PEN]
_RED_PEN_SCREEN: tuple[str, ...] | None = (
    tuple(dict.fromkeys(k for p in RED_PEN for k in _RED_PEN_NEEDS[p]))
    if all(p in _RED_PEN_NEEDS for p in RED_PEN) else None)
_MISTAKE = re.compile(MISTAKE, re.IGNORECASE)
_LEARNER_MISTAKE = re.compile(r"\b(?:mistake|error)", re.IGNORECASE)
_MARKDOWN = re.compile(r"\*\*|__|`|^[ \t]{0,3}#{1,6}[ \t]|^[ \t]*(?:[-*+\u2022]|\d{1,2}[.)])[ \t]+\S"
                       r"|(?<![\w*])\*(?=\S)[^*\n]+(?<=\S)\*(?![\w*])", re.MULTILINE)
_MARKDOWN_START = "-+\u20220123456789"
_FIRST_PERSON = frozenset({"i", "my", "i'm", "i've", "i'll", "i'd", "mine"})
_ECHO_STOP = frozenset("a an the to of in on at for and or but so too it is am are was were be been do did does "
                       "have has had not don't didn't really just also very think know see mean guess agree "
                       "like love want this that there".split())


def _word_screen(keys: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Split the screen's keys by what a match in the lower-cased reply implies about its words (the
    ``[\\w']+`` runs train.data.dedup.words gives): a key of word characters lies inside one word ("correct"),
    a word run before a space ends a word ("n't "), one after a space starts a word ("you need": a word
    starting with "need"); a key with other characters (">", "\u2192", no case) is looked for in the text."""
    inside, ends, starts, text = [], [], [], []
    for key in keys:
        runs = key.split(" ")
        if not all(re.fullmatch(r"[\w']+", r) for r in runs if r) or not any(runs):
            text.append(key)
        elif len(runs) == 1:
            inside.append(key)
        elif len(runs) == 2 and runs[0] and not runs[1]:
            ends.append(runs[0])
        else:
            starts.append(next(r for r in reversed(runs[1:]) if r))
    return tuple(inside), tuple(ends), tuple(starts), tuple(text)


_SCREEN_INSIDE, _SCREEN_ENDS, _SCREEN_STARTS, _SCREEN_TEXT = _word_screen(
    (_RED_PEN_SCREEN or ()) + ("mistake", "error"))
_SCREEN_TEXT_CASELESS = all(k.lower() == k == k.upper() for k in _SCREEN_TEXT)  # no need to lower the reply
_CLEAN_WORDS: set[str] = set()  # words seen that hold no screen key (grows to _CLEAN_MAX words at most)
_CLEAN_MAX = 500_000


def _maybe_red_pen(reply: str, tutor_words: list[str]) -> bool:
    """False only when red_pen_hit(reply, ...) is certainly None: no word of the reply (its
    train.data.dedup.words, lower-cased) can be part of a screen key, nor of "mistake"/"error", and no key
    of other characters is in it. Cheaper than the screen itself: most words are known clean."""
    if _RED_PEN_SCREEN is None:
        return True
    if _SCREEN_TEXT:
        low = reply if _SCREEN_TEXT_CASELESS else reply.lower()
        for key in _SCREEN_TEXT:
            if key in low:
                return True
    clean = _CLEAN_WORDS
    if clean.issuperset(tutor_words):
        return False
    for word in tutor_words:
        if word in clean:
            continue
        for key in _SCREEN_INSIDE:
            if key in word:
                return True
        if word.endswith(_SCREEN_ENDS) or word.startswith(_SCREEN_STARTS):
            return True
        if len(clean) < _CLEAN_MAX:
            clean.add(word)
    return False


def red_pen_hit(reply: str, learner: str = "", low: str | None = None) -> str | None:
    """The red-pen phrase in a tutor reply, as tutor.detector.suggest_flags finds it, or None.
    (``low`` is ``reply.lower()`` when the caller has it already.)"""
    low = reply.lower() if low is None else low
    screened = _RED_PEN_SCREEN is not None
    if screened:
        for key in _RED_PEN_SCREEN:
            if key in low:
                screened = False
                break
    if not screened:
        for pattern in _RED_PEN_RES:
            m = pattern.search(reply)
            if m:
                return m.group(0)
    if ("mistake" in low or "error" in low) and not _LEARNER_MISTAKE.search(learner or ""):
        m = _MISTAKE.search(reply)
        if m:
            return m.group(0)
    return None


def _close(a: str, b: str) -> bool:
    return a == b or (len(a) >= 3 and len(b) >= 3 and (a.startswith(b) or b.startswith(a)))


def echo_hit(tutor_words: list[str], learner_words: list[str]) -> str | None:
    """The words of a tutor turn that repeat the learner's first-person phrase as the tutor's own."""
    windows: dict[str, list[list[str]]] = {}
    for k, word in enumerate(learner_words):
        if word in _FIRST_PERSON:
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


def follow_up(reply: str) -> str | None:
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


def _prompt_turns(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The turns the audit reads from a preference or unpaired row: prompt + chosen, or prompt +
    completion when labelled good. Rejected replies are not what a model should learn, so skipped."""
    turns = list(row.get("prompt") or [])
    if "chosen" in row:
        turns += row["chosen"]
    elif row.get("label") is True:
        turns += row.get("completion") or []
    return turns


def _quantile(hist: Counter, q: float) -> float:
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
class _Stats:
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

    def merge(self, other: _Stats, shift: int = 0) -> None:
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
        for message in row["messages"] if "messages" in row else _prompt_turns(row):
            role = message["role"]
            if role == "system":
                continue
            n_turns += 1
            text = message["content"]
            # train.data.dedup.words(text), its ASCII path inlined
            w = text.encode("ascii").translate(_ASCII_WORDS).decode("ascii").split() if text.isascii() else words(text)
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
                q = follow_up(stripped)
                if q:
                    questions.append(q)
            if ("*" in text or "_" in text or "`" in text or "#" in text or "\n" in stripped
                    or text.lstrip()[:1] in _MARKDOWN_START) and _MARKDOWN.search(text):
                self.markdown += 1
                self._example("markdown", ref, text)
            if _maybe_red_pen(text, w) and red_pen_hit(text, learner_text, text.lower()):
                self.red_pen += 1
                self._example("red_pen", ref, text)
            if learner_words and not _FIRST_PERSON.isdisjoint(w) and echo_hit(w, learner_words):
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


@dataclass
class FileAudit:
    """The audit of one file, or of a whole folder (``files`` lists what it covers)."""

    name: str
    files: list[str]
    lines: int
    rows: int
    rejected: int
    rejection_reasons: dict[str, int]
    rejection_examples: list[str]
    kinds: dict[str, int]
    exact_duplicates: int
    exact_groups: list[list[str]]
    near_duplicates: int | None
    near_clusters: list[dict[str, Any]]
    near_threshold: float | None
    turns: dict[int, int]
    tutor_turns: int
    learner_turns: int
    reply_words: dict[str, float]
    openers: dict[int, list[tuple[str, int]]]
    trigrams: list[tuple[str, int]]
    question_ending_share: float
    follow_ups: dict[str, Any]
    learner: dict[str, Any]
    markdown: dict[str, Any]
    red_pen: dict[str, Any]
    echo: dict[str, Any]
    dominant_opener: tuple[str, int, float] | None
    artifact_score: float = 0.0

    def artifact_components(self) -> dict[str, float]:
        """Each component of the style-artifact score, in [0, 1] (see the module docstring)."""
        opener_share = self.dominant_opener[2] if self.dominant_opener else 0.0
        shares = {"opener": opener_share, "stock": self.follow_ups["stock_share"], "echo": self.echo["share"],
                  "red_pen": self.red_pen["share"], "markdown": self.markdown["share"]}
        out = {k: min(1.0, v / ARTIFACT_WEIGHTS[k][1]) for k, v in shares.items()}
        out["monotony"] = min(1.0, max(0.0, (self.question_ending_share - 0.75) / 0.25))
        return {k: round(v, 4) for k, v in out.items()}

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["openers"] = {str(n): [{"opener": o, "count": c} for o, c in top] for n, top in self.openers.items()}
        out["trigrams"] = [{"trigram": t, "count": c} for t, c in self.trigrams]
        out["turns"] = {str(k): v for k, v in sorted(self.turns.items())}
        out["dominant_opener"] = None if not self.dominant_opener else dict(
            zip(("opener", "count", "share"), self.dominant_opener))
        out["artifact_components"] = self.artifact_components()
        out["artifact_weights"] = {k: w for k, (w, _) in ARTIFACT_WEIGHTS.items()}
        return out

    def to_markdown(self, level: int = 2) -> str:
        h = "#" * level
        pct = _pct
        lines = [f"{h} {self.name}", ""]
        if len(self.files) > 1:
            lines.append(f"{len(self.files)} files. ")
        lines += [
            f"**Style-artifact score: {self.artifact_score:.3f}** (0 = none, 1 = every artifact saturated) - "
            + ", ".join(f"{k} {v:.2f}" for k, v in self.artifact_components().items()), "",
            "| measure | value |", "|---|---|",
            f"| lines | {self.lines:,} |", f"| rows accepted | {self.rows:,} |",
            f"| rejected by the gate | {self.rejected:,} |",
            f"| exact duplicates | {self.exact_duplicates:,} ({pct(self.exact_duplicates, self.rows)}) |",
            "| near duplicates | " + ("not checked" if self.near_duplicates is None else
                                     f"{self.near_duplicates:,} ({pct(self.near_duplicates, self.rows)}) at "
                                     f"Jaccard >= {self.near_threshold}") + " |",
            f"| tutor turns / learner turns | {self.tutor_turns:,} / {self.learner_turns:,} |",
            f"| reply words mean / median / p90 / max | {self.reply_words['mean']:.1f} / "
            f"{self.reply_words['median']:.0f} / {self.reply_words['p90']:.0f} / {self.reply_words['max']:.0f} |",
            f"| tutor turns ending in \"?\" | {self.question_ending_share:.1%} |",
            "| dominant tutor opener | " + (f"\"{self.dominant_opener[0]}\" {self.dominant_opener[1]:,} "
                                          f"({self.dominant_opener[2]:.1%})" if self.dominant_opener else "none")
            + " |",
            f"| stock follow-up rows (top {TOP} reused questions) | {self.follow_ups['stock_share']:.1%} |",
            f"| distinct follow-ups / rows | {self.follow_ups['distinct']:,} / {self.rows:,} "
            f"({self.follow_ups['distinct_per_row']:.2f}) |",
            f"| distinct learner utterances | {self.learner['distinct']:,} ({self.learner['distinct_share']:.1%}) |",
            f"| markdown in tutor turns | {self.markdown['count']:,} ({self.markdown['share']:.1%}) |",
            f"| red pen in tutor turns | {self.red_pen['count']:,} ({self.red_pen['share']:.1%}) |",
            f"| tutor echoes learner's first person | {self.echo['count']:,} ({self.echo['share']:.1%}) |",
            "",
            "Messages per row (system left out): " + ", ".join(f"{k}: {v:,}" for k, v in sorted(self.turns.items())),
            "",
        ]
        if self.rejection_reasons:
            lines += [f"{h}# Rejected lines", ""] + [f"- {n:,} x {r}" for r, n in self.rejection_reasons.items()]
            lines += [f"- e.g. `{e}`" for e in self.rejection_examples[:5]] + [""]
        for n, top in self.openers.items():
            if top:
                lines.append(f"Top {n}-word tutor openers: " + "; ".join(f"\"{o}\" {c:,}" for o, c in top[:TOP]))
        if self.trigrams:
            lines.append("Top tutor 3-grams: " + "; ".join(f"\"{t}\" {c:,}" for t, c in self.trigrams[:TOP]))
        if self.follow_ups["top"]:
            lines.append("Most used follow-up questions: "
                         + "; ".join(f"\"{q['question']}\" {q['rows']:,}" for q in self.follow_ups["top"]))
        if self.learner["top_openers"]:
            lines.append("Most repeated learner openers: "
                         + "; ".join(f"\"{o}\" {c:,}" for o, c in self.learner["top_openers"][:TOP]))
        lines.append("")
        for name, title in (("red_pen", "Red pen"), ("echo", "Echoes"), ("markdown", "Markdown")):
            examples = getattr(self, name)["examples"]
            if examples:
                lines += [f"{title} examples:"] + [
                    f"- `{e['ref']}`: " + (f"learner \"{e['learner']}\" -> " if e.get("learner") else "")
                    + f"\"{e['text']}\"" for e in examples] + [""]
        if self.exact_groups:
            lines += ["Largest exact-duplicate groups (first is kept by dedup):"]
            lines += [f"- {', '.join(g[:6])}{' ...' if len(g) > 6 else ''}" for g in self.exact_groups[:5]] + [""]
        if self.near_clusters:
            lines += ["Largest near-duplicate clusters (first is kept by dedup):"]
            lines += [f"- {', '.join(c['rows'][:6])}{' ...' if len(c['rows']) > 6 else ''} "
                      f"(min similarity {c['min_similarity']:.2f})" for c in self.near_clusters[:5]] + [""]
        return "\n".join(lines).rstrip() + "\n"


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "0%"


@dataclass
class AuditReport:
    """An audit of one file or a folder: one FileAudit per file and the total."""

    path: str
    files: list[FileAudit]
    total: FileAudit

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "total": self.total.to_dict(), "files": [f.to_dict() for f in self.files],
                "artifact_score_formula": ARTIFACT_FORMULA}

    def to_markdown(self) -> str:
        parts = [f"# Data audit: {self.path}", "", ARTIFACT_FORMULA, ""]
        if len(self.files) > 1:
            parts += ["| file | rows | rejected | exact dup | near dup | artifact score |", "|---|---|---|---|---|---|"]
            parts += [f"| {f.name} | {f.rows:,} | {f.rejected:,} | {f.exact_duplicates:,} | "
                      f"{'-' if f.near_duplicates is None else format(f.near_duplicates, ',')} | "
                      f"{f.artifact_score:.3f} |" for f in self.files]
            parts += ["", self.total.to_markdown(2)]
            parts += [f.to_markdown(2) for f in self.files]
        else:
            parts.append(self.total.to_markdown(2))
        return "\n".join(parts)


ARTIFACT_FORMULA = ("Style-artifact score = 0.2 opener + 0.2 stock + 0.2 echo + 0.2 red_pen + 0.1 markdown + "
                    "0.1 monotony, where opener = min(1, dominant 2-word opener share / 0.5), stock = min(1, stock "
                    "follow-up row share / 0.5), echo / red_pen / markdown = min(1, share of tutor turns / 0.25), "
                    "monotony = clamp((share of tutor turns ending in '?' - 0.75) / 0.25, 0, 1).")


@dataclass
class _Scan:
    """What scanning one file (or one chunk of it) gives; chunks of a file are joined with ``join``."""

    stats: _Stats
    rejected: list[tuple[str, int | str]]   # (reason, line)
    digests: list[str]                      # content hash of each accepted row, in order
    refs: list[int | str]                   # line (or reference) of each accepted row
    signatures: np.ndarray | None           # MinHash signature of each accepted row
    grams: tuple[np.ndarray, np.ndarray, np.ndarray]  # tutor 3-grams: hash, count, word hashes
    vocab: dict[int, str]                   # word hash -> word, to name the top 3-grams
    lines: int = 0                          # lines the chunk spans (to number the next chunk's lines)

    @staticmethod
    def join(parts: list[_Scan]) -> _Scan:
        if len(parts) == 1:
            return parts[0]
        out = _Scan(_Stats(), [], [], [], None, _no_grams(), {})
        shift = 0
        for part in parts:
            out.stats.merge(part.stats, shift)
            out.rejected += [(reason, line + shift) for reason, line in part.rejected]
            out.digests += part.digests
            out.refs += [line + shift for line in part.refs]
            out.vocab.update(part.vocab)
            shift += part.lines
        out.lines = shift
        sigs = [p.signatures for p in parts if p.signatures is not None]
        out.signatures = np.concatenate(sigs) if sigs else None
        out.grams = _reduce_grams([p.grams for p in parts])
        return out


def _no_grams() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros((0, 3), np.uint64)


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts in a sorted array."""
    new = np.empty(len(ordered), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    return np.flatnonzero(new)


def _count_hashes(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(h, return_index=True, return_counts=True)`` (counts as int64), with a faster unstable
    sort: the first index of each value is the least index among its equal entries."""
    order = np.argsort(h)
    ordered = h[order]
    starts = _run_starts(ordered)
    counts = np.diff(np.append(starts, len(ordered))).astype(np.int64)
    return ordered[starts], np.minimum.reduceat(order, starts), counts


def _reduce_grams(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add up 3-gram counts by hash (keeping the words of each hash's first occurrence). Each part is
    sorted by hash, without repeats (as _count_hashes and this function give them)."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return _no_grams()
    if len(parts) == 1:
        return parts[0]
    h = np.concatenate([p[0] for p in parts])
    # every part is sorted by hash: a stable sort merges the runs (and keeps the earliest of equals first)
    order = np.argsort(h, kind="stable")
    ordered = h[order]
    starts = _run_starts(ordered)
    counts = np.add.reduceat(np.concatenate([p[1] for p in parts])[order], starts)
    return ordered[starts], counts.astype(np.int64), np.concatenate([p[2] for p in parts])[order[starts]]


class _Scanner:
    """Counts rows one by one; words go to MinHash/3-gram counting in batches."""

    def __init__(self, near: bool = True, num_perm: int = 64, batch: int = 4096):
        self.stats = _Stats()
        self.near, self.batch = near, batch
        self.hasher = MinHasher(num_perm)
        self.digests: list[str] = []
        self.refs: list[int | str] = []
        self._sigs: list[np.ndarray] = []
        self._grams: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._flat: list[str] = []
        self._lens: list[int] = []
        self._per_row: list[int] = []
        self._counted: list[bool] = []

    def add(self, row: dict[str, Any], kind: str, ref: int | str, digest: str) -> None:
        self._per_row.append(self.stats.add(row, kind, ref, self._flat, self._lens,
                                            self._counted if self.near else None, self.near))
        self.digests.append(digest)
        self.refs.append(ref)
        if len(self._per_row) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        self.stats.settle()
        if not self._per_row:
            return
        if self.near:
            found = self.hasher.batch(self._flat, self._lens, self._per_row, self._counted)
            self._sigs.append(found.signatures)
        else:
            found = self.hasher.ngrams(self._flat, self._lens)  # tutor turns only (see add)
        if len(found.ngram_hashes):
            unique, first, counts = _count_hashes(found.ngram_hashes)
            self._grams.append((unique, counts, found.words(first)))
        self._flat, self._lens, self._per_row, self._counted = [], [], [], []

    def result(self, rejected: list[tuple[str, int | str]], lines: int = 0) -> _Scan:
        self._flush()
        k = self.hasher.num_perm
        sigs = (np.concatenate(self._sigs) if self._sigs else np.zeros((0, k), np.uint32)) if self.near else None
        grams = _reduce_grams(self._grams)
        wanted = set(grams[2].reshape(-1).tolist())
        vocab = {h: w for w, h in self.hasher.word_hashes.items() if h in wanted}
        return _Scan(self.stats, rejected, self.digests, self.refs, sigs, grams, vocab, lines)


def _scan_chunk(task: tuple) -> _Scan:
    """Scan the lines of one byte range of a JSONL file through the gate (runs in a worker process)."""
    path, start, end, last, near, num_perm, count_tokens, max_tokens = task
    gate = GateReport()
    scanner = _Scanner(near, num_perm)
    rejected: list[tuple[str, int | str]] = []
    add = scanner.add
    for number, row in iter_json_lines(path, gate, start=start, end=end, read_only=True):
        try:
            kind = check_row(row, count_tokens=count_tokens, max_tokens=max_tokens)
        except SchemaError as exc:
            rejected.append((exc.reason, number))
            continue
        add(row, kind, number, row["metadata"].get("content_hash") or content_hash(row))
    if gate.rejected:
        rejected = sorted(rejected + [(e.reason, e.line) for e in gate.rejected], key=lambda r: r[1])
    # a chunk that is not the file's last ends on a line boundary: its lines are the lines read
    return scanner.result(rejected, 0 if last else gate.lines)


class Auditor:
    """Streaming audit of rows that passed the gate: ``add`` each row with its reference (a line
    number, or a string such as "data/set[train][17]"), then ``finish``."""

    def __init__(self, path: str = "<rows>", *, near: bool = True, threshold: float = 0.8, num_perm: int = 64):
        self.path, self.near, self.threshold = path, near, threshold
        self._scanner = _Scanner(near, num_perm)
        self._rejected: list[tuple[str, int | str]] = []

    def add(self, row: dict[str, Any], ref: int | str, kind: str | None = None, digest: str | None = None) -> None:
        """Count one row (``kind`` and ``digest`` are worked out when not given; the row is gated)."""
        if kind is None:
            kind = check_row(row)
        if digest is None:
            digest = row["metadata"].get("content_hash") or content_hash(row)
        self._scanner.add(row, kind, ref, digest)

    def reject(self, reason: str, ref: int | str) -> None:
        self._rejected.append((reason, ref))

    def finish(self, name: str | None = None, rejected: list[SchemaError] | None = None) -> FileAudit:
        """The audit; ``rejected`` replaces the rejections recorded with ``reject``."""
        if rejected is not None:
            self._rejected = [(e.reason, e.line if e.line is not None else str(e.path)) for e in rejected]
        scan = self._scanner.result(self._rejected)
        scan.stats.place(_where(self.path))
        return _build(name or self.path, [(self.path, scan)], self.threshold)


def _where(path: str) -> Callable[[int | str], str]:
    return lambda ref: ref if isinstance(ref, str) else f"{path}:{ref}"


def _build(name: str, scans: list[tuple[str, _Scan]], threshold: float) -> FileAudit:
    """A FileAudit from the scans of one or more files (exact and near duplicates across all of them)."""
    if len(scans) == 1:
        stats = scans[0][1].stats
        stats.settle()
    else:
        stats = _Stats()
        for _, scan in scans:
            stats.merge(scan.stats)
    first: dict[str, tuple[int, int | str]] = {}       # content hash -> (file index, line) of its first row
    groups: dict[str, list[tuple[int, int | str]]] = {}
    duplicates = 0
    near = all(scan.signatures is not None for _, scan in scans)
    keep_sigs, sig_refs, rejected = [], [], []
    for n, (path, scan) in enumerate(scans):
        rejected += [SchemaError(reason, *((ref, None) if isinstance(ref, str) else (path, ref)))
                     for reason, ref in scan.rejected]
        keep = []
        for i, digest in enumerate(scan.digests):
            seen = first.get(digest)
            if seen is None:
                first[digest] = (n, scan.refs[i])
                keep.append(i)
            else:
                duplicates += 1
                groups.setdefault(digest, [seen]).append((n, scan.refs[i]))
        if near:
            keep_sigs.append(scan.signatures[keep])
            sig_refs += [(n, scan.refs[i]) for i in keep]
    wheres = [_where(path) for path, _ in scans]

    def where(ref: tuple[int, int | str]) -> str:
        return wheres[ref[0]](ref[1])

    exact_groups = [[where(r) for r in g] for g in sorted(groups.values(), key=len, reverse=True)[:TOP]]
    near_count, near_clusters = None, []
    if near:
        sig = np.concatenate(keep_sigs)
        clusters = near_duplicate_clusters(sig, threshold)
        near_count = sum(len(c) - 1 for c in clusters)
        for c in sorted(clusters, key=len, reverse=True)[:TOP]:
            sims = similarity(sig[c[1:]], sig[c[0]])
            near_clusters.append({"rows": [where(sig_refs[i]) for i in c], "size": len(c),
                                  "min_similarity": round(float(sims.min()), 3)})
    grams = _reduce_grams([scan.grams for _, scan in scans]) if len(scans) > 1 else scans[0][1].grams
    vocab: dict[int, str] = {}
    for _, scan in scans:
        vocab.update(scan.vocab)
    top = np.argsort(-grams[1], kind="stable")[:15]
    trigrams = [(" ".join(vocab.get(h, "?") for h in grams[2][i].tolist()), int(grams[1][i])) for i in top]
    s = stats
    tutor, learner = s.tutor_turns, s.learner_turns
    hist = s.reply_words
    total_words = sum(k * v for k, v in hist.items())
    top_questions = [(q, n) for q, n in s.follow_ups.most_common(TOP) if n > 1]
    stock = {q for q, _ in top_questions}
    stock_rows = sum(1 for qs in s.row_follow_ups if (qs in stock if isinstance(qs, str) else not stock.isdisjoint(qs))
                     ) if stock else 0
    o2 = s.openers[1].most_common(1)
    dominant = (o2[0][0], o2[0][1], o2[0][1] / tutor) if o2 and o2[0][1] > 1 and tutor else None
    reasons = Counter(reason_key(e.reason) for e in rejected)
    audit = FileAudit(
        name=name, files=[path for path, _ in scans], lines=s.rows + len(rejected), rows=s.rows,
        rejected=len(rejected), rejection_reasons=dict(reasons.most_common()),
        rejection_examples=[str(e) for e in rejected[:20]], kinds=dict(s.kinds), exact_duplicates=duplicates,
        exact_groups=exact_groups, near_duplicates=near_count, near_clusters=near_clusters,
        near_threshold=threshold if near else None, turns=dict(s.turns), tutor_turns=tutor, learner_turns=learner,
        reply_words={"mean": total_words / tutor if tutor else 0.0, "median": _quantile(hist, 0.5),
                     "p90": _quantile(hist, 0.9), "max": float(max(hist)) if hist else 0.0},
        openers={n + 1: c.most_common(TOP) for n, c in enumerate(s.openers)},
        trigrams=[(t, c) for t, c in trigrams if c > 0],
        question_ending_share=s.question_endings / tutor if tutor else 0.0,
        follow_ups={"rows_with_follow_up": len(s.row_follow_ups), "distinct": len(s.follow_ups),
                    "distinct_per_row": len(s.follow_ups) / s.rows if s.rows else 0.0,
                    "stock_rows": stock_rows, "stock_share": stock_rows / s.rows if s.rows else 0.0,
                    "top": [{"question": q, "rows": n} for q, n in top_questions]},
        learner={"utterances": learner, "distinct": len(s.learner_utterances),
                 "distinct_share": len(s.learner_utterances) / learner if learner else 0.0,
                 "distinct_openers": len(s.learner_openers), "top_openers": s.learner_openers.most_common(TOP)},
        markdown=_artifact(s.markdown, tutor, s.examples["markdown"]),
        red_pen=_artifact(s.red_pen, tutor, s.examples["red_pen"]),
        echo=_artifact(s.echo, tutor, s.examples["echo"]),
        dominant_opener=dominant,
    )
    audit.artifact_score = round(sum(ARTIFACT_WEIGHTS[k][0] * v for k, v in audit.artifact_components().items()), 4)
    return audit


def _artifact(count: int, turns: int, examples: list) -> dict[str, Any]:
    return {"count": count, "share": count / turns if turns else 0.0, "examples": [dict(e) for e in examples]}


CHUNK_BYTES = 8 << 20
PARALLEL_BYTES = 16 << 20


def default_workers(total_bytes: int) -> int:
    """Worker processes for scanning: one per CPU (at most 8) for 16 MB of data or more, else 1."""
    return min(os.cpu_count() or 1, 8) if total_bytes >= PARALLEL_BYTES else 1


def scan_files(files: list[Path], *, near: bool = True, num_perm: int = 64, workers: int | None = None,
               count_tokens: Callable[[dict], int] | None = None, max_tokens: int | None = None,
               progress: bool = False, chunk_bytes: int = CHUNK_BYTES) -> list[_Scan]:
    """Scan JSONL files in byte-range chunks, in ``workers`` processes (1: in this process; a
    ``count_tokens`` function always runs here). Returns one joined _Scan per file."""
    sizes = [f.stat().st_size for f in files]
    if workers is None:
        workers = default_workers(sum(sizes))
    if count_tokens is not None:
        workers = 1
    tasks, owner = [], []
    for n, (file, size) in enumerate(zip(files, sizes)):
        parts = max(1, -(-size // chunk_bytes), workers if size >= chunk_bytes // 4 else 1)
        if workers > 1 and parts > 1:  # a multiple of the workers, so that none sits idle at the end
            parts = -(-parts // workers) * workers
        chunks = line_chunks(file, parts)
        for k, (start, end) in enumerate(chunks):
            tasks.append((str(file), start, end, k == len(chunks) - 1, near, num_perm, count_tokens, max_tokens))
            owner.append(n)

    def progress_bar():
        if not progress:
            return None
        from tqdm import tqdm

        return tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="audit", mininterval=0.5)

    results: list[_Scan] = []
    bar = None
    try:
        if workers <= 1 or len(tasks) == 1:
            bar = progress_bar()
            for task in tasks:
                results.append(_scan_chunk(task))
                if bar is not None:
                    bar.update(task[2] - task[1])
        else:
            context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                                  else "spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
                done = pool.map(_scan_chunk, tasks)  # workers start here, before any progress-bar thread
                bar = progress_bar()
                for task, result in zip(tasks, done):
                    results.append(result)
                    if bar is not None:
                        bar.update(task[2] - task[1])
    finally:
        if bar is not None:
            bar.close()
    per_file: list[list[_Scan]] = [[] for _ in files]
    for n, result in zip(owner, results):
        per_file[n].append(result)
    return [_Scan.join(parts) for parts in per_file]


def audit_path(path: str | Path, *, near: bool = True, threshold: float = 0.8, num_perm: int = 64,
               count_tokens: Callable[[dict], int] | None = None, max_tokens: int | None = None,
               workers: int | None = None, progress: bool = False, chunk_bytes: int = CHUNK_BYTES) -> AuditReport:
    """Audit a JSONL file, or every ``*.jsonl`` under a folder: one FileAudit per file, and the total
    (duplicates across files count there). Lines that fail the gate are counted with their reasons.
    Big files are read in ``chunk_bytes`` pieces by ``workers`` processes (see :func:`scan_files`)."""
    files = jsonl_files(path)
    scans = scan_files(files, near=near, num_perm=num_perm, workers=workers, count_tokens=count_tokens,
                       max_tokens=max_tokens, progress=progress, chunk_bytes=chunk_bytes)
    if not any(scan.stats.rows or scan.rejected for scan in scans):
        if len(files) == 1:
            raise no_rows(files[0])
        raise DataError(f"{path}: no rows in any of its {len(files)} *.jsonl files; nothing to audit.")
    audits = []
    for file, scan in zip(files, scans):
        scan.stats.place(_where(str(file)))
        audits.append(_build(str(file), [(str(file), scan)], threshold))
    if len(files) == 1:
        return AuditReport(str(path), audits, audits[0])
    total = _build(f"{path} (all {len(files)} files)", [(str(f), s) for f, s in zip(files, scans)], threshold)
    return AuditReport(str(path), audits, total)


def write_report(report: AuditReport, json_path: str | Path | None = None, markdown_path: str | Path | None = None
                 ) -> None:
    """Write the report as JSON and/or Markdown."""
    for path, text in ((json_path, lambda: json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"),
                       (markdown_path, report.to_markdown)):
        if path:
            path = output_path(path)
            try:
                path.write_text(text(), encoding="utf-8")
            except OSError as exc:
                raise write_error(path, exc) from None
