"""The offline lane's real-learner-style rows (train/data/synth_essay.py, train/data/learner_noise.py):
several realistic errors per sentence, one corrected per reply, never an error copied, follow-ups from
the sentence's own content."""

import copy
import json
import random
import re
from collections import Counter

import pytest

from train.data import essay_bank as B
from train.data import learner_noise as N
from train.data import synth_essay as S
from train.data.generate import GenerateConfig, run_generation
from tutor.detector import suggest_flags
from tutor.teaching.words import content_words, tokens


def toks_of(sentence: str, verb_at: int, lemma: str, person: str, tense: str = "present") -> list[N.Tok]:
    words = sentence.split()
    out = []
    for i, w in enumerate(words):
        role = "subj" if i < verb_at else ("verb" if i == verb_at else "rest")
        out.append(N.Tok(w, role, 0, lemma=lemma if role == "verb" else "", person=person, tense=tense))
    return out


def test_each_error_kind_changes_the_sentence_and_names_its_clause():
    rng = random.Random(1)
    cases = [
        (N.agreement, toks_of("my brother spends too much time on his phone", 2, "spend", "he"), "my brother spend"),
        (N.agreement, toks_of("young people are more interested in games", 2, "be", "they"), "young people is"),
        (N.past_tense, toks_of("we bought a lot of things in the market", 1, "buy", "we", "past"), None),
        (N.modal, toks_of("students can find information online", 1, "can", "they"), None),
        (N.uncountable, toks_of("students can find information online", 1, "can", "they"), "informations"),
        (N.plural, toks_of("I visited many countries in Europe", 1, "visit", "I", "past"), "many country"),
        (N.comparative, toks_of("the bus is cheaper than the train", 2, "be", "it"), "more cheap"),
        (N.gerund_infinitive, toks_of("they enjoy playing football after school", 1, "enjoy", "they"), "enjoy to play"),
        (N.preposition, toks_of("we met in the morning", 1, "meet", "we", "past"), None),
    ]
    for fn, toks, expected in cases:
        before = N.render(toks)
        found = fn(toks, rng)
        after = N.render(toks)
        assert found and found.clause == 0 and after != before, (fn.__name__, before)
        if expected and fn is not N.comparative:
            assert expected in after, (fn.__name__, after)
    past = toks_of("we bought a lot of things", 1, "buy", "we", "past")
    assert N.past_tense(past, random.Random(3)) and N.render(past).split()[1] in ("buy", "buyed")


def test_inflections_come_from_lemminflect():
    assert S.verb_form("go", "she", "past") == "went" and S.verb_form("study", "he", "present") == "studies"
    assert S.verb_form("be", "I", "present") == "am" and S.verb_form("be", "we", "past") == "were"
    assert S.verb_form("can", "he", "present") == "can" and N.lemma_of("children", "NOUN") == "child"


def test_typos_are_near_the_word():
    rng = random.Random(0)
    for word in ["different", "beautiful", "environment", "believe", "important", "language"]:
        wrong = N.typo(word, rng)
        assert abs(len(wrong) - len(word)) <= 1 and wrong[0] == word[0]


ROWS = [S.make_row(i, 0, 50) for i in range(600)]


def test_rows_have_several_errors_of_many_kinds():
    counts = [len(r["metadata"]["errors"]) for r in ROWS]
    with_error = [c for c in counts if c]
    assert 0.85 < len(with_error) / len(counts) < 0.98
    assert sum(with_error) / len(with_error) >= 1.7
    kinds = Counter(k for r in ROWS for k in r["metadata"]["errors"])
    assert set(kinds) >= {"spelling", "article", "preposition", "agreement", "past_tense", "plural",
                          "word_choice", "modal", "gerund_infinitive", "word_order", "uncountable"}, kinds
    assert len({r["messages"][1]["content"] for r in ROWS}) == len(ROWS)


def test_make_row_is_deterministic_and_styles_rotate():
    assert S.make_row(17, 3, 50) == S.make_row(17, 3, 50) and S.make_row(17, 3, 50) != S.make_row(17, 4, 50)
    assert [ROWS[i]["metadata"]["style"] for i in (0, 50, 100, 150)] == ["recast", "elicitation", "expansion",
                                                                         "metalinguistic"]


def _reply_of(seed: int):
    """A sentence, its correct text, and the reply, rebuilt step by step as make_row does."""
    rng = random.Random(seed)
    sentence = S.make_sentence(rng)
    correct = N.render(copy.deepcopy(sentence.toks))
    errors = N.inject(sentence.toks, rng)
    return sentence, correct, N.render(sentence.toks), errors, S.tutor_reply(sentence, errors, "recast", rng)


def test_the_reply_never_copies_an_error_and_recasts_the_clause_that_matters_most():
    copied = 0
    for seed in range(400):
        sentence, correct, learner, errors, reply = _reply_of(seed)
        wrong = set(tokens(learner)) - set(tokens(correct)) - {"i"}
        said = " ".join(re.split(r"(?<=[.?!])\s+", reply)[:-1])  # the reply before its follow-up question
        if wrong & set(tokens(said)):
            copied += 1
        if errors:
            top = max(N.PRIORITY[e.kind] for e in errors)
            recast = [i for i, c in enumerate(sentence.clauses) if S.tutor_clause(c, sentence.subjects[i]).lower() in reply.lower()]
            assert recast, (learner, reply)
            assert any(N.PRIORITY[e.kind] == top and e.clause in recast for e in errors if e.clause >= 0) or \
                all(e.clause < 0 for e in errors if N.PRIORITY[e.kind] == top), (learner, reply, errors)
    assert copied == 0


def test_replies_pass_the_detector_and_ask_about_the_sentence():
    problems = []
    for row in ROWS:
        learner, reply = row["messages"][1]["content"], row["messages"][2]["content"]
        for s in suggest_flags(reply, learner, row["metadata"]["level"]):
            if s.reason in ("red_pen", "no_follow_up", "rule_dump"):
                problems.append((s.reason, learner, reply))
        assert not re.search(r"\bI (am|was|think|believe)\b", reply), reply  # said from the tutor's side
    assert not problems, problems[:3]
    for topic in B.TOPICS.values():
        for _verb, rest, followups in topic["predicates"]:
            words = {w[:4] for w in content_words(rest.replace("{", " ").replace("}", " "))}
            assert all(words & {w[:4] for w in content_words(q)} for q in followups), (rest, followups)


def test_the_essay_lane_generates_and_resumes(tmp_path):
    out = tmp_path / "essay.jsonl"
    report = run_generation(GenerateConfig(out=out, n=40, lanes=["offline-essay"], rotate_every=10))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rejects = (tmp_path / "essay.jsonl.rejects.jsonl")
    rejected = len(rejects.read_text().splitlines()) if rejects.exists() else 0
    assert len(rows) + rejected == 40 and report.written == len(rows)
    assert {r["metadata"]["lane"] for r in rows} == {"offline-essay"}
    assert json.loads((tmp_path / "essay.jsonl.params.json").read_text())["generator"] == S.GENERATOR
    run_generation(GenerateConfig(out=out, n=60, lanes=["offline-essay"], rotate_every=10))
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert again[:len(rows)] == rows and len({r["metadata"]["index"] for r in again}) == len(again)
    with pytest.raises(Exception, match="generated with"):
        run_generation(GenerateConfig(out=out, n=60, lanes=["offline"], rotate_every=10))
