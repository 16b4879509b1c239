"""The flag detector and the learner-error finder, on hand-labelled replies."""

import json
from pathlib import Path

import pytest

from tutor.detector import evaluate, suggest_flags
from tutor.learner_errors import find_errors
from tutor.teaching.replies import takes_up

DATA = Path(__file__).resolve().parent.parent / "data"


def reasons(reply, learner="", level="intermediate"):
    return {s.reason for s in suggest_flags(reply, learner, level)}


def test_good_recast_gets_no_suggestion():
    assert reasons("Oh, you went to the store yesterday? What did you buy?", "Yesterday I go to the store",
                   "beginner") == set()


def test_recast_that_also_lectures_is_caught():
    got = reasons("Oh, you went to the store! Remember, go is an irregular verb and the past simple tense is "
                  "went. What did you buy?", "Yesterday I go to the store")
    assert got == {"rule_dump"}  # the error was taken up, the follow-up is there, but it lectures


def test_question_that_ignores_the_error_is_caught():
    got = suggest_flags("That sounds nice! What did you buy?", "Yesterday I go to the store")
    assert [s.reason for s in got] == ["missed_error"]
    assert "“Yesterday I go”" in got[0].evidence and "“went”" in got[0].evidence


def test_conversational_words_are_not_red_pen():
    assert reasons("Everyone makes mistakes at work! What happened?", "I made a mistake at work today") == set()
    assert reasons("Why did you take the bus instead of the train? Is it cheaper?", "I took the bus") == set()


def test_red_pen_and_echo_question():
    assert "red_pen" in reasons("Here's a corrected version of your sentence: 'I ate pizza.'")
    assert reasons("Every morning? That's a nice habit.") == {"no_follow_up"}
    assert "too_long" in reasons(" ".join(["word"] * 40) + "?", level="beginner")
    assert "too_long" not in reasons(" ".join(["word"] * 40) + "?", level="advanced")


@pytest.mark.parametrize("learner, kind, correction", [
    ("Yesterday I go to the store", "past_tense", "went"),
    ("I buyed a car", "past_tense", "bought"),
    ("My mother work in a hospital", "agreement", "works"),
    ("I have a umbrella", "article", "an umbrella"),
    ("I have two brother", "plural", "brothers"),
    ("My informations are old", "uncountable", "information"),
    ("This is more better", "comparative", "better"),
    ("I enjoy to swim", "gerund_infinitive", "swimming"),
    ("I can to swim", "modal", "can swim"),
    ("I listen music", "preposition", "listen to"),
    ("I very like tea", "word_order", "really like"),
    ("I live here since 5 years", "tense", "for 5 years"),
])
def test_learner_errors_are_found_with_their_correction(learner, kind, correction):
    errors = find_errors(learner)
    assert errors and errors[0].kind == kind and correction in errors[0].corrections


@pytest.mark.parametrize("sentence", ["I went to the store yesterday.", "She works in a hospital.",
                                      "I have an umbrella and two brothers.", "I really like music."])
def test_correct_sentences_have_no_errors(sentence):
    assert find_errors(sentence) == []


def test_taking_up_an_error_from_the_tutors_side():
    error = find_errors("I am agree with you")[0]
    assert takes_up("You agree with me? Great!", error)
    past = find_errors("I go to the gym yesterday")[0]
    assert takes_up("Did you go to the gym yesterday?", past) and not takes_up("Good for you!", past)


def load(name):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def test_agreement_with_human_flags_on_the_labelled_sets():
    dev = evaluate(load("detector_labelled.jsonl"))
    held = evaluate(load("detector_heldout.jsonl"))
    assert len(load("detector_labelled.jsonl")) >= 60 and len(load("detector_heldout.jsonl")) >= 30
    # The rules were written against the first set; the second was labelled afterwards.
    assert dev["all"]["precision"] >= 0.95 and dev["all"]["recall"] >= 0.9
    assert held["all"]["precision"] >= 0.8 and held["all"]["recall"] >= 0.65
