"""Automatic pedagogy metrics for tutor replies, per reply and per model over a prompt set.

Rules, not a model. Per reply, given the learner turn and,
when known, the corrected forms a recast would contain (``corrections``, from the tutor's side):

- ``takes_up_error``: a corrected form appears in the reply, said from either side
  (``tutor.teaching.replies.takes_up``, also across contractions: "you'll visit" takes up "will visit", and
  the reply's own "I" said as "you": "We say 'I am 25 years old'" takes up "are 25 years old").
  With ``corrections`` (a prompt set) any one of them will do; with ``corrections=None`` every error
  ``tutor.learner_errors.find_errors`` finds must be taken up. None when the learner made no (known) error.
  Only a *telling* correction counts: one with a word that is not a function word (``FUNCTION_WORDS``:
  "the", "can", "for", "you are" are in any reply). find_errors' bare "are" / "have" get the learner's next
  words ("are my neighbours"); a prompt row whose corrections are all function words is refused.
  ``train.evaluate.references`` makes such forms from whole corrected sentences (JFLEG): the changed
  words with a word of context on either side, compared after ``detokenize`` ("do n't" -> "don't"), each
  with the kind of error it corrects (``by_error_type`` breaks the figures down by it).
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

The optional LLM judge is ``train.evaluate.judge``; prompt sets are read by ``train.evaluate.prompt_sets``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from train.evaluate.corrections import contains_correction, errors_for, reply_takes_up, telling
from train.evaluate.diversity import follow_up_diversity, pedagogy_score
from train.evaluate.prompt_sets import PromptSetError
from tutor.detector import MAX_WORDS
from tutor.learner_errors import IRREGULAR_PAST, LearnerError
from tutor.teaching.overt import EXPLAINING_RES, count_grammar_terms, overt_corrections, praises_form
from tutor.teaching.replies import INVITATION, asks_follow_up, is_echo
from tutor.teaching.words import (
    AUXILIARIES,
    BACK_REFERENCE,
    FILLER,
    WH,
    YOU,
    body_words,
    clean,
    content_words,
    normalize_question,
    sentences,
    stem,
    tokens,
)

METRICS_VERSION = "pedagogy-v2"  # v2: telling corrections, overt red pen, stock questions, unanswered questions
STYLES = ("recast", "elicitation", "expansion", "metalinguistic", "explicit", "none")



_RULE = re.compile(r"\bthe rule\b|\brule is\b|\bas a rule\b", re.IGNORECASE)
# a directive naming the grammar ("You need the past tense here: watched") is an explicit correction
_DIRECTIVE = re.compile(r"\b(?:you (?:need|have to use|must use|should use|forgot)|use|try) (?:the |a |an )?"
                        r"(?:past|present|future|plural|singular|article|preposition|comparative|superlative|"
                        r"infinitive|gerund|\w+ tense|(?:verb|base|past|plural|short|-?ing|correct|right) "
                        r"(?:form|ending))\b", re.IGNORECASE)
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
# stock questions: about the learner's life in general, not about what they just said
STOCK = [r"\bfavou?rite \w+", r"\bfree time\b", r"\bfor fun\b", r"\bhobb(?:y|ies)\b", r"\bfor (?:work|a living)\b",
         r"^what do you think\W*$", r"\bhow (?:was|is) your (?:day|week|weekend)\b",
         r"\b(?:plans|plan) for the weekend\b", r"\bweekend plans\b", r"\bfor breakfast\b",
         r"\bwhat do you do (?:at|on) the weekend\b",
         r"^do you like (?!it\b|them\b|that\b|this\b|those\b|there\b|him\b|her\b|one\b)\w+\W*$"]
_STOCK = [re.compile(p, re.IGNORECASE) for p in STOCK]
_ELICIT = [re.compile(p, re.IGNORECASE) for p in ELICIT]


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



def _restates(sentence: str, learner_words: set[str]) -> bool:
    """The sentence says back most of what the learner said (at least 60% of their content words)."""
    if not learner_words:
        return True
    return len(content_words(sentence) & learner_words) >= math.ceil(0.6 * len(learner_words))


def _is_candidate(question: str, errors: list[LearnerError], learner_words: set[str], modelled: bool) -> bool:
    """``modelled``: an earlier sentence of the reply already contains a corrected form; then a question
    that also contains one ("Do you swim every day?") is a follow-up unless it restates the learner."""
    body = body_words(question)
    if len(body) == 1 and body[0] in ("why", "how", "you"):  # "Why?", "And you?" ask the learner to go on
        return True
    if len(body) < 2:
        return False
    if body[0].split("'")[0] in WH:  # "what's" too
        return True
    if contains_correction(question, errors):
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
        body = body_words(s)
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
    body = " ".join(body_words(question))
    return any(p.search(body) for p in _STOCK) and not content_words(question) & topic_words


_PAST = {"was", "were", "did", "had"} | set(IRREGULAR_PAST.values())


def _past(words: Sequence[str]) -> bool:
    return any(w in _PAST or (w.endswith("ed") and len(w) > 4) for w in words)


def _on_topic(question: str, topic_words: set[str], past_turn: bool = False) -> bool:
    body = body_words(question)
    words, content = set(body), content_words(question)
    if is_stock(question, topic_words):
        return False
    # a wh-question in the past after a turn about the past asks about that event ("Who was playing?")
    if past_turn and body and body[0] in WH and _past(body[1:3]):
        return True
    # a question with no content of its own ("What happened?", "Which ones?") can only be about what was said
    return not content or bool(content & topic_words or words & YOU or words & BACK_REFERENCE)


def _style(reply: str, red_pen: bool, terms: int, error_turn: bool, taken_up: bool,
           errors: list[LearnerError], learner_words: set[str]) -> str:
    explaining = any(p.search(reply) for p in EXPLAINING_RES)
    if red_pen or terms >= 2 or (terms and explaining) or _RULE.search(reply) or _DIRECTIVE.search(reply):
        return "explicit"
    if terms or any(p.search(reply) for p in _HINTS):
        return "metalinguistic"
    if error_turn:
        modelled = False
        for s in sentences(reply):
            body = body_words(s)
            contains = contains_correction(s, errors)
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
    reply = clean(reply or "")
    errors = errors_for(learner, corrections, error_type)
    error_turn = bool(errors)
    # prompt set: one error, its corrections are alternatives; find_errors: every error found must be taken up
    taken_up = error_turn and (all if corrections is None else any)(reply_takes_up(reply, e) for e in errors)
    red = [f"explicit correction: “{hit}”" for hit in overt_corrections(reply, clean(learner))[:1]]
    terms = count_grammar_terms(reply)
    learner_words = content_words(learner)
    topic_words = learner_words | set().union(
        *(content_words(m.get("content", "")) for m in (context or []) if m.get("role") == "user"))
    candidates, modelled = [], False
    for s in sentences(reply):
        if (s.endswith("?") and _is_candidate(s, errors, learner_words, modelled)) or INVITATION.match(s):
            candidates.append(s)
        modelled = modelled or contains_correction(s, errors)
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


def prompt_error_types(prompt: Mapping) -> dict[str, tuple[str, ...]]:
    """A prompt's telling corrected forms grouped by the kind of error they correct (a form that corrects
    several kinds is in each group): JFLEG prompts carry each form's kinds (``correction_types``, from
    ``train.evaluate.references``); a prompt-set row has one ``error_type`` for all its corrections."""
    kinds = prompt.get("correction_types") or {}
    grouped: dict[str, list[str]] = {}
    for form in prompt.get("corrections") or []:
        if telling(form):
            for kind in kinds.get(form) or [prompt.get("error_type") or "given"]:
                grouped.setdefault(kind, []).append(form)
    return {kind: tuple(forms) for kind, forms in grouped.items()}


def by_error_type(prompts: Sequence[Mapping], metrics: Sequence[ReplyMetrics]) -> dict[str, dict]:
    """Per kind of error, over the turns that have one: how many (``n``), the share whose reply takes up
    a correction *of that kind* (``takes_up``), and the share of good moves on those turns. A turn with
    errors of several kinds counts under each; most frequent kind first."""
    seen: dict[str, list[tuple[bool, bool]]] = {}
    for prompt, m in zip(prompts, metrics):
        if m.takes_up_error is None:
            continue
        for kind, forms in prompt_error_types(prompt).items():
            taken = reply_takes_up(m.reply, LearnerError(kind, "", forms))
            seen.setdefault(kind, []).append((taken, m.good_move))
    return {kind: {"n": len(rows), "takes_up": _share([t for t, _ in rows]), "good_move": _share([g for _, g in rows])}
            for kind, rows in sorted(seen.items(), key=lambda item: (-len(item[1]), item[0]))}
