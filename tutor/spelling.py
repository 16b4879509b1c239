"""The tutor never writes a learner's misspelling back to them.

Real learners misspell (on JFLEG dev about a third of the sentences hold a word no dictionary knows), and the
default 135M tutor restates the learner's clause with the misspelling copied ("... like alcohol, hair spray,
and cigarrets?"): it models the wrong form, the opposite of a recast. So the reply path checks every word of the
reply that the learner also wrote: when the word is not English (not in symspellpy's dictionary and rarer
than Zipf 3 in wordfreq's list) and one well-known word is clearly the one meant, the reply says that word.

"Clearly the one meant": the word is not a common word with an ending added ("teached", "choosed": grammar
errors, whose fix is no spelling); the candidates are the dictionary words nearest to it, one edit away, or
for words of 7 letters or more two edits that only double or undouble letters ("tommorow"), each at least
Zipf 3.0 (seen about once per million words) and not the word with letters cut off or added at an edge or
another ending ("unmeaningful" -> "meaningful" says the opposite); the most frequent must be at least 1.5
Zipf (about 30 times) more frequent than the next, and 2.5 Zipf (about 300 times) more frequent than the
word itself. Otherwise the word is left as it is: a wrong guess in the tutor's mouth changes what the
learner said. The thresholds were chosen on our own typos (``learner_noise.typo``) of 553 words of
wordfreq's ranks 2,000-20,000 (349 fixed, 12 changed to a wrong word: 96.7% of the changes right, 192
left), on 1,500 rare valid words of its ranks 40,000-80,000 (4 changed, all names: "wyman" -> "woman"),
and on the 212 prompts (none changed; an earlier rule made "ceviche" "device"), never on JFLEG
(``tests/test_spelling.py``).

symspellpy (fast edit-distance look-ups over its own frequency dictionary) and wordfreq (word frequencies
from several corpora) are maintained packages with their own data; nothing here is a hand-written word
list. In the app the check runs as the reply streams (a word is shown once it is complete), and every
changed word is logged as a ``spelling_fixed`` event with the model's own word; ``QUIMBOT_SPELLING=0``
turns it off. Evaluations report the model alone and the reply path."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from core.errors import InputError
from tutor.backends.base import Chunk

KNOWN_ZIPF = 3.0     # as frequent as this and the word is English, whatever the dictionary says
CANDIDATE_ZIPF = 3.0  # a correction must be a word seen about once per million words or more
MARGIN_ZIPF = 1.5     # ... and clearly more frequent than the next candidate
MIN_LETTERS = 4       # shorter words have too many neighbours ("ther": the, there, their, her)
TWO_EDITS_FROM = 7    # letters from which a word may be two edits from its correction
GAP_ZIPF = 2.5        # the correction is at least this much (about 300 times) more frequent than the word

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


@dataclass(frozen=True)
class Fix:
    wrong: str
    right: str


def enabled() -> bool:
    """``QUIMBOT_SPELLING``: 1 (the default) checks replies, 0 turns the check off."""
    value = os.environ.get("QUIMBOT_SPELLING", "").strip()
    if value not in ("", "0", "1"):
        raise InputError(f"QUIMBOT_SPELLING={value!r}: give 1 (check the tutor's spelling) or 0 (off).")
    return value != "0"


_lock = threading.Lock()
_loaded: list = []  # the SymSpell instance, once loaded


def _dictionary():
    """SymSpell with its own English frequency dictionary (82,765 words), for edits up to two; loaded once,
    whichever thread asks first."""
    if not _loaded:
        with _lock:
            if not _loaded:
                from symspellpy import SymSpell

                checker = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
                path = Path(sys.modules["symspellpy"].__file__).parent / "frequency_dictionary_en_82_765.txt"
                if not checker.load_dictionary(str(path), term_index=0, count_index=1):
                    raise RuntimeError(f"symspellpy's dictionary is missing: {path}")
                _loaded.append(checker)
    return _loaded[0]


def warm() -> None:
    """Load the dictionary and the frequency list now (about 5 s and 150 MB), not on a learner's reply."""
    _dictionary()
    _zipf("warm")


def _zipf(word: str) -> float:
    from wordfreq import zipf_frequency

    return zipf_frequency(word, "en")


@cache
def correction(word: str) -> str | None:
    """The word meant by ``word`` (lower case) when it is misspelled and one correction is clear, else None."""
    if len(word) < MIN_LETTERS or not word.isascii() or not word.isalpha():
        return None
    checker = _dictionary()
    if word in checker.words or _zipf(word) >= KNOWN_ZIPF or _inflected(word, checker):
        return None
    from symspellpy import Verbosity

    found = checker.lookup(word, Verbosity.ALL, max_edit_distance=2 if len(word) >= TWO_EDITS_FROM else 1)
    for distance in (1, 2):  # the nearest candidates that qualify
        candidates = sorted({s.term for s in found if s.distance == distance and _zipf(s.term) >= CANDIDATE_ZIPF
                             and not _changes_form(word, s.term) and (distance == 1 or _doubling(word, s.term))},
                            key=lambda c: (-_zipf(c), c))
        if candidates:
            best = candidates[0]
            if len(candidates) > 1 and _zipf(best) - _zipf(candidates[1]) < MARGIN_ZIPF:
                return None
            return best if _zipf(best) - _zipf(word) >= GAP_ZIPF else None
    return None


def _inflected(word: str, checker) -> bool:
    """A common word with an ending added ("teached", "choosed", "familys", "olders"): a grammar error, whose
    fix is not a spelling ("taught", not "reached"), left to the tutor."""
    return any(word.endswith(suffix) and len(word) - len(suffix) >= 3 and word[:-len(suffix)] in checker.words
               and _zipf(word[:-len(suffix)]) >= 3.5 for suffix in ("ed", "d", "s", "es", "ing"))


def _doubling(word: str, candidate: str) -> bool:
    """Two edits that only double or undouble letters ("tommorow" -> "tomorrow"): learners' commonest
    two-edit slip. Two other edits are as often another word ("ceviche" -> "device")."""
    def single(w: str) -> str:
        return re.sub(r"(.)\1+", r"\1", w)

    return single(word) == single(candidate)


INFLECTIONS = {"", "s", "es", "d", "ed", "r", "er", "ing", "e", "y", "ly", "n", "en"}


def _changes_form(word: str, candidate: str) -> bool:
    """Letters only added at, or cut off, the word's start or end, or one ending swapped for another, change
    its form, not its spelling: "unmeaningful" -> "meaningful", "familys" -> "family", "knowledges" ->
    "acknowledges", "choosed" -> "chooses". A doubled letter at an edge is still spelling ("successfull" ->
    "successful")."""
    if candidate.startswith(word) or candidate.endswith(word):
        return True
    if word.startswith(candidate):
        cut = word[len(candidate):]
        return set(cut) != {candidate[-1]}
    if word.endswith(candidate):
        cut = word[:len(word) - len(candidate)]
        return set(cut) != {candidate[0]}
    stem = len(os.path.commonprefix([word, candidate]))
    return word[stem:] in INFLECTIONS and candidate[stem:] in INFLECTIONS


def _cased(original: str, word: str) -> str:
    if original.isupper() and len(original) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if original[:1].isupper() else word


class CopiedSpelling:
    """Fixes, in a reply, the misspelled words it copied from one learner message."""

    def __init__(self, learner: str):
        words = WORD.findall(learner)
        self.fixes: list[Fix] = []
        self.broken: str | None = None  # why the check could not run (its dictionary did not load)
        self.wrong: dict[str, str] = {}  # the learner's misspelled words (lower case) -> the word meant
        try:
            for i, w in enumerate(words):
                if i and w[:1].isupper() and not w.isupper():
                    continue  # a capitalised word inside a sentence is probably a name: never "corrected"
                right = correction(w.lower())
                if right is not None:
                    self.wrong[w.lower()] = right
        except Exception as exc:  # noqa: BLE001 - a broken check must not cost the learner the reply
            self.broken, self.wrong = f"{type(exc).__name__}: {exc}", {}

    def may_grow(self, tail: str) -> bool:
        """Whether the unfinished word ``tail`` may still become one of the learner's misspellings."""
        tail = tail.lower()
        return any(w.startswith(tail) for w in self.wrong)

    def word(self, token: str) -> str:
        right = self.wrong.get(token.lower())
        if right is None:
            return token
        fixed = _cased(token, right)
        self.fixes.append(Fix(token, fixed))
        return fixed

    def text(self, reply: str) -> str:
        return WORD.sub(lambda m: self.word(m.group(0)), reply) if self.wrong else reply


def fix_copied(learner: str, reply: str) -> tuple[str, list[Fix]]:
    """``reply`` with the misspellings it copied from ``learner`` corrected, and the fixes made."""
    fixer = CopiedSpelling(learner)
    return fixer.text(reply), fixer.fixes


def spelled_stream(chunks: Iterator[Chunk], learner: str, on_fix: Callable[[Fix], None] | None = None,
                   on: bool | None = None, on_error: Callable[[str], None] | None = None) -> Iterator[Chunk]:
    """``chunks`` with copied misspellings corrected as they stream. An unfinished word at the end of the text
    so far is held back only while it may still become one of the learner's misspellings, until it ends (a
    space, punctuation, or the end of the reply): a reply with no such word streams as fast as without the
    check. When the check itself fails (its dictionary did not load), the reply streams unchanged and
    ``on_error(why)`` is told once."""
    if not (enabled() if on is None else on):
        yield from chunks
        return
    fixer = CopiedSpelling(learner)
    if fixer.broken and on_error is not None:
        on_error(fixer.broken)
    if not fixer.wrong:  # nothing the learner wrote needs correcting
        yield from chunks
        return
    held = ""

    def release(final: bool) -> str:
        nonlocal held
        cut = len(held)
        if not final:
            tail = re.search(r"[A-Za-z']+$", held)
            cut = tail.start() if tail and fixer.may_grow(tail.group(0)) else cut
        ready, held = held[:cut], held[cut:]
        before = len(fixer.fixes)
        out = fixer.text(ready)
        if on_fix is not None:
            for fix in fixer.fixes[before:]:
                on_fix(fix)
        return out

    for chunk in chunks:
        if chunk.restart:
            held = ""
            yield chunk
            continue
        held += chunk.text
        text = release(final=chunk.finish_reason is not None)
        yield replace(chunk, text=text) if text != chunk.text else chunk
    if held:
        yield Chunk(text=release(final=True))
