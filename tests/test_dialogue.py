"""quimbot eval dialogue: whole conversations held by a model, scored per turn and per dialogue."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from train.evaluate import dialogue as dlg
from tutor.teaching.replies import repeated_question

ROOT = Path(__file__).resolve().parent.parent
JFLEG = ROOT.parent / "shared" / "data" / "jfleg-dev"


def test_the_scripted_dialogues_load_and_each_has_six_turns_with_errors_and_clean_turns():
    scripts = dlg.load_scripts()
    assert len(scripts) >= 8
    for s in scripts:
        assert len(s.turns) >= dlg.MIN_TURNS
        assert any(t.corrections for t in s.turns) and any(t.corrections == [] for t in s.turns)
        assert any(t.remember for t in s.turns), s.id  # a memory probe
    assert sum(t.recurring for s in scripts for t in s.turns) >= 6


def test_the_scripted_dialogues_hold_no_jfleg_text():
    if not JFLEG.is_dir():
        pytest.skip("no JFLEG dev set on this machine")
    jfleg = {line.strip().lower() for f in JFLEG.rglob("*") if f.is_file()
             for line in f.read_text(errors="replace").splitlines() if len(line.split()) >= 5}
    ours = {t.learner.strip().lower() for s in dlg.load_scripts() for t in s.turns}
    assert not ours & jfleg


def test_a_bad_scripted_file_names_its_line(tmp_path):
    path = tmp_path / "d.jsonl"
    good = {"id": "a", "level": "beginner", "turns": [{"learner": "Hi.", "corrections": []}] * 6}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "turns": good["turns"][:3]}) + "\n")
    with pytest.raises(dlg.DialogueError, match=r"d\.jsonl:2: 3 learner turns; a dialogue needs at least 6"):
        dlg.load_scripts(path)
    path.write_text('{"id": "a", "turns": [{"text": "no learner key"}]}\n')
    with pytest.raises(dlg.DialogueError, match=r"d\.jsonl:1: not a scripted dialogue \(KeyError"):
        dlg.load_scripts(path)
    path.write_text(json.dumps({**good, "level": "expert"}) + "\n")
    with pytest.raises(dlg.DialogueError, match="level 'expert'"):
        dlg.load_scripts(path)


def test_the_offline_learner_repeats_its_persona_error_and_is_repeatable():
    persona = dlg.personas(3, seed=4)[1]
    runs = []
    for _ in range(2):
        learner = dlg.offline_learner(persona, 6, seed=4)
        runs.append([learner(i, "What did you do then?" if i else None) for i in range(6)])
    assert [t.learner for t in runs[0]] == [t.learner for t in runs[1]]
    errors = [t for t in runs[0] if t.corrections]
    assert len(errors) == 3 and all(t.error_type == persona.error_type for t in errors)
    assert [t.recurring for t in errors] == [False, True, True]
    assert all(t.corrections == [] for t in runs[0] if t not in errors)
    for persona in dlg.personas(12, seed=0):  # every error turn scores: its correction is a telling one
        learner = dlg.offline_learner(persona, 6)
        turns = [learner(i, None) for i in range(6)]
        dlg.score_dialogue([_turn(t.learner, "Oh, nice! What then?", t.corrections) for t in turns], persona.level)
    assert any(t.learner.startswith(dlg._ANSWERS) for t in runs[0][1:])  # answers the tutor's question first


def test_a_function_word_correction_gets_its_context_from_the_tutors_sentence():
    assert dlg.telling_form("has", "your brother has a new camera") == "brother has a"
    assert dlg.telling_form("went", "you went to the beach") == "went"
    assert dlg.telling_form("an", "an apple") == "an apple"


def _turn(learner, reply, corrections, **extra):
    return {"learner": learner, "reply": reply, "corrections": corrections, "error_type": None,
            "recurring": False, "remember": [], "context": [], **extra}


def test_a_dialogue_score_sees_repeats_over_correction_memory_and_recurring_errors():
    turns = [
        _turn("Yesterday I go to the market.", "Oh, you went to the market yesterday? What did you buy there?",
              ["you went to the market", "went to the market"]),
        _turn("I bought apples and a big fish.", "Oh, great sentence, your grammar is perfect! What did you buy there?",
              []),
        _turn("Then I go home by bus.", "Oh, you went home by bus? What did you buy there?",
              ["went home by bus", "you went home"], recurring=True),
        _turn("What did I buy, do you remember?", "You bought apples and a big fish! Do you cook fish often?", [],
              remember=["apple", "fish"]),
        _turn("I like walking by the sea.", "Me too, the sea is lovely. Which beach do you like best?", []),
        _turn("My sister live near the beach.", "Oh, your sister lives near the beach? Do you visit her often?",
              ["sister lives"], recurring=True),
    ]
    score = dlg.score_dialogue(turns, "intermediate")
    assert score["turns"] == 6 and score["no_error_turns"] == 3
    assert score["repeated_follow_ups"] == 2  # "what did you buy there" three times
    assert score["over_correction"] == pytest.approx(1 / 3)  # praise of the grammar on a correct turn
    assert score["top_opener"] == "oh you" and score["repeated_openers"] >= 2
    assert score["memory"] == {"asked": 1, "remembered": 1}
    assert score["recurring"] == {"turns": 2, "taken_up": 2}
    assert score["questions"]["asked"] == 1
    assert all("metrics" in t and "context" not in t for t in turns)
    total = dlg.aggregate_dialogues([{"score": score}, {"score": {**score, "repeated_follow_ups": 0}}])
    assert total["no_repeated_follow_up_share"] == 0.5
    assert total["dialogue_score"] == pytest.approx(score["good_move_rate"] * (1 - 1 / 3) * 0.5)


@pytest.mark.slow
def test_eval_dialogue_holds_scripted_and_simulated_dialogues_with_the_bundled_model(tmp_path):
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "quimbot.cli", "eval", "dialogue", "--model", "default",
                           "--limit", "1", "--simulated", "1", "--out", str(out), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "dialogues.json").read_text())
    (model,) = report["models"]
    assert [d["kind"] for d in model["dialogues"]] == ["scripted", "simulated"]
    for d in model["dialogues"]:
        assert len(d["turns"]) >= 6 and all(t["reply"] for t in d["turns"])
        assert 0 <= d["score"]["good_move_rate"] <= 1
    assert 0 <= model["metrics"]["dialogue_score"] <= 1
    # the app's reply path (tutor.fresh): a reply asks nothing the tutor asked before, unless every try did
    assert report["fresh_tries"] == 3
    for d in model["dialogues"]:
        earlier = []
        for t in d["turns"]:
            again = repeated_question(t["reply"], earlier)
            assert again is None or t["asked_again"].count(again) >= 1 and len(t["asked_again"]) == 4, t
            earlier.append(t["reply"])
    md = (out / "dialogues.md").read_text()
    assert "| learner | default |" in md and "dialogue score" in md and "generated again, up to 3 times" in md
    assert "dialogue score" in done.stdout and "generated again on" in done.stdout


def _dialogue_metrics(over, no_repeat):
    return {"dialogues": 0, "turns": 0, "good_move_rate": 0.5, "over_correction": over,
            "no_repeated_follow_up_share": no_repeat, "repeated_opener_share": 0.0, "on_topic_rate": 0.5,
            "memory_rate": 1.0, "recurring_taken_up_rate": None, "questions_answered_rate": None, "words_mean": 20.0,
            "too_long_rate": 0.0, "dialogue_score": 0.5 * (1 - over) * no_repeat}


def test_the_dialogue_gate_passes_over_a_model_that_over_corrects_or_repeats_itself():
    from train.evaluate.compare import dialogue_gate, to_html, to_markdown

    models = [{"spec": s, "perplexity": None, "metrics": {"pedagogy_score": p}}
              for s, p in (("a", 0.9), ("b", 0.5), ("c", 0.4))]
    dialogues = {"rule": "dialogue_score = ...", "models": [
        {"spec": "a", "metrics": _dialogue_metrics(0.20, 1.0), "dialogues": []},   # over-corrects
        {"spec": "b", "metrics": _dialogue_metrics(0.0, 0.5), "dialogues": []},    # repeats its follow-ups
        {"spec": "c", "metrics": _dialogue_metrics(0.04, 0.95), "dialogues": []}]}
    passing, rule = dialogue_gate(models, dialogues)
    assert [m["spec"] for m in passing] == ["c"] and "(1 of 3 passed)" in rule
    assert models[0]["metrics"]["dialogue"]["over_correction"] == 0.20
    everyone, rule = dialogue_gate(models[:2], dialogues)
    assert everyone == models[:2] and "none passed" in rule
    report = {"prompts": 0, "recommendation": {"model": "c", "why": "w"}, "rule": rule, "models": [],
              "prompt_items": [], "dialogues": dialogues}
    assert "## Whole conversations" in to_markdown(report, None) and "| c | 0 |" in to_markdown(report, None)
    assert "<h2>Whole conversations</h2>" in to_html(report, None)
