"""The per-error-type breakdown of the pedagogy figures: the kind of error each reference edit corrects,
the corrected forms grouped by it, and the breakdown in the compare report."""

from collections import Counter

import pytest

from train.evaluate.compare import error_type_rows, load_jfleg, to_markdown, to_html
from train.evaluate.pedagogy import by_error_type, prompt_error_types, score_prompt
from train.evaluate.references import ERROR_TYPES, edit_types, reference_corrections, typed_reference_corrections


@pytest.mark.parametrize("learner, reference, kind", [
    ("", "the", "article"), ("a", "an", "article"), ("the", "", "article"),
    ("on", "in", "preposition"), ("", "to", "preposition"), ("in", "", "preposition"),
    ("go", "goes", "agreement"), ("is", "are", "agreement"), ("have", "has", "agreement"),
    ("go", "went", "verb form"), ("buyed", "bought", "verb form"), ("choose", "chose", "verb form"),
    ("to going", "to go", "verb form"), ("eat", "eating", "verb form"),
    ("student", "students", "noun number"), ("childs", "children", "noun number"),
    ("becouse", "because", "spelling"), ("recieve", "receive", "spelling"), ("beatiful", "beautiful", "spelling"),
    ("always i", "i always", "word order"),
    ("", "is", "missing word"), ("really", "", "extra word"),
    ("make", "take", "word choice"), ("easy", "easily", "word choice"), ("green house", "greenhouse", "spelling"),
    ("in my point of view", "from my perspective", "rewrite"),
])
def test_each_edit_gets_the_kind_of_error_it_corrects(learner, reference, kind):
    assert edit_types(learner.split(), reference.split()) == (kind,)


def test_an_edit_of_several_words_side_by_side_corrects_each_kind():
    assert edit_types("totaly make a".split(), "totally makes an".split()) == ("agreement", "article", "spelling")


def test_corrected_forms_carry_their_kind_and_the_untyped_forms_are_the_same():
    learner = "My sister go to school in bus every days and she enjoy it becouse the teachers are nice ."
    refs = ["My sister goes to school by bus every day and she enjoys it because the teachers are nice ."]
    typed = typed_reference_corrections(learner, refs)
    assert typed["sister goes"] == ["agreement"] and typed["by bus"] == ["preposition"]
    assert typed["every day"] == ["noun number"] and typed["enjoys it"] == ["agreement"]
    assert typed["because the teachers"] == ["spelling"]  # "because" alone tells nothing: two words of context
    assert typed["enjoys it because"] == ["agreement", "spelling"]  # the window covers both edits
    assert list(typed) == reference_corrections(learner, refs)
    assert {k for kinds in typed.values() for k in kinds} <= set(ERROR_TYPES)


def test_the_breakdown_counts_each_kind_on_the_turns_that_have_it():
    learner = "My sister go to school in bus every days ."
    typed = typed_reference_corrections(learner, ["My sister goes to school by bus every day ."])
    prompt = {"id": "a", "learner": learner, "corrections": list(typed), "correction_types": typed,
              "error_type": "jfleg", "level": "intermediate"}
    assert set(prompt_error_types(prompt)) == {"agreement", "preposition", "noun number"}
    replies = ["Oh, your sister goes to school in bus? Is the bus usually on time?",  # agreement only
               "So your sister goes to school by bus? Is the bus usually on time?",  # two kinds
               "Nice! What is your favourite food?"]                                # none, and off topic
    clean = {"id": "b", "learner": "I like my school .", "corrections": [], "error_type": None,
             "level": "intermediate"}
    prompts = [prompt, prompt, prompt, clean]
    metrics = [score_prompt(p, r) for p, r in zip(prompts, replies + ["Why do you like it?"])]
    table = by_error_type(prompts, metrics)
    assert table["agreement"] == {"n": 3, "takes_up": 2 / 3, "good_move": 2 / 3}
    assert table["preposition"]["takes_up"] == 1 / 3 and table["noun number"]["takes_up"] == 0.0
    assert sum(row["n"] for row in table.values()) == 9  # the turn without an error is in no row
    # a prompt-set row has one kind for all its corrections
    assert prompt_error_types({"corrections": ["went to"], "error_type": "past_tense"}) == {"past_tense": ("went to",)}


def test_the_compare_report_has_the_breakdown_per_model():
    models = [{"spec": s, "perplexity": None, "replies": ["x"], "per_reply": [{"good_move": True, "style": "recast"}],
               "metrics": {"diversity": {"diversity": 1.0}},
               "by_error_type": {"spelling": {"n": 4, "takes_up": t, "good_move": g},
                                 "article": {"n": 2, "takes_up": 0.5, "good_move": 0.5}}}
              for s, t, g in (("hf:a", 0.25, 0.5), ("hf:b", 0.75, 1.0))]
    report = {"prompts": 1, "rule": "r", "recommendation": {"model": "hf:b", "why": "w"}, "calibration": None,
              "models": models, "prompt_items": [{"id": "p", "learner": "Hello", "error_type": None}]}
    assert error_type_rows(report) == [["spelling", "4", "25% / 50%", "75% / 100%"],
                                       ["article", "2", "50% / 50%", "50% / 50%"]]
    md = to_markdown(report, None)
    assert "## By error type" in md and "| spelling | 4 | 25% / 50% | 75% / 100% |" in md
    assert "By error type" in to_html(report, None)


def test_real_learner_sentences_get_a_spread_of_error_kinds():
    from train.evaluate.commands import JFLEG

    if not (JFLEG / "dev.src").exists():
        pytest.skip("../shared/data/jfleg-dev is not beside this checkout")
    prompts = load_jfleg(JFLEG)
    kinds = Counter(kind for p in prompts for kind in prompt_error_types(p))
    assert all(set(p["correction_types"]) == set(p["corrections"]) for p in prompts)
    assert set(kinds) <= set(ERROR_TYPES) and len(kinds) >= 9
    error_turns = sum(1 for p in prompts if p["corrections"])
    # learners misspell, and drop or confuse articles and prepositions, in many sentences, not a few
    for kind in ("spelling", "article", "preposition", "word choice"):
        assert kinds[kind] >= 0.1 * error_turns, (kind, kinds)
