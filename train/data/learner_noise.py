"""Realistic learner errors injected into a correct sentence, several at once: spelling, articles,
prepositions, agreement, verb forms, plurals and uncountables, word choice and word form, word order,
a dropped subject, comparatives, gerund/infinitive.

The sentence is a list of ``Tok`` (the words of an opener, clauses and connectors, each word tagged with
its role and clause), so an error knows what it is changing; every error records its kind and clause, so
the tutor can recast the clause whose error matters most. Inflections and lemmas come from LemmInflect
(a maintained package with its own data: "go" -> "went", "children" -> "child"), not from word lists."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from lemminflect import getInflection, getLemma


@dataclass
class Tok:
    text: str
    role: str            # "open", "subj", "adv", "verb", "rest", "conn", "time", "punct"
    clause: int = -1     # which clause the word belongs to (-1: opener, connector)
    lemma: str = ""      # the verb's lemma (role "verb")
    person: str = ""     # the clause's subject person (role "verb"): I, we, they, he, she, it
    tense: str = ""      # "present" or "past" (role "verb")


@dataclass(frozen=True)
class Injected:
    kind: str
    clause: int


# How much an error matters to meaning and grammar: the tutor recasts the clause with the highest.
PRIORITY = {"past_tense": 5, "agreement": 5, "modal": 5, "word_order": 4, "subject_omission": 4,
            "gerund_infinitive": 4, "word_choice": 4, "comparative": 4, "plural": 3, "uncountable": 3,
            "preposition": 3, "article": 2, "spelling": 2}

MODALS = {"can", "could", "should", "must", "will", "would", "may", "might"}
DETERMINERS = {"the", "a", "an", "my", "your", "his", "her", "its", "our", "their", "this", "that", "these",
               "those", "some", "any", "many", "much", "every", "each", "no", "more", "most", "all", "both",
               "few", "several", "other", "another", "such", "what", "which", "one", "two", "three"}
QUANTIFIERS = {"many", "several", "few", "these", "those", "two", "three", "four", "five", "both", "various",
               "different"}
PREPOSITION_SWAPS = {"in": ["on", "at"], "on": ["in", "at"], "at": ["in", "on"], "for": ["to", "of"],
                     "of": ["for", "from"], "about": ["on", "of"], "with": ["by"], "from": ["of"],
                     "by": ["with"], "into": ["in"], "during": ["in"]}
DROPPABLE_PREPOSITIONS = {"in", "at", "on", "of", "for", "about", "with"}
UNCOUNTABLE = {"information", "advice", "homework", "equipment", "furniture", "knowledge", "research",
               "luggage", "traffic", "money", "news", "evidence", "progress", "pollution", "experience",
               "work", "music", "food", "stuff", "software", "vocabulary", "transport", "scenery"}
WRONG_PLURALS = {"people": "peoples", "children": "childrens", "women": "womens", "men": "mens",
                 "feet": "foots", "teeth": "tooths"}
WORD_CHOICE = {  # a correct word -> what learners write instead (word choice, word form, false friends)
    "fun": "funny", "funny": "fun", "bored": "boring", "boring": "bored", "interested": "interesting",
    "excited": "exciting", "tired": "tiring", "successful": "success", "success": "succeed",
    "economic": "economical", "especially": "specially", "lend": "borrow", "borrow": "lend", "say": "tell",
    "tell": "say", "make": "do", "do": "make", "other": "others", "important": "importance",
    "difficult": "difficulty", "healthy": "health", "dangerous": "danger", "possible": "possibility",
    "comfortable": "comfort", "beautiful": "beauty", "safe": "safety", "true": "truth", "lose": "loose",
    "learn": "study", "remember": "remind", "bring": "take", "hear": "listen", "see": "look", "win": "earn",
    "earn": "win", "job": "work", "trip": "travel", "advice": "advise", "choose": "chose", "than": "that",
    "life": "live", "alive": "live", "almost": "most", "actually": "actual", "easily": "easy",
    "quickly": "quick", "well": "good", "really": "real", "usually": "usual", "finally": "final",
}
COMMON_MISSPELLINGS = {
    "because": ["becouse", "beacause", "becaus"], "beautiful": ["beatiful", "beautifull"], "which": ["wich"],
    "really": ["realy"], "different": ["diferent", "diffrent"], "environment": ["enviroment", "envirnment"],
    "opportunity": ["oportunity", "opportunaty"], "government": ["goverment"], "receive": ["recieve"],
    "until": ["untill"], "tomorrow": ["tommorow", "tomorow"], "beginning": ["begining"], "people": ["peple", "poeple"],
    "knowledge": ["knowlege", "knowledg"], "successful": ["succesful", "sucessful"], "necessary": ["necesary", "neccessary"],
    "responsibility": ["responsability"], "definitely": ["definately"], "believe": ["belive", "beleive"],
    "friends": ["freinds", "frends"], "friend": ["freind", "frend"], "their": ["thier"], "probably": ["probaly"],
    "interesting": ["intresting", "interesing"], "important": ["importent", "importan"], "experience": ["experiance"],
    "advertisements": ["advertisments"], "advertisement": ["advertisment"], "education": ["educacion"],
    "technology": ["tecnology", "technolgy"], "family": ["famly", "familly"], "society": ["sociaty"],
    "especially": ["expecially", "especialy"], "everything": ["everithing"], "money": ["mony"],
    "while": ["wile"], "whether": ["wether"], "world": ["wolrd"], "city": ["citty"],
    "comfortable": ["confortable"], "develop": ["develope"], "finally": ["finaly"], "usually": ["usualy"],
    "young": ["yong"], "older": ["elder"], "products": ["prodcts"], "lose": ["loose"], "study": ["studie"],
    "studying": ["studing"], "writing": ["writting"], "travelling": ["traveling"], "coming": ["comming"],
    "decided": ["desided"], "enough": ["enought"], "through": ["throught"], "although": ["althought"],
    "language": ["languaje", "langauge"], "english": ["englis"], "problems": ["problemes"],
}
ADVERBS = ("always", "usually", "often", "sometimes", "never", "also", "really", "still")
GERUND_VERBS = {"enjoy", "like", "love", "hate", "avoid", "finish", "keep", "stop", "mind", "practise",
                "practice", "consider", "suggest", "miss", "imagine"}
INFINITIVE_VERBS = {"want", "decide", "need", "plan", "hope", "try", "learn", "forget", "choose", "refuse",
                    "promise", "agree", "manage", "expect", "afford", "prefer"}
_VOWELS = "aeiou"


def inflect(lemma: str, tag: str) -> str:
    """LemmInflect's first form of ``lemma`` for a Penn tag (VBZ, VBD, VBG, NNS...); the lemma if none."""
    forms = getInflection(lemma, tag=tag)
    return forms[0] if forms else lemma


def lemma_of(word: str, upos: str) -> str:
    lemmas = getLemma(word, upos=upos)
    return lemmas[0] if lemmas else word


def _bare(text: str) -> str:
    return re.sub(r"[^\w'-]", "", text).lower()


def _with_punct(old: str, new: str) -> str:
    """``new`` with ``old``'s leading capital and trailing punctuation ("Really," -> "Realy,")."""
    core = re.match(r"^([\w'-]*)(.*)$", old)
    tail = core.group(2) if core else ""
    if old[:1].isupper():
        new = new[:1].upper() + new[1:]
    return new + tail


def _set(tok: Tok, word: str) -> None:
    tok.text = _with_punct(tok.text, word)


def _pick(rng: random.Random, toks: list[Tok], test: Callable[[int, Tok], bool]) -> int | None:
    found = [i for i, t in enumerate(toks) if test(i, t)]
    return rng.choice(found) if found else None


def _verb(toks: list[Tok], rng: random.Random, tense: str) -> int | None:
    return _pick(rng, toks, lambda i, t: t.role == "verb" and t.tense == tense and not t.text.endswith(","))


# -- the errors ------------------------------------------------------------------------------------------
def agreement(toks: list[Tok], rng: random.Random) -> Injected | None:
    i = _verb(toks, rng, "present")
    if i is None or toks[i].lemma in MODALS or toks[i].person == "I":
        return None
    tok = toks[i]
    if tok.person in ("he", "she", "it"):
        wrong = {"be": "are", "have": "have"}.get(tok.lemma, tok.lemma)
    else:
        wrong = {"be": "is", "have": "has"}.get(tok.lemma) or inflect(tok.lemma, "VBZ")
    if _bare(tok.text) == wrong:
        return None
    _set(tok, wrong)
    return Injected("agreement", tok.clause)


def past_tense(toks: list[Tok], rng: random.Random) -> Injected | None:
    i = _verb(toks, rng, "past")
    if i is None or toks[i].lemma in MODALS:
        return None
    tok = toks[i]
    right = _bare(tok.text)
    if tok.lemma == "be":
        wrong = "is" if rng.random() < 0.5 else ("were" if right == "was" else "was")
    elif not right.endswith("ed") and rng.random() < 0.35:
        wrong = tok.lemma + ("d" if tok.lemma.endswith("e") else "ed")  # "buyed", "goed"
    else:
        wrong = tok.lemma
    if wrong == right:
        return None
    _set(tok, wrong)
    return Injected("past_tense", tok.clause)


def modal(toks: list[Tok], rng: random.Random) -> Injected | None:
    i = _pick(rng, toks, lambda i, t: t.role == "verb" and t.lemma in MODALS and i + 1 < len(toks)
              and toks[i + 1].role == "rest" and toks[i + 1].text.isalpha())
    if i is None:
        return None
    after = toks[i + 1]
    if rng.random() < 0.55:
        toks.insert(i + 1, Tok("to", "rest", after.clause))       # "can to find"
    else:
        wrong = inflect(_bare(after.text), "VBZ")                 # "can finds"
        if wrong == _bare(after.text):
            return None
        _set(after, wrong)
    return Injected("modal", after.clause)


def gerund_infinitive(toks: list[Tok], rng: random.Random) -> Injected | None:
    def after_gerund_verb(i: int, t: Tok) -> bool:
        return (i > 0 and t.role == "rest" and _bare(t.text).endswith("ing") and len(_bare(t.text)) > 5
                and lemma_of(_bare(toks[i - 1].text), "VERB") in GERUND_VERBS)

    def infinitive(i: int, t: Tok) -> bool:
        return (0 < i < len(toks) - 1 and _bare(t.text) == "to" and toks[i + 1].role == "rest"
                and lemma_of(_bare(toks[i - 1].text), "VERB") in INFINITIVE_VERBS and toks[i + 1].text.isalpha())

    i = _pick(rng, toks, after_gerund_verb)
    if i is not None:
        base = lemma_of(_bare(toks[i].text), "VERB")
        _set(toks[i], base)
        toks.insert(i, Tok("to", "rest", toks[i].clause))          # "enjoy to swim"
        return Injected("gerund_infinitive", toks[i].clause)
    i = _pick(rng, toks, infinitive)
    if i is None:
        return None
    verb = _bare(toks[i + 1].text)
    gerund = inflect(verb, "VBG")
    if gerund == verb:
        return None
    clause = toks[i].clause
    del toks[i]
    _set(toks[i], gerund)                                          # "decided going"
    return Injected("gerund_infinitive", clause)


def article(toks: list[Tok], rng: random.Random) -> Injected | None:
    draw = rng.random()
    if draw < 0.5:  # dropped
        i = _pick(rng, toks, lambda i, t: t.role in ("rest", "subj") and _bare(t.text) in ("the", "a", "an")
                  and i + 1 < len(toks))
        if i is None:
            return None
        clause = toks[i].clause
        if toks[i].text[:1].isupper():
            toks[i + 1].text = toks[i + 1].text[:1].upper() + toks[i + 1].text[1:]
        del toks[i]
        return Injected("article", clause)
    if draw < 0.7:  # a <-> an
        i = _pick(rng, toks, lambda i, t: _bare(t.text) in ("a", "an") and i + 1 < len(toks))
        if i is None:
            return None
        _set(toks[i], "an" if _bare(toks[i].text) == "a" else "a")
        return Injected("article", toks[i].clause)
    # "the" where English has none: a generic plural subject or a plural/uncountable after a verb
    def generic(i: int, t: Tok) -> bool:
        word = _bare(t.text)
        if t.role not in ("subj", "rest") or not t.text.isalpha() or t.text[1:] != t.text[1:].lower():
            return False
        if not (word in UNCOUNTABLE or _plural_noun(word) or (word == "young" and t.role == "subj")):
            return False
        before = toks[i - 1] if i else None
        return (before is None or before.role in ("verb", "conn", "open", "punct", "adv")
                or _bare(before.text) in set(PREPOSITION_SWAPS) | {"to"})

    i = _pick(rng, toks, generic)
    if i is None:
        return None
    lead = toks[i].text[:1].isupper()
    if lead:
        toks[i].text = toks[i].text[:1].lower() + toks[i].text[1:]
    toks.insert(i, Tok("The" if lead else "the", toks[i].role, toks[i].clause))
    return Injected("article", toks[i].clause)


def _plural_noun(word: str) -> bool:
    return word.endswith("s") and len(word) > 3 and lemma_of(word, "NOUN") != word


def preposition(toks: list[Tok], rng: random.Random) -> Injected | None:
    i = _pick(rng, toks, lambda i, t: t.role == "rest" and _bare(t.text) in PREPOSITION_SWAPS and i + 1 < len(toks))
    if i is None:
        return None
    word = _bare(toks[i].text)
    if rng.random() < 0.3 and word in DROPPABLE_PREPOSITIONS:
        clause = toks[i].clause
        del toks[i]
        return Injected("preposition", clause)
    _set(toks[i], rng.choice(PREPOSITION_SWAPS[word]))
    return Injected("preposition", toks[i].clause)


def plural(toks: list[Tok], rng: random.Random) -> Injected | None:
    i = _pick(rng, toks, lambda i, t: t.role in ("rest", "subj") and _bare(t.text) in WRONG_PLURALS)
    if i is not None and rng.random() < 0.4:
        _set(toks[i], WRONG_PLURALS[_bare(toks[i].text)])
        return Injected("plural", toks[i].clause)
    i = _pick(rng, toks, lambda i, t: i > 0 and t.role in ("rest", "subj") and _plural_noun(_bare(t.text))
              and _bare(toks[i - 1].text) in QUANTIFIERS | {"of"})
    if i is None:
        return None
    _set(toks[i], lemma_of(_bare(toks[i].text), "NOUN"))            # "many student"
    return Injected("plural", toks[i].clause)


def uncountable(toks: list[Tok], rng: random.Random) -> Injected | None:
    i = _pick(rng, toks, lambda i, t: t.role in ("rest", "subj") and _bare(t.text) in UNCOUNTABLE
              and (i == 0 or _bare(toks[i - 1].text) not in ("a", "an", "one")))
    if i is None:
        return None
    _set(toks[i], _bare(toks[i].text) + "s")                          # "informations"
    return Injected("uncountable", toks[i].clause)


def word_choice(toks: list[Tok], rng: random.Random) -> Injected | None:
    def choosable(i: int, t: Tok) -> bool:
        if t.role == "verb":
            return t.lemma in WORD_CHOICE and _bare(t.text) == t.lemma
        return t.role in ("rest", "subj") and _bare(t.text) in WORD_CHOICE

    i = _pick(rng, toks, choosable)
    if i is None:
        return None
    _set(toks[i], WORD_CHOICE[_bare(toks[i].text)])
    return Injected("word_choice", toks[i].clause)


def word_order(toks: list[Tok], rng: random.Random) -> Injected | None:
    i = _pick(rng, toks, lambda i, t: t.role == "adv" and i + 2 < len(toks) and toks[i + 1].role == "verb")
    if i is None:
        return None
    adverb = toks.pop(i)
    end = max(j for j, t in enumerate(toks) if t.clause == adverb.clause and t.role != "punct")
    toks.insert(end + 1, adverb)                                      # "they often go to the gym" -> "... gym often"
    return Injected("word_order", adverb.clause)


def subject_omission(toks: list[Tok], rng: random.Random) -> Injected | None:
    i = _pick(rng, toks, lambda i, t: t.role == "subj" and t.clause > 0 and i > 0 and toks[i - 1].role == "conn"
              and _bare(t.text) in ("they", "he", "she", "it", "we", "i"))
    if i is None:
        return None
    clause = toks[i].clause
    del toks[i]
    return Injected("subject_omission", clause)


def comparative(toks: list[Tok], rng: random.Random) -> Injected | None:
    def short_comparative(i: int, t: Tok) -> bool:
        word = _bare(t.text)
        return (i + 1 < len(toks) and _bare(toks[i + 1].text) == "than" and word.endswith("er")
                and lemma_of(word, "ADJ") != word)

    i = _pick(rng, toks, short_comparative)
    if i is None:
        return None
    word = _bare(toks[i].text)
    _set(toks[i], word if rng.random() < 0.4 else lemma_of(word, "ADJ"))
    toks.insert(i, Tok("more", toks[i].role, toks[i].clause))         # "more cheaper", "more cheap"
    return Injected("comparative", toks[i].clause)


def spelling(toks: list[Tok], rng: random.Random) -> Injected | None:
    known = [i for i, t in enumerate(toks) if _bare(t.text) in COMMON_MISSPELLINGS]
    if known and rng.random() < 0.6:
        i = rng.choice(known)
        _set(toks[i], rng.choice(COMMON_MISSPELLINGS[_bare(toks[i].text)]))
        return Injected("spelling", toks[i].clause)
    i = _pick(rng, toks, lambda i, t: t.text.isalpha() and len(t.text) >= 5 and t.text.islower())
    if i is None:
        return None
    wrong = typo(toks[i].text, rng)
    if wrong == toks[i].text:
        return None
    _set(toks[i], wrong)
    return Injected("spelling", toks[i].clause)


def typo(word: str, rng: random.Random) -> str:
    """A misspelling of the kind learners make: a double letter made single (or a single one doubled),
    ie/ei, a letter left out, two letters swapped, a vowel for another."""
    doubles = [j for j in range(1, len(word) - 1) if word[j] == word[j + 1]]
    draw = rng.random()
    if doubles and draw < 0.35:
        j = rng.choice(doubles)
        return word[:j] + word[j + 1:]
    if "ie" in word and draw < 0.45:
        return word.replace("ie", "ei", 1)
    inner = list(range(1, len(word) - 1))
    j = rng.choice(inner)
    if draw < 0.6:
        return word[:j] + word[j + 1:]
    if draw < 0.75 and j + 1 < len(word) - 1:
        return word[:j] + word[j + 1] + word[j] + word[j + 2:]
    if word[j] in _VOWELS:
        return word[:j] + rng.choice([v for v in _VOWELS if v != word[j]]) + word[j + 1:]
    if word[j] in "lmnprst" and word[j - 1] in _VOWELS:
        return word[:j] + word[j] + word[j:]
    return word


ERRORS: list[tuple[Callable[[list[Tok], random.Random], Injected | None], float]] = [
    (spelling, 3.0), (article, 2.5), (preposition, 2.0), (agreement, 2.0), (past_tense, 2.5), (plural, 1.5),
    (word_choice, 1.5), (modal, 1.0), (gerund_infinitive, 1.0), (word_order, 1.0), (subject_omission, 0.7),
    (comparative, 0.6), (uncountable, 1.0)]
ERROR_COUNTS = ((1, 0.35), (2, 0.4), (3, 0.2), (4, 0.05))


def inject(toks: list[Tok], rng: random.Random, count: int | None = None) -> list[Injected]:
    """Put ``count`` errors (drawn from ERROR_COUNTS when None) into ``toks`` in place; each kind at most
    once, kinds that do not apply to the sentence are skipped."""
    if count is None:
        count = rng.choices([c for c, _ in ERROR_COUNTS], [w for _, w in ERROR_COUNTS])[0]
    pool = list(ERRORS)
    done: list[Injected] = []
    while pool and len(done) < count:
        fn = rng.choices([f for f, _ in pool], [w for _, w in pool])[0]
        pool = [(f, w) for f, w in pool if f is not fn]
        found = fn(toks, rng)
        if found:
            done.append(found)
    return done


def render(toks: list[Tok]) -> str:
    """The words as text: punctuation tokens ("punct") attach to the word before them."""
    out = ""
    for t in toks:
        if t.text:
            out += t.text if t.role == "punct" or not out else " " + t.text
    return out
