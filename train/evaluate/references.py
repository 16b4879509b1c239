"""Corrected forms from human corrections of whole sentences (JFLEG's dev.ref0-3, a calibration row's
references), each with the kind of error its edit corrects, for the per-error-type breakdown.

The forms are what a recast could contain: the changed words with a word of context on either side,
compared lower-case after ``detokenize`` ("do n't" -> "don't"), never a lone function word. The kind comes
from the edit alone (the learner's words against the reference's), with LemmInflect's lemmas:

    article        a / an / the added, dropped or swapped
    preposition    only prepositions added, dropped or swapped ("interested on" -> "interested in")
    agreement      a verb's person changed, same lemma ("he go" -> "he goes", "people is" -> "people are")
    verb form      another form of the same verb (tense, participle, -ing, to + base)
    noun number    singular / plural of the same noun ("many student" -> "many students")
    spelling       a word that is not one ("becouse", "recieve"; LemmInflect's dictionary decides)
    word order     the same words in another order
    missing word   a word added that is not an article or preposition ("it very important" -> "it is
                   very important")
    extra word     a word dropped that is not an article or preposition
    word choice    another real word ("make a photo" -> "take a photo", "easy" -> "easily")
    rewrite        several words replaced by others ("in my point of view" -> "in my opinion")
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from functools import lru_cache

from train.evaluate.corrections import telling
from tutor.teaching.words import clean, tokens

ERROR_TYPES = ("agreement", "verb form", "noun number", "article", "preposition", "spelling", "word order",
               "word choice", "missing word", "extra word", "rewrite")
ARTICLES = {"a", "an", "the"}
PREPOSITIONS = set("""in on at to for of with from about by into onto over under after before during through
between among against without within around across along towards toward since until upon like than off up
down out per via behind beside besides near""".split())
AGREEMENT_PAIRS = {frozenset(p) for p in (("is", "are"), ("was", "were"), ("has", "have"), ("does", "do"),
                                          ("am", "is"), ("am", "are"), ("doesn't", "don't"), ("isn't", "aren't"),
                                          ("wasn't", "weren't"), ("hasn't", "haven't"))}

_CLITIC = re.compile(r"(\w) (n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE)


def detokenize(text: str) -> str:
    """Tokenized corpus text as a person writes it: "do n't" -> "don't", "it 's" -> "it's",
    " , " -> ", ", spaces inside brackets and quotes dropped."""
    text = " ".join(clean(text).split())
    text = _CLITIC.sub(r"\1\2", text)
    text = re.sub(r"\s+([.,!?;:%)\]}])", r"\1", text)
    text = re.sub(r"([(\[{$])\s+", r"\1", text)
    text = re.sub(r'"\s*([^"]*?)\s*"', r'"\1"', text)
    return text.strip()


MAX_CHANGED_WORDS = 6  # a longer rewrite is a new sentence, not one correction a recast would contain


def _window(ref: list[str], j1: int, j2: int, learner_text: str) -> list[tuple[str, int, int]]:
    """Corrected forms around ref[j1:j2] (the words a reference put where the learner's differ, empty for
    a deletion): the changed words with one word of context on either side, two where one is not enough,
    each with where it starts and ends in ``ref``. Each must carry a word that is not a function word and
    must not be something the learner wrote."""
    changed = ref[j1:j2]
    found: list[tuple[str, int, int]] = []
    for width in (1, 2):
        start, end = max(0, j1 - width), min(len(ref), j2 + width)
        spans = [(j1, end), (start, j2), (start, end)] if changed else [(start, end)]
        if len(changed) >= 2:
            spans.insert(0, (j1, j2))
        for a, b in spans:
            form = " ".join(ref[a:b])
            if (b - a >= 2 and telling(form) and form not in [f for f, _, _ in found]
                    and not re.search(r"\b" + re.escape(form) + r"\b", learner_text)):
                found.append((form, a, b))
        if found:
            break
    return found


def _bare(word: str) -> str:
    """The word as LemmInflect looks it up: without its apostrophes ("doesn't" -> "does")."""
    return word.replace("n't", "").replace("'", "") or word


@lru_cache(maxsize=8192)
def _dictionary_lemmas(word: str) -> dict[str, tuple[str, ...]]:
    """LemmInflect's lemmas per part of speech for a word in its dictionary ({} for any other word)."""
    from lemminflect import getAllLemmas

    return getAllLemmas(_bare(word))


@lru_cache(maxsize=8192)
def _lemmas(word: str) -> frozenset[tuple[str, str]]:
    """(lemma, upos) pairs LemmInflect knows for a word; for a word it does not know, the lemmas its
    out-of-vocabulary rules give as a verb and as a noun ("buyed" -> buy, "childs" -> child)."""
    from lemminflect import getAllLemmasOOV

    found = _dictionary_lemmas(word)
    if not found:
        found = {upos: getAllLemmasOOV(_bare(word), upos)[upos] for upos in ("VERB", "NOUN")}
    return frozenset((lemma, upos) for upos, lemmas in found.items() for lemma in lemmas)


def known(word: str) -> bool:
    """A word in LemmInflect's dictionary (so not a misspelling)."""
    return bool(_dictionary_lemmas(word))


def _same_lemma(a: str, b: str) -> str | None:
    """The part of speech two different words share a lemma in ("VERB", "NOUN", ...), or None."""
    shared = _lemmas(a) & _lemmas(b)
    for upos in ("VERB", "AUX", "NOUN", "ADJ", "ADV"):
        if any(u == upos for _, u in shared):
            return upos
    return None


def word_edit_type(a: str, b: str) -> str:
    """The kind of error one replaced word corrects (``a``: the learner's, ``b``: the reference's)."""
    if a in ARTICLES and b in ARTICLES:
        return "article"
    if a in PREPOSITIONS and b in PREPOSITIONS:
        return "preposition"
    if frozenset((a, b)) in AGREEMENT_PAIRS:
        return "agreement"
    upos = _same_lemma(a, b)
    if upos in ("VERB", "AUX"):
        # "go" <-> "goes": the third person's -s is agreement; any other pair of forms is a verb form
        return "agreement" if a.rstrip("s") == b.rstrip("s") or a + "es" == b or b + "es" == a else "verb form"
    if upos == "NOUN":
        return "noun number"
    if upos is not None:
        return "word choice"  # "easy" -> "easily": a word form
    # a word that is not one is misspelt ("becouse"); a real word for another is a word choice ("easy")
    return "spelling" if a.isalpha() and not known(a) else "word choice"


def edit_types(learner_words: Sequence[str], reference_words: Sequence[str]) -> tuple[str, ...]:
    """The kinds of error one edit corrects: the learner's words ``learner_words`` became the reference's
    ``reference_words`` (either may be empty). An edit of several words side by side ("totaly make a"
    -> "totally makes an") corrects each word's kind (spelling, agreement, article)."""
    a, b = list(learner_words), list(reference_words)
    both = set(a) | set(b)
    if len(a) > 1 and sorted(a) == sorted(b):
        return ("word order",)
    if both and both <= ARTICLES:
        return ("article",)
    if both and both <= PREPOSITIONS:
        return ("preposition",)
    if not a:
        return ("missing word",)
    if not b:
        return ("extra word",)
    if "".join(a) == "".join(b):
        return ("spelling",)  # "green house" -> "greenhouse", "every one" -> "everyone"
    if len(a) == len(b):
        return tuple(sorted({word_edit_type(x, y) for x, y in zip(a, b) if x != y}))
    # "to going" -> "to go", "more easy" -> "easier": one word more or fewer around the same verb or word
    if abs(len(a) - len(b)) == 1 and len(a) + len(b) <= 5:
        rest_a, rest_b = [w for w in a if w not in b], [w for w in b if w not in a]
        if len(rest_a) == 1 and len(rest_b) == 1:
            return (word_edit_type(rest_a[0], rest_b[0]),)
        if not rest_a or not rest_b:
            extra = set(rest_a or rest_b)
            if extra <= ARTICLES:
                return ("article",)
            if extra <= PREPOSITIONS:
                return ("preposition",)
            if extra <= {"to", "be", "is", "are", "was", "were", "been", "being", "will", "have", "has", "had"}:
                return ("verb form",)
    return ("rewrite",)


def typed_reference_corrections(learner: str, references: Sequence[str]) -> dict[str, list[str]]:
    """The corrected forms a recast of ``learner`` could contain, each with the kinds of error its edit
    corrects (``edit_types``): word-level differences from each reference, compared lower-case after
    detokenizing, punctuation-only changes ignored, each form keeping its corrected context ("many parts",
    "in a factory"). A form has the kinds of every edit inside it."""
    words = tokens(detokenize(learner))
    learner_text = " ".join(words)
    forms: dict[str, set[str]] = {}
    for reference in references:
        ref = tokens(detokenize(reference))
        edits = [(j1, j2, edit_types(words[i1:i2], ref[j1:j2]))
                 for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=words, b=ref, autojunk=False).get_opcodes()
                 if op != "equal" and j2 - j1 <= MAX_CHANGED_WORDS]
        for j1, j2, own in edits:
            for form, a, b in _window(ref, j1, j2, learner_text):
                # every edit inside the form is corrected by it ("enjoys it because": agreement and spelling)
                inside = {k for e1, e2, kinds in edits if a <= e1 and e2 <= b and (e1 < e2 or a < e1 < b)
                          for k in kinds}
                forms.setdefault(form, set()).update(inside | set(own))
    return {form: sorted(kinds) for form, kinds in sorted(forms.items())}


def reference_corrections(learner: str, references: Sequence[str]) -> list[str]:
    """``typed_reference_corrections`` without the kinds: the forms, sorted."""
    return list(typed_reference_corrections(learner, references))
