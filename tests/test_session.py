"""The chat service on the real default model: streaming, logging and every bad input."""

import json

import pytest

from tutor.backends import GenerationOptions
from tutor.prompts import system_prompt
from tutor.session import ChatService, clean_message
from webui.chat import render_turns

pytestmark = pytest.mark.slow
FAST = GenerationOptions(temperature=0, max_tokens=24, seed=7)


def run(service: ChatService, text, **kwargs):
    updates = list(service.send(text, options=kwargs.pop("options", FAST), **kwargs))
    return updates, updates[-1]


def test_reply_streams_and_both_turns_are_logged(service):
    updates, last = run(service, "Yesterday I go to the store", level="beginner")
    assert last.error is None and last.done and last.text
    partials = [u.text for u in updates[1:-1]]
    assert len(set(partials)) >= 3, "the reply should arrive in several pieces"
    assert all(partials[i + 1].startswith(partials[i]) for i in range(len(partials) - 1))
    assert last.text.startswith(partials[-1].strip()) and len(partials[0]) < len(last.text)
    user, reply = service.store.turns(last.conversation_id)
    assert (user["role"], user["content"], user["status"]) == ("user", "Yesterday I go to the store", "ok")
    assert reply["role"] == "assistant" and reply["status"] == "ok" and reply["content"] == last.text
    assert reply["model_spec"] == "gguf:default" and reply["checkpoint"].endswith(".gguf")
    assert reply["system_prompt"] == system_prompt("beginner") and reply["level"] == "beginner"
    assert json.loads(reply["options"])["max_tokens"] == 24
    assert reply["latency_ms"] > 0 and reply["first_token_ms"] > 0
    assert reply["prompt_tokens"] > 20 and 0 < reply["completion_tokens"] <= 24
    assert reply["finish_reason"] in ("stop", "length")


def test_levels_change_the_prompt():
    prompts = {level: system_prompt(level) for level in ("beginner", "intermediate", "advanced")}
    assert len(set(prompts.values())) == 3
    assert "short sentences" in prompts["beginner"] and "idioms" in prompts["advanced"]
    assert all("follow-up question" in p for p in prompts.values())
    assert system_prompt("klingon") == prompts["intermediate"]


def test_history_is_rebuilt_from_the_store(service):
    _, first = run(service, "I have two brother")
    _, second = run(service, "They lives in Paris", conversation_id=first.conversation_id)
    assert second.conversation_id == first.conversation_id and second.error is None
    history = service.history(first.conversation_id)
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[0]["content"] == "I have two brother" and history[2]["content"] == "They lives in Paris"


@pytest.mark.parametrize("text", ["", "   \n\t  ", None, "\x00\x01\x1b"])
def test_empty_messages_are_refused_and_logged(service, text):
    _, last = run(service, text)
    assert last.error == "Your message is empty: type something to say to the tutor."
    assert last.conversation_id is None
    assert service.store.list_conversations() == []
    event = service.store.events(kind="rejected_input")[-1]
    assert "empty" in json.loads(event["detail"])["reason"]


def test_control_characters_are_removed_but_text_kept():
    assert clean_message("  I\x00 go\x1b[31m home\u202e now\r\nok \U0001F600  ") == "I go[31m home now\nok \U0001F600"


def test_overlong_message_is_refused_with_its_size(service):
    _, last = run(service, "word " * 2000)
    assert "9,999 characters long; the limit is 4,000" in last.error
    assert json.loads(service.store.events(kind="rejected_input")[-1]["detail"])["chars"] == 10000


def test_message_beyond_the_model_context(service):
    spec = "gguf:default?n_ctx=256"
    text = "I goed to the big market yesterday and buyed many thing. " * 12  # ~700 chars, ~170 tokens
    _, last = run(service, text, model_spec=spec, options=GenerationOptions(max_tokens=100))
    assert "too long for this model" in last.error and "256 tokens" in last.error
    turns = service.store.turns(last.conversation_id)
    assert turns[0]["content"] == text.strip() and turns[0]["status"] == "rejected"
    # The conversation goes on, and the rejected message is not part of the history.
    _, ok = run(service, "I like tea", model_spec=spec, conversation_id=last.conversation_id)
    assert ok.error is None and ok.text
    assert [m["content"] for m in service.history(last.conversation_id)][0] == "I like tea"


def test_old_history_is_dropped_to_fit_the_context(service):
    spec = "gguf:default?n_ctx=256"
    options = GenerationOptions(temperature=0, max_tokens=48)
    cid = None
    for sentence in ["My mother work in a hospital near the river every day of the week.",
                     "My father are a teacher of mathematics in the school of our small town.",
                     "I wants to become a doctor like my mother when I finish the school."]:
        _, last = run(service, sentence, model_spec=spec, conversation_id=cid, options=options)
        assert last.error is None, last.error
        cid = last.conversation_id
    backend = service.pool.get(spec)
    turns = service.store.turns(cid)
    everything = [{"role": "system", "content": turns[-1]["system_prompt"]}] + [
        {"role": t["role"], "content": t["content"]} for t in turns[:-1]]
    assert backend.count_tokens(everything) > backend.context_length - 48, "history should not fit whole"
    assert turns[-1]["prompt_tokens"] <= backend.context_length - 48


def test_html_and_script_are_stored_verbatim_and_displayed_as_text(service):
    text = '<script>alert("x")</script><img src=x onerror=alert(1)> I is happy'
    _, last = run(service, text)
    stored = service.store.turns(last.conversation_id)[0]["content"]
    assert stored == text
    shown = render_turns(service.store.turns(last.conversation_id))[0]["content"]
    assert "<script>" not in shown and "<img" not in shown
    assert "&lt;script&gt;" in shown and "I is happy" in shown


@pytest.mark.parametrize("spec, message", [
    ("gguf:/nonexistent/model.gguf", "GGUF file not found: /nonexistent/model.gguf"),
    ("warp:drive", "Unknown engine 'warp'. Known engines:"),
    ("hf:default?adapter=/nonexistent/ckpt", "has no adapter_config.json"),
    ("nonsense", "Cannot tell which engine"),
])
def test_bad_model_spec_is_reported_and_logged(service, spec, message):
    _, last = run(service, "Hello, I am fine", model_spec=spec)
    assert message in last.error
    user, reply = service.store.turns(last.conversation_id)
    assert user["status"] == "ok" and user["content"] == "Hello, I am fine"
    assert reply["status"] == "error" and message in reply["error"]
    # The same conversation continues on a working model, once one is picked (with none picked a
    # conversation keeps its own model: tutor.session.ChatService.model_for).
    _, ok = run(service, "Hello again", conversation_id=last.conversation_id, model_spec="default")
    assert ok.error is None and ok.text
    assert [m["content"] for m in service.history(last.conversation_id)][0] == "Hello again"


def test_server_down_is_a_clear_message(service):
    from conftest import free_port

    spec = f"openai:tutor?base_url=http://127.0.0.1:{free_port()}/v1&retries=0&timeout=5"
    _, last = run(service, "I am go to school", model_spec=spec)
    assert "Cannot reach http://127.0.0.1:" in last.error and "is the server running?" in last.error
    assert service.store.turns(last.conversation_id)[1]["status"] == "error"


def test_reply_stopped_midway_is_kept_as_interrupted(service):
    stream = service.send("Tell me about your weekend, I goes to the beach",
                          options=GenerationOptions(temperature=0, max_tokens=64))
    seen = None
    for update in stream:
        if len(update.text) > 10:
            seen = update
            break
    stream.close()  # the browser tab went away
    user, reply = service.store.turns(seen.conversation_id)
    assert user["status"] == "ok"
    assert reply["status"] == "interrupted" and reply["content"] == seen.text
    assert service.history(seen.conversation_id) == []


def test_history_is_dropped_in_blocks_so_the_kept_prefix_stays_the_same(service):
    """Once the history outgrows the context, the oldest exchanges go four at a time: consecutive turns
    then share their prompt's beginning, which the engine's prompt cache can reuse."""
    from tutor.session import TRIM_BLOCK

    backend = service.pool.get("gguf:default?n_ctx=512")
    options = GenerationOptions(temperature=0, max_tokens=32)
    history = []
    starts = []
    for n in range(30):
        text = f"Number {n}: yesterday I go to the market and buyed many apples and some bread for my family."
        messages, count = service.build_messages(backend, "You are a tutor.", history, text, options)
        assert backend.count_tokens(messages) <= backend.context_length - options.max_tokens
        kept = messages[1:-1]
        dropped = (len(history) - len(kept)) // 2
        assert dropped % TRIM_BLOCK == 0 or not kept
        starts.append(kept[0]["content"] if kept else None)
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": f"Oh, you went? ({n})"}]
    trimmed = [s for s in starts if s is not None and not s.startswith("Number 0:")]
    assert trimmed, "the history outgrew the context"
    # the kept history starts at the same exchange on more than one turn in a row
    assert any(a == b for a, b in zip(trimmed, trimmed[1:]))
