"""Flags, suggestions and the review queue on a real SQLite store."""

import pytest

from core.errors import InputError, NotFoundError
from tutor.feedback import REASONS, Feedback, FlagFilters
from tutor.store import Store


def seed(store: Store, learner="Yesterday I go to the store",
         reply="The correct form is 'went'. Yesterday needs the past simple tense.",
         model="gguf:default", checkpoint="/models/a.gguf", level="beginner") -> tuple[int, int]:
    cid = store.create_conversation(level=level, model_spec=model)
    store.add_turn(cid, "user", learner, level=level)
    turn = store.add_turn(cid, "assistant", reply, model_spec=model, checkpoint=checkpoint, level=level,
                          system_prompt="You are a tutor.")
    return cid, turn


def test_taxonomy_covers_the_issue():
    for code in ("red_pen", "rule_dump", "missed_error", "wrong_correction", "over_correction", "tone",
                 "too_long", "no_follow_up", "off_topic"):
        assert code in REASONS


def test_flag_create_read_update_remove(store):
    feedback = Feedback(store)
    cid, turn = seed(store)
    flag_id = feedback.flag(turn, ["red_pen", "rule_dump"], "ana", note="lecture", rewrite="Oh, you went?")
    flag = feedback.get(flag_id)
    assert flag["reasons"] == ["red_pen", "rule_dump"] and flag["tester"] == "ana"
    assert flag["conversation_id"] == cid and flag["created_at"] == flag["updated_at"]
    assert flag["rewrite"] == "Oh, you went?" and flag["note"] == "lecture"

    # The same tester flagging again edits their flag; another tester gets their own.
    assert feedback.flag(turn, ["no_follow_up"], "ana") == flag_id
    assert feedback.get(flag_id)["reasons"] == ["no_follow_up"]
    other = feedback.flag(turn, ["tone"], "ben")
    assert other != flag_id and len(feedback.flags_for_turn(turn)) == 2

    feedback.update(flag_id, reasons=["red_pen"], note="edited", rewrite="Oh, you went to the store?")
    edited = feedback.get(flag_id)
    assert edited["reasons"] == ["red_pen"] and edited["note"] == "edited" and edited["updated_at"] >= edited["created_at"]

    feedback.remove(flag_id, by="ana")
    with pytest.raises(NotFoundError):
        feedback.get(flag_id)
    assert [f["id"] for f in feedback.flags_for_turn(turn)] == [other]
    kept = store.db.execute("SELECT removed_by, rewrite FROM flags WHERE id = ?", [flag_id]).fetchone()
    assert kept == ("ana", "Oh, you went to the store?")  # removed softly: nothing a tester wrote is lost


def test_bad_flags_are_refused_clearly(store):
    feedback = Feedback(store)
    cid, turn = seed(store)
    with pytest.raises(InputError, match="Unknown flag reason"):
        feedback.flag(turn, ["rude"], "ana")
    with pytest.raises(InputError, match="at least one reason"):
        feedback.flag(turn, [], "ana")
    with pytest.raises(InputError, match="tester name"):
        feedback.flag(turn, ["tone"], "  ")
    with pytest.raises(InputError, match="not a completed tutor reply"):
        feedback.flag(turn - 1, ["tone"], "ana")  # the learner's own turn
    with pytest.raises(NotFoundError):
        feedback.flag(9999, ["tone"], "ana")
    with pytest.raises(InputError, match="limit is 4,000"):
        feedback.flag(turn, ["tone"], "ana", rewrite="x" * 4001)
    assert store.db.execute("SELECT COUNT(*) FROM flags").fetchone()[0] == 0


def test_suggestions_are_stored_apart_and_confirmed_or_dismissed(store):
    feedback = Feedback(store)
    _, turn = seed(store)
    suggestions = feedback.suggest(turn)
    reasons = {s["reason"] for s in suggestions}
    assert {"red_pen", "rule_dump", "no_follow_up"} <= reasons
    assert feedback.flags_for_turn(turn) == []  # suggestions are not flags
    assert feedback.suggest(turn) == suggestions  # running again adds nothing
    by_reason = {s["reason"]: s for s in suggestions}
    flag_id = feedback.decide(by_reason["red_pen"]["id"], confirm=True, tester="ana")
    feedback.decide(by_reason["rule_dump"]["id"], confirm=True, tester="ana")
    feedback.decide(by_reason["no_follow_up"]["id"], confirm=False, tester="ana")
    assert feedback.get(flag_id)["reasons"] == ["red_pen", "rule_dump"]
    statuses = {s["reason"]: (s["status"], s["decided_by"]) for s in feedback.suggestions_for_turn(turn)}
    assert statuses["no_follow_up"] == ("dismissed", "ana") and statuses["red_pen"] == ("confirmed", "ana")


def test_review_queue_filters_and_counts(store):
    feedback = Feedback(store)
    _, t1 = seed(store, model="gguf:default", checkpoint="/m/base.gguf")
    _, t2 = seed(store, reply="Nice! What did you buy?", model="hf:default?adapter=runs/s1/checkpoint-50",
                 checkpoint="runs/s1/checkpoint-50")
    _, t3 = seed(store, reply="Okay.", model="hf:default?adapter=runs/s1/checkpoint-100",
                 checkpoint="runs/s1/checkpoint-100")
    feedback.flag(t1, ["red_pen", "rule_dump"], "ana")
    feedback.flag(t2, ["missed_error"], "ben", rewrite="Oh, you went to the store? What did you buy?")
    feedback.flag(t3, ["no_follow_up", "missed_error"], "ana")
    assert {f["turn_id"] for f in feedback.queue()} == {t1, t2, t3}
    assert {f["turn_id"] for f in feedback.queue(FlagFilters(reason="missed_error"))} == {t2, t3}
    assert {f["turn_id"] for f in feedback.queue(FlagFilters(tester="ana"))} == {t1, t3}
    assert {f["turn_id"] for f in feedback.queue(FlagFilters(model="checkpoint-50"))} == {t2}
    today = store.db.execute("SELECT substr(MIN(created_at), 1, 10) FROM flags").fetchone()[0]
    assert len(feedback.queue(FlagFilters(date_from=today, date_to=today))) == 3
    assert feedback.queue(FlagFilters(date_to="2000-01-01")) == []
    row = feedback.queue(FlagFilters(tester="ben"))[0]
    assert row["learner"] == "Yesterday I go to the store" and row["reply"] == "Nice! What did you buy?"
    counts = feedback.counts()
    assert counts["reason"] == {"missed_error": 2, "red_pen": 1, "rule_dump": 1, "no_follow_up": 1}
    assert counts["checkpoint"] == {"/m/base.gguf": 1, "runs/s1/checkpoint-50": 1, "runs/s1/checkpoint-100": 1}
    assert feedback.counts(FlagFilters(tester="ana"))["reason"]["missed_error"] == 1
