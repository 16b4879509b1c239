"""The real app in a subprocess, driven through gradio_client like any API user."""

import json
import sqlite3

import pytest
from gradio_client.exceptions import AppError

pytestmark = pytest.mark.slow


def text(message) -> str:
    """Gradio 6 sends message content as a list of typed parts."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def rows(db, sql, args=()):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def test_chat_through_the_api_streams_and_logs(running_app):
    client = running_app["client"]()
    outputs, final = client.stream("Yesterday I go to the store", "default", "beginner", api_name="/send")
    chat, textbox, status = final[0], final[1], final[2]
    assert textbox == ""
    assert [m["role"] for m in chat] == ["user", "assistant"]
    assert text(chat[0]) == "Yesterday I go to the store"
    reply = text(chat[1])
    assert reply.strip() and not reply.startswith("⚠️")
    streamed = [text(o[0][-1]) for o in outputs if o[0] and o[0][-1]["role"] == "assistant"]
    assert len(streamed) >= 2, "the reply should stream in several updates"

    turns = rows(running_app["db"], "SELECT * FROM turns ORDER BY id")
    assert [(t["role"], t["status"]) for t in turns] == [("user", "ok"), ("assistant", "ok")]
    assert turns[0]["content"] == "Yesterday I go to the store"
    assert turns[1]["content"] == reply and turns[1]["model_spec"] == "gguf:default"
    assert turns[1]["level"] == "beginner" and turns[1]["latency_ms"] > 0
    assert "s · " in status or "tokens" in status

    # A second message continues the same conversation (kept in the session's state).
    client.predict("I buyed apples", "default", "beginner", api_name="/send")
    conversations = rows(running_app["db"], "SELECT * FROM conversations")
    assert len(conversations) == 1
    assert len(rows(running_app["db"], "SELECT * FROM turns")) == 4

    # New conversation, then reopen the first one.
    client.predict(api_name="/new_conversation")
    client.predict("Hello, I am Ana", "default", "advanced", api_name="/send")
    assert len(rows(running_app["db"], "SELECT * FROM conversations")) == 2
    first_id = conversations[0]["id"]
    loaded = client.predict(first_id, api_name="/load_conversation")
    assert [text(m) for m in loaded[0] if m["role"] == "user"] == ["Yesterday I go to the store",
                                                                        "I buyed apples"]

    # Another learner (another browser session) sees none of it and cannot reopen it by id.
    other = running_app["client"]()
    models, past = other.predict(api_name="/refresh_lists")
    assert past["choices"] == [] and len(models["choices"]) >= 2
    with pytest.raises(AppError, match="not in the list of choices"):  # refused before our handler runs
        other.predict(first_id, api_name="/load_conversation")
    assert "Yesterday I go" not in json.dumps(past)


def test_bad_input_and_bad_model_keep_the_app_working(running_app):
    client = running_app["client"]()
    chat, box, status = client.predict("   ", "default", "beginner", api_name="/send")[:3]
    assert "empty" in status and chat == []
    chat, box, status = client.predict("x" * 5000, "default", "beginner", api_name="/send")[:3]
    assert "5,000 characters" in status and box == "x" * 5000  # kept for the learner to shorten
    missing = running_app["db"].parent / "exports" / "missing.gguf"
    chat, box, status = client.predict("I has a dog", f"gguf:{missing}", "beginner", api_name="/send")[:3]
    assert "GGUF file not found" in status and "GGUF file not found" in text(chat[-1])
    chat, box, status = client.predict("I has a dog", "gguf:/etc/passwd", "beginner", api_name="/send")[:3]
    assert "outside the runs and exports folders" in status and box == "I has a dog"
    chat, box, status = client.predict("<b>I has</b> a <script>alert(1)</script>", "default", "beginner",
                                        api_name="/send")[:3]
    assert "&lt;script&gt;" in text(chat[-2]) and not text(chat[-1]).startswith("⚠️")
    events = rows(running_app["db"], "SELECT kind FROM events")
    assert [e["kind"] for e in events] == ["rejected_input", "rejected_input", "refused_model_spec"]
    errors = rows(running_app["db"], "SELECT error FROM turns WHERE status = 'error'")
    assert len(errors) == 1 and "GGUF file not found" in errors[0]["error"]



def test_learner_list_holds_only_the_sessions_own_conversations(tmp_path):
    from tutor.store import Store
    from webui.chat import conversation_choices

    store = Store.open(tmp_path / "q.db")
    a = store.create_conversation(level="beginner", model_spec="default")
    b = store.create_conversation(level="beginner", model_spec="default")
    assert [cid for _, cid in conversation_choices(store, [b])] == [b]
    assert {cid for _, cid in conversation_choices(store)} == {a, b}  # the tester view
    assert conversation_choices(store, []) == []


def test_a_stuck_app_can_be_asked_for_its_threads_stacks(running_app):
    """`kill -USR1` makes the app print every thread's stack to its log and go on: what a test shows when a
    reply never comes (conftest's bounded wait asks for it before failing)."""
    client = running_app["client"]()
    client._dump_threads()
    log = running_app["log"].read_text()
    assert "most recent call first" in log and "Thread 0x" in log, log[-2000:]
    assert running_app["proc"].poll() is None  # the app is still serving
    out = client.predict("I like tea", "default", "beginner", api_name="/send")
    assert "⚠️" not in out[2]
