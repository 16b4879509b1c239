"""The words of a turn as the teaching checks read them (tokens, crude stems, content words, sentences),
and every first/second-person swap: the learner's words said from the tutor's side and back."""

from __future__ import annotations

import re
from collections.abc import Mapping

from tutor.learner_errors import IRREGULAR_PAST, OVERREGULAR

STOPWORDS = set("""
a an the and or but so if then than that this these those there here it its it's they them their theirs
he him his she her hers we us our ours you your yours you're you've you'll you'd i me my mine i'm i've i'll
i'd myself yourself who whom whose what which when where why how is am are was were be been being do does
did done doing have has had having will would shall should can could may might must not no don't didn't
doesn't isn't aren't wasn't weren't haven't hasn't won't can't couldn't shouldn't wouldn't to of in on at
by for with from about into onto over under up down out off as too very really just also still already yet
again always never often sometimes usually maybe all any some many much more most less few lot lots one
other another such own same only even ever now ok okay oh ah wow hmm yes yeah no not well right sure
like love want need get got go going gone went come came make made take took say said tell told think
thought know knew see saw let lets let's thing things something anything nothing everything way kind bit
get gets getting do sound sounds sounded nice great good lovely cool fun wonderful amazing interesting
awesome fantastic wow haha hah please thanks thank really pretty quite feel feels felt time times
next else happen happens happened that's what's there's here's who's how's where's when's he's she's we're
they're we've they've we'll they'll he'll she'll it'll he'd she'd we'd they'd isn't tell
""".split())
FILLER = set("sound sounds nice great good lovely cool fun wonderful amazing interesting awesome fantastic "
             "exciting brilliant perfect glad happy hear lucky shame bad idea tough true".split())
INTERJECTIONS = set("oh ah aha wow hmm well so and but really okay ok yes yeah nice great cool then hey sorry wait "
                    "right sure haha oops ooh um uh".split())
WH = set("what which who whom whose when where why how".split())
AUXILIARIES = set("do does did is are was were am have has had can could will would should shall may might must "
                  "don't doesn't didn't isn't aren't wasn't weren't haven't hasn't can't couldn't won't wouldn't "
                  "shouldn't".split())
YOU = set("you your yours you're you've you'll you'd yourself we us our let's".split())  # the learner, the dialogue
BACK_REFERENCE = set("it its it's they them their he him his she her that those there one ones".split())
FIRST_PERSON = set("i i'm i've i'd i'll my me mine myself".split())
_BASE_OF = {past: base for base, past in IRREGULAR_PAST.items()}
_BASE_OF.update({wrong: _BASE_OF.get(right, right) for wrong, right in OVERREGULAR.items()})
_BASE_OF.update({"children": "child", "people": "person", "men": "man", "women": "woman", "kids": "kid"})
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
SENTENCE = re.compile(r"[^.!?]+[.!?]*")  # a sentence with its end punctuation


def clean(text: str) -> str:
    """Curly quotes as straight ones."""
    return (text or "").replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(clean(text).lower())


def stem(word: str) -> str:
    """A crude stem, enough to match brother/brothers, bake/baking, go/went/goed."""
    word = word.lower()
    if word.endswith("'s"):
        word = word[:-2]
    word = _BASE_OF.get(word, word)
    for suffix, repl in (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)] + repl
            if suffix in ("ing", "ed") and len(word) > 3 and word[-1] == word[-2] and word[-1] not in "ls":
                word = word[:-1]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def content_words(text: str) -> set[str]:
    return {stem(t) for t in tokens(text) if t not in STOPWORDS and (len(t) > 1 or t.isdigit())}


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE.findall(clean(text)) if s.strip()]


def body_words(sentence: str) -> list[str]:
    """The sentence's tokens after leading interjections ("Oh, so you ...")."""
    words = tokens(sentence)
    while words and words[0] in INTERJECTIONS:
        words = words[1:]
    return words


def normalize_question(question: str) -> str:
    return " ".join(body_words(question))


# ---------------------------------------------------------------- first and second person
# Every swap below reads this one table (first person -> second person). The callers differ in which
# words they swap and in how they find words, and each keeps exactly what it did before the swaps were
# brought together here (generated data and metrics stay byte-identical):
#   tutor_side             any case, every run of letters/apostrophes; singular only (not we/our/us)
#   speaker_swap_words     words already lower-cased; i, my, me, am, i'm, mine (learner_errors.takes_up)
#   frame_to_tutor_side    the frames' phrases: case-sensitive (I, I'm, I've; lower-case my, me ...), with
#                          we/our/us; "I" wins over "I'm" there ("I'm" -> "you'm")
FIRST_TO_SECOND = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "am": "are",
                   "i'm": "you're", "i've": "you've", "i'll": "you'll", "i'd": "you'd",
                   "we": "you", "our": "your", "us": "you"}
_SINGULAR = {k: v for k, v in FIRST_TO_SECOND.items() if k not in ("we", "our", "us")}
_SPEAKER = {k: FIRST_TO_SECOND[k] for k in ("i", "my", "me", "am", "i'm", "mine")}
_LETTER_RUN = re.compile(r"[A-Za-z']+")
_FRAME_FIRST_PERSON = re.compile(r"\b(?:my|I|me|mine|myself|am|we|our|us|I'm|I've)\b")
_FRAME_SECOND_PERSON = re.compile(r"\b(?:your|you)\b")


def swap_person(text: str, table: Mapping[str, str], word: re.Pattern) -> str:
    """Each match of ``word`` whose lower-case form is in ``table`` replaced by the table's form."""
    return word.sub(lambda m: table.get(m.group(0).lower(), m.group(0)), text)


def tutor_side(text: str) -> str:
    """The learner's words as the tutor would say them back: first person -> second person."""
    return swap_person(clean(text), _SINGULAR, _LETTER_RUN)


def speaker_swap_words(words: list[str]) -> str:
    """Lower-case words (``[\\w']+`` runs) joined by spaces, the speaker's I/my/me/am said as you/your."""
    return " ".join(_SPEAKER.get(w, w) for w in words)


def frame_to_tutor_side(text: str) -> str:
    """First person -> second person, for phrases the synthetic frames build ("my keys" -> "your keys")."""
    return swap_person(text, FIRST_TO_SECOND, _FRAME_FIRST_PERSON)


def frame_to_learner_side(text: str) -> str:
    """Second person -> first person, for the correct version of a learner's phrase ("your" -> "my")."""
    return swap_person(text, {"your": "my", "you": "me"}, _FRAME_SECOND_PERSON)


def tutor_form_to_learner(text: str) -> str:
    """A tutor-side form back in the learner's words: "you walk your dog" -> "I walk my dog" (only a
    leading "you" becomes "I"; "called/answered/for you" becomes "me")."""
    text = re.sub(r"\byour\b", "my", text)
    text = re.sub(r"\byou've\b", "I've", text)
    text = re.sub(r"^you\b", "I", text)
    return re.sub(r"\b(called|answered|for) you\b", r"\1 me", text)


def tutor_form_as_echo(text: str) -> str:
    """A tutor-side form as an echo would say it, in the first person: you're -> I'm, your -> my, you -> I."""
    echo = re.sub(r"\byou're\b", "I'm", text)
    return re.sub(r"\byour\b", "my", re.sub(r"\byou\b", "I", echo))
