"""The offline programmatic lane: tutoring dialogues with no model at all.

Correct sentences are built from frames (a past event, a relative's habit, a number of things,
...), a typed learner error is injected (tense, agreement, articles, plurals, uncountables,
comparatives and superlatives, gerund/infinitive, modals, prepositions, word order, for/since,
be-agreement, did + base form, word choice, present perfect, pronouns, possessives, future,
quantifiers, double negatives, a missing subject). A good share of learner turns get a correct
tail clause ("..., the water was freezing") or a lead-in before the error clause, as real messages
do; the tutor recasts only the error clause. The tutor's reply models the correct form *from the tutor's side*
("you went", never an echoed "I went") in the chosen scaffolding style, with varied wording
and a follow-up question about what the learner said."""

from __future__ import annotations

import random

from train.data import synth_frames as A  # frames, part one
from train.data import synth_frames_more as B  # frames, part two
from train.data import synth_vocab as V
from train.data.synth_seed import Seed, cap, lower_first
from tutor.learner_errors import find_errors
from tutor.prompts import LEVELS, system_prompt

STYLES = ("recast", "elicitation", "expansion", "metalinguistic")
GENERATOR = "train.synth/4"


FRAMES = [(A.past_event, 12), (A.habit, 5), (A.counted, 3), (A.article, 5), (A.uncountable, 2), (A.comparative, 3),
          (A.gerund, 3), (A.modal, 4), (A.preposition, 6), (B.really, 4), (B.since, 2), (B.be, 2),
          (B.word_choice, 3), (B.present_perfect, 3), (B.pronoun, 3), (B.possessive, 2), (B.future, 2),
          (B.quantifier, 3), (B.double_negative, 2), (B.subject_omission, 3)]
_FRAME_FNS = [f for f, w in FRAMES for _ in range(w)]


def make_seed(rng: random.Random, error_rate: float = 0.92, lead: bool = True) -> Seed:
    seed = rng.choice(_FRAME_FNS)(rng, rng.random() < error_rate)
    _shape(rng, seed, lead)
    seed.learner = _learner_noise(rng, seed.learner, greet=lead)
    return seed


_JOINED = ("and ", "but ", "so ", "if ", "with ")


def _shape(rng: random.Random, seed: Seed, lead: bool = True) -> None:
    """Give a good share of learner turns the length and shape of real messages: a correct tail after
    the error clause ("..., the water was freezing"), sometimes a lead-in before it. The follow-up is
    sometimes about the tail. A shape that makes the error finder see a new error is dropped."""
    clause = seed.learner
    text, followups = clause, None
    draw = rng.random()
    tails = seed.tails or [(t, None) for t in V.COMMENT_TAILS]
    if draw < 0.55:
        tail, followups = rng.choice(tails)
        if tail in V.COMMENT_TAILS or tail.startswith(_JOINED):
            text = f"{clause} {tail}"
        elif rng.random() < 0.3 and not tail.endswith(("!", "?")) and not tail.startswith(("it ", "he ", "she ")) \
                and tail not in V.COMMENT_TAILS_PAST:
            text = f"{cap(tail)}. {clause}"  # the correct clause first: the error clause is still the one recast
        elif tail.endswith(("!", "?")):
            text = f"{clause}, {tail}"
        else:
            join = rng.random()
            text = f"{clause}, {tail}" if join < 0.5 else (
                f"{clause} and {tail}" if join < 0.7 else f"{clause}. {cap(tail)}")
    if lead and seed.leads and rng.random() < 0.2:
        first = rng.choice(seed.leads)
        text = f"{first} {text if first.endswith(('.', '!')) else lower_first(text)}"
    if text != clause and _found(text) != _found(clause):
        return
    seed.learner = text
    if followups and rng.random() < 0.5:
        seed.followups = list(followups)


def _found(text: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(e.kind, e.corrections) for e in find_errors(text)]


def _learner_noise(rng: random.Random, text: str, greet: bool = True) -> str:
    greeting = rng.choice(V.GREETINGS)
    if not greet or text.lower().startswith(greeting.strip(" ,.!").lower() or "-"):
        greeting = ""
    text = greeting + (lower_first(text) if greeting and not greeting.endswith(("! ", ". ")) else text)
    end = rng.random()
    if text[-1:].isalnum():
        text += "." if end < 0.55 else ("!" if end < 0.65 else "")
    if rng.random() < 0.1:
        text = lower_first(text)
    return text


RESTATE_CORRECT = 0.6  # share of replies to a correct turn that restate it
OPENERS = ["Oh, ", "Oh, ", "Ah, ", "Oh really, ", "So ", "", "Hmm, so ", "Oh, so ", "Ah, so "]
ELICIT = ["Do you mean {f}? {q}", "You mean {f}, right? {q}", "Just to check: {f}? {q}",
          "Sorry, {f}? {q}", "Wait, {f}? {q}"]
HINTS = {
    "past_tense": ["That already happened, so: ", "It was {when}, so ", "That's in the past, so "],
    "did_base": ["After didn't, keep it simple: ", "Careful with didn't here: "],
    "agreement": ["Just one person, so: ", "Think about who does it: "],
    "plural": ["More than one, so: ", "Think about how many: "],
    "article": ["Listen to the first sound: ", "Say it out loud: "],
    "uncountable": ["We say it without an s: ", "That word has no plural: "],
    "comparative": ["Short words just add -er: ", "Careful with more here: "],
    "gerund_infinitive": ["Listen to how it sounds: ", "One small change: "],
    "modal": ["After can, no to: ", "Drop the to: "],
    "preposition": ["Small word here: ", "Watch the little word: "],
    "word_order": ["Try really instead: ", "One small change: "],
    "for_since": ["For a length of time: ", "Think about how long: "],
    "be_agreement": ["With I, it's am: ", "One small change: "],
    "word_choice": ["One small change: ", "Think about the word here: "],
    "present_perfect": ["It's still true now, so: ", "Think about how long: "],
    "pronoun": ["Think about who it is: ", "One small change: "],
    "possessive": ["Think about whose it is: ", "One small change: "],
    "future": ["That's still to come, so: ", "Think about when: "],
    "quantifier": ["Think about how many: ", "One small change: "],
    "double_negative": ["Just one no here: ", "One small change: "],
    "subject_omission": ["Small word at the start: ", "One small change: "],
}


def tutor_reply(seed: Seed, style: str, rng: random.Random) -> str:
    """The tutor's reply to a seed in a scaffolding style."""
    q = rng.choice(seed.followups)
    form = seed.tutor_form
    if seed.error_type is None and rng.random() < RESTATE_CORRECT:
        # a correct turn is often reflected back too ("Oh, you went hiking on Sunday? ..."): the tutor's
        # habit is to say the learner's point in its own words, error or not
        opener = rng.choice(OPENERS)
        return f"{cap(opener + form)}{'?' if rng.random() < 0.7 else '!'} {q}"
    if seed.error_type is None and seed.reactions:
        return f"{rng.choice(seed.reactions)} {q}"
    if seed.error_type is None:
        lead = rng.choice(V.REPLIES_NATURAL)
        if rng.random() < 0.4:
            lead = f"{lead} {rng.choice(seed.comments)}"
        return f"{lead} {q}"
    if style == "recast":
        opener = rng.choice(OPENERS)
        return f"{cap(opener + form)}? {q}" if rng.random() < 0.8 else f"{cap(opener + form)}! {q}"
    if style == "elicitation":
        return rng.choice(ELICIT).format(f=form, q=q)
    if style == "expansion":
        comment = rng.choice(seed.comments)
        joiner = rng.choice(["! ", ". "])
        return f"{cap(rng.choice(['Oh, ', 'Ah, ', '', 'So ']) + form)}{joiner}{comment} {q}"
    if style == "metalinguistic":
        hint = rng.choice(seed.hints or HINTS.get(seed.error_type, ["One small change: "]))
        when = next((t for t in V.PAST_TIMES if t in form), "then")
        return f"{hint.format(when=when)}{form}? {q}"
    raise ValueError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")


def style_for(index: int, rotate_every: int = 2500) -> str:
    """The scaffolding style of entry ``index``: from the index alone, so a resumed run keeps
    exactly the same boundaries whatever happened to earlier entries."""
    return STYLES[(index // rotate_every) % len(STYLES)]


def make_row(index: int, seed_value: int = 0, rotate_every: int = 2500, multi_turn_rate: float = 0.25) -> dict:
    """Entry ``index`` of the offline lane: deterministic in (index, seed_value)."""
    rng = random.Random(f"{seed_value}:{index}")
    style = style_for(index, rotate_every)
    level = rng.choice(LEVELS)
    seeds = [make_seed(rng)]
    if rng.random() < multi_turn_rate:
        seeds.append(make_seed(rng, lead=False))
    messages = [{"role": "system", "content": system_prompt(level)}]
    for i, seed in enumerate(seeds):
        learner = seed.learner
        if i > 0:
            learner = rng.choice(["Yes! And ", "Not really. ", "Haha, yes. ", "Hmm, I don't know. ", "Yes. Also, ",
                                  "Maybe. "]) + lower_first(learner)
        messages.append({"role": "user", "content": learner})
        messages.append({"role": "assistant", "content": tutor_reply(seed, style, rng)})
    first = seeds[0]
    return {"messages": messages, "metadata": {
        "source": "synthetic-offline", "lane": "offline", "generator": GENERATOR, "model": None,
        "prompt": None, "style": style, "level": level, "index": index, "seed": seed_value,
        "error_type": first.error_type, "error": {"wrong": first.wrong, "right": first.right},
        "turn_errors": [s.error_type for s in seeds],
    }}
