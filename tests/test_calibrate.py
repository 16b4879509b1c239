"""Calibration of the pedagogy metrics: the hand-labelled sets, Cohen's kappa, tester verdicts from a
real SQLite log, the rule that lets only calibrated metrics decide, and `quimbot eval calibrate`."""

from argparse import ArgumentParser

import pytest
from sqlite_utils import Database

from core.errors import QuimbotError
from train.evaluate import calibrate as cal
from train.evaluate.compare import recommend_calibrated, to_markdown
from train.evaluate.corrections import reply_takes_up, telling
from train.evaluate.references import detokenize
from tutor.feedback import Feedback
from tutor.learner_errors import LearnerError
from tutor.store import Store
from tutor.teaching.words import tutor_side

TUNE = cal.load_labelled(cal.TUNE_PATH)
HELDOUT = cal.load_labelled(cal.HELDOUT_PATH)


# ---------------------------------------------------------------- the labelled sets
def test_labelled_sets_are_large_varied_and_separate():
    assert len(TUNE) + len(HELDOUT) >= 300 and len(HELDOUT) >= 100
    tune_turns = {detokenize(r["learner"]) for r in TUNE}
    assert not tune_turns & {detokenize(r["learner"]) for r in HELDOUT}, "a learner turn is in both parts"
    for rows in (TUNE, HELDOUT):
        kinds = {r["kind"] for r in rows}
        assert {"recast", "expansion", "red_pen", "lecture", "copy", "parrot", "stock", "echo", "meaning_change",
                "answer", "over_correction", "no_question"} <= kinds
        assert {"beginner", "intermediate", "essay"} <= {r["register"] for r in rows}
        assert sum(1 for r in rows if r["labels"]["takes_up_error"] is None) >= 20  # turns without an error
        assert sum(1 for r in rows if "references" in r) >= 20  # essay sentences, corrected as JFLEG is
        share = sum(r["labels"]["good_move"] for r in rows) / len(rows)
        assert 0.2 <= share <= 0.5  # mostly poor replies of many kinds, enough good ones to measure


@pytest.mark.parametrize("row", TUNE + HELDOUT, ids=lambda r: r["id"])
def test_labels_are_consistent_and_corrections_are_real(row):
    labels = row["labels"]
    if labels["good_move"]:  # the definition in train/evaluate/calibrate.py
        assert labels["follow_up_on_topic"] and not labels["red_pen"] and labels["takes_up_error"] is not False
    prompt = cal.row_prompt(row)
    assert bool(prompt["corrections"]) == (labels["takes_up_error"] is not None)
    assert not prompt["corrections"] or any(telling(c) for c in prompt["corrections"])
    for correction in prompt["corrections"]:
        one = LearnerError("x", "", (correction,))
        assert not reply_takes_up(prompt["learner"], one) and not reply_takes_up(tutor_side(prompt["learner"]), one)


def test_no_jfleg_sentence_was_copied():
    from train.evaluate.commands import JFLEG

    if not (JFLEG / "dev.src").exists():
        pytest.skip("../shared/data/jfleg-dev is not beside this checkout")
    jfleg = {detokenize(line).lower() for name in ("dev.src", "dev.ref0", "dev.ref1", "dev.ref2", "dev.ref3")
             if (JFLEG / name).exists() for line in (JFLEG / name).read_text(encoding="utf-8").splitlines()}
    ours = {detokenize(t).lower() for r in TUNE + HELDOUT for t in [r["learner"], *r.get("references", [])]}
    assert not ours & jfleg


def test_load_labelled_names_the_bad_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    good = ('{"id": "a", "level": "beginner", "learner": "I go home", "corrections": ["you went"], "reply": "Oh?", '
            '"labels": {"good_move": false, "red_pen": false, "takes_up_error": false, "follow_up_on_topic": false}}')
    path.write_text(good + "\n" + good.replace('"takes_up_error": false', '"takes_up_error": null') + "\n")
    with pytest.raises(cal.CalibrationError, match="line 2.*takes_up_error must be true or false"):
        cal.load_labelled(path)
    path.write_text(good.replace('"corrections": ["you went"]', '"corrections": ["x"], "references": ["y"]') + "\n")
    with pytest.raises(cal.CalibrationError, match="line 1.*either 'corrections'"):
        cal.load_labelled(path)
    with pytest.raises(cal.CalibrationError, match="No labelled replies"):
        cal.load_labelled(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------- agreement
def test_cohen_kappa_by_hand():
    predicted = [1, 1, 0, 0, 1, 0, 1, 1, 0, 0]
    gold = [1, 0, 0, 0, 1, 0, 1, 1, 1, 0]
    # observed 8/10; both say yes half the time, so chance agreement is 0.5: (0.8 - 0.5) / 0.5
    assert cal.cohen_kappa(predicted, gold) == pytest.approx(0.6)
    assert cal.cohen_kappa(gold, gold) == pytest.approx(1.0)
    assert cal.cohen_kappa([1, 1, 0, 0], [0, 0, 1, 1]) == pytest.approx(-1.0)
    assert cal.cohen_kappa([1, 1], [1, 1]) is None  # undefined, not a perfect score
    with pytest.raises(ValueError):
        cal.cohen_kappa([1], [1, 0])
    assert cal.agreement(predicted, gold) == {"n": 10, "accuracy": 0.8, "kappa": pytest.approx(0.6), "positives": 5}


def test_every_metric_agrees_with_people_on_the_heldout_part():
    result = cal.calibrate()
    for label in cal.LABELS:
        held = result["heldout"]["metrics"][label]
        print(f"\n{label}: tune kappa {result['tune']['metrics'][label]['kappa']:.2f}, "
              f"held-out accuracy {held['accuracy']:.2f}, kappa {held['kappa']:.2f} (n={held['n']})")
        assert held["n"] >= 100
        assert held["kappa"] >= cal.KAPPA_THRESHOLD, f"{label} disagrees with the labels: {held}"
    assert result["trusted"] == list(cal.LABELS)


# ---------------------------------------------------------------- tester verdicts in the log
def _exchange(store, learner, reply, level="beginner"):
    cid = store.create_conversation(level=level, model_spec="m", client="arena")
    store.add_turn(cid, "user", learner, level=level)
    return cid, store.add_turn(cid, "assistant", reply, level=level, model_spec="m")


GOOD = "Oh, you went to the store yesterday? What did you buy?"
RED = "You should say 'I went to the store'. Use the past tense."
LEARNER = "Yesterday I go to the store"


def test_tester_agreement_reads_flags_rewrites_and_arena_votes():
    store = Store(Database(memory=True))
    _, flagged = _exchange(store, LEARNER, RED)
    Feedback(store).flag(flagged, ["red_pen"], "ana", rewrite=GOOD)
    _, other = _exchange(store, "I buyed two apple", GOOD.replace("went to the store", "bought two apples"))
    Feedback(store).flag(other, ["missed_error"], "ben")  # a flagged reply the metric calls good: a disagreement
    rounds = []
    for first, second, vote in ((GOOD, RED, "first"), (GOOD, RED, "second"), (RED, RED, "both_bad"),
                                (GOOD, RED, "tie"), (GOOD, GOOD, "first")):
        c1, _ = _exchange(store, LEARNER, first)
        c2, _ = _exchange(store, LEARNER, second)
        rounds.append({"created_at": "2026-12-01", "tester": "ana", "learner": LEARNER, "level": "beginner",
                       "model_first": "a", "model_second": "b", "conversation_first": c1,
                       "conversation_second": c2, "vote": vote})
    store.db["arena_rounds"].insert_all(rounds)
    result = cal.tester_agreement(store)
    assert result["flagged_replies"] == 2 and result["rewrites"] == 1 and not result["empty"]
    # verdicts: RED bad (agrees), GOOD rewrite good (agrees), other reply bad (metric: good), both_bad: 2 x RED
    assert result["per_reply"]["n"] == 5 and result["per_reply"]["accuracy"] == pytest.approx(4 / 5)
    assert result["arena"] == {"votes": 5, "decisive": 3, "metric_separates": 2, "winner_is_good_move": 1,
                               "share": 0.5}
    assert "2 flagged replies and 1 rewrites" in cal.testers_sentence(result)


def test_tester_agreement_on_an_empty_or_missing_log(tmp_path):
    missing = cal.tester_agreement(tmp_path / "none.db")
    assert missing["empty"] and "no conversation log" in missing["note"] and not (tmp_path / "none.db").exists()
    empty = cal.tester_agreement(Store(Database(memory=True)))
    assert empty["empty"] and empty["per_reply"]["n"] == 0 and "none in the conversation log" in \
        cal.testers_sentence(empty)


# ---------------------------------------------------------------- who decides the recommendation
def _calibration(trusted):
    return {"threshold": 0.6, "trusted": list(trusted)}


def test_only_calibrated_metrics_decide():
    metric, why = cal.decision_metric("pedagogy_score", _calibration(cal.LABELS))
    assert metric == "pedagogy_score" and "at least 0.6" in why
    metric, why = cal.decision_metric("pedagogy_score", _calibration(["takes_up_error", "red_pen"]))
    assert metric == "takes_up_error" and "pedagogy_score is not used" in why and "good_move" in why
    assert cal.decision_metric("diversity", _calibration(cal.LABELS))[0] == "pedagogy_score"  # not calibrated
    metric, why = cal.decision_metric("good_move", _calibration([]))
    assert metric is None and "no metric" in why
    assert cal.decision_metric("good_move", {"error": "No labelled replies"})[0] is None

    models = [{"spec": "a", "perplexity": 5.0, "metrics": {"pedagogy_score": 0.6, "takes_up_error": 0.4}},
              {"spec": "b", "perplexity": 4.0, "metrics": {"pedagogy_score": 0.3, "takes_up_error": 0.7}}]
    from train.evaluate.compare import Rule

    assert recommend_calibrated(models, Rule(), _calibration(cal.LABELS))["model"] == "a"
    rec = recommend_calibrated(models, Rule(), _calibration(["takes_up_error"]))
    assert rec["model"] == "b" and "takes_up_error decides instead" in rec["calibration"]
    rec = recommend_calibrated(models, Rule(), _calibration([]))
    assert rec["model"] == "b" and "perplexity 4.00" in rec["why"]  # no pedagogy metric trusted: perplexity only


def test_the_report_has_a_metric_calibration_section():
    calibration = cal.calibrate(db=Store(Database(memory=True)))
    models = [{"spec": "a", "perplexity": None, "replies": ["Hi?"], "per_reply": [{"good_move": False, "style": "none"}],
               "metrics": {"pedagogy_score": 0.1, "good_move": 0.2, "diversity": {"diversity": 0.5}}}]
    from train.evaluate.compare import Rule

    rec = recommend_calibrated(models, Rule(), calibration)
    report = {"prompts": 1, "rule": rec["rule"], "recommendation": rec, "calibration": calibration,
              "models": models, "prompt_items": [{"id": "p", "learner": "Hello", "error_type": None}]}
    md = to_markdown(report, None)
    assert "## Metric calibration" in md and md.index("## Metric calibration") < md.index("## Replies side by side")
    for label in cal.LABELS:
        assert f"| {label} |" in md
    assert "held-out kappa of at least 0.6" in md and "Decision: pedagogy_score rests on" in md
    assert "Calibration could not be computed" in "\n".join(cal.markdown_section({"error": "no file"}))


# ---------------------------------------------------------------- the command
def _run(argv):
    from train.evaluate.commands import register

    parser = ArgumentParser(prog="quimbot")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_eval_calibrate_command(tmp_path, capsys):
    assert _run(["eval", "calibrate", "--db", str(tmp_path / "none.db")]) == 0
    out = capsys.readouterr().out
    assert "held-out kappa" in out and "good_move" in out and "none in the conversation log" in out
    assert _run(["eval", "calibrate", "--db", str(tmp_path / "none.db"), "--threshold", "0.99", "--json"]) == 0
    assert '"trusted": []' in capsys.readouterr().out
    with pytest.raises(QuimbotError, match="threshold"):
        _run(["eval", "calibrate", "--threshold", "2"])
