"""The store's public surface: the transaction, the typed rows (in the tables' column order, so what the
command line prints as JSON is what it printed when rows were dicts), the status types, and that no SQL
is left outside tutor/store/."""

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import StoreError
from tutor.feedback import Feedback
from tutor.store import (
    ArenaRound,
    Conversation,
    ConversationSummary,
    Event,
    Flag,
    QueuedFlag,
    Store,
    Suggestion,
    SuggestionStatus,
    Turn,
    TurnStatus,
)

ROOT = Path(__file__).resolve().parent.parent


def columns(store: Store, table: str) -> list[str]:
    return [r[1] for r in store.db.execute(f"PRAGMA table_info({table})").fetchall()]


def test_a_transaction_commits_rolls_back_and_joins_an_outer_one(store):
    with store.transaction() as db:
        db["events"].insert({"created_at": "x", "kind": "kept", "detail": ""})
    with pytest.raises(RuntimeError):
        with store.transaction() as db:
            db.execute("INSERT INTO events (created_at, kind, detail) VALUES ('x', 'gone', '')")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with store.transaction() as db:
            db.execute("INSERT INTO events (created_at, kind, detail) VALUES ('x', 'outer', '')")
            with store.transaction() as inner:
                inner.execute("INSERT INTO events (created_at, kind, detail) VALUES ('x', 'inner', '')")
            raise RuntimeError("the inner block committed nothing on its own")
    assert [e.kind for e in store.events()] == ["kept"]
    with pytest.raises(StoreError, match="Writing to the conversation log failed"):
        with store.transaction() as db:
            db.execute("INSERT INTO no_such_table VALUES (1)")


def test_rows_are_typed_and_read_like_the_dicts_they_replace(store):
    feedback = Feedback(store)
    cid = store.create_conversation(level="beginner", model_spec="default", learner="ana")
    store.add_turn(cid, "user", "I goed home")
    reply = store.add_turn(cid, "assistant", "Correction: went. The past tense of go is went.",
                           status=TurnStatus.PENDING)
    store.update_turn(reply, status=TurnStatus.OK)
    flag_id = feedback.flag(reply, ["red_pen"], "ana", rewrite="Oh, you went home?")
    feedback.suggest(reply)
    store.log_event("note", "x", cid)
    with store.transaction() as db:
        db["arena_rounds"].insert({"created_at": "x", "learner": "hi", "model_first": "a", "model_second": "b",
                                   "conversation_first": cid, "conversation_second": cid, "vote": "tie"})

    conversation = store.get_conversation(cid)
    assert isinstance(conversation, Conversation) and all(isinstance(t, Turn) for t in conversation.turns)
    assert list(conversation.as_dict()) == columns(store, "conversations") + ["turns"]
    assert list(dict(conversation.turns[1])) == columns(store, "turns")
    assert conversation["learner"] == conversation.learner == "ana" and "turns" in conversation
    summary = store.list_conversations()[0]
    assert isinstance(summary, ConversationSummary)
    assert list(summary.as_dict()) == columns(store, "conversations") + ["n_turns"]
    assert [type(e) for e in store.events()] == [Event] and list(store.events()[0]) == columns(store, "events")

    flag = feedback.get(flag_id)
    assert isinstance(flag, Flag) and flag.reasons == ["red_pen"] and list(flag) == columns(store, "flags")
    queued = feedback.queue()[0]
    assert isinstance(queued, QueuedFlag) and queued.learner == "I goed home"
    assert list(queued) == columns(store, "flags") + ["reply", "model_spec", "checkpoint", "level", "learner"]
    suggestion = feedback.suggestions_for_turn(reply)[0]
    assert isinstance(suggestion, Suggestion) and list(suggestion) == columns(store, "suggestions")
    assert suggestion.status is SuggestionStatus.OPEN
    round_ = store.arena.voted_rounds()[0]
    assert isinstance(round_, ArenaRound) and list(round_) == columns(store, "arena_rounds")
    assert store.last_reply(cid) == "Correction: went. The past tense of go is went."
    with pytest.raises(KeyError):
        flag["no_such_column"]


def test_statuses_are_stored_as_the_plain_strings(store):
    cid = store.create_conversation(level="beginner", model_spec="default")
    turn = store.add_turn(cid, "assistant", "", status=TurnStatus.PENDING)
    raw = store.db.execute("SELECT status, typeof(status), writer IS NOT NULL FROM turns WHERE id = ?",
                           [turn]).fetchone()
    assert raw == ("pending", "text", 1)
    assert store.turn(turn).status is TurnStatus.PENDING and store.turn(turn).status == "pending"
    assert json.dumps(store.turn(turn).as_dict()["status"]) == '"pending"'
    assert {s.value for s in TurnStatus} == {"ok", "pending", "error", "interrupted", "rejected"}
    assert {s.value for s in SuggestionStatus} == {"open", "confirmed", "dismissed"}


SQL = re.compile(r"\b(SELECT\s|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)|\._write\(|\.db\[|\.db\.(query|execute)\(")


def test_no_sql_outside_the_store():
    """tutor/ speaks SQL only in tutor/store/ (and the schema in tutor/migrations.py); the UI and the
    command line not at all."""
    found = []
    for folder in ("core", "tutor", "train", "webui", "quimbot"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("tutor/store/") or rel == "tutor/migrations.py":
                continue
            found += [f"{rel}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if SQL.search(line)]
    assert not found, f"SQL outside tutor/store/: {found}"


def test_python_m_quimbot_is_the_command_line():
    run = [sys.executable, "-m"]
    a = subprocess.run(run + ["quimbot", "--help"], capture_output=True, text=True, cwd=ROOT)
    b = subprocess.run(run + ["quimbot.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout and "conversations" in a.stdout
    bad = subprocess.run(run + ["quimbot", "flags", "remove"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "usage: quimbot flags remove" in bad.stderr


def test_a_store_error_is_not_swallowed_by_reads(tmp_path):
    store = Store.open(tmp_path / "q.db")
    store.db.conn.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.turns(1)


def test_listing_only_some_conversations_is_the_stores_query(store):
    a, b, c = (store.create_conversation(level="beginner", model_spec="default") for _ in range(3))
    assert [r.id for r in store.list_conversations(ids=[a, c])] == [c, a]
    assert store.list_conversations(ids=[]) == [] and store.list_conversations(ids=[str(b)]) == []
    assert [r.id for r in store.list_conversations()] == [c, b, a]
