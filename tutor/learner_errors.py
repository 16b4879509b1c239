"""A small rule-based finder of common learner errors, with the corrected form(s).

It is not a grammar checker: it knows the errors tutors see every day (over-regularised past
tenses, a past-time marker with a present verb, agreement, articles, plurals after numbers,
uncountable nouns, double comparatives, gerund/infinitive, prepositions, word order), and it
errs on the side of silence. The detector uses it to notice a reply that ignores an error;
the pedagogy metrics use it to check that a reply takes the error up (tutor.teaching.replies.takes_up)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

IRREGULAR_PAST = {
    "go": "went", "buy": "bought", "eat": "ate", "see": "saw", "have": "had", "do": "did",
    "make": "made", "take": "took", "come": "came", "get": "got", "meet": "met", "write": "wrote",
    "drink": "drank", "sleep": "slept", "swim": "swam", "run": "ran", "find": "found", "give": "gave",
    "think": "thought", "leave": "left", "bring": "brought", "feel": "felt", "spend": "spent",
    "teach": "taught", "catch": "caught", "speak": "spoke", "know": "knew", "grow": "grew",
    "throw": "threw", "fly": "flew", "fall": "fell", "forget": "forgot", "lose": "lost", "send": "sent",
    "build": "built", "understand": "understood", "stand": "stood", "win": "won", "sit": "sat",
    "begin": "began", "break": "broke", "choose": "chose", "drive": "drove", "ride": "rode",
    "sing": "sang", "tell": "told", "say": "said", "sell": "sold", "pay": "paid", "wear": "wore",
    "is": "was", "are": "were", "am": "was", "can": "could",
}
REGULAR_PAST = {
    "visit": "visited", "play": "played", "watch": "watched", "walk": "walked", "cook": "cooked",
    "study": "studied", "live": "lived", "work": "worked", "travel": "traveled", "stay": "stayed",
    "like": "liked", "want": "wanted", "call": "called", "clean": "cleaned", "dance": "danced",
    "listen": "listened", "arrive": "arrived", "start": "started", "finish": "finished",
    "try": "tried", "help": "helped", "move": "moved", "open": "opened", "enjoy": "enjoyed",
}
PAST = {**IRREGULAR_PAST, **REGULAR_PAST}
# over-regularised forms learners produce -> the real past form
OVERREGULAR = {
    "goed": "went", "buyed": "bought", "eated": "ate", "runned": "ran", "teached": "taught",
    "thinked": "thought", "catched": "caught", "bringed": "brought", "writed": "wrote",
    "drinked": "drank", "swimmed": "swam", "speaked": "spoke", "taked": "took", "maked": "made",
    "comed": "came", "gived": "gave", "finded": "found", "feeled": "felt", "leaved": "left",
    "sleeped": "slept", "meeted": "met", "knowed": "knew", "growed": "grew", "throwed": "threw",
    "flied": "flew", "falled": "fell", "forgetted": "forgot", "getted": "got", "losed": "lost",
    "sended": "sent", "spended": "spent", "builded": "built", "understanded": "understood",
    "standed": "stood", "winned": "won", "sayed": "said", "telled": "told", "selled": "sold",
    "drived": "drove", "rided": "rode", "choosed": "chose", "breaked": "broke", "begined": "began",
    "seed": "saw", "haved": "had", "doed": "did", "sitted": "sat", "weared": "wore", "payed": "paid",
}
THIRD_PERSON = {
    "have": "has", "do": "does", "go": "goes", "like": "likes", "want": "wants", "work": "works",
    "live": "lives", "play": "plays", "love": "loves", "need": "needs", "know": "knows",
    "study": "studies", "watch": "watches", "eat": "eats", "drink": "drinks", "speak": "speaks",
    "teach": "teaches", "cook": "cooks", "make": "makes", "get": "gets", "say": "says",
    "think": "thinks", "come": "comes", "run": "runs", "read": "reads", "write": "writes",
    "drive": "drives", "sleep": "sleeps", "wake": "wakes", "help": "helps",
}
NOUN_PLURALS = {
    "brother": "brothers", "sister": "sisters", "friend": "friends", "book": "books", "cat": "cats",
    "dog": "dogs", "car": "cars", "house": "houses", "year": "years", "day": "days", "week": "weeks",
    "month": "months", "hour": "hours", "minute": "minutes", "child": "children", "person": "people",
    "man": "men", "woman": "women", "apple": "apples", "student": "students", "teacher": "teachers",
    "language": "languages", "room": "rooms", "game": "games", "movie": "movies", "song": "songs",
    "city": "cities", "country": "countries", "kid": "kids", "time": "times", "cousin": "cousins",
    "son": "sons", "daughter": "daughters", "bedroom": "bedrooms", "class": "classes",
    "lesson": "lessons", "ticket": "tickets", "photo": "photos", "picture": "pictures",
}
UNCOUNTABLE = {
    "informations": "information", "advices": "advice", "furnitures": "furniture",
    "homeworks": "homework", "equipments": "equipment", "luggages": "luggage",
    "knowledges": "knowledge", "researches": "research", "evidences": "evidence",
    "moneys": "money", "breads": "bread", "musics": "music", "traffics": "traffic",
}
COMPARATIVE = {
    "big": "bigger", "small": "smaller", "tall": "taller", "fast": "faster", "cheap": "cheaper",
    "old": "older", "young": "younger", "easy": "easier", "happy": "happier", "good": "better",
    "bad": "worse", "hot": "hotter", "cold": "colder", "long": "longer", "short": "shorter",
    "nice": "nicer", "busy": "busier", "large": "larger", "warm": "warmer", "quick": "quicker",
    "close": "closer", "far": "farther", "pretty": "prettier", "early": "earlier", "late": "later",
}
IRREGULAR_COMPARATIVE = {"gooder": "better", "badder": "worse", "more better": "better",
                         "more worse": "worse", "most best": "best"}
NUMBERS = r"(?:two|three|four|five|six|seven|eight|nine|ten|many|several|\d+)"
PAST_MARKERS = (r"(?:yesterday|last (?:night|week|weekend|month|year|summer|winter|monday|tuesday|wednesday|"
                r"thursday|friday|saturday|sunday)|\w+ (?:days|weeks|months|years) ago|ago)")
SUBJECTS_3SG = (r"(?:he|she|it|my (?:mother|father|mom|dad|sister|brother|friend|teacher|boss|wife|"
                r"husband|son|daughter|dog|cat|family|grandmother|grandfather|neighbor|neighbour))")
VOWEL_WORDS = ("apple orange egg hour umbrella elephant idea interesting old amazing actor engineer island "
               "email exam office answer example accident eye ice animal artist uncle article honest "
               "important easy expensive excellent english american apartment airport hotel").split()
_NUMBER_WORDS = {"2": "two", "3": "three", "4": "four", "5": "five", "10": "ten"}
SILENT_H = ("hour", "honest", "honor", "honour", "heir")


@dataclass(frozen=True)
class LearnerError:
    kind: str                     # e.g. "past_tense", "agreement", "article"
    span: str                     # the words as the learner wrote them
    corrections: tuple[str, ...]  # correct form(s) a recast would contain
    note: str = ""


@dataclass
class _Rule:
    kind: str
    pattern: re.Pattern
    fix: object  # callable(match) -> tuple[str, ...] | None
    note: str = ""
    examples: list = field(default_factory=list)


def _w(text: str) -> re.Pattern:
    return re.compile(text, re.IGNORECASE)


def _past_after_marker(m: re.Match) -> tuple[str, ...] | None:
    verb = m.group("verb").lower()
    past = PAST.get(verb)
    if not past:
        return None
    base = "be" if verb in ("is", "are", "am") else verb
    # a recast ("you went") or an elicitation ("did you go?") both take the error up
    return (past, *(f"did {who} {base}" for who in ("you", "they", "we", "he", "she")))


def _a_an(m: re.Match) -> tuple[str, ...] | None:
    article, word = m.group(1).lower(), m.group(2).lower()
    starts_vowel = word[0] in "aeiou" and not word.startswith(("uni", "use", "usu", "euro", "one", "once"))
    starts_vowel = starts_vowel or word.startswith(SILENT_H)
    if article == "a" and starts_vowel and word in VOWEL_WORDS + list(SILENT_H):
        return (f"an {word}",)
    if article == "an" and not starts_vowel and word.isalpha():
        return (f"a {word}",)
    return None


RULES: list[_Rule] = [
    _Rule("past_tense", _w(r"\b(" + "|".join(OVERREGULAR) + r")\b"),
          lambda m: (OVERREGULAR[m.group(1).lower()],), "over-regularised past tense"),
    _Rule("past_tense", _w(PAST_MARKERS + r"\b[^.?!]{0,25}?\b(?:i|we|they|you|he|she|my \w+) (?P<verb>"
                            + "|".join(PAST) + r")\b"),
          _past_after_marker, "present verb with a past-time marker"),
    _Rule("past_tense", _w(r"\b(?:i|we|they|you|he|she) (?P<verb>" + "|".join(PAST) + r")\b[^.?!,]{0,30}?\b"
                            + PAST_MARKERS),
          _past_after_marker, "present verb with a past-time marker"),
    _Rule("past_tense", _w(r"\b(?:did|didn't|did not) (" + "|".join(set(PAST.values()) - {"read"}) + r")\b"),
          lambda m: tuple(k for k, v in PAST.items() if v == m.group(1).lower())[:1] or None,
          "past form after did"),
    _Rule("agreement", _w(r"\b" + SUBJECTS_3SG + r" (" + "|".join(THIRD_PERSON) + r")\b"),
          lambda m: (THIRD_PERSON[m.group(1).lower()],), "third-person -s"),
    _Rule("agreement", _w(r"\b(?:doesn't|does not) (has|goes|likes|wants|works|lives|plays|knows|needs)\b"),
          lambda m: ({"has": "have", "goes": "go"}.get(m.group(1).lower(), m.group(1).lower()[:-1]),),
          "base form after doesn't"),
    _Rule("agreement", _w(r"\bi (has|is|are|was not|were)\b"),
          lambda m: ({"has": ("have",), "is": ("am", "i'm"), "are": ("am", "i'm"), "were": ("was",)}
                     .get(m.group(1).lower())) if m.group(1).lower() != "was not" else None, "first person"),
    _Rule("agreement", _w(r"\b(he|she|it) (are|were|don't|have been|am)\b"),
          lambda m: ({"are": "is", "were": "was", "don't": "doesn't", "am": "is"}.get(m.group(2).lower()),)
          if m.group(2).lower() in ("are", "were", "don't", "am") else None, "third person"),
    _Rule("agreement", _w(r"\b(they|we|you) (is|was|has|doesn't)\b"),
          lambda m: ({"is": "are", "was": "were", "has": "have", "doesn't": "don't"}[m.group(2).lower()],),
          "plural subject"),
    _Rule("agreement", _w(r"\bpeople (is|was|has)\b"),
          lambda m: ({"is": "are", "was": "were", "has": "have"}[m.group(1).lower()],), "people is plural"),
    _Rule("article", _w(r"\b(a|an) ([a-z]+)\b"), _a_an, "a/an"),
    _Rule("plural", _w(r"\b" + NUMBERS + r" (" + "|".join(NOUN_PLURALS) + r")\b"),
          lambda m: (NOUN_PLURALS[m.group(1).lower()],), "plural after a number"),
    _Rule("uncountable", _w(r"\b(" + "|".join(UNCOUNTABLE) + r")\b"),
          lambda m: (UNCOUNTABLE[m.group(1).lower()],), "uncountable noun"),
    _Rule("comparative", _w(r"\b(" + "|".join(IRREGULAR_COMPARATIVE) + r")\b"),
          lambda m: (IRREGULAR_COMPARATIVE[m.group(1).lower()],), "comparative"),
    _Rule("comparative", _w(r"\bmore (" + "|".join(COMPARATIVE) + r")\b(?! (?:and|than))?"),
          lambda m: (COMPARATIVE[m.group(1).lower()],), "short adjective takes -er"),
    _Rule("comparative", _w(r"\bmore (" + "|".join(COMPARATIVE.values()) + r")\b"),
          lambda m: (m.group(1).lower(),), "double comparative"),
    _Rule("gerund_infinitive", _w(r"\b(enjoy|enjoyed|finish|finished|avoid|mind|suggest|keep) to (\w+)\b"),
          lambda m: (_ing(m.group(2)),), "verb + -ing"),
    _Rule("gerund_infinitive", _w(r"\b(?:want|wanted|need|needed|decide|decided|hope|plan|would like) (\w+ing)\b"),
          lambda m: (f"to {_base(m.group(1))}",), "verb + to-infinitive"),
    _Rule("modal", _w(r"\b(can|must|should|will|could|would|might) to (\w+)\b"),
          lambda m: (f"{m.group(1).lower()} {m.group(2).lower()}",), "modal + bare infinitive"),
    _Rule("preposition", _w(r"\bmarried with\b"), lambda m: ("married to",), "married to"),
    _Rule("preposition", _w(r"\bdepends? of\b"), lambda m: ("depend on", "depends on"), "depend on"),
    _Rule("preposition", _w(r"\b(?:listen|listening|listened) (?!to\b)(music|the|my|him|her|them|songs)\b"),
          lambda m: ("listen to", "listening to", "listened to"), "listen to"),
    _Rule("preposition", _w(r"\bgood in (\w+)"), lambda m: ("good at",), "good at"),
    _Rule("preposition", _w(r"\bat the (morning|afternoon|evening)\b"),
          lambda m: (f"in the {m.group(1).lower()}",), "in the morning"),
    _Rule("preposition", _w(r"\bin (monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?\b"),
          lambda m: (f"on {m.group(1).lower()}",), "on + day"),
    _Rule("preposition", _w(r"\binterested (?:for|on|to) (\w+)"), lambda m: ("interested in",), "interested in"),
    _Rule("preposition", _w(r"\b(arrive|arrived) to\b"), lambda m: ("arrived in", "arrived at", "arrive in",
                                                                    "arrive at"), "arrive in/at"),
    _Rule("preposition", _w(r"\bexplain me\b"), lambda m: ("explain to me",), "explain to someone"),
    _Rule("word_order", _w(r"\bi very (like|love|enjoy|want)\b"),
          lambda m: (f"really {m.group(1).lower()}", "very much"), "adverb position"),
    _Rule("word_order", _w(r"\bwhere (you|he|she|they|we) (live|work|go|study)\b(?!s)"),
          lambda m: (f"where do {m.group(1).lower()}", f"where does {m.group(1).lower()}"), "question word order"),
    _Rule("verb_form", _w(r"\bi am agree\b"), lambda m: ("i agree",), "agree is a verb"),
    _Rule("tense", _w(r"\bsince (\d+|two|three|four|five|ten) (years|months|weeks|days)\b"),
          lambda m: (f"for {m.group(1).lower()} {m.group(2).lower()}",
                     f"for {_NUMBER_WORDS.get(m.group(1), m.group(1))} {m.group(2).lower()}"), "for + period"),
]


def _ing(verb: str) -> str:
    verb = verb.lower()
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith("ee"):
        return verb[:-1] + "ing"
    if verb in ("swim", "run", "shop", "stop", "sit", "get", "put", "travel"):
        return verb + verb[-1] + "ing"
    return verb + "ing"


def _base(ing: str) -> str:
    word = ing.lower()[:-3]
    if len(word) > 2 and word[-1] == word[-2] and word[-1] not in "ls":
        return word[:-1]
    if word in ("danc", "mak", "tak", "writ", "driv", "com", "giv", "liv", "mov", "hav", "us", "leav"):
        return word + "e"
    return word


def find_errors(text: str) -> list[LearnerError]:
    """Errors found in a learner's message, in order of appearance, without overlaps."""
    found: list[tuple[int, int, LearnerError]] = []
    for rule in RULES:
        for m in rule.pattern.finditer(text or ""):
            corrections = rule.fix(m)
            if not corrections or any(c is None for c in corrections):
                continue
            start, end = m.span()
            if any(start < e and s < end for s, e, _ in found):
                continue
            found.append((start, end, LearnerError(rule.kind, m.group(0), tuple(corrections), rule.note)))
    return [err for _, _, err in sorted(found, key=lambda item: item[0])]
