"""Frames of the offline lane, part two: word order, for/since, be-agreement, word choice, present
perfect, pronouns, possessives, future, quantifiers, double negatives, a missing subject."""

from __future__ import annotations

import random

from train.data import synth_vocab as V
from train.data.synth_seed import Seed, cap, fill, lower_first, tails_for
from tutor.teaching.words import frame_to_learner_side, frame_to_tutor_side, tutor_form_to_learner


def really(rng: random.Random, with_error: bool) -> Seed:
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
        said = f"{cap(adverb)} I {verb} {rest}" if adverb in ("always", "never", "rarely") else said
    return Seed(said, f"you {adverb} {verb} {frame_to_tutor_side(rest)}", "word_order" if with_error else None,
                (f"{verb} {adverb}" if said.startswith("I ") else f"{cap(adverb)} I") if with_error else None,
                f"{adverb} {verb}" if with_error else None, "everyday", list(followups), ["I see.", "Oh, okay."],
                leads=V.LEADS_PRESENT, hints=["Words like " + adverb + " go before the verb: ", "One small change: "],
                reactions=V.REACTIONS_NEUTRAL)


def since(rng: random.Random, with_error: bool) -> Seed:
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


def be(rng: random.Random, with_error: bool) -> Seed:
    adj = rng.choice(V.BE_ADJ)
    bad = rng.choice(["I is", "I are"])
    when = rng.choice(["today", "this week", "right now", "this morning"])
    return Seed(f"{bad if with_error else 'I am'} {adj} {when}", f"you're {adj} {when}",
                "be_agreement" if with_error else None, bad if with_error else None,
                f"you're {adj}" if with_error else None, "feelings", list(V.BE_FOLLOWUPS[adj]), ["I understand."])


def word_choice(rng: random.Random, with_error: bool) -> Seed:
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
                    tails_for(wrong), V.LEADS_PRESENT if now else V.LEADS_PAST,
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
                        tails_for("age"),
                        hints=["Think about how we say age: ", "One small change: "])
        who, who_t, n, followups = rng.choice(V.AGE_OTHERS)
        said = f"{cap(who)} {'has' if with_error else 'is'} {n}{' years' if with_error else ''}"
        return Seed(said, f"{who_t} is {n}", "word_choice" if with_error else None,
                    f"has {n} years" if with_error else None, f"{who_t} is {n}" if with_error else None, "age",
                    list(followups), ["What a lovely age.", "Time goes so fast."],
                    [(t, None) for t in V.COMMENT_TAILS], hints=["Think about how we say age: ", "One small change: "])
    wrong, right, rest, rest_t, followups = rng.choice(V.VERB_MIXUPS)
    said = f"I {wrong if with_error else frame_to_learner_side(right)} {rest}"
    return Seed(said, f"you {right} {rest_t}", "word_choice" if with_error else None,
                wrong if with_error else None, right if with_error else None, "everyday", list(followups),
                ["I see.", "Oh, okay."], tails_for(wrong), hints=["One small change: ", "Think about the verb: "],
                reactions=V.REACTIONS_NEUTRAL)


def present_perfect(rng: random.Random, with_error: bool) -> Seed:
    learner_t, tutor_t, wrong, right, followups = rng.choice(V.PERFECT)
    year, year_t = rng.choice(V.YEARS)
    said = learner_t.format(y=year)
    if not with_error:
        said = _perfect_correct(tutor_t, year)
    return Seed(said, tutor_t.format(y=year_t), "present_perfect" if with_error else None,
                wrong if with_error else None, right if with_error else None, "life", list(followups),
                ["Oh, interesting.", "I see."], tails_for(learner_t),
                hints=["It's still true now, so: ", "Think about how long: "], reactions=V.REACTIONS_NEUTRAL)


def _perfect_correct(tutor_t: str, year: str) -> str:
    """The learner's sentence said correctly: the tutor's form back in the first person."""
    text = tutor_t.format(y=year).replace("you've", "I've").replace("your", "my").replace(" there", " here")
    return text.replace("since you were", "since I was")


def pronoun(rng: random.Random, with_error: bool) -> Seed:
    relative, p, obj = rng.choice(V.PRONOUN_PEOPLE)
    pos = "her" if p == "she" else "his"
    wrong_p = "he" if p == "she" else "she"
    kind = rng.random()
    if kind < 0.35:  # "my sister is a pilot and he flies ..."
        first, second, second_t, followups = rng.choice(V.PRONOUN_FACTS)
        joiner = rng.choice([" and ", ", ", ", "])
        said = f"{cap(relative)} {first}{joiner}{second.format(p=wrong_p if with_error else p)}"
        tutor = second_t.format(p=p)
        right = " ".join(tutor.split()[:2])
        return Seed(said, tutor, "pronoun" if with_error else None,
                    " ".join(second.format(p=wrong_p).split()[:2]) if with_error else None,
                    right if with_error else None, "people", [fill(t, p, pos, obj) for t in followups],
                    ["That's interesting.", "How nice."], tails_for("people", obj=obj),
                    hints=["Think about who it is: ", "One small change: "])
    if kind < 0.6:  # "I visit she every Sunday"
        learner_t, tutor_t, followups = rng.choice(V.OBJECT_PRONOUNS)
        said = learner_t.format(R=relative, w=p if with_error else obj)
        said = cap(said)
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


def possessive(rng: random.Random, with_error: bool) -> Seed:
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
                tails_for(f"{relative} {thing}"), V.LEADS_PRESENT,
                ["Think about whose it is: ", "One small change: "], V.REACTIONS_NEUTRAL)


def future(rng: random.Random, with_error: bool) -> Seed:
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
    said = f"{when.capitalize()} {lower_first(said) if said.startswith('We') else said}" if front else \
        f"{cap(said)} {when}"
    return Seed(said, f"{be_t} {tutor_verb} {frame_to_tutor_side(rest)} {when}", "future" if with_error else None,
                wrong if with_error else None, right if with_error else None, "plans", list(followups),
                ["That sounds like a good plan.", "How exciting!", "That sounds fun."],
                V.FUTURE_TAILS + ([V.FUTURE_WEATHER_TAIL] if ing in V.FUTURE_OUTDOOR else []),
                V.LEADS_PRESENT, ["That's still to come, so: ", "Think about when: "])


def quantifier(rng: random.Random, with_error: bool) -> Seed:
    learner_t, tutor_t, wrong_t, right_t, fillers = rng.choice(V.QUANTIFIERS)
    noun, followups = rng.choice(fillers)
    right_noun = noun[:-1] if noun.endswith("s") and "every" in learner_t else noun  # every days -> every day
    said = learner_t.format(n=noun) if with_error else _quantifier_correct(tutor_t, right_noun)
    return Seed(said, tutor_t.format(n=noun, r=right_noun), "quantifier" if with_error else None,
                wrong_t.format(n=noun) if with_error else None, right_t.format(n=noun, r=right_noun)
                if with_error else None, "life", list(followups), ["I see.", "Oh, right."],
                tails_for(learner_t), V.LEADS_PRESENT,
                ["Think about how many: ", "One small change: "], V.REACTIONS_NEUTRAL)


def _quantifier_correct(tutor_t: str, noun: str) -> str:
    return cap(tutor_form_to_learner(tutor_t.format(n=noun, r=noun)).replace(" there", " here"))


def double_negative(rng: random.Random, with_error: bool) -> Seed:
    said, tutor, wrong, right, followups = rng.choice(V.DOUBLE_NEGATIVES)
    tails = tails_for(said)
    if not with_error:
        said = cap(tutor_form_to_learner(tutor))
        if tutor.startswith("you never go"):
            said = "We" + said[1:]
    return Seed(said, tutor, "double_negative" if with_error else None, wrong if with_error else None,
                right if with_error else None, "life", list(followups), ["Oh no.", "I see."],
                tails, V.LEADS_PRESENT,
                ["Just one no here: ", "One small change: "], V.REACTIONS_BAD)


def subject_omission(rng: random.Random, with_error: bool) -> Seed:
    said, tutor, right, followups = rng.choice(V.SUBJECTLESS)
    tails = tails_for(said)
    if not with_error:
        said = V.SUBJECTLESS_CORRECT.get(said) or cap(tutor_form_to_learner(tutor).replace("for you", "for me"))
    return Seed(said, tutor, "subject_omission" if with_error else None, said.split()[0] if with_error else None,
                right if with_error else None, "life", list(followups), ["I see."], tails,
                V.LEADS_PRESENT, ["Small word at the start: ", "One small change: "], V.REACTIONS_NEUTRAL)
