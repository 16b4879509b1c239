"""Frames of the offline lane, part one: a past event, a relative's habit, a number of things, articles,
uncountables, comparatives and superlatives, gerund/infinitive, modals, prepositions. Each frame builds a
correct sentence and, with ``with_error``, injects its typed learner error (see train.data.synth)."""

from __future__ import annotations

import random
import re

from train.data import synth_vocab as V
from train.data.synth_seed import Seed, cap, context_words, fill, topic_followups
from tutor.teaching.words import frame_to_tutor_side


def past_event(rng: random.Random, with_error: bool) -> Seed:
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
    followups = topic_followups(topic, p, pos, obj)
    tails = V.TAILS.get(topic, []) + [(t, None) for t in (V.COMMENT_TAILS if topic in V.BAD_NEWS else
                                                          V.COMMENT_TAILS_PAST)]
    if with_error and rng.random() < 0.2:  # "I didn't went"
        verb_bad = f"didn't {past}"
        learner = f"{cap(subject)} {verb_bad} {rest} {when}"
        negative = [fill(t, p, pos, obj) for t in V.NEGATIVE_FOLLOWUPS]
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
        (lambda v: f"{cap(subject)} {v} {rest} {when}")
    tutor = f"{tutor_subject} {past} {frame_to_tutor_side(rest)} {when}"
    return Seed(say(wrong), tutor, "past_tense" if with_error else None, wrong if with_error else None,
                f"{tutor_subject} {past}" if with_error else None, topic, followups, V.TOPIC_COMMENTS[topic],
                tails, V.LEADS_PAST, reactions=V.REACTIONS_BAD if topic in V.BAD_NEWS else [])


def habit(rng: random.Random, with_error: bool) -> Seed:
    noun, p, pos = rng.choice(V.RELATIVES)
    base, third, rest, followups = rng.choice(V.HABITS)
    obj = "her" if p == "she" else "him"
    verb = base if with_error else third
    return Seed(f"My {noun} {verb} {rest}", f"your {noun} {third} {rest}", "agreement" if with_error else None,
                f"{noun} {base}" if with_error else None, third if with_error else None, "people",
                [fill(t, p, pos, obj) for t in followups], ["That's interesting.", "How nice."])


def counted(rng: random.Random, with_error: bool) -> Seed:
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


def article(rng: random.Random, with_error: bool) -> Seed:
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
            said = cap(said.replace(wrong, fixed))
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


def uncountable(rng: random.Random, with_error: bool) -> Seed:
    right, wrong, learner_t, tutor_t, followups = rng.choice(V.UNCOUNTABLE)
    return Seed(learner_t.format(n=wrong if with_error else right), tutor_t.format(n=right),
                "uncountable" if with_error else None, wrong if with_error else None, right if with_error else None,
                "things", list(followups), ["I see."])


def comparative(rng: random.Random, with_error: bool) -> Seed:
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


def gerund(rng: random.Random, with_error: bool) -> Seed:
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


def modal(rng: random.Random, with_error: bool) -> Seed:
    if rng.random() < 0.15:
        base, rest, followups = rng.choice(V.CAN)
        modals = ("can",)
        subject, tutor_subject, p, pos, obj = "I", "you", "you", "your", "you"
    else:
        modals, base, rest, followups = rng.choice(V.MODAL_PHRASES)
        subject, tutor_subject, p, pos, obj = ("we", "you", "you", "your", "you") if rng.random() < 0.15 \
            else ("I", "you", "you", "your", "you")
    modal = rng.choice(modals)
    said = f"{cap(subject)} {modal} to {base} {rest}" if with_error else f"{cap(subject)} {modal} {base} {rest}"
    return Seed(said, f"{tutor_subject} {modal} {base} {frame_to_tutor_side(rest)}", "modal" if with_error else None,
                f"{modal} to {base}" if with_error else None, f"{modal} {base}" if with_error else None, "skills",
                [fill(f, p, pos, obj) for f in followups], ["I see.", "Oh, okay.", "Good to know."],
                leads=V.LEADS_PRESENT, hints=[f"After {modal}, no to: ", "Drop the to: "],
                reactions=V.REACTIONS_NEUTRAL)


def preposition(rng: random.Random, with_error: bool) -> Seed:
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
                context_words(tutor, right_words) if with_error else None, "life", list(followups),
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
