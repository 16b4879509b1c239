"""Automatic flag suggestions for a tutor reply: red-pen phrasing, grammar terminology,
no follow-up question, a learner error the reply did not take up, and length.

Rules, not a model: each suggestion carries the evidence a tester needs to confirm or dismiss
it in one look. Suggestions are stored apart from human flags (see feedback.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tutor.learner_errors import find_errors
from tutor.teaching.overt import EXPLAINING_RES, grammar_terms, red_pen_hit
from tutor.teaching.replies import asks_follow_up, takes_up

DETECTOR_VERSION = "rules-v1"

MAX_WORDS = {"beginner": 35, "intermediate": 60, "advanced": 90}


@dataclass(frozen=True)
class Suggestion:
    reason: str    # a code from feedback.REASONS
    evidence: str  # what triggered it, quoted from the text


def suggest_flags(reply: str, learner: str = "", level: str = "intermediate") -> list[Suggestion]:
    """Flag suggestions for one tutor reply to one learner message."""
    reply = reply or ""
    found: list[Suggestion] = []
    hit = red_pen_hit(reply, learner)
    if hit:
        found.append(Suggestion("red_pen", f"explicit correction: “{hit.strip()}”"))
    terms = grammar_terms(reply)
    explaining = any(p.search(reply) for p in EXPLAINING_RES)
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
