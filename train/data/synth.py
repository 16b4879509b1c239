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
import re
from dataclasses import dataclass, field

from train.data import synth_vocab as V
from tutor.learner_errors import find_errors
from tutor.prompts import LEVELS, system_prompt
from tutor.teaching.words import frame_to_learner_side, frame_to_tutor_side, tutor_form_to_learner

STYLES = ("recast", "elicitation", "expansion", "metalinguistic")
GENERATOR = "train.synth/4"


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
    tails: list[tuple[str, list[str] | None]] = field(default_factory=list)  # correct clauses to add, own follow-ups
    leads: list[str] = field(default_factory=list)  # lead-ins that fit before the clause
    hints: list[str] = field(default_factory=list)  # metalinguistic hints, when HINTS[error_type] does not fit
    reactions: list[str] = field(default_factory=list)  # replies to the correct sentence, when cheerful ones don't fit


def _fill(template: str, p: str, pos: str, obj: str) -> str:
    third = p in ("he", "she", "it")
    do, were, have = ("does", "was", "has") if third else ("do", "were", "have")
    return template.format(p=p, pos=pos, obj=obj, do=do, Do=do.capitalize(), were=were, Were=were.capitalize(),
                           have=have)


def _past_event(rng: random.Random, with_error: bool) -> Seed:
    kind = rng.random()
    if kind < 0.08:  # "it snow all day yesterday"
        base, past, followups = rng.choice(V.WEATHER)
        when = rng.choice(V.WEATHER_WHEN)
        said = f"It {base if with_error else past} {when}"
        return Seed(said, f"it {past} {when}", "past_tense" if with_error else None, f"it {base}" if with_error
                    else None, f"it {past}" if with_error else None, "weather", list(followups),
                    ["What weather!", "That's a lot of weather."], [(t, None) for t in V.COMMENT_TAILS],
                    V.LEADS_PAST, ["That already happened, so: ", "That's in the past, so "], V.REACTIONS_NEUTRAL)
    if kind < 0.16:  # "when I arrived, the film already start"
        first, subject, wrong, right, followups = rng.choice(V.PAST_PERFECT)
        said = f"{first}, {subject} {wrong if with_error else right}"
        return Seed(said, f"{subject} {right}", "past_tense" if with_error else None,
                    wrong if with_error else None, f"{subject} {right}" if with_error else None, "events",
                    list(followups), ["Oh no.", "Bad luck."], [(t, None) for t in V.COMMENT_TAILS],
                    V.LEADS_PAST, ["It happened before that, so: ", "Think about what came first: "],
                    V.REACTIONS_BAD)
    base, past, third, _, rest, topic = rng.choice(V.PAST_ACTIVITIES)
    when = rng.choice(V.PAST_TIMES)
    front = rng.random() < 0.5
    who = rng.random()
    if who < 0.12 and "my " not in rest:
        subject, tutor_subject, p, pos, obj = V.PAST_SUBJECTS[0]                   # we
    elif who < 0.3 and "my " not in rest and past != base:  # "my sister read" would look like "reads" missing
        subject, tutor_subject, p, pos, obj = rng.choice(V.PAST_SUBJECTS[1:])      # my brother, my wife ...
    else:
        subject, tutor_subject, p, pos, obj = "I", "you", "you", "your", "you"
    followups = _followups(topic, p, pos, obj)
    tails = V.TAILS.get(topic, []) + [(t, None) for t in (V.COMMENT_TAILS if topic in V.BAD_NEWS else
                                                          V.COMMENT_TAILS_PAST)]
    if with_error and rng.random() < 0.2:  # "I didn't went"
        verb_bad = f"didn't {past}"
        learner = f"{_cap(subject)} {verb_bad} {rest} {when}"
        negative = [_fill(t, p, pos, obj) for t in V.NEGATIVE_FOLLOWUPS]
        return Seed(learner, f"{tutor_subject} didn't {base} {frame_to_tutor_side(rest)} {when}", "did_base", verb_bad,
                    f"didn't {base}", topic, negative, ["That's a shame.", "Oh well."],
                    [(t, None) for t in V.COMMENT_TAILS])
    if with_error:
        if subject.startswith("my "):  # "my brother go" would be an agreement error: "goes" or "goed" instead
            wrong = V.OVERREGULAR.get(past) if rng.random() < 0.7 and past in V.OVERREGULAR else third
        else:
            wrong = V.OVERREGULAR.get(past) if rng.random() < 0.35 and past in V.OVERREGULAR else base
        if wrong == past:
            wrong = base
    else:
        wrong = past
    say = (lambda v: f"{when.capitalize()} {subject} {v} {rest}") if front else \
        (lambda v: f"{_cap(subject)} {v} {rest} {when}")
    tutor = f"{tutor_subject} {past} {frame_to_tutor_side(rest)} {when}"
    return Seed(say(wrong), tutor, "past_tense" if with_error else None, wrong if with_error else None,
                f"{tutor_subject} {past}" if with_error else None, topic, followups, V.TOPIC_COMMENTS[topic],
                tails, V.LEADS_PAST, reactions=V.REACTIONS_BAD if topic in V.BAD_NEWS else [])


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
    if "{n}" not in verb:
        verb += " {n}"
    return Seed("I " + verb.replace("{n}", f"{number} {noun}"), "you " + _tutor_verb(verb).replace("{n}", f"{number} {plural}"),
                "plural" if with_error else None, f"{number} {single}" if with_error else None,
                f"{number} {plural}" if with_error else None, "things", list(followups), ["That's quite a few!"])


def _tutor_verb(verb: str) -> str:
    return frame_to_tutor_side(verb)


def _article(rng: random.Random, with_error: bool) -> Seed:
    kind = rng.random()
    if kind < 0.25:
        job, art, followups = rng.choice(V.JOBS)
        if rng.random() < 0.6:
            learner, tutor, head = "I work as {a}" + job, f"you work as {art} {job}", "as"
        else:
            learner, tutor, head = "I'm {a}" + job, f"you're {art} {job}", "I'm"
        said = learner.format(a="" if with_error else f"{art} ")
        return Seed(said, tutor, "article" if with_error else None,
                    f"{head} {job}" if with_error else None, f"{art} {job}" if with_error else None, "work",
                    list(followups), ["That sounds interesting.", "What a great job."],
                    [(t, None) for t in V.COMMENT_TAILS] + [("I love my job", None), ("I started last year", None)],
                    V.LEADS_PRESENT, ["Think about the little word before the job: ", "One small change: "],
                    V.REACTIONS_NEUTRAL)
    if kind < 0.45:
        learner_t, right, tutor_t, followups = rng.choice(V.SOUND_ARTICLES)
        art = right.split()[0]
        wrong_art = "a" if art == "an" else "an"
        return Seed(learner_t.format(a=wrong_art if with_error else art), tutor_t.format(a=art),
                    "article" if with_error else None,
                    f"{wrong_art} {right.split()[1]}" if with_error else None, right if with_error else None,
                    "things", list(followups), ["I see.", "Oh, interesting."], leads=V.LEADS_PRESENT,
                    hints=["Listen to the first sound: ", "Say it out loud: "], reactions=V.REACTIONS_NEUTRAL)
    if kind < 0.6:
        said, tutor, wrong, right, followups = rng.choice(V.THE_NOUNS)
        if not with_error:
            noun = right.split()[1]
            fixed = re.sub(rf"\b{noun}\b", f"the {noun}", wrong, flags=re.IGNORECASE)
            said = _cap(said.replace(wrong, fixed))
        return Seed(said, tutor, "article" if with_error else None, wrong if with_error else None,
                    right if with_error else None, "things", list(followups), ["How lovely.", "I see."],
                    leads=V.LEADS_PRESENT, hints=["There's only one: ", "One small change: "],
                    reactions=V.REACTIONS_NEUTRAL)
    if kind < 0.75:
        learner_t, tutor_t, adj, followups = rng.choice(V.ADJ_NOUN_ARTICLES)
        said = learner_t.format(a="" if with_error else "a ")
        head = learner_t.split("{a}")[0].split()[-1]
        return Seed(said, tutor_t.format(a="a "), "article" if with_error else None,
                    f"{head} {adj}" if with_error else None, f"a {adj}" if with_error else None, "things",
                    list(followups), ["How nice.", "Oh, fun."], leads=V.LEADS_PRESENT,
                    hints=["Just one, so: ", "One small change: "], reactions=V.REACTIONS_NEUTRAL)
    if rng.random() < 0.7:
        noun, verb, followups = rng.choice(V.AN_NOUNS)
        right_article, wrong_article = "an", "a"
    else:
        noun, verb, followups = rng.choice(V.A_NOUNS)
        right_article, wrong_article = "a", "an"
    article = wrong_article if with_error else right_article
    return Seed(f"I {verb} {article} {noun}", f"you {verb} {right_article} {frame_to_tutor_side(noun)}",
                "article" if with_error else None, f"{wrong_article} {noun.split()[0]}" if with_error else None,
                f"{right_article} {noun.split()[0]}" if with_error else None, "things", list(followups),
                ["How nice.", "Oh, that's interesting."])


def _uncountable(rng: random.Random, with_error: bool) -> Seed:
    right, wrong, learner_t, tutor_t, followups = rng.choice(V.UNCOUNTABLE)
    return Seed(learner_t.format(n=wrong if with_error else right), tutor_t.format(n=right),
                "uncountable" if with_error else None, wrong if with_error else None, right if with_error else None,
                "things", list(followups), ["I see."])


def _comparative(rng: random.Random, with_error: bool) -> Seed:
    if rng.random() < 0.35:
        return _superlative(rng, with_error)
    adj, comp, learner_t, tutor_t, followups = rng.choice(V.COMPARATIVES)
    bad = rng.choice([f"more {adj}", f"more {comp}"]) if adj != "good" else rng.choice(["more good", "more better",
                                                                                          "gooder"])
    return Seed(learner_t.format(c=bad if with_error else comp), tutor_t.format(c=comp),
                "comparative" if with_error else None, bad if with_error else None, comp if with_error else None,
                "opinions", list(followups), ["Good to know.", "That makes sense."])


def _superlative(rng: random.Random, with_error: bool) -> Seed:
    adj, sup, learner_t, tutor_t, followups = rng.choice(V.SUPERLATIVES)
    bad = f"most {adj}"
    return Seed(learner_t.format(s=bad if with_error else sup), tutor_t.format(s=sup),
                "comparative" if with_error else None, bad if with_error else None,
                f"the {sup}" if with_error else None, "opinions", list(followups), ["Good to know.", "Interesting."],
                hints=["Short words just add -est: ", "Careful with most here: "])


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
    if rng.random() < 0.15:
        base, rest, followups = rng.choice(V.CAN)
        modals = ("can",)
        subject, tutor_subject, p, pos, obj = "I", "you", "you", "your", "you"
    else:
        modals, base, rest, followups = rng.choice(V.MODAL_PHRASES)
        subject, tutor_subject, p, pos, obj = ("we", "you", "you", "your", "you") if rng.random() < 0.15 \
            else ("I", "you", "you", "your", "you")
    modal = rng.choice(modals)
    said = f"{_cap(subject)} {modal} to {base} {rest}" if with_error else f"{_cap(subject)} {modal} {base} {rest}"
    return Seed(said, f"{tutor_subject} {modal} {base} {frame_to_tutor_side(rest)}", "modal" if with_error else None,
                f"{modal} to {base}" if with_error else None, f"{modal} {base}" if with_error else None, "skills",
                [_fill(f, p, pos, obj) for f in followups], ["I see.", "Oh, okay.", "Good to know."],
                leads=V.LEADS_PRESENT, hints=[f"After {modal}, no to: ", "Drop the to: "],
                reactions=V.REACTIONS_NEUTRAL)


def _preposition(rng: random.Random, with_error: bool) -> Seed:
    kind = rng.random()
    if kind < 0.4:
        return _time_preposition(rng, with_error)
    if kind < 0.6:
        learner_t, right, wrong, tutor_t, followups = rng.choice(V.PLACE_PHRASES)
        return Seed(learner_t.format(P=wrong if with_error else right), tutor_t.format(P=right),
                    "preposition" if with_error else None, wrong if with_error else None,
                    right if with_error else None, "life", list(followups), ["I see.", "Oh, okay."],
                    leads=V.LEADS_PRESENT, reactions=V.REACTIONS_NEUTRAL)
    if kind < 0.85:
        learner_t, right, wrongs, tutor_t, objects = rng.choice(V.ADJ_PREPS)
        o, followups = rng.choice(objects)
        wrong = rng.choice(wrongs)
        said = learner_t.format(P=wrong if with_error else right, o=o).replace("  ", " ")
        head = learner_t.split("{P}")[0].split()[-1]
        return Seed(said, tutor_t.format(P=right, o=frame_to_tutor_side(o)), "preposition" if with_error else None,
                    f"{head} {wrong} {o.split()[0]}".replace("  ", " ") if with_error else None,
                    f"{head} {right}" if with_error else None, "life", list(followups), ["I see.", "Oh, okay."],
                    leads=V.LEADS_PRESENT, reactions=V.REACTIONS_NEUTRAL)
    correct, wrong, tutor, followups = rng.choice(V.PREPOSITIONS)
    right_words = [w for w in correct.split() if w not in wrong.split()]
    wrong_words = [w for w in wrong.split() if w not in correct.split()]
    return Seed(wrong if with_error else correct, tutor, "preposition" if with_error else None,
                " ".join(wrong_words) or "(missing word)" if with_error else None,
                _context(tutor, right_words) if with_error else None, "life", list(followups),
                ["Nice.", "I see."])


def _time_preposition(rng: random.Random, with_error: bool) -> Seed:
    clause, clause_t, kinds, followups = rng.choice(V.TIME_CLAUSES)
    time, prep, wrongs, _ = rng.choice([t for t in V.TIME_PHRASES if t[3] in kinds])
    wrong = rng.choice(wrongs)
    said = f"{clause} {wrong if with_error else prep} {time}"
    return Seed(said, f"{clause_t} {prep} {frame_to_tutor_side(time)}", "preposition" if with_error else None,
                f"{wrong} {time}" if with_error else None, f"{prep} {frame_to_tutor_side(time)}" if with_error else None,
                "life", list(followups), ["I see.", "Oh, nice."], leads=V.LEADS_PRESENT,
                hints=["Think about the time word: ", "Watch the little word: "], reactions=V.REACTIONS_NEUTRAL)


def _context(tutor: str, words: list[str]) -> str:
    """The corrected words with one word of context from the tutor's sentence."""
    tokens = tutor.split()
    for i, token in enumerate(tokens):
        if words and token == words[0]:
            return " ".join(tokens[i:i + len(words) + 1])
    return " ".join(words)


def _really(rng: random.Random, with_error: bool) -> Seed:
    kind = rng.random()
    if kind < 0.2:
        return _word_order(rng, with_error)
    if kind < 0.4:
        thing, followups = rng.choice(V.REALLY_LIKE)
        said = f"I very like {thing}" if with_error else f"I really like {thing}"
        return Seed(said, f"you really like {frame_to_tutor_side(thing)}", "word_order" if with_error else None,
                    "very like" if with_error else None, "really like" if with_error else None, "likes",
                    list(followups), ["Me too!", "That's great."])
    if kind < 0.6:  # "I like very much this song"
        verb, thing, followups = rng.choice(V.VERY_MUCH)
        said = f"I {verb} very much {thing}" if with_error else f"I {verb} {thing} very much"
        return Seed(said, f"you {verb} {frame_to_tutor_side(thing)} very much", "word_order" if with_error else None,
                    f"{verb} very much {thing.split()[0]}" if with_error else None,
                    f"{verb} {frame_to_tutor_side(thing)} very much" if with_error else None, "likes", list(followups),
                    ["That's lovely.", "How nice."], leads=V.LEADS_PRESENT,
                    hints=["Very much goes at the end: ", "One small change: "], reactions=V.REACTIONS_NEUTRAL)
    if kind < 0.8:  # adjective order
        learner_t, wrong, right, tutor_t, followups = rng.choice(V.ADJ_ORDER)
        return Seed(learner_t.format(x=wrong if with_error else right), tutor_t.format(x=right),
                    "word_order" if with_error else None, wrong if with_error else None,
                    right if with_error else None, "things", list(followups), ["How nice.", "Sounds lovely."],
                    leads=V.LEADS_PRESENT, hints=["Think about the order: ", "One small change: "],
                    reactions=V.REACTIONS_NEUTRAL)
    wh, thing, thing_t, followups = rng.choice(V.EMBEDDED)  # "I don't know where is the pharmacy"
    verb, verb_t = rng.choice(V.EMBED_VERBS)
    be = "was" if verb.startswith(("I forgot", "My friend")) else "is"
    if thing.endswith(" closed today"):
        noun = thing[:-len(" closed today")]
        wrong, right = f"{wh} {be} {noun} closed", f"{wh} {frame_to_tutor_side(noun)} {be} closed"
        said_right = f"{wh} {noun} {be} closed today"
        right_full = f"{right} today"
    else:
        wrong, right = f"{wh} {be} {thing}", f"{wh} {thing_t} {be}"
        said_right, right_full = f"{wh} {thing} {be}", right
    said = f"{verb} {wrong}{' today' if thing.endswith('today') else ''}" if with_error else f"{verb} {said_right}"
    return Seed(said, f"{verb_t} {right_full}", "word_order" if with_error else None, wrong if with_error else None,
                right if with_error else None, "everyday", list(followups), ["I see.", "Oh, okay."],
                leads=V.LEADS_PRESENT, hints=["In the middle of a sentence, the verb goes last: ",
                                             "One small change: "], reactions=V.REACTIONS_NEUTRAL)


def _word_order(rng: random.Random, with_error: bool) -> Seed:
    """Frequency adverbs go before the main verb: "I eat always ..." -> "I always eat ..."."""
    adverb = rng.choice(V.ADVERBS)
    verb, rest, followups = rng.choice(V.FREQ_PHRASES)
    said = f"I {verb} {adverb} {rest}" if with_error else f"I {adverb} {verb} {rest}"
    if with_error and rng.random() < 0.3:
        said = f"{_cap(adverb)} I {verb} {rest}" if adverb in ("always", "never", "rarely") else said
    return Seed(said, f"you {adverb} {verb} {frame_to_tutor_side(rest)}", "word_order" if with_error else None,
                (f"{verb} {adverb}" if said.startswith("I ") else f"{_cap(adverb)} I") if with_error else None,
                f"{adverb} {verb}" if with_error else None, "everyday", list(followups), ["I see.", "Oh, okay."],
                leads=V.LEADS_PRESENT, hints=["Words like " + adverb + " go before the verb: ", "One small change: "],
                reactions=V.REACTIONS_NEUTRAL)


def _since(rng: random.Random, with_error: bool) -> Seed:
    place, verb = rng.choice(V.SINCE)
    years = rng.choice(["two", "three", "five", "ten"])
    prep = "in" if verb == "lived" and place != "this flat" else ("at" if verb == "worked" else "in")
    obj = f"{prep} {place}" if verb != "studied" else place
    said = (f"I {'live' if verb == 'lived' else verb[:-2] if verb == 'worked' else 'study'} {obj} since {years} years"
            if with_error else f"I have {verb} {obj} for {years} years")
    tutor = f"you've {verb} {frame_to_tutor_side(obj)} for {years} years"
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


def _word_choice(rng: random.Random, with_error: bool) -> Seed:
    kind = rng.random()
    if kind < 0.4:  # -ed/-ing: "I was so boring" -> "you were so bored"
        wrong, right, rest, followups = rng.choice(V.FEELINGS)
        now = wrong in V.FEELINGS_NOW
        adverb = rng.choice(["so", "really", "very"])
        be, be_t = ("I'm", "you're") if now else ("I was", "you were")
        said = f"{be} {adverb} {wrong if with_error else right} {rest}"
        return Seed(said, f"{be_t} {adverb} {right} {frame_to_tutor_side(rest)}", "word_choice" if with_error else None,
                    wrong if with_error else None, f"{be_t} {adverb} {right}" if with_error else None, "feelings",
                    list(followups), V.FEELING_COMMENTS.get(wrong, ["I know that feeling.", "That happens."]),
                    _tails(wrong), V.LEADS_PRESENT if now else V.LEADS_PAST,
                    ["Think about how you felt: ", "One small change: "],
                    [] if wrong in V.FEELING_COMMENTS else V.REACTIONS_BAD)
    if kind < 0.6:  # age: "I have thirty years" -> "you're thirty"
        if rng.random() < 0.55:
            n = rng.choice(V.AGES)
            said = rng.choice([f"Today is my birthday, I have {n} years", f"I have {n} years today",
                               f"It's my birthday! I have {n} years now"])
            if not with_error:
                said = said.replace(f"I have {n} years", f"I'm {n}")
            followups = [t.format(n=n) for t in V.AGE_FOLLOWUPS]
            return Seed(said, f"you're {n} today", "word_choice" if with_error else None,
                        f"have {n} years" if with_error else None, f"you're {n}" if with_error else None, "age",
                        followups, ["Happy birthday!", "Happy birthday, that's a great age."],
                        _tails("age"),
                        hints=["Think about how we say age: ", "One small change: "])
        who, who_t, n, followups = rng.choice(V.AGE_OTHERS)
        said = f"{_cap(who)} {'has' if with_error else 'is'} {n}{' years' if with_error else ''}"
        return Seed(said, f"{who_t} is {n}", "word_choice" if with_error else None,
                    f"has {n} years" if with_error else None, f"{who_t} is {n}" if with_error else None, "age",
                    list(followups), ["What a lovely age.", "Time goes so fast."],
                    [(t, None) for t in V.COMMENT_TAILS], hints=["Think about how we say age: ", "One small change: "])
    wrong, right, rest, rest_t, followups = rng.choice(V.VERB_MIXUPS)
    said = f"I {wrong if with_error else frame_to_learner_side(right)} {rest}"
    return Seed(said, f"you {right} {rest_t}", "word_choice" if with_error else None,
                wrong if with_error else None, right if with_error else None, "everyday", list(followups),
                ["I see.", "Oh, okay."], _tails(wrong), hints=["One small change: ", "Think about the verb: "],
                reactions=V.REACTIONS_NEUTRAL)


def _present_perfect(rng: random.Random, with_error: bool) -> Seed:
    learner_t, tutor_t, wrong, right, followups = rng.choice(V.PERFECT)
    year, year_t = rng.choice(V.YEARS)
    said = learner_t.format(y=year)
    if not with_error:
        said = _perfect_correct(tutor_t, year)
    return Seed(said, tutor_t.format(y=year_t), "present_perfect" if with_error else None,
                wrong if with_error else None, right if with_error else None, "life", list(followups),
                ["Oh, interesting.", "I see."], _tails(learner_t),
                hints=["It's still true now, so: ", "Think about how long: "], reactions=V.REACTIONS_NEUTRAL)


def _perfect_correct(tutor_t: str, year: str) -> str:
    """The learner's sentence said correctly: the tutor's form back in the first person."""
    text = tutor_t.format(y=year).replace("you've", "I've").replace("your", "my").replace(" there", " here")
    return text.replace("since you were", "since I was")


def _pronoun(rng: random.Random, with_error: bool) -> Seed:
    relative, p, obj = rng.choice(V.PRONOUN_PEOPLE)
    pos = "her" if p == "she" else "his"
    wrong_p = "he" if p == "she" else "she"
    kind = rng.random()
    if kind < 0.35:  # "my sister is a pilot and he flies ..."
        first, second, second_t, followups = rng.choice(V.PRONOUN_FACTS)
        joiner = rng.choice([" and ", ", ", ", "])
        said = f"{_cap(relative)} {first}{joiner}{second.format(p=wrong_p if with_error else p)}"
        tutor = second_t.format(p=p)
        right = " ".join(tutor.split()[:2])
        return Seed(said, tutor, "pronoun" if with_error else None,
                    " ".join(second.format(p=wrong_p).split()[:2]) if with_error else None,
                    right if with_error else None, "people", [_fill(t, p, pos, obj) for t in followups],
                    ["That's interesting.", "How nice."], _tails("people", obj=obj),
                    hints=["Think about who it is: ", "One small change: "])
    if kind < 0.6:  # "I visit she every Sunday"
        learner_t, tutor_t, followups = rng.choice(V.OBJECT_PRONOUNS)
        said = learner_t.format(R=relative, w=p if with_error else obj)
        said = _cap(said)
        tutor = tutor_t.format(r=obj)
        right = " ".join(tutor.split()[1:3])
        return Seed(said, tutor, "pronoun" if with_error else None,
                    " ".join(tutor_t.format(r=p).split()[1:3]) if with_error else None, right if with_error else None,
                    "people", [t.format(p=p, r=obj) for t in followups], ["That's kind of you.", "How nice."],
                    [(t, None) for t in V.COMMENT_TAILS], hints=["Think about who it is: ", "One small change: "])
    if kind < 0.9:  # "my parents sold they car", "our dog hurt it's paw"
        learner_t, wrong, right_p, tutor_t, followups = rng.choice(V.POSSESSIVE_PRONOUNS)
        said = learner_t.format(w=wrong if with_error else right_p)
        after = learner_t.split("{w}")[1].split()
        before = learner_t.split("{w}")[0].split()[-1]
        wrong_w, right_w = (f"{wrong} {after[0]}", f"{right_p} {after[0]}") if after else \
            (f"{before} {wrong}", f"{before} {right_p}")
        return Seed(said, tutor_t.format(w=right_p), "pronoun" if with_error else None,
                    wrong_w if with_error else None, right_w if with_error else None,
                    "people", list(followups), ["I see.", "Oh, okay."], [(t, None) for t in V.COMMENT_TAILS],
                    V.LEADS_PRESENT, ["Think about whose it is: ", "One small change: "], V.REACTIONS_NEUTRAL)
    first, wrong_clause, tutor, right, followups = rng.choice(V.THINGS_IT)  # "I bought a laptop, he is fast"
    said = f"{first}, {wrong_clause if with_error else tutor}"
    return Seed(said, tutor, "pronoun" if with_error else None,
                " ".join(wrong_clause.split()[:2]) if with_error else None, right if with_error else None,
                "things", list(followups), ["Sounds great.", "Nice."], [(t, None) for t in V.COMMENT_TAILS],
                hints=["Think about what it is: ", "One small change: "])


def _possessive(rng: random.Random, with_error: bool) -> Seed:
    relative, thing, pred, pred_t, followups = rng.choice(V.POSSESSIVES)
    if with_error:
        if rng.random() < 0.5:
            said, wrong = f"My {relative} {thing} {pred}", f"{relative} {thing}"
        else:
            said, wrong = f"The {thing} of my {relative} {pred}", f"{thing} of my {relative}"
    else:
        said, wrong = f"My {relative}'s {thing} {pred}", None
    right = f"{relative}'s {thing}"
    return Seed(said, f"your {right} {pred_t}", "possessive" if with_error else None, wrong,
                right if with_error else None, "people", list(followups), ["Oh, interesting.", "Oh, I see."],
                _tails(f"{relative} {thing}"), V.LEADS_PRESENT,
                ["Think about whose it is: ", "One small change: "], V.REACTIONS_NEUTRAL)


def _future(rng: random.Random, with_error: bool) -> Seed:
    base, ing, rest, followups = rng.choice(V.FUTURE_PLANS)
    when = rng.choice(V.FUTURE_TIMES)
    subject, be_t = ("We", "you're") if rng.random() < 0.15 else ("I", "you're")
    be = "we're" if subject == "We" else "I'm"
    kind = rng.random()
    if kind < 0.35:    # "Tomorrow I see the dentist"
        said = f"{subject} {base} {rest}"
        tutor_verb = rng.choice([f"going to {base}", ing])
        right, wrong = f"{be_t} {tutor_verb}", f"{subject} {base}"
    elif kind < 0.7:   # "Tomorrow I seeing the dentist"
        said = f"{subject} {ing} {rest}"
        tutor_verb, right, wrong = ing, f"{be_t} {ing}", f"{subject} {ing}"
    else:              # "I going to see the dentist tomorrow"
        said = f"{subject} going to {base} {rest}"
        tutor_verb, right, wrong = f"going to {base}", f"{be_t} going to {base}", f"{subject} going to"
    if not with_error:
        said = f"{be} {tutor_verb} {rest}"
    front = rng.random() < 0.5
    said = f"{when.capitalize()} {_lower_first(said) if said.startswith('We') else said}" if front else \
        f"{_cap(said)} {when}"
    return Seed(said, f"{be_t} {tutor_verb} {frame_to_tutor_side(rest)} {when}", "future" if with_error else None,
                wrong if with_error else None, right if with_error else None, "plans", list(followups),
                ["That sounds like a good plan.", "How exciting!", "That sounds fun."],
                V.FUTURE_TAILS + ([V.FUTURE_WEATHER_TAIL] if ing in V.FUTURE_OUTDOOR else []),
                V.LEADS_PRESENT, ["That's still to come, so: ", "Think about when: "])


def _quantifier(rng: random.Random, with_error: bool) -> Seed:
    learner_t, tutor_t, wrong_t, right_t, fillers = rng.choice(V.QUANTIFIERS)
    noun, followups = rng.choice(fillers)
    right_noun = noun[:-1] if noun.endswith("s") and "every" in learner_t else noun  # every days -> every day
    said = learner_t.format(n=noun) if with_error else _quantifier_correct(tutor_t, right_noun)
    return Seed(said, tutor_t.format(n=noun, r=right_noun), "quantifier" if with_error else None,
                wrong_t.format(n=noun) if with_error else None, right_t.format(n=noun, r=right_noun)
                if with_error else None, "life", list(followups), ["I see.", "Oh, right."],
                _tails(learner_t), V.LEADS_PRESENT,
                ["Think about how many: ", "One small change: "], V.REACTIONS_NEUTRAL)


def _quantifier_correct(tutor_t: str, noun: str) -> str:
    return _cap(tutor_form_to_learner(tutor_t.format(n=noun, r=noun)).replace(" there", " here"))


def _tails(key: str, **names: str) -> list[tuple[str, list[str] | None]]:
    """The correct tails of a frame's entry, with the tails that fit any turn."""
    own = [(t.format(**names), [f.format(**names) for f in fs] if fs else None) for t, fs in V.EXTRA_TAILS.get(key, [])]
    return own + [(t, None) for t in V.COMMENT_TAILS]


def _double_negative(rng: random.Random, with_error: bool) -> Seed:
    said, tutor, wrong, right, followups = rng.choice(V.DOUBLE_NEGATIVES)
    tails = _tails(said)
    if not with_error:
        said = _cap(tutor_form_to_learner(tutor))
        if tutor.startswith("you never go"):
            said = "We" + said[1:]
    return Seed(said, tutor, "double_negative" if with_error else None, wrong if with_error else None,
                right if with_error else None, "life", list(followups), ["Oh no.", "I see."],
                tails, V.LEADS_PRESENT,
                ["Just one no here: ", "One small change: "], V.REACTIONS_BAD)


def _subject_omission(rng: random.Random, with_error: bool) -> Seed:
    said, tutor, right, followups = rng.choice(V.SUBJECTLESS)
    tails = _tails(said)
    if not with_error:
        said = V.SUBJECTLESS_CORRECT.get(said) or _cap(tutor_form_to_learner(tutor).replace("for you", "for me"))
    return Seed(said, tutor, "subject_omission" if with_error else None, said.split()[0] if with_error else None,
                right if with_error else None, "life", list(followups), ["I see."], tails,
                V.LEADS_PRESENT, ["Small word at the start: ", "One small change: "], V.REACTIONS_NEUTRAL)


FRAMES = [(_past_event, 12), (_habit, 5), (_counted, 3), (_article, 5), (_uncountable, 2), (_comparative, 3),
          (_gerund, 3), (_modal, 4), (_preposition, 6), (_really, 4), (_since, 2), (_be, 2),
          (_word_choice, 3), (_present_perfect, 3), (_pronoun, 3), (_possessive, 2), (_future, 2),
          (_quantifier, 3), (_double_negative, 2), (_subject_omission, 3)]
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
            text = f"{_cap(tail)}. {clause}"  # the correct clause first: the error clause is still the one recast
        elif tail.endswith(("!", "?")):
            text = f"{clause}, {tail}"
        else:
            join = rng.random()
            text = f"{clause}, {tail}" if join < 0.5 else (
                f"{clause} and {tail}" if join < 0.7 else f"{clause}. {_cap(tail)}")
    if lead and seed.leads and rng.random() < 0.2:
        first = rng.choice(seed.leads)
        text = f"{first} {text if first.endswith(('.', '!')) else _lower_first(text)}"
    if text != clause and _found(text) != _found(clause):
        return
    seed.learner = text
    if followups and rng.random() < 0.5:
        seed.followups = list(followups)


def _lower_first(text: str) -> str:
    return text if text.startswith(("I ", "I'", "English")) else text[:1].lower() + text[1:]


def _found(text: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(e.kind, e.corrections) for e in find_errors(text)]


def _learner_noise(rng: random.Random, text: str, greet: bool = True) -> str:
    greeting = rng.choice(V.GREETINGS)
    if not greet or text.lower().startswith(greeting.strip(" ,.!").lower() or "-"):
        greeting = ""
    text = greeting + (_lower_first(text) if greeting and not greeting.endswith(("! ", ". ")) else text)
    end = rng.random()
    if text[-1:].isalnum():
        text += "." if end < 0.55 else ("!" if end < 0.65 else "")
    if rng.random() < 0.1:
        text = _lower_first(text)
    return text


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


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
        return f"{_cap(opener + form)}{'?' if rng.random() < 0.7 else '!'} {q}"
    if seed.error_type is None and seed.reactions:
        return f"{rng.choice(seed.reactions)} {q}"
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
