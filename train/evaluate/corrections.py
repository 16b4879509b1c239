"""Corrected forms as the pedagogy metrics compare them with a reply: contractions expanded, the reply
said from either side, and only *telling* forms (one with a word that is not a function word)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from train.evaluate.prompt_sets import PromptSetError
from tutor.learner_errors import LearnerError, find_errors
from tutor.teaching.replies import takes_up
from tutor.teaching.words import AUXILIARIES, clean, tokens, tutor_side

_CONTRACTIONS = [(re.compile(p, re.IGNORECASE), r) for p, r in (
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\bcannot\b", "can not"), (r"n't\b", " not"),
    (r"'ll\b", " will"), (r"'re\b", " are"), (r"'ve\b", " have"), (r"\bi'm\b", "i am"))]


def expand_contractions(text: str) -> str:
    """"you'll" -> "you will", "didn't" -> "did not" ... ('s and 'd stay: they are ambiguous)."""
    text = clean(text)
    for pattern, full in _CONTRACTIONS:
        text = pattern.sub(full, text)
    return text


def reply_takes_up(reply: str, error: LearnerError) -> bool:
    """``takes_up``, also when the reply and the correction differ only by a contraction."""
    expanded = LearnerError(error.kind, error.span, tuple(expand_contractions(c) for c in error.corrections))
    for text in (reply, tutor_side(reply)):
        if takes_up(text, error) or takes_up(expand_contractions(text), expanded):
            return True
    return False


# Words that carry no correction on their own: a reply contains "the", "can" or "for" whatever it says.
FUNCTION_WORDS = AUXILIARIES | set("""
a an the this that these those some any no every each either neither both all much many more most few fewer
less least several enough such i me my mine you your yours he him his she her hers it its we us our ours they
them their theirs who whom whose which what that there here to of in on at by for with from about into onto
over under after before since until during through between among against without within per as than and or
but nor so yet if because while though although when where why how not n't also too very just only even be
one ones other another then still already again
been being am do does did done have has had having will would shall should can could may might must ought
i'm you're he's she's it's we're they're i've you've we've they've i'll you'll we'll they'll i'd you'd
""".split())


def telling(correction: str) -> bool:
    """Whether a corrected form proves anything when a reply contains it: it must carry a word that is
    not a function word ("the", "can", "for", "you are" alone are in any reply)."""
    return any(w not in FUNCTION_WORDS for w in tokens(expand_contractions(correction)))


def with_context(error: LearnerError, learner: str) -> LearnerError:
    """find_errors' corrections with the learner's next words added where a correction alone is only
    function words: "They is my neighbours" -> "are my neighbours" (from the tutor's side: "are your ...")."""
    at = learner.lower().find(error.span.lower()) if error.span else -1
    following = tokens(learner[at + len(error.span):]) if at >= 0 else []
    forms = []
    for correction in error.corrections:
        extended = correction
        for word in following[:3]:
            if telling(extended):
                break
            extended += " " + word
        if telling(extended):
            forms.append(extended)
    return LearnerError(error.kind, error.span, tuple(forms), error.note)


def errors_for(learner: str, corrections: Sequence[str] | None, error_type: str | None) -> list[LearnerError]:
    if corrections is None:
        errors = [with_context(e, clean(learner)) for e in find_errors(clean(learner))]
        return [e for e in errors if e.corrections]
    forms = tuple(c for c in corrections if c and c.strip())
    kept = tuple(c for c in forms if telling(c))
    if forms and not kept:
        raise PromptSetError(f"The corrections {list(forms)} are only function words, which any reply contains; "
                             "give each with the word it corrects (\"went to\", \"an apple\", \"people are\").")
    return [LearnerError(error_type or "given", "", kept)] if kept else []


def contains_correction(text: str, errors: list[LearnerError]) -> bool:
    """Whether a sentence models a correction (every correction kept is a telling one)."""
    return any(e.corrections and reply_takes_up(text, e) for e in errors)
