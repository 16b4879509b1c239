"""Automatic pedagogy metrics for tutor replies, per reply and per model over a prompt set.

Rules, not a model (an optional LLM judge is at the end). Per reply, given the learner turn and,
when known, the corrected forms a recast would contain (``corrections``, from the tutor's side):

- ``takes_up_error``: a corrected form appears in the reply, said from either side
  (``tutor.learner_errors.takes_up``, also across contractions: "you'll visit" takes up "will visit", and
  the reply's own "I" said as "you": "We say 'I am 25 years old'" takes up "are 25 years old").
  With ``corrections`` (a prompt set) any one of them will do; with ``corrections=None`` every error
  ``tutor.learner_errors.find_errors`` finds must be taken up. None when the learner made no (known) error.
  Only a *telling* correction counts: one with a word that is not a function word (``FUNCTION_WORDS``:
  "the", "can", "for", "you are" are in any reply). find_errors' bare "are" / "have" get the learner's next
  words ("are my neighbours"); a prompt row whose corrections are all function words is refused.
  ``reference_corrections`` makes such forms from whole corrected sentences (JFLEG): the changed words
  with a word of context on either side, compared after ``detokenize`` ("do n't" -> "don't").
- ``red_pen``: overt correction: the flag detector's red-pen phrases and ``OVERT`` ("'went well', not
  'went good'", "say 'X'", "without 'of'", "you forgot the verb", "spelling tip"), or on an error turn
  an explicit style (a lecture, a directive). A phrase that only repeats the learner's own words ("the
  information was wrong") and praise of their grammar ("your English is excellent") are not red pen;
  praise counts as over-correction on a correct turn.
- ``grammar_terms``: grammar terminology (the detector's GRAMMAR_TERMS), overlapping hits counted once
  ("past tense" is one term, not "past tense" + "tense").
- ``follow_up``: the detector's test (the reply ends with a question, or asks one of four words or more).
- ``follow_up_on_topic``: stricter. Only *follow-up candidates* count: question sentences of two words or
  more that are not a bare interjection ("Really?"), and
    * a wh-question always is one;
    * a question containing a corrected form is not ("Oh, you went to the store?" is a recast,
      "Did you go?" / "Do you mean you went?" an elicitation: the learner can only say yes);
    * an auxiliary-first question is one ("Do you shop there often?");
    * a declarative question ("You have a garden?") only when it brings a content word the learner
      did not say, else it is a confirmation check.
  An invitation ("Tell me about him!") is a candidate too. A candidate is on topic when it shares a
  content word with the learner's turn (or their earlier turns in ``context``), addresses the learner
  or the dialogue (you/your/we), refers back with a pronoun (it/they/he/one...), has no content
  word of its own ("What happened?"), or is a wh-question in the past after a turn in the past ("Who was
  playing?"). Never on topic: a stock question (``STOCK``: "What do you do for fun?", "What's your
  favourite food?", a bare "Do you like football?") that shares no content word with the learner.
  A question with a corrected form is a follow-up when an earlier sentence already modelled it and it
  does not restate the learner ("Oh, you go to the pool every day? Do you swim every day?"); a
  declarative question that restates the learner ("Oh, you mean you have any tips...?") is not one.
  "Why?" and "And you?" are follow-ups. Lexical, so it misses paraphrase ("How was the flight?" after
  "I arrived in London"): ``train/evaluate/calibrate.py`` measures how often it agrees with people.
- ``ignores_question``: the learner asked something and no statement of the reply brings a content word
  of its own (or a "yes / sure / of course"): the parroted question.
- ``follow_up_question``: the last candidate, normalised; used for the diversity figures.
- ``words`` (and ``too_long``, the detector's per-level limit).
- ``echo``: the learner's first person said back as the tutor's. A sentence of the reply that, after
  interjections, starts with I / I'm / I've / my / me, while the learner spoke in the first person,
  and shares a content word with the learner's turn, and either is a question ("Oh, I have two
  brothers?") or repeats at least half of the learner's content words (at least two). A tutor's own
  "I love hiking too!", or a sentence that also says "you" ("I'm happy to give you advice"), is not.
- ``over_correction`` (turns with no error only): red pen, grammar terminology or praise of the grammar.
- ``style``, the first rule that applies:
    1. explicit: red pen, or a lecture (two grammar terms or more, one with an explaining word such as
       "because" / "we use" / "remember", or "the rule"), or a directive naming the grammar
       ("You need the past tense here: watched");
    2. metalinguistic: one grammar term or a hint phrase ("think about", "careful with", "that
       already happened", "more than one", "say it out loud", "after can, no to" ...);
    3. elicitation (error turns): "do you mean", "you mean", "just to check", "say that again", a
       sentence opening "Sorry, ..." / "Wait, ..." (a clarification request), or a corrected form inside
       an auxiliary-first question ("Did you go to the store?");
    4. expansion: the error is taken up and the reply's statements (not its questions) add at least
       two content words of their own (not said by the learner, not filler such as "nice");
    5. recast: the error is taken up;
    6. none: no error addressed (always the case for a plain reply to a correct sentence).
- ``good_move``, the issue's target in one boolean. Error turn: takes up the error, style is not
  explicit, no echo, the learner's question answered, and a follow-up on topic. Turn without error: no
  red pen, no over-correction, no echo, the question answered, and a follow-up on topic. Unknown
  (find_errors found nothing): treated as no error. Agreement with hand labels: ``quimbot eval calibrate``.

Per model (``aggregate``): means and shares of every metric, the style distribution, the good-move
rate and the diversity of the follow-up questions. A model that asks the same handful of stock
questions everywhere must score badly even when each reply looks fine alone:

    top5_share   = share of follow-ups that are one of the 5 most frequent *repeated* questions
    entropy_norm = H(follow-up questions) / log(number of follow-ups)   (1.0 when all differ)
    diversity    = 0.5 * (1 - top5_share) + 0.5 * entropy_norm          (0.0 with no follow-up)
    pedagogy_score = good_move_rate * diversity                          (in [0, 1])

Ten replies sharing two stock questions get diversity 0.15 however good each reply is; ten different
questions get 1.0. The offline synthetic set (train/data/synth.py, 3,400 rows) gets 0.80.

Optional LLM judge (``judge_reply``): any Quimbot backend rates a reply from 1 to 5 on a rubric adapted
from MRBench / the BEA 2025 shared task (mistake identification, guidance, explicitness rated for L2
recasts, coherence, tone, human-likeness); ``parse_judge`` reads its answer and never raises.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import QuimbotError
from tutor.detector import EXPLAINING, GRAMMAR_TERMS, MAX_WORDS, MISTAKE, RED_PEN, asks_follow_up
from tutor.learner_errors import IRREGULAR_PAST, OVERREGULAR, LearnerError, find_errors, takes_up

PROMPTS_PATH = Path(__file__).resolve().parents[2] / "data" / "prompts" / "tutoring_prompts.jsonl"
METRICS_VERSION = "pedagogy-v2"  # v2: telling corrections, overt red pen, stock questions, unanswered questions
LEVELS = ("beginner", "intermediate", "advanced")
STYLES = ("recast", "elicitation", "expansion", "metalinguistic", "explicit", "none")
TOP_K = 5


class PromptSetError(QuimbotError):
    """A prompt set file with a row that does not follow the schema."""


# ---------------------------------------------------------------- words
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
_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_TERMS = [re.compile(p, re.IGNORECASE) for p in GRAMMAR_TERMS]
_EXPLAINING = [re.compile(p, re.IGNORECASE) for p in EXPLAINING]
_RULE = re.compile(r"\bthe rule\b|\brule is\b|\bas a rule\b", re.IGNORECASE)
# a directive naming the grammar ("You need the past tense here: watched") is an explicit correction
_DIRECTIVE = re.compile(r"\b(?:you (?:need|have to use|must use|should use|forgot)|use|try) (?:the |a |an )?"
                        r"(?:past|present|future|plural|singular|article|preposition|comparative|superlative|"
                        r"infinitive|gerund|\w+ tense|(?:verb|base|past|plural|short|-?ing|correct|right) "
                        r"(?:form|ending))\b", re.IGNORECASE)
_CONTRACTIONS = [(re.compile(p, re.IGNORECASE), r) for p, r in (
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\bcannot\b", "can not"), (r"n't\b", " not"),
    (r"'ll\b", " will"), (r"'re\b", " are"), (r"'ve\b", " have"), (r"\bi'm\b", "i am"))]
_INVITATION = re.compile(r"^(?:\W*(?:oh|so|and|well|now)\W+)*(?:tell me|let me know)\b", re.IGNORECASE)
HINTS = [r"\bthink about\b", r"\bcareful (?:with|here|about)\b", r"\balready happened\b", r"\bmore than one\b",
         r"\b(?:just|only) one (?:person|thing)\b", r"\b(?:one|a) (?:small|little|tiny) (?:change|word|thing)\b",
         r"\b(?:watch|check|listen to) (?:the|that|your|this) (?:little )?(?:word|verb|ending|sound|form|first)\b",
         r"\bdrop the\b", r"\bwithout (?:an? |the )?['\"]?s['\"]?\b", r"\badd (?:an? )?['\"]?-?(?:s|er|ed|ing)\b",
         r"\bhow (?:do|would) (?:we|you) say (?:that|it|this) (?:in|about|for)\b", r"\bwhat(?:'s| is) the past of\b",
         r"\bin the past,? so\b", r"\bsmall word\b", r"\bsay it out loud\b", r"\bhow (?:it|that) sounds\b",
         r"\bafter ['\"]?\w+['\"]?,? (?:no|keep|drop|use)\b", r"\b(?:it|that) was [\w ]{3,25}, so\b",
         r"\blength of time\b"]
ELICIT = [r"\b(?:do|did) you mean\b", r"\byou mean\b", r"\bjust to check\b", r"\b(?:say|try) (?:that|it) again\b",
          r"\bcan you (?:say|repeat)\b", r"\bhow do you say\b", r"^(?:sorry|pardon|wait)\s*[,?!:]"]
_HINTS = [re.compile(p, re.IGNORECASE) for p in HINTS]
# Overt correction the detector's phrases miss: a quoted form set against another ("'went well', not
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
# stock questions: about the learner's life in general, not about what they just said
STOCK = [r"\bfavou?rite \w+", r"\bfree time\b", r"\bfor fun\b", r"\bhobb(?:y|ies)\b", r"\bfor (?:work|a living)\b",
         r"^what do you think\W*$", r"\bhow (?:was|is) your (?:day|week|weekend)\b",
         r"\b(?:plans|plan) for the weekend\b", r"\bweekend plans\b", r"\bfor breakfast\b",
         r"\bwhat do you do (?:at|on) the weekend\b",
         r"^do you like (?!it\b|them\b|that\b|this\b|those\b|there\b|him\b|her\b|one\b)\w+\W*$"]
_OVERT = [re.compile(p, re.IGNORECASE) for p in OVERT]
_PRAISE = [re.compile(p, re.IGNORECASE) for p in PRAISE]
_STOCK = [re.compile(p, re.IGNORECASE) for p in STOCK]
_DETECTOR_RED = [re.compile(p, re.IGNORECASE) for p in RED_PEN]
_MISTAKE_RE = re.compile(MISTAKE, re.IGNORECASE)
_ELICIT = [re.compile(p, re.IGNORECASE) for p in ELICIT]


def _clean(text: str) -> str:
    return (text or "").replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(_clean(text).lower())


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
    return [s.strip() for s in _SENTENCE.findall(_clean(text)) if s.strip()]


def _body(sentence: str) -> list[str]:
    """The sentence's tokens after leading interjections ("Oh, so you ...")."""
    words = tokens(sentence)
    while words and words[0] in INTERJECTIONS:
        words = words[1:]
    return words


def normalize_question(question: str) -> str:
    return " ".join(_body(question))


def tutor_side(text: str) -> str:
    """The learner's words as the tutor would say them back: first person -> second person."""
    swap = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "am": "are",
            "i'm": "you're", "i've": "you've", "i'll": "you'll", "i'd": "you'd"}
    return re.sub(r"[A-Za-z']+", lambda m: swap.get(m.group(0).lower(), m.group(0)), _clean(text))


# ---------------------------------------------------------------- one reply
@dataclass(frozen=True)
class ReplyMetrics:
    reply: str
    takes_up_error: bool | None
    red_pen: bool
    grammar_terms: int
    follow_up: bool
    follow_up_on_topic: bool
    follow_up_question: str | None
    words: int
    too_long: bool
    echo: bool
    over_correction: bool
    style: str
    good_move: bool
    evidence: tuple[str, ...] = ()
    ignores_question: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def count_grammar_terms(text: str) -> int:
    """Grammar terms in ``text``; overlapping hits ("past tense" / "tense") count once."""
    spans = sorted(m.span() for p in _TERMS for m in p.finditer(text or ""))
    count, end = 0, -1
    for start, stop in spans:
        if start >= end:
            count += 1
            end = stop
        else:
            end = max(end, stop)
    return count


def red_pen_hits(reply: str, learner: str = "") -> list[str]:
    """Overt correction in a reply: the flag detector's red-pen phrases and OVERT, except a phrase that only
    repeats the learner's own words ("the information was wrong") or praises their grammar."""
    said = " ".join(tokens(learner))
    learner_mentions_mistake = re.search(r"\b(?:mistake|error)", learner or "", re.IGNORECASE)
    patterns = _DETECTOR_RED + _OVERT + ([] if learner_mentions_mistake else [_MISTAKE_RE])
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


def expand_contractions(text: str) -> str:
    """"you'll" -> "you will", "didn't" -> "did not" ... ('s and 'd stay: they are ambiguous)."""
    text = _clean(text)
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


def _with_context(error: LearnerError, learner: str) -> LearnerError:
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


def _errors_for(learner: str, corrections: Sequence[str] | None, error_type: str | None) -> list[LearnerError]:
    if corrections is None:
        errors = [_with_context(e, _clean(learner)) for e in find_errors(_clean(learner))]
        return [e for e in errors if e.corrections]
    forms = tuple(c for c in corrections if c and c.strip())
    kept = tuple(c for c in forms if telling(c))
    if forms and not kept:
        raise PromptSetError(f"The corrections {list(forms)} are only function words, which any reply contains; "
                             "give each with the word it corrects (\"went to\", \"an apple\", \"people are\").")
    return [LearnerError(error_type or "given", "", kept)] if kept else []


def _contains_correction(text: str, errors: list[LearnerError]) -> bool:
    """Whether a sentence models a correction (every correction kept is a telling one)."""
    return any(e.corrections and reply_takes_up(text, e) for e in errors)


def _restates(sentence: str, learner_words: set[str]) -> bool:
    """The sentence says back most of what the learner said (at least 60% of their content words)."""
    if not learner_words:
        return True
    return len(content_words(sentence) & learner_words) >= math.ceil(0.6 * len(learner_words))


def _is_candidate(question: str, errors: list[LearnerError], learner_words: set[str], modelled: bool) -> bool:
    """``modelled``: an earlier sentence of the reply already contains a corrected form; then a question
    that also contains one ("Do you swim every day?") is a follow-up unless it restates the learner."""
    body = _body(question)
    if len(body) == 1 and body[0] in ("why", "how", "you"):  # "Why?", "And you?" ask the learner to go on
        return True
    if len(body) < 2:
        return False
    if body[0].split("'")[0] in WH:  # "what's" too
        return True
    if _contains_correction(question, errors):
        return modelled and body[0] in AUXILIARIES and not _restates(question, learner_words)
    if body[0] in AUXILIARIES:
        return True
    # a declarative question that says the learner's words back ("Oh, you mean what is my favourite season?")
    # is a confirmation check
    return bool(content_words(question) - learner_words) and not _restates(question, learner_words)


_ANSWER = re.compile(r"^\W*(?:yes|no|sure|of course|definitely|absolutely|certainly)\b", re.IGNORECASE)
_PRONOUN_AFTER = set("you i we they it there he she your my this that".split())


def learner_asks(learner: str) -> bool:
    """Whether the learner's turn asks the tutor something ("Do you have any tips...?", "where you live")."""
    for s in sentences(learner):
        body = _body(s)
        if s.endswith("?") and len(body) >= 2:
            return True
        if len(body) >= 3 and ((body[0] in AUXILIARIES and body[1] in _PRONOUN_AFTER) or (
                body[0] in WH and body[1] in AUXILIARIES)):
            return True
    return False


def ignores_question(reply: str, learner: str) -> bool:
    """The learner asked something and the reply gives no answer: no statement that brings a content word
    of its own. Parroting the question back ("Oh, you mean you have any tips for remembering new words?
    What do you do?") is the typical case."""
    if not learner_asks(learner):
        return False
    said = content_words(learner) | {stem(w) for w in FILLER}
    statements = [s for s in sentences(reply) if not s.endswith("?")]
    # "Sure, films next time!" answers "Maybe we can talk about films next time?"
    return not any(content_words(s) - said or _ANSWER.match(s) for s in statements)


def is_stock(question: str, topic_words: set[str]) -> bool:
    """A stock question ("What do you do for fun?", "What's your favourite food?") that shares no content
    word with what the learner said."""
    body = " ".join(_body(question))
    return any(p.search(body) for p in _STOCK) and not content_words(question) & topic_words


_PAST = {"was", "were", "did", "had"} | set(IRREGULAR_PAST.values())


def _past(words: Sequence[str]) -> bool:
    return any(w in _PAST or (w.endswith("ed") and len(w) > 4) for w in words)


def _on_topic(question: str, topic_words: set[str], past_turn: bool = False) -> bool:
    body = _body(question)
    words, content = set(body), content_words(question)
    if is_stock(question, topic_words):
        return False
    # a wh-question in the past after a turn about the past asks about that event ("Who was playing?")
    if past_turn and body and body[0] in WH and _past(body[1:3]):
        return True
    # a question with no content of its own ("What happened?", "Which ones?") can only be about what was said
    return not content or bool(content & topic_words or words & YOU or words & BACK_REFERENCE)


def is_echo(reply: str, learner: str) -> bool:
    """The learner's first-person words said back as the tutor's own (see the module docstring)."""
    if not set(tokens(learner)) & FIRST_PERSON:
        return False
    said = content_words(learner)
    for sentence in sentences(reply):
        body = _body(sentence)
        if not body or body[0] not in FIRST_PERSON or set(body) & YOU:  # "I'm happy to help you" is the tutor
            continue
        shared = content_words(sentence) & said
        if shared and (sentence.endswith("?") or len(shared) >= max(2, math.ceil(len(said) / 2))):
            return True
    return False


def _style(reply: str, red_pen: bool, terms: int, error_turn: bool, taken_up: bool,
           errors: list[LearnerError], learner_words: set[str]) -> str:
    explaining = any(p.search(reply) for p in _EXPLAINING)
    if red_pen or terms >= 2 or (terms and explaining) or _RULE.search(reply) or _DIRECTIVE.search(reply):
        return "explicit"
    if terms or any(p.search(reply) for p in _HINTS):
        return "metalinguistic"
    if error_turn:
        modelled = False
        for s in sentences(reply):
            body = _body(s)
            contains = _contains_correction(s, errors)
            if any(p.search(s) for p in _ELICIT) or (
                    s.endswith("?") and body and body[0] in AUXILIARIES and contains and not modelled):
                return "elicitation"
            modelled = modelled or contains
    if not taken_up:
        return "none"
    statements = " ".join(s for s in sentences(reply) if not s.endswith("?"))
    correction_words = set().union(*(content_words(c) for e in errors for c in e.corrections))
    new = content_words(statements) - learner_words - correction_words - {stem(w) for w in FILLER}
    return "expansion" if len(new) >= 2 else "recast"


def score_reply(reply: str, learner: str, corrections: Sequence[str] | None = None,
                context: Sequence[Mapping[str, str]] | None = None, level: str = "intermediate",
                error_type: str | None = None) -> ReplyMetrics:
    """Pedagogy metrics of one tutor reply to one learner turn.

    ``corrections``: the corrected forms from a prompt set (an empty list: the learner made no error);
    None: look for errors with ``find_errors``. ``context``: earlier messages ({role, content})."""
    reply = _clean(reply or "")
    errors = _errors_for(learner, corrections, error_type)
    error_turn = bool(errors)
    # prompt set: one error, its corrections are alternatives; find_errors: every error found must be taken up
    taken_up = error_turn and (all if corrections is None else any)(reply_takes_up(reply, e) for e in errors)
    red = [f"explicit correction: “{hit}”" for hit in red_pen_hits(reply, _clean(learner))[:1]]
    terms = count_grammar_terms(reply)
    learner_words = content_words(learner)
    topic_words = learner_words | set().union(
        *(content_words(m.get("content", "")) for m in (context or []) if m.get("role") == "user"))
    candidates, modelled = [], False
    for s in sentences(reply):
        if (s.endswith("?") and _is_candidate(s, errors, learner_words, modelled)) or _INVITATION.match(s):
            candidates.append(s)
        modelled = modelled or _contains_correction(s, errors)
    past_turn = _past(tokens(learner))
    on_topic = any(_on_topic(q, topic_words, past_turn) for q in candidates)
    echo = is_echo(reply, learner)
    style = _style(reply, bool(red), terms, error_turn, taken_up, errors, learner_words)
    over = not error_turn and (bool(red) or terms > 0 or praises_form(reply))
    # a lecture or a directive about the learner's mistake corrects as overtly as a red-pen phrase
    red_pen = bool(red) or (error_turn and style == "explicit")
    unanswered = ignores_question(reply, learner)
    if error_turn:
        good = taken_up and style != "explicit" and not echo and on_topic and not unanswered
    else:
        good = not red and not over and not echo and on_topic and not unanswered
    words = len(reply.split())
    evidence = tuple(red) + tuple(
        note for cond, note in (
            (error_turn and not taken_up, "the error is not taken up"),
            (echo, "echoes the learner's first person"),
            (over, "corrects a sentence that had no error"),
            (style == "explicit" and not red, "explains the grammar"),
            (not on_topic, "no follow-up question about what the learner said"),
            (unanswered, "does not answer the learner's question"),
        ) if cond)
    return ReplyMetrics(
        reply=reply, takes_up_error=taken_up if error_turn else None, red_pen=red_pen, grammar_terms=terms,
        follow_up=asks_follow_up(reply), follow_up_on_topic=on_topic,
        follow_up_question=normalize_question(candidates[-1]) if candidates else None, words=words,
        too_long=words > MAX_WORDS.get(level, MAX_WORDS["intermediate"]), echo=echo, over_correction=over,
        style=style, good_move=good, evidence=evidence, ignores_question=unanswered)


def score_prompt(prompt: Mapping, reply: str) -> ReplyMetrics:
    """``score_reply`` for one row of a prompt set."""
    return score_reply(reply, prompt["learner"], prompt.get("corrections", []), prompt.get("context"),
                       prompt.get("level", "intermediate"), prompt.get("error_type"))


def score_prompt_set(prompts: Sequence[Mapping], replies: Mapping[str, str] | Sequence[str]) -> list[ReplyMetrics]:
    """Metrics for a model's replies to a prompt set: ``replies`` by prompt id, or in prompt order."""
    if isinstance(replies, Mapping):
        missing = [p["id"] for p in prompts if p["id"] not in replies]
        if missing:
            raise PromptSetError(f"No reply for {len(missing)} prompt(s), e.g. {missing[:3]}; generate them first.")
        return [score_prompt(p, replies[p["id"]]) for p in prompts]
    if len(replies) != len(prompts):
        raise PromptSetError(f"{len(replies)} replies for {len(prompts)} prompts; give one reply per prompt.")
    return [score_prompt(p, r) for p, r in zip(prompts, replies)]


# ---------------------------------------------------------------- corrections from reference sentences
_CLITIC = re.compile(r"(\w) (n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE)


def detokenize(text: str) -> str:
    """Tokenized corpus text as a person writes it: "do n't" -> "don't", "it 's" -> "it's",
    " , " -> ", ", spaces inside brackets and quotes dropped."""
    text = " ".join(_clean(text).split())
    text = _CLITIC.sub(r"\1\2", text)
    text = re.sub(r"\s+([.,!?;:%)\]}])", r"\1", text)
    text = re.sub(r"([(\[{$])\s+", r"\1", text)
    text = re.sub(r'"\s*([^"]*?)\s*"', r'"\1"', text)
    return text.strip()


MAX_CHANGED_WORDS = 6  # a longer rewrite is a new sentence, not one correction a recast would contain


def _window(ref: list[str], j1: int, j2: int, learner_text: str) -> list[str]:
    """Corrected forms around ref[j1:j2] (the words a reference put where the learner's differ, empty for
    a deletion): the changed words with one word of context on either side, two where one is not enough.
    Each must carry a word that is not a function word and must not be something the learner wrote."""
    changed = ref[j1:j2]
    found: list[str] = []
    for width in (1, 2):
        left, right = ref[max(0, j1 - width):j1], ref[j2:j2 + width]
        shapes = [changed + right, left + changed, left + changed + right] if changed else [left + right]
        if len(changed) >= 2:
            shapes.insert(0, changed)
        for words in shapes:
            form = " ".join(words)
            if (len(words) >= 2 and telling(form) and form not in found
                    and not re.search(r"\b" + re.escape(form) + r"\b", learner_text)):
                found.append(form)
        if found:
            break
    return found


def reference_corrections(learner: str, references: Sequence[str]) -> list[str]:
    """The corrected forms a recast of ``learner`` could contain, from human corrections of the whole
    sentence (JFLEG's dev.ref0-3, or a calibration row's references). Word-level differences, compared
    lower-case after detokenizing, punctuation-only changes ignored; each form keeps the corrected
    context ("many parts", "in a factory", "considered the least"), never a lone function word."""
    import difflib

    words = tokens(detokenize(learner))
    learner_text = " ".join(words)
    forms: set[str] = set()
    for reference in references:
        ref = tokens(detokenize(reference))
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=words, b=ref, autojunk=False).get_opcodes():
            if op == "equal" or j2 - j1 > MAX_CHANGED_WORDS:
                continue
            forms.update(_window(ref, j1, j2, learner_text))
    return sorted(forms)


# ---------------------------------------------------------------- one model
def follow_up_diversity(questions: Sequence[str | None], n_replies: int | None = None) -> dict:
    """How varied a model's follow-up questions are (None: a reply without one)."""
    asked = [q for q in questions if q]
    n_replies = len(questions) if n_replies is None else n_replies
    counts = Counter(asked)
    stock = [(q, c) for q, c in counts.most_common() if c > 1][:TOP_K]
    if not asked:
        return {"follow_ups": 0, "distinct": 0, "distinct_per_reply": 0.0, "top5_share": 0.0,
                "entropy_norm": 0.0, "diversity": 0.0, "most_common": []}
    top5 = sum(c for _, c in stock) / len(asked)
    entropy = -sum(c / len(asked) * math.log(c / len(asked)) for c in counts.values())
    entropy_norm = entropy / math.log(len(asked)) if len(asked) > 1 else 1.0
    return {"follow_ups": len(asked), "distinct": len(counts),
            "distinct_per_reply": len(counts) / n_replies if n_replies else 0.0,
            "top5_share": top5, "entropy_norm": entropy_norm,
            "diversity": 0.5 * (1 - top5) + 0.5 * entropy_norm, "most_common": stock}


def pedagogy_score(good_move_rate: float, diversity: float) -> float:
    """The single figure: good-move rate times follow-up diversity, both in [0, 1]."""
    return max(0.0, min(1.0, good_move_rate * diversity))


def _share(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate(metrics: Sequence[ReplyMetrics]) -> dict:
    """Means and shares over one model's replies, the style distribution, diversity and the score."""
    n = len(metrics)
    error_turns = [m for m in metrics if m.takes_up_error is not None]
    clean_turns = [m for m in metrics if m.takes_up_error is None]
    diversity = follow_up_diversity([m.follow_up_question for m in metrics], n)
    good = _share([m.good_move for m in metrics]) or 0.0
    styles = Counter(m.style for m in metrics)
    return {
        "version": METRICS_VERSION, "n": n, "error_turns": len(error_turns),
        "takes_up_error": _share([bool(m.takes_up_error) for m in error_turns]),
        "red_pen": _share([m.red_pen for m in metrics]),
        "grammar_terms": sum(m.grammar_terms for m in metrics) / n if n else None,
        "follow_up": _share([m.follow_up for m in metrics]),
        "follow_up_on_topic": _share([m.follow_up_on_topic for m in metrics]),
        "words": sum(m.words for m in metrics) / n if n else None,
        "too_long": _share([m.too_long for m in metrics]),
        "echo": _share([m.echo for m in metrics]),
        "over_correction": _share([m.over_correction for m in clean_turns]),
        "style": {s: styles[s] / n if n else 0.0 for s in STYLES},
        "good_move": good,
        "good_move_error_turns": _share([m.good_move for m in error_turns]),
        "good_move_clean_turns": _share([m.good_move for m in clean_turns]),
        "distinct_replies_per_reply": len({" ".join(tokens(m.reply)) for m in metrics}) / n if n else None,
        "diversity": diversity,
        "pedagogy_score": pedagogy_score(good, diversity["diversity"]),
    }


# ---------------------------------------------------------------- prompt sets
def read_checked_jsonl(path: str | Path, problem, error: type[QuimbotError], missing: str) -> list[dict]:
    """Rows of a JSONL file, each checked by ``problem(row) -> str | None``; ids must be unique. Raises
    ``error`` naming the line and the fix (``missing``: what to say when the file is not there)."""
    path = Path(path)
    if not path.exists():
        raise error(f"No {missing} at {path}.")
    rows, ids = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where} is not JSON ({exc.msg}); write one JSON object per line.") from None
        found = problem(row)
        if found:
            raise error(f"{where}: {found}.")
        if row["id"] in ids:
            raise error(f"{where}: id {row['id']!r} is used twice; ids must be unique.")
        ids.add(row["id"])
        rows.append(row)
    return rows


def load_prompts(path: str | Path = PROMPTS_PATH) -> list[dict]:
    """A prompt set, checked row by row; raises PromptSetError naming the line and the fix."""
    return read_checked_jsonl(path, _prompt_problem, PromptSetError,
                              "prompt set; pass the path of a tutoring_prompts.jsonl file")


def _prompt_problem(row: object) -> str | None:
    if not isinstance(row, dict):
        return "a row must be a JSON object"
    if not isinstance(row.get("id"), str) or not row["id"]:
        return "'id' must be a non-empty string"
    if not isinstance(row.get("learner"), str) or not row["learner"].strip():
        return "'learner' must be the learner's message"
    corrections = row.get("corrections")
    if not isinstance(corrections, list) or not all(isinstance(c, str) and c.strip() for c in corrections):
        return "'corrections' must be a list of non-empty strings"
    if row.get("error_type") is None and corrections:
        return "a row without 'error_type' must have no corrections"
    if row.get("error_type") is not None and (not isinstance(row["error_type"], str) or not corrections):
        return "a row with an 'error_type' needs at least one correction"
    if row.get("level") not in LEVELS:
        return f"'level' must be one of {', '.join(LEVELS)}"
    context = row.get("context", [])
    if not isinstance(context, list) or not all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
            for m in context):
        return "'context' must be a list of {role: user|assistant, content} messages"
    return None


# ---------------------------------------------------------------- optional LLM judge
JUDGE_DIMENSIONS = {
    "mistake_identification": "Does the reply notice the learner's mistake? With no mistake: 5 when it invents none.",
    "guidance": "Does the reply show the correct form, or steer the learner towards it, without a lecture?",
    "explicitness": "Rated for second-language conversation: 5 = the correct form modelled naturally inside the "
                    "reply, from the tutor's side (a recast); 3 = a hint or 'do you mean...?'; 1 = red-pen "
                    "correction, a grammar rule, or no correct form at all.",
    "coherence": "Does the reply follow from what the learner said and ask a relevant question that moves on?",
    "tone": "Is it warm and encouraging, never patronising?",
    "human_likeness": "Does it sound like a friendly person talking, short enough for the learner's level?",
}
JUDGE_SYSTEM = (
    "You are an experienced teacher of English as a second language. You rate one reply of a conversation "
    "tutor to a learner. Rate each dimension from 1 (poor) to 5 (excellent):\n"
    + "\n".join(f"- {k}: {v}" for k, v in JUDGE_DIMENSIONS.items())
    + "\nAnswer with one JSON object only, for example: {"
    + ", ".join(f'"{k}": 4' for k in JUDGE_DIMENSIONS) + ', "comment": "one short sentence"}'
)


@dataclass(frozen=True)
class JudgeResult:
    scores: dict[str, float] | None  # dimension -> 1..5; None when the judge's answer was unusable
    overall: float | None            # mean of (score - 1) / 4, in [0, 1]; None unless every dimension was scored
    reason: str | None = None        # why scores is None, or which dimensions were missing
    raw: str = ""


def judge_messages(learner: str, reply: str, corrections: Sequence[str] | None = None,
                   context: Sequence[Mapping[str, str]] | None = None, level: str = "intermediate") -> list[dict]:
    history = "\n".join(f"{'Tutor' if m.get('role') == 'assistant' else 'Learner'}: {m.get('content', '')}"
                        for m in (context or []))
    mistake = " / ".join(corrections) if corrections else "none known"
    user = (f"Learner level: {level}\n" + (f"Earlier conversation:\n{history}\n" if history else "")
            + f"Learner: {learner}\nCorrect form(s) a good reply would model: {mistake}\n"
            f"Tutor reply to rate: {reply}\n\nAnswer with the JSON object only.")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def _key(name: str) -> str:
    return re.sub(r"[^a-z]+", "_", name.lower()).strip("_")


def _number(value: object) -> float | None:
    if isinstance(value, dict):
        value = next((value[k] for k in ("score", "rating", "value") if k in value), None)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = re.match(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*5)?\s*$", str(value))
    return float(m.group(1)) if m else None


def _objects(text: str):
    decoder = json.JSONDecoder()
    for candidate in (text, re.sub(r",\s*([}\]])", r"\1", text.replace("'", '"'))):
        for m in re.finditer(r"\{", candidate):
            try:
                obj, _ = decoder.raw_decode(candidate, m.start())
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj
                for inner in ("scores", "ratings", "rating", "score"):
                    if isinstance(obj.get(inner), dict):
                        yield obj[inner]


def parse_judge(text: object) -> JudgeResult:
    """Scores from a judge's answer: JSON (bare, fenced, in prose, single-quoted, trailing commas) or
    "name: 4" lines. Never raises; unusable output gives ``scores=None`` and a reason."""
    raw = text if isinstance(text, str) else ""
    try:
        if not isinstance(text, str) or not text.strip():
            return JudgeResult(None, None, "the judge returned nothing", raw)
        found: dict[str, float] = {}
        rejected: list[str] = []
        for obj in _objects(text):
            for name, value in obj.items():
                key = _key(str(name))
                if key in JUDGE_DIMENSIONS and key not in found:
                    number = _number(value)
                    if number is not None and 1 <= number <= 5:
                        found[key] = number
                    else:
                        rejected.append(f"{key}={value!r}")
            if found:
                break
        if not found:
            for key in JUDGE_DIMENSIONS:
                pattern = key.replace("_", r"[\s_-]*")
                m = re.search(rf"{pattern}\W{{0,4}}(\d(?:\.\d+)?)\s*(?:/\s*5)?", text, re.IGNORECASE)
                if m and 1 <= float(m.group(1)) <= 5:
                    found[key] = float(m.group(1))
        if not found:
            why = f"scores out of range or not numbers: {', '.join(rejected[:3])}" if rejected else \
                "no scores for any rubric dimension in the judge's answer"
            return JudgeResult(None, None, why, raw)
        missing = [k for k in JUDGE_DIMENSIONS if k not in found]
        if missing:  # comparable only when complete: keep what was given, but no overall figure
            return JudgeResult(found, None, f"missing: {', '.join(missing)}", raw)
        return JudgeResult(found, sum((v - 1) / 4 for v in found.values()) / len(found), None, raw)
    except Exception as exc:  # a judge's answer must never crash an evaluation run
        return JudgeResult(None, None, f"unparseable judge output ({type(exc).__name__})", raw)


def judge_reply(backend, learner: str, reply: str, corrections: Sequence[str] | None = None,
                context: Sequence[Mapping[str, str]] | None = None, level: str = "intermediate",
                options=None) -> JudgeResult:
    """Ask any Quimbot backend (``tutor.backends.load_backend``) to rate one reply on the rubric.
    A backend failure or an unusable answer gives ``scores=None`` with the reason, never an exception."""
    from tutor.backends import GenerationOptions

    options = options or GenerationOptions.greedy(200, seed=None)
    try:
        text = "".join(chunk.text for chunk in backend.stream(
            judge_messages(learner, reply, corrections, context, level), options))
    except Exception as exc:  # BackendError above all, but one bad call must not end a comparison
        return JudgeResult(None, None, f"the judge backend failed: {exc}", "")
    return parse_judge(text)
