"""Automatic flag suggestions for a tutor reply: red-pen phrasing, grammar terminology,
no follow-up question, a learner error the reply did not take up, and length.

Rules, not a model: each suggestion carries the evidence a tester needs to confirm or dismiss
it in one look. Suggestions are stored apart from human flags (see feedback.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tutor.learner_errors import find_errors, takes_up

DETECTOR_VERSION = "rules-v1"

RED_PEN = [
    r"\b(?:the )?correct(?:ed)? (?:form|way|version|sentence|answer|word|verb|tense|phrase)\b",
    r"\byou should (?:say|write|use|have said)\b",
    r"\b(?:it|this|that) should be\b",
    r"\binstead of ['\"“]", r"\b(?:say|use|write) \S+ instead of\b",
    r"\b(?:we|you) (?:don't|do not|never|can't|cannot) (?:say|write|use)\b",
    r"\byour (?:sentence|grammar|english) (?:is|has|was|needs)\b",
    r"\byou need (?:to use )?['\"“]",
    r"\b(?:is|was|are|were|sounds) (?:incorrect|wrong|not correct|grammatically incorrect)\b",
    r"\blet me correct\b",
    r"\b(?:correction|corrections)\b",
    r"\bgrammatically\b",
    r"\b(?:proper|right) (?:way|form) (?:to say|is|would be)\b",
    r"\bthe (?:right|correct) (?:word|verb) is\b",
    r"\bnot \W?\w+\W?,? but \W?\w+",
    r"[\"'“]\w+[\"'”]\s*(?:->|→|=>)\s*[\"'“]\w+",
    r"\bhere'?s? (?:is )?(?:a |the )?(?:revised|corrected|polished|improved) version\b",
]
# "mistake"/"error" are red pen only when the learner did not bring the word up themselves
MISTAKE = r"\b(?:small|little|tiny|common|one|your|an?|the|there'?s an?|there is an?) (?:mistake|error)s?\b"
EXPLAINING = [r"\bbecause\b", r"\bwe (?:use|say|add|need)\b", r"\bremember\b", r"\bis used\b", r"\bis for\b",
              r"\buses?\b", r"\bafter ['\"“]?\w+['\"”]? we\b"]
GRAMMAR_TERMS = [
    r"past (?:simple|tense|participle|continuous|perfect)", r"simple past", r"present (?:simple|perfect|"
    r"continuous|tense|progressive)", r"future (?:tense|simple)", r"\btenses?\b", r"\bparticiples?\b",
    r"\binfinitives?\b", r"\bgerunds?\b", r"subject[- ]verb agreement", r"\bconjugat\w*", r"irregular verbs?",
    r"regular verbs?", r"modal verbs?", r"auxiliary", r"\bsingular\b",
    r"(?:definite|indefinite) articles?", r"\barticles? (?:a|an|the)\b", r"\bprepositions?\b", r"\bplural\b",
    r"\bcomparatives?\b", r"\bsuperlatives?\b", r"\bthird person\b", r"\bnouns?\b", r"\badjectives?\b",
    r"\badverbs?\b", r"\bpronouns?\b", r"\bclauses?\b", r"\buncountable\b", r"\bcountable\b",
    r"\bgrammar\b", r"\bgrammatical\b", r"\bthe rule\b", r"\brule is\b", r"\bverb form\b",
]
MAX_WORDS = {"beginner": 35, "intermediate": 60, "advanced": 90}
_RED_PEN = [re.compile(p, re.IGNORECASE) for p in RED_PEN]
_TERMS = [re.compile(p, re.IGNORECASE) for p in GRAMMAR_TERMS]
_MISTAKE = re.compile(MISTAKE, re.IGNORECASE)
_EXPLAINING = [re.compile(p, re.IGNORECASE) for p in EXPLAINING]
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")


def asks_follow_up(reply: str) -> bool:
    """A real follow-up: the reply ends with a question, or asks one of four words or more.
    An echo question alone ("Every morning? Nice.") leaves the learner nothing to answer."""
    text = reply.strip()
    if text.endswith("?"):
        return True
    return any(s.strip().endswith("?") and len(s.split()) >= 4 for s in _SENTENCE.findall(text))


@dataclass(frozen=True)
class Suggestion:
    reason: str    # a code from feedback.REASONS
    evidence: str  # what triggered it, quoted from the text


def _first_hit(patterns: list[re.Pattern], text: str) -> str | None:
    for pattern in patterns:
        m = pattern.search(text)
        if m:
            return m.group(0)
    return None


def suggest_flags(reply: str, learner: str = "", level: str = "intermediate") -> list[Suggestion]:
    """Flag suggestions for one tutor reply to one learner message."""
    reply = reply or ""
    found: list[Suggestion] = []
    hit = _first_hit(_RED_PEN, reply)
    if not hit and not re.search(r"\b(?:mistake|error)", learner or "", re.IGNORECASE):
        hit = _first_hit([_MISTAKE], reply)
    if hit:
        found.append(Suggestion("red_pen", f"explicit correction: “{hit.strip()}”"))
    terms = sorted({m.group(0).lower() for p in _TERMS for m in p.finditer(reply)})
    explaining = _first_hit(_EXPLAINING, reply)
    lecture = len(terms) >= 2 or (terms and explaining) or any(t.startswith(("the rule", "rule is")) for t in terms)
    if lecture:
        found.append(Suggestion("rule_dump", "grammar terminology: " + ", ".join(f"“{t}”" for t in terms[:4])))
    if not asks_follow_up(reply):
        found.append(Suggestion("no_follow_up", "the reply asks no real question, so the learner has nothing to answer"))
    if not hit and not lecture:  # an explicit correction or a lecture did not miss the error, it mishandled it
        for error in find_errors(learner):
            if not takes_up(reply, error):
                wanted = " / ".join(f"“{c}”" for c in error.corrections[:2])
                found.append(Suggestion("missed_error", f"the learner wrote “{error.span}” ({error.note}); "
                                                        f"the reply never uses {wanted}"))
                break
    words = len(reply.split())
    limit = MAX_WORDS.get(level, MAX_WORDS["intermediate"])
    if words > limit:
        found.append(Suggestion("too_long", f"{words} words; a {level} learner needs at most about {limit}"))
    return found


DETECTED = ("red_pen", "rule_dump", "no_follow_up", "missed_error", "too_long")


def evaluate(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Agreement with human flags on labelled rows ({learner, reply, level, flags}):
    per reason and overall (micro), true/false positives, false negatives, precision, recall."""
    table = {r: {"tp": 0, "fp": 0, "fn": 0} for r in DETECTED}
    for row in rows:
        got = {s.reason for s in suggest_flags(row["reply"], row.get("learner", ""), row.get("level", ""))}
        want = set(row.get("flags", [])) & set(DETECTED)
        for reason in DETECTED:
            cell = table[reason]
            if reason in got and reason in want:
                cell["tp"] += 1
            elif reason in got:
                cell["fp"] += 1
            elif reason in want:
                cell["fn"] += 1
    table["all"] = {k: sum(table[r][k] for r in DETECTED) for k in ("tp", "fp", "fn")}
    for cell in table.values():
        cell["precision"] = cell["tp"] / (cell["tp"] + cell["fp"]) if cell["tp"] + cell["fp"] else float("nan")
        cell["recall"] = cell["tp"] / (cell["tp"] + cell["fn"]) if cell["tp"] + cell["fn"] else float("nan")
    return table
