"""Overt correction in a tutor reply: red-pen phrases ("the correct form", "you should say"), "a small
mistake", praise of the learner's grammar, and grammar terminology.

Each red-pen pattern carries its screening words: lower-case text without which the pattern cannot
match. A reply that holds none of them skips the regexes (most replies; the audit reads millions).
"right " stands for "right way/form/word/verb", "n't " and "not " for "don't/can't/do not/cannot" +
space, "gramma" for grammar/grammatically, ">" for -> and =>. tests/test_audit.py checks that the screen
never hides a hit."""

from __future__ import annotations

import re

from tutor.teaching.words import tokens

RED_PEN_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (  # (pattern, screening words)
    (r"\b(?:the )?correct(?:ed)? (?:form|way|version|sentence|answer|word|verb|tense|phrase)\b", ("correct",)),
    (r"\byou should (?:say|write|use|have said)\b", ("should",)),
    (r"\b(?:it|this|that) should be\b", ("should",)),
    (r"\binstead of ['\"“]", ("instead",)),
    (r"\b(?:say|use|write) \S+ instead of\b", ("instead",)),
    (r"\b(?:we|you) (?:don't|do not|never|can't|cannot) (?:say|write|use)\b", ("n't ", "not ", "never")),
    (r"\byour (?:sentence|grammar|english) (?:is|has|was|needs)\b", ("sentence", "gramma", "english")),
    (r"\byou need (?:to use )?['\"“]", ("you need",)),
    (r"\b(?:is|was|are|were|sounds) (?:incorrect|wrong|not correct|grammatically incorrect)\b", ("correct", "wrong")),
    (r"\blet me correct\b", ("correct",)),
    (r"\b(?:correction|corrections)\b", ("correct",)),
    (r"\bgrammatically\b", ("gramma",)),
    (r"\b(?:proper|right) (?:way|form) (?:to say|is|would be)\b", ("proper", "right ")),
    (r"\bthe (?:right|correct) (?:word|verb) is\b", ("right ", "correct")),
    (r"\bnot \W?\w+\W?,? but \W?\w+", ("not ",)),
    (r"[\"'“]\w+[\"'”]\s*(?:->|→|=>)\s*[\"'“]\w+", (">", "\u2192")),
    (r"\bhere'?s? (?:is )?(?:a |the )?(?:revised|corrected|polished|improved) version\b", ("version",)),
)
RED_PEN = [pattern for pattern, _ in RED_PEN_PATTERNS]
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
RED_PEN_RES = [re.compile(p, re.IGNORECASE) for p in RED_PEN]
MISTAKE_RE = re.compile(MISTAKE, re.IGNORECASE)
GRAMMAR_TERM_RES = [re.compile(p, re.IGNORECASE) for p in GRAMMAR_TERMS]
EXPLAINING_RES = [re.compile(p, re.IGNORECASE) for p in EXPLAINING]
_LEARNER_MISTAKE = re.compile(r"\b(?:mistake|error)", re.IGNORECASE)
# every pattern's screening words, in order; None (the screen off: slower, never wrong) if one has none
_SCREEN: tuple[str, ...] | None = (tuple(dict.fromkeys(k for _, keys in RED_PEN_PATTERNS for k in keys))
                                   if all(keys for _, keys in RED_PEN_PATTERNS) else None)


def learner_mentions_mistake(learner: str) -> bool:
    return bool(_LEARNER_MISTAKE.search(learner or ""))


def red_pen_hit(reply: str, learner: str = "", low: str | None = None) -> str | None:
    """The first red-pen phrase in a tutor reply (RED_PEN in order, then MISTAKE when the learner did
    not bring up mistakes), as the flag detector reports it, or None. (``low`` is ``reply.lower()``
    when the caller has it already.)"""
    low = reply.lower() if low is None else low
    screened = _SCREEN is not None
    if screened:
        for key in _SCREEN:
            if key in low:
                screened = False
                break
    if not screened:
        for pattern in RED_PEN_RES:
            m = pattern.search(reply)
            if m:
                return m.group(0)
    if ("mistake" in low or "error" in low) and not learner_mentions_mistake(learner):
        m = MISTAKE_RE.search(reply)
        if m:
            return m.group(0)
    return None


def _word_screen(keys: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Split the screen's keys by what a match in the lower-cased reply implies about its words (the
    ``[\\w']+`` runs train.data.minhash.words gives): a key of word characters lies inside one word ("correct"),
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


_SCREEN_INSIDE, _SCREEN_ENDS, _SCREEN_STARTS, _SCREEN_TEXT = _word_screen((_SCREEN or ()) + ("mistake", "error"))
_SCREEN_TEXT_CASELESS = all(k.lower() == k == k.upper() for k in _SCREEN_TEXT)  # no need to lower the reply
_CLEAN_WORDS: set[str] = set()  # words seen that hold no screen key (grows to _CLEAN_MAX words at most)
_CLEAN_MAX = 500_000


def maybe_red_pen(reply: str, reply_words: list[str]) -> bool:
    """False only when red_pen_hit(reply, ...) is certainly None: no word of the reply (its
    train.data.minhash.words, lower-cased) can be part of a screening word, nor of "mistake"/"error", and no
    key of other characters is in it. Cheaper than the screen itself: most words are known clean."""
    if _SCREEN is None:
        return True
    if _SCREEN_TEXT:
        low = reply if _SCREEN_TEXT_CASELESS else reply.lower()
        for key in _SCREEN_TEXT:
            if key in low:
                return True
    known = _CLEAN_WORDS
    if known.issuperset(reply_words):
        return False
    for word in reply_words:
        if word in known:
            continue
        for key in _SCREEN_INSIDE:
            if key in word:
                return True
        if word.endswith(_SCREEN_ENDS) or word.startswith(_SCREEN_STARTS):
            return True
        if len(known) < _CLEAN_MAX:
            known.add(word)
    return False


# Overt correction the red-pen phrases miss: a quoted form set against another ("'went well', not
# 'went good'"), "we say 'X'", "without 'of'", "you forgot the verb", "spelling tip", "is followed by" ...
OVERT = [r"""\bnot ['"]\w""", r"""\bwithout ['"]\w[^'"]*['"]""", r"""(?:^|[.!?]\s+|\b(?:we|you|just|so|first|please),? )say ['"]""",
         r"""['"]\w+['"] (?:describes|is for|is used for|goes with)\b""", r"""\balso ['"]\w""",
         r"\bthe (?:correct|right|proper) (?:question|expression|spelling|preposition|article|ending)\b",
         r"\byou forgot (?:the|a|an|to)\b", r"\bremember to (?:use|add|say|put)\b", r"\bis followed by\b",
         r"\b(?:spelling|grammar) (?:tip|note|point|check)\b", r"\bnote on grammar\b",
         r"\bcareful with (?:the |your )?spelling\b", r"\b(?:small|quick|one|two|a few) (?:fix|fixes)\b",
         r"\bfix (?:two|three|a few|these|one|some) things?\b", r"""['"][\w' -]+['"] should be\b""",
         r"""\bthe past (?:form |tense )?of ['"]?\w+['"]? is\b""", r"""\bthe (?:question|sentence|word) is ['"]""",
         r"""\b(?:so |just )?use ['"]\w""", r"""\bafter ['"]\w+['"],? (?:no|we use|you use|use)\b"""]
# praise of the learner's grammar: a comment on form (over-correction on a correct turn), not a correction
PRAISE = [r"\byour (?:sentence|grammar|english) (?:is|was) (?:\w+ )?(?:perfect|excellent|correct|great|good|fine|"
          r"flawless|very good)\b", r"\bno (?:mistakes|errors)\b", r"\b(?:perfect|correct|great|good|nice|lovely|"
          r"excellent) (?:sentence|grammar|english)\b", r"\b(?:great|good|nice|perfect|excellent) use of\b",
          r"\bused (?:it|that|them|the \w+(?: \w+)?) correctly\b", r"\bcorrectly\b"]
_OVERT = [re.compile(p, re.IGNORECASE) for p in OVERT]
_PRAISE = [re.compile(p, re.IGNORECASE) for p in PRAISE]


def overt_corrections(reply: str, learner: str = "") -> list[str]:
    """Every overt correction in a reply, for the pedagogy metrics: the red-pen phrases (each pattern's
    every match, not only the first as red_pen_hit gives), OVERT, and "a small mistake" when the learner
    did not bring up mistakes; except a phrase that only repeats the learner's own words ("the
    information was wrong") or lies in praise of their grammar."""
    said = " ".join(tokens(learner))
    patterns = RED_PEN_RES + _OVERT + ([] if learner_mentions_mistake(learner) else [MISTAKE_RE])
    praise = [m.span() for p in _PRAISE for m in p.finditer(reply)]
    hits = []
    for pattern in patterns:
        for m in pattern.finditer(reply):
            words = " ".join(tokens(m.group(0)))
            if words and re.search(r"\b" + re.escape(words) + r"\b", said):
                continue
            if any(start <= m.start() < end or m.start() <= start < m.end() for start, end in praise):
                continue
            hits.append(m.group(0).strip())
    return hits


def praises_form(reply: str) -> bool:
    return any(p.search(reply) for p in _PRAISE)


def grammar_terms(reply: str) -> list[str]:
    """The grammar terms in a reply, lower-cased, sorted, each once (the flag detector's evidence)."""
    return sorted({m.group(0).lower() for p in GRAMMAR_TERM_RES for m in p.finditer(reply)})


def count_grammar_terms(text: str) -> int:
    """Grammar terms in ``text``; overlapping hits ("past tense" / "tense") count once."""
    spans = sorted(m.span() for p in GRAMMAR_TERM_RES for m in p.finditer(text or ""))
    count, end = 0, -1
    for start, stop in spans:
        if start >= end:
            count += 1
            end = stop
        else:
            end = max(end, stop)
    return count
