"""The offline programmatic lane: tutoring dialogues with no model at all.

Correct sentences are built from frames (a past event, a relative's habit, a number of things,
...), a typed learner error is injected (tense, agreement, articles, plurals, uncountables,
comparatives, gerund/infinitive, modals, prepositions, word order, for/since, be-agreement,
did + base form), and the tutor's reply models the correct form *from the tutor's side*
("you went", never an echoed "I went") in the chosen scaffolding style, with varied wording
and a follow-up question about what the learner said."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from tutor.prompts import LEVELS, system_prompt

from . import synth_vocab as V

STYLES = ("recast", "elicitation", "expansion", "metalinguistic")
GENERATOR = "train.synth/1"


@dataclass
class Seed:
    """One learner turn: what they said, and what a tutor needs to answer it."""

    learner: str                 # the learner's message (with the error, if any)
    tutor_form: str              # the corrected content as the tutor says it ("you went to the beach")
    error_type: str | None       # None: the learner made no error
    wrong: str | None = None     # the learner's wrong words
    right: str | None = None     # the corrected words, as they appear in the tutor's reply
    topic: str = ""
    followups: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


_SWAP = {"my": "your", "i": "you", "me": "you", "mine": "yours", "myself": "yourself", "am": "are",
         "we": "you", "our": "your", "us": "you", "i'm": "you're", "i've": "you've"}


def to_tutor_side(text: str) -> str:
    """First person -> second person, for phrases the frames build ("my keys" -> "your keys")."""
    return re.sub(r"\b(my|I|me|mine|myself|am|we|our|us|I'm|I've)\b",
                  lambda m: _SWAP[m.group(1).lower()], text)


def _fill(template: str, p: str, pos: str, obj: str) -> str:
    do = "does" if p in ("he", "she", "it") else "do"
    return template.format(p=p, pos=pos, obj=obj, do=do, Do=do.capitalize())


def _past_event(rng: random.Random, with_error: bool) -> Seed:
    base, past, _, _, rest, topic = rng.choice(V.PAST_ACTIVITIES)
    when = rng.choice(V.PAST_TIMES)
    front = rng.random() < 0.5
    kind = rng.random()
    if with_error and kind < 0.2:  # "I didn't went"
        verb_bad = f"didn't {past}"
        learner = f"I {verb_bad} {rest} {when}"
        return Seed(learner, f"you didn't {base} {to_tutor_side(rest)} {when}", "did_base", verb_bad,
                    f"didn't {base}", topic, _followups(topic, "you", "your", "you"), V.TOPIC_COMMENTS[topic])
    if with_error:
        wrong = V.OVERREGULAR.get(past) if rng.random() < 0.35 and past in V.OVERREGULAR else base
        if wrong == past:
            wrong = base
    else:
        wrong = past
    say = (lambda v: f"{when.capitalize()} I {v} {rest}") if front else (lambda v: f"I {v} {rest} {when}")
    tutor = f"you {past} {to_tutor_side(rest)} {when}"
    return Seed(say(wrong), tutor, "past_tense" if with_error else None, wrong if with_error else None,
                f"you {past}" if with_error else None, topic, _followups(topic, "you", "your", "you"),
                V.TOPIC_COMMENTS[topic])


def _followups(topic: str, p: str, pos: str, obj: str) -> list[str]:
    return [_fill(t, p, pos, obj) for t in V.TOPIC_FOLLOWUPS[topic]]


def _habit(rng: random.Random, with_error: bool) -> Seed:
    noun, p, pos = rng.choice(V.RELATIVES)
    base, third, rest, followups = rng.choice(V.HABITS)
    obj = "her" if p == "she" else "him"
    verb = base if with_error else third
    return Seed(f"My {noun} {verb} {rest}", f"your {noun} {third} {rest}", "agreement" if with_error else None,
                f"{noun} {base}" if with_error else None, third if with_error else None, "people",
                [_fill(t, p, pos, obj) for t in followups], ["That's interesting.", "How nice."])


def _counted(rng: random.Random, with_error: bool) -> Seed:
    single, plural, verb, followups = rng.choice(V.COUNTED)
    number = rng.choice(V.NUMBERS)
    noun = single if with_error else plural
    return Seed(f"I {verb} {number} {noun}", f"you {_tutor_verb(verb)} {number} {plural}",
                "plural" if with_error else None, f"{number} {single}" if with_error else None,
                f"{number} {plural}" if with_error else None, "things", list(followups), ["That's quite a few!"])


def _tutor_verb(verb: str) -> str:
    return to_tutor_side(verb)


def _article(rng: random.Random, with_error: bool) -> Seed:
    if rng.random() < 0.7:
        noun, verb, followups = rng.choice(V.AN_NOUNS)
        right_article, wrong_article = "an", "a"
    else:
        noun, verb, followups = rng.choice(V.A_NOUNS)
        right_article, wrong_article = "a", "an"
    article = wrong_article if with_error else right_article
    return Seed(f"I {verb} {article} {noun}", f"you {verb} {right_article} {to_tutor_side(noun)}",
                "article" if with_error else None, f"{wrong_article} {noun.split()[0]}" if with_error else None,
                f"{right_article} {noun.split()[0]}" if with_error else None, "things", list(followups),
                ["How nice.", "Oh, that's interesting."])


def _uncountable(rng: random.Random, with_error: bool) -> Seed:
    right, wrong, learner_t, tutor_t, followups = rng.choice(V.UNCOUNTABLE)
    return Seed(learner_t.format(n=wrong if with_error else right), tutor_t.format(n=right),
                "uncountable" if with_error else None, wrong if with_error else None, right if with_error else None,
                "things", list(followups), ["I see."])


def _comparative(rng: random.Random, with_error: bool) -> Seed:
    adj, comp, learner_t, tutor_t, followups = rng.choice(V.COMPARATIVES)
    bad = rng.choice([f"more {adj}", f"more {comp}"]) if adj != "good" else rng.choice(["more good", "more better",
                                                                                          "gooder"])
    return Seed(learner_t.format(c=bad if with_error else comp), tutor_t.format(c=comp),
                "comparative" if with_error else None, bad if with_error else None, comp if with_error else None,
                "opinions", list(followups), ["Good to know.", "That makes sense."])


def _gerund(rng: random.Random, with_error: bool) -> Seed:
    if rng.random() < 0.5:
        base, ing, rest, followups = rng.choice(V.ENJOY)
        said = f"I enjoy to {base} {rest}" if with_error else f"I enjoy {ing} {rest}"
        return Seed(said, f"you enjoy {ing} {rest}", "gerund_infinitive" if with_error else None,
                    f"enjoy to {base}" if with_error else None, f"enjoy {ing}" if with_error else None,
                    "hobbies", list(followups), ["That's a lovely hobby."])
    base, ing, rest, followups = rng.choice(V.WANT)
    said = f"I want {ing} {rest}" if with_error else f"I want to {base} {rest}"
    return Seed(said, f"you want to {base} {rest}", "gerund_infinitive" if with_error else None,
                f"want {ing}" if with_error else None, f"want to {base}" if with_error else None,
                "plans", list(followups), ["That sounds like a good plan."])


def _modal(rng: random.Random, with_error: bool) -> Seed:
    base, rest, followups = rng.choice(V.CAN)
    said = f"I can to {base} {rest}" if with_error else f"I can {base} {rest}"
    return Seed(said, f"you can {base} {rest}", "modal" if with_error else None,
                f"can to {base}" if with_error else None, f"can {base}" if with_error else None, "skills",
                list(followups), ["That's impressive!", "Wow, not everyone can do that."])


def _preposition(rng: random.Random, with_error: bool) -> Seed:
    correct, wrong, tutor, followups = rng.choice(V.PREPOSITIONS)
    right_words = [w for w in correct.split() if w not in wrong.split()]
    wrong_words = [w for w in wrong.split() if w not in correct.split()]
    return Seed(wrong if with_error else correct, tutor, "preposition" if with_error else None,
                " ".join(wrong_words) or "(missing word)" if with_error else None,
                _context(tutor, right_words) if with_error else None, "life", list(followups),
                ["Nice.", "I see."])


def _context(tutor: str, words: list[str]) -> str:
    """The corrected words with one word of context from the tutor's sentence."""
    tokens = tutor.split()
    for i, token in enumerate(tokens):
        if words and token == words[0]:
            return " ".join(tokens[i:i + len(words) + 1])
    return " ".join(words)


def _really(rng: random.Random, with_error: bool) -> Seed:
    thing, followups = rng.choice(V.REALLY_LIKE)
    said = f"I very like {thing}" if with_error else f"I really like {thing}"
    return Seed(said, f"you really like {to_tutor_side(thing)}", "word_order" if with_error else None,
                "very like" if with_error else None, "really like" if with_error else None, "likes",
                list(followups), ["Me too!", "That's great."])


def _since(rng: random.Random, with_error: bool) -> Seed:
    place, verb = rng.choice(V.SINCE)
    years = rng.choice(["two", "three", "five", "ten"])
    prep = "in" if verb == "lived" and place != "this flat" else ("at" if verb == "worked" else "in")
    obj = f"{prep} {place}" if verb != "studied" else place
    said = (f"I {'live' if verb == 'lived' else verb[:-2] if verb == 'worked' else 'study'} {obj} since {years} years"
            if with_error else f"I have {verb} {obj} for {years} years")
    tutor = f"you've {verb} {to_tutor_side(obj)} for {years} years"
    return Seed(said, tutor, "for_since" if with_error else None, f"since {years} years" if with_error else None,
                f"for {years} years" if with_error else None, "life",
                ["Do you like it?", "What made you choose it?", "How has it changed?"], ["That's a long time!"])


def _be(rng: random.Random, with_error: bool) -> Seed:
    adj = rng.choice(V.BE_ADJ)
    bad = rng.choice(["I is", "I are"])
    when = rng.choice(["today", "this week", "right now", "this morning"])
    return Seed(f"{bad if with_error else 'I am'} {adj} {when}", f"you're {adj} {when}",
                "be_agreement" if with_error else None, bad if with_error else None,
                f"you're {adj}" if with_error else None, "feelings", list(V.BE_FOLLOWUPS[adj]), ["I understand."])


FRAMES = [(_past_event, 6), (_habit, 3), (_counted, 2), (_article, 2), (_uncountable, 1), (_comparative, 1),
          (_gerund, 2), (_modal, 1), (_preposition, 2), (_really, 1), (_since, 1), (_be, 1)]
_FRAME_FNS = [f for f, w in FRAMES for _ in range(w)]


def make_seed(rng: random.Random, error_rate: float = 0.85) -> Seed:
    seed = rng.choice(_FRAME_FNS)(rng, rng.random() < error_rate)
    seed.learner = _learner_noise(rng, seed.learner)
    return seed


def _lower_first(text: str) -> str:
    return text if text.startswith(("I ", "I'", "English")) else text[:1].lower() + text[1:]


def _learner_noise(rng: random.Random, text: str) -> str:
    greeting = rng.choice(V.GREETINGS)
    text = greeting + (_lower_first(text) if greeting and not greeting.endswith(("! ", ". ")) else text)
    end = rng.random()
    text += "." if end < 0.55 else ("!" if end < 0.65 else "")
    if rng.random() < 0.1:
        text = _lower_first(text)
    return text


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


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
}


def tutor_reply(seed: Seed, style: str, rng: random.Random) -> str:
    """The tutor's reply to a seed in a scaffolding style."""
    q = rng.choice(seed.followups)
    form = seed.tutor_form
    if seed.error_type is None:
        lead = rng.choice(V.REPLIES_NATURAL)
        if rng.random() < 0.4:
            lead = f"{lead} {rng.choice(seed.comments)}"
        return f"{lead} {q}"
    if style == "recast":
        opener = rng.choice(OPENERS)
        return f"{_cap(opener + form)}? {q}" if rng.random() < 0.8 else f"{_cap(opener + form)}! {q}"
    if style == "elicitation":
        return rng.choice(ELICIT).format(f=form, q=q)
    if style == "expansion":
        comment = rng.choice(seed.comments)
        joiner = rng.choice(["! ", ". "])
        return f"{_cap(rng.choice(['Oh, ', 'Ah, ', '', 'So ']) + form)}{joiner}{comment} {q}"
    if style == "metalinguistic":
        hint = rng.choice(HINTS.get(seed.error_type, ["One small change: "]))
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
        seeds.append(make_seed(rng))
    messages = [{"role": "system", "content": system_prompt(level)}]
    for i, seed in enumerate(seeds):
        learner = seed.learner
        if i > 0:
            learner = rng.choice(["Yes! And ", "Not really. ", "Haha, yes. ", "Hmm, I don't know. ", "Yes. Also, ",
                                  "Maybe. "]) + _lower_first(learner)
        messages.append({"role": "user", "content": learner})
        messages.append({"role": "assistant", "content": tutor_reply(seed, style, rng)})
    first = seeds[0]
    return {"messages": messages, "metadata": {
        "source": "synthetic-offline", "lane": "offline", "generator": GENERATOR, "model": None,
        "prompt": None, "style": style, "level": level, "index": index, "seed": seed_value,
        "error_type": first.error_type, "error": {"wrong": first.wrong, "right": first.right},
        "turn_errors": [s.error_type for s in seeds],
    }}
