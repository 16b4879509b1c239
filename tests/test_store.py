import json
import sqlite3

import pytest
from sqlite_utils import Database

from core.errors import NotFoundError, StoreError
from tutor.migrations import MIGRATIONS, migrate
from tutor.store import Store, open_database


def test_migrations_are_idempotent(tmp_path):
    db = open_database(tmp_path / "q.db")
    first = migrate(db)
    assert first == [fn.__name__ for fn in MIGRATIONS]
    schema = db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    assert migrate(db) == []
    assert migrate(db) == []
    assert db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
    assert db.execute("SELECT COUNT(*) FROM _quimbot_migrations").fetchone()[0] == len(MIGRATIONS)
    # A store opened on an existing database keeps its rows.
    store = Store(db)
    cid = store.create_conversation(level="beginner", model_spec="default")
    store.add_turn(cid, "user", "hello")
    again = Store(open_database(tmp_path / "q.db"))
    assert [t["content"] for t in again.turns(cid)] == ["hello"]


def test_conversation_round_trip(store):
    cid = store.create_conversation(level="advanced", model_spec="gguf:default", client="cli", learner="ana")
    u = store.add_turn(cid, "user", "Yesterday I go to the store", level="advanced")
    a = store.add_turn(cid, "assistant", "", status="pending", model_spec="gguf:default",
                       checkpoint="/x/model.gguf", options={"temperature": 0.2, "max_tokens": 50})
    store.update_turn(a, content="Oh, you went to the store? What did you buy?", status="ok",
                      latency_ms=812.5, first_token_ms=120.0, prompt_tokens=40, completion_tokens=12,
                      finish_reason="stop")
    conversation = store.get_conversation(cid)
    assert conversation["level"] == "advanced" and conversation["learner"] == "ana"
    assert conversation["title"] == "Yesterday I go to the store"
    user, reply = conversation["turns"]
    assert (user["id"], user["idx"], user["role"], user["status"]) == (u, 0, "user", "ok")
    assert reply["idx"] == 1 and reply["content"].startswith("Oh, you went")
    assert json.loads(reply["options"]) == {"max_tokens": 50, "temperature": 0.2}
    assert reply["latency_ms"] == 812.5 and reply["completion_tokens"] == 12
    assert reply["checkpoint"] == "/x/model.gguf" and reply["finish_reason"] == "stop"
    listed = store.list_conversations()
    assert listed[0]["id"] == cid and listed[0]["n_turns"] == 2


def test_turn_index_is_unique_and_ordered(store):
    cid = store.create_conversation(level="beginner", model_spec="default")
    ids = [store.add_turn(cid, "user" if i % 2 == 0 else "assistant", f"t{i}") for i in range(6)]
    assert [t["idx"] for t in store.turns(cid)] == list(range(6))
    assert [t["id"] for t in store.turns(cid)] == ids
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute("INSERT INTO turns (conversation_id, idx, role, content, status, created_at) "
                         "VALUES (?, 0, 'user', 'dup', 'ok', 'now')", [cid])


def test_missing_conversation_and_bad_fields(store):
    with pytest.raises(NotFoundError, match="Conversation 99 does not exist"):
        store.get_conversation(99)
    with pytest.raises(NotFoundError):
        store.add_turn(99, "user", "hello")
    cid = store.create_conversation(level="beginner", model_spec="default")
    with pytest.raises(StoreError, match="Unknown turn fields"):
        store.add_turn(cid, "user", "x", colour="red")
    assert store.turns(cid) == []


WRITER = """
import sys
from tutor.store import Store
store = Store.open(sys.argv[1])
cid = store.create_conversation(level="beginner", model_spec="default")
store.add_turn(cid, "user", "I has a cat")
store.add_turn(cid, "assistant", "Oh, you have", status="pending")
print("pending", flush=True)
sys.stdin.read()  # stays alive, writing its reply, until told to stop (or killed)
"""


def start_writer(db_path):
    """A real second process that leaves a pending reply and keeps running."""
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    line = proc.stdout.readline()  # returns at once if the process dies
    if line.strip() != "pending":
        proc.kill()
        pytest.fail(f"the writer process did not start (exit code {proc.wait(timeout=30)})")
    return proc


def test_recover_interrupted_marks_pending_replies_of_a_killed_writer(tmp_path):
    import signal

    writer = start_writer(tmp_path / "q.db")
    writer.send_signal(signal.SIGKILL)  # a crash mid-reply
    writer.wait(timeout=30)
    store2 = Store.open(tmp_path / "q.db")  # a new process opens the same file after the crash
    assert store2.recover_interrupted() == 1
    (cid,) = store2.db.execute("SELECT id FROM conversations").fetchone()
    turns = store2.turns(cid)
    assert turns[0]["content"] == "I has a cat" and turns[0]["status"] == "ok"
    assert turns[1]["status"] == "interrupted" and turns[1]["content"] == "Oh, you have"
    assert store2.recover_interrupted() == 0
    assert list((tmp_path / "q.db.writers").iterdir()) == []  # the dead writer's lock file is cleaned up


def test_recover_leaves_a_live_writers_pending_reply_alone(tmp_path):
    writer = start_writer(tmp_path / "q.db")
    try:
        other = Store.open(tmp_path / "q.db")  # e.g. a second app started on the same database
        assert other.recover_interrupted() == 0
        assert other.db.execute("SELECT status, error FROM turns WHERE role = 'assistant'").fetchall() == [
            ("pending", None)]
    finally:
        writer.stdin.close()  # the writer ends normally, its reply never finished
        writer.wait(timeout=30)
    assert other.recover_interrupted() == 1  # now its writer is gone


def test_pending_replies_of_this_process_are_not_recovered(tmp_path):
    store = Store.open(tmp_path / "q.db")
    cid = store.create_conversation(level="beginner", model_spec="default")
    reply = store.add_turn(cid, "assistant", "", status="pending")
    assert Store.open(tmp_path / "q.db").recover_interrupted() == 0
    memory = Store(Database(memory=True))
    mid = memory.create_conversation(level="beginner", model_spec="default")
    memory.add_turn(mid, "assistant", "", status="pending")
    assert memory.recover_interrupted() == 0
    # A reply that completes as ok carries no error, whatever was written to it before.
    store.update_turn(reply, status="error", error="boom")
    store.update_turn(reply, status="ok", content="Oh, nice!")
    assert store.db.execute("SELECT status, error FROM turns WHERE id = ?", [reply]).fetchone() == ("ok", None)


def test_pending_replies_from_before_writer_ids_are_recovered(tmp_path):
    store = Store.open(tmp_path / "q.db")
    cid = store.create_conversation(level="beginner", model_spec="default")
    store.db.execute("INSERT INTO turns (conversation_id, idx, role, content, status, created_at) "
                     "VALUES (?, 0, 'assistant', '', 'pending', 'x')", [cid])
    store.db.conn.commit()
    assert Store.open(tmp_path / "q.db").recover_interrupted() == 1


def test_events_are_logged(store):
    store.log_event("rejected_input", {"reason": "empty"})
    cid = store.create_conversation(level="beginner", model_spec="default")
    store.log_event("internal_error", "boom", conversation_id=cid)
    assert [e["kind"] for e in store.events()] == ["rejected_input", "internal_error"]
    assert [e["detail"] for e in store.events(conversation_id=cid)] == ["boom"]


def test_memory_database_is_accepted():
    store = Store(Database(memory=True))
    assert store.list_conversations() == []


def test_delete_conversation_removes_everything_about_it(store):
    from tutor.feedback import Feedback

    keep = store.create_conversation(level="beginner", model_spec="default")
    store.add_turn(keep, "user", "keep me")
    cid = store.create_conversation(level="beginner", model_spec="default", learner="ana")
    store.add_turn(cid, "user", "My email is ana@example.com")
    reply = store.add_turn(cid, "assistant", "Thanks! What do you do?")
    Feedback(store).suggest(reply)
    Feedback(store).flag(reply, ["tone"], "ben")
    store.log_event("rejected_input", {"reason": "x"}, cid)
    counts = store.delete_conversation(cid)
    assert counts["turns"] == 2 and counts["flags"] == 1 and counts["events"] == 1 and counts["conversations"] == 1
    assert "ana@example.com" not in json.dumps([list(store.db[t].rows) for t in store.db.table_names()])
    assert [t["content"] for t in store.turns(keep)] == ["keep me"]
    with pytest.raises(NotFoundError):
        store.delete_conversation(cid)


def test_backup_is_a_consistent_copy(tmp_path):
    store = Store.open(tmp_path / "live.db")
    cid = store.create_conversation(level="beginner", model_spec="default")
    store.add_turn(cid, "user", "hello")
    copy = store.backup(tmp_path / "backup.db")
    restored = Store.open(copy)
    assert [t["content"] for t in restored.turns(cid)] == ["hello"]
    assert restored.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with pytest.raises(StoreError, match="exists already"):
        store.backup(copy)
