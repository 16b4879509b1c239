"""The offline lane's real-learner-style rows (lane ``offline-essay``): longer sentences of essay and
conversational register with several learner errors at once, as real learners write them.

A correct sentence is built from the clause bank (``train.data.essay_bank``: an opener, one or two
clauses of a topic joined by a connector or written as two sentences, or a past experience with a time),
then ``train.data.learner_noise`` injects one to four errors of different kinds (spelling, articles,
prepositions, agreement, verb forms, plurals, word choice, word order ...). The tutor answers as a good
tutor does: one correction per turn, the clause whose error matters most to meaning, said back corrected
from the tutor's side ("So you think young people spend too much time on their phones?"), never copying
the learner's other errors, and a follow-up question that comes from that clause's own content. Styles
rotate as in the short-frame lane (recast, elicitation, expansion, metalinguistic)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from train.data import essay_bank as B
from train.data.learner_noise import MODALS, PRIORITY, Injected, Tok, inflect, inject, render
from train.data.synth import HINTS, style_for
from train.data.synth_seed import cap
from tutor.prompts import system_prompt
from tutor.teaching.words import frame_to_tutor_side

GENERATOR = "train.synth-essay/1"
LEVELS = ("intermediate", "intermediate", "advanced", "beginner")
ERROR_RATE = 0.92

FORMS = {"they": ("they", "them", "their", "themselves"), "he": ("he", "him", "his", "himself"),
         "she": ("she", "her", "her", "herself"), "it": ("it", "it", "its", "itself"),
         "I": ("I", "me", "my", "myself"), "we": ("we", "us", "our", "ourselves"),
         "you": ("you", "you", "your", "yourself"), "you-pl": ("you", "you", "your", "yourselves")}
ADVERBS = ("usually", "often", "sometimes", "always", "also", "really", "never")
RECAST_OPENERS = ["So ", "Oh, so ", "Ah, so ", "I see, so ", "Right, so ", "Hmm, so ", "", "Oh, "]
ELICIT = ["Do you mean {f}? {q}", "You mean {f}, right? {q}", "Just to check: {f}? {q}", "Sorry, {f}? {q}"]
COMMENTS = ["That's a common view these days.", "A lot of people feel the same way.",
            "That's a big question in many families.", "It's an interesting point, and people argue about it.",
            "Many teachers would agree with you.", "That's changing quickly in many countries.",
            "That's a fair point, and it's often discussed.", "Plenty of people would say the same.",
            "That's an important topic for young people.", "It's something many people worry about.",
            "That sounds like real experience talking.", "That's a good example."]
PAST_COMMENTS = ["That sounds like a great memory.", "What a nice experience.", "That sounds like quite a day.",
                 "Memories like that stay with you.", "That must have been exciting."]
REACTIONS = ["That's a fair point.", "I see what you mean.", "Interesting point!", "Good point.",
             "That's an interesting view.", "That makes sense.", "I can see why you say that."]


@dataclass
class Clause:
    subject: str
    person: str
    verb: str
    rest: str
    followups: list[str]
    tense: str                 # "present" or "past"
    adverb: str | None = None
    pronoun_subject: bool = False  # a second clause about the first one's subject ("... because they ...")


def verb_form(lemma: str, person: str, tense: str) -> str:
    third = person in ("he", "she", "it")
    if lemma in MODALS:
        return {"can": "could", "will": "would"}.get(lemma, lemma) if tense == "past" else lemma
    if lemma == "be":
        if tense == "past":
            return "was" if person in ("I", "he", "she", "it") else "were"
        return "am" if person == "I" else ("is" if third else "are")
    if tense == "past":
        return inflect(lemma, "VBD")
    return inflect(lemma, "VBZ") if third else lemma


def resolve(rest: str, person: str) -> str:
    they, them, pos, self_ = FORMS[person]
    return rest.format(pos=pos, them=them, they=they, self=self_)


def tutor_person(person: str) -> str:
    return {"I": "you", "we": "you-pl"}.get(person, person)


def tutor_subject(subject: str) -> str:
    joint = re.match(r"^[Mm]y (.+) and I$", subject)
    if joint:
        return f"you and your {joint.group(1)}"
    return frame_to_tutor_side(subject)


def _fix_tutor(text: str) -> str:
    text = re.sub(r"\byou was\b", "you were", text)
    return re.sub(r"\byou am\b", "you are", text)


def clause_toks(c: Clause, index: int) -> list[Tok]:
    toks = [Tok(w, "subj", index) for w in c.subject.split()]
    verb = verb_form(c.verb, c.person, c.tense)
    adverb_after = c.adverb and (c.verb in MODALS or c.verb == "be")
    if c.adverb and not adverb_after:
        toks.append(Tok(c.adverb, "adv", index))
    toks.append(Tok(verb, "verb", index, lemma=c.verb, person=c.person, tense=c.tense))
    if adverb_after:
        toks.append(Tok(c.adverb, "rest", index))
    toks += [Tok(w, "rest", index) for w in resolve(c.rest, c.person).split()]
    return toks


def tutor_clause(c: Clause, full_subject: str) -> str:
    person = tutor_person(c.person)
    verb = verb_form(c.verb, "they" if person.startswith("you") else person, c.tense)  # you are, you were
    words = [tutor_subject(full_subject)]
    if c.adverb and not (c.verb in MODALS or c.verb == "be"):
        words.append(c.adverb)
    words.append(verb)
    if c.adverb and (c.verb in MODALS or c.verb == "be"):
        words.append(c.adverb)
    words.append(frame_to_tutor_side(resolve(c.rest, person)))
    return _fix_tutor(" ".join(words))


@dataclass
class Sentence:
    toks: list[Tok]
    clauses: list[Clause]
    subjects: list[str]        # the full subject of each clause (a pronoun subject's antecedent)
    opener: str                # the learner's opener ("I think that "), "" if none
    time: str = ""             # a past clause's time phrase, "" if none
    time_front: bool = False   # the time came first ("Last summer, I ...")


def _clause(rng: random.Random, subjects, predicates, tense: str) -> Clause:
    subject, person = rng.choice(subjects)
    verb, rest, followups = rng.choice(predicates)
    adverb = rng.choice(ADVERBS) if rng.random() < 0.2 and verb not in MODALS else None
    return Clause(subject, person, verb, rest, list(followups), tense, adverb)


def make_sentence(rng: random.Random) -> Sentence:
    if rng.random() < 0.3:
        return _past_sentence(rng)
    topic = B.TOPICS[rng.choice(sorted(B.TOPICS))]
    first = _clause(rng, topic["subjects"], topic["predicates"], "present")
    opener = rng.choice(B.OPENERS) if rng.random() < 0.45 else ""
    toks = [Tok(w, "open") for w in opener.split()]
    toks += clause_toks(first, 0)
    clauses, subjects = [first], [first.subject]
    shape = rng.random()
    if shape < 0.55:
        second = _clause(rng, topic["subjects"], [p for p in topic["predicates"] if p[1] != first.rest], "present")
        if rng.random() < 0.6:  # about the same subject: "... because they ..."
            second.subject, second.person, second.pronoun_subject = FORMS[first.person][0], first.person, True
        if shape < 0.42:
            toks.append(Tok(rng.choice(B.CONNECTORS).strip(), "conn"))
        else:
            toks.append(Tok(".", "punct"))
        clauses.append(second)
        subjects.append(first.subject if second.pronoun_subject else second.subject)
        toks += clause_toks(second, 1)
    toks.append(Tok(rng.choice([".", ".", ".", "!", ""]), "punct"))
    _capitalize(toks)
    return Sentence(toks, clauses, subjects, opener)


def _past_sentence(rng: random.Random) -> Sentence:
    first = _clause(rng, B.PAST_SUBJECTS, B.PAST, "past")
    time = rng.choice(B.PAST_TIMES)
    front = rng.random() < 0.5
    toks = [Tok(w, "time") for w in time.split()] if front else []
    if front:
        toks[-1].text += ","
    toks += clause_toks(first, 0)
    clauses, subjects = [first], [first.subject]
    if not front:
        toks += [Tok(w, "time", 0) for w in time.split()]
    if rng.random() < 0.35:
        second = _clause(rng, B.PAST_SUBJECTS, [p for p in B.PAST if p[1] != first.rest], "past")
        second.subject, second.person, second.pronoun_subject = FORMS[first.person][0], first.person, True
        toks.append(Tok(rng.choice([" and ", " but ", " so "]).strip(), "conn"))
        toks += clause_toks(second, 1)
        clauses.append(second)
        subjects.append(first.subject)
    toks.append(Tok(rng.choice([".", ".", "!", ""]), "punct"))
    _capitalize(toks)
    return Sentence(toks, clauses, subjects, "", time, front)


def _capitalize(toks: list[Tok]) -> None:
    after_stop = True
    for t in toks:
        if after_stop and t.text and t.role != "punct":
            t.text = t.text[:1].upper() + t.text[1:]
            after_stop = False
        if t.role == "punct" and t.text in (".", "!", "?"):
            after_stop = True


def learner_noise(rng: random.Random, text: str) -> str:
    """Typing habits that are not errors the tutor should model: no capital, no final stop, "i"."""
    if rng.random() < 0.15:
        text = text[:1].lower() + text[1:]
    if rng.random() < 0.12:
        text = re.sub(r"\bI\b", "i", text)
    return text


def tutor_reply(sentence: Sentence, errors: list[Injected], style: str, rng: random.Random) -> str:
    """One correction per turn: the clause whose error matters most, corrected, then a follow-up from it."""
    if errors:
        c = max(range(len(sentence.clauses)),
                key=lambda i: (max([PRIORITY[e.kind] for e in errors if e.clause == i], default=0), -i))
    else:
        c = rng.randrange(len(sentence.clauses))
    clause = sentence.clauses[c]
    core = tutor_clause(clause, sentence.subjects[c])
    if c == 0 and sentence.opener and re.search(r"\b(I|my|me)\b", sentence.opener):
        opener = _fix_tutor(frame_to_tutor_side(sentence.opener.strip()))
        core = opener[:1].lower() + opener[1:] + " " + core
    if c == 0 and sentence.time:
        time = _fix_tutor(frame_to_tutor_side(sentence.time.rstrip(",")))
        core = f"{time}, {core}" if sentence.time_front else f"{core} {time}"
    others = [f for i, cl in enumerate(sentence.clauses) if i != c for f in cl.followups]
    q = rng.choice(others if others and rng.random() < 0.2 else clause.followups)
    comments = PAST_COMMENTS if clause.tense == "past" else COMMENTS
    if not errors:
        if rng.random() < 0.4:
            return f"{cap(rng.choice(RECAST_OPENERS) + core)}? {q}"
        return f"{rng.choice(REACTIONS)} {q}"
    if style == "recast":
        return f"{cap(rng.choice(RECAST_OPENERS) + core)}{'?' if rng.random() < 0.8 else '!'} {q}"
    if style == "elicitation":
        return rng.choice(ELICIT).format(f=core, q=q)
    if style == "expansion":
        return f"{cap(rng.choice(['', 'Yes, ', 'Right, ', 'True, ']) + core)}. {rng.choice(comments)} {q}"
    if style == "metalinguistic":
        kind = max(errors, key=lambda e: (e.clause == c, PRIORITY[e.kind])).kind
        hints = [h for h in HINTS.get(kind, []) if "{" not in h] or ["One small change: ", "Listen to this: "]
        return f"{rng.choice(hints)}{core}? {q}"
    raise ValueError(f"unknown style {style!r}")


def make_row(index: int, seed_value: int = 0, rotate_every: int = 2500) -> dict:
    """Entry ``index`` of the essay lane: deterministic in (index, seed_value)."""
    rng = random.Random(f"essay:{seed_value}:{index}")
    style = style_for(index, rotate_every)
    level = rng.choice(LEVELS)
    sentence = make_sentence(rng)
    errors = inject(sentence.toks, rng) if rng.random() < ERROR_RATE else []
    learner = learner_noise(rng, render(sentence.toks))
    reply = tutor_reply(sentence, errors, style, rng)
    primary = max(errors, key=lambda e: PRIORITY[e.kind]).kind if errors else None
    messages = [{"role": "system", "content": system_prompt(level)},
                {"role": "user", "content": learner}, {"role": "assistant", "content": reply}]
    return {"messages": messages, "metadata": {
        "source": "synthetic-offline-essay", "lane": "offline-essay", "generator": GENERATOR, "model": None,
        "prompt": None, "style": style, "level": level, "index": index, "seed": seed_value,
        "error_type": primary, "error": {"wrong": None, "right": None},
        "turn_errors": [primary], "errors": [e.kind for e in errors],
    }}
