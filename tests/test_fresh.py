"""A reply that asks again what the tutor asked before is generated again (tutor.fresh): the check on
real tutor replies, the retries through the chat service against the fake OpenAI-compatible server (the
real wire protocol, a reply chosen per request), and the real default model in a dialogue."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from fakes import FakeOpenAI
from sqlite_utils import Database

from core.errors import InputError
from tutor.backends import BackendPool, GenerationOptions, load_backend
from tutor.config import Settings
from tutor.fresh import default_tries, fresh_stream, reply_text, retry_options
from tutor.session import ChatService
from tutor.store import Store
from tutor.teaching.replies import asked, repeated_question


# -- the check -------------------------------------------------------------------------------------

def test_asked_reads_questions_and_invitations_after_interjections():
    reply = "Oh, you went to the market yesterday? Nice! So, what did you buy? Tell me about it!"
    assert asked(reply) == ["you went to the market yesterday", "what did you buy", "tell me about it"]
    assert asked("Really? And you?") == []  # one word after the interjections: nothing to answer twice
    assert asked("That sounds fun.") == []


def test_repeated_question_finds_a_stock_follow_up_asked_again():
    # from a checkpoint-80 dialogue: the same follow-up two turns apart, opened differently
    earlier = ["Oh, you have a new camera! What do you like about it?", "So you take photos every day. Nice."]
    assert repeated_question("Oh, you went to the lake. So what do you like about it?", earlier) == \
        "what do you like about it"
    assert repeated_question("Oh, you went to the lake. Who did you go with?", earlier) is None
    assert repeated_question("Tell me more!", ["Oh, you cook? Tell me more."]) == "tell me more"
    assert repeated_question("What do you like about it?", []) is None


def test_retries_are_sampled_and_seeded_from_the_options():
    greedy = GenerationOptions.greedy(seed=5)
    assert retry_options(greedy, 2).temperature == 0.8 and retry_options(greedy, 2).seed == 7
    hot = GenerationOptions(temperature=1.1, seed=None)
    assert retry_options(hot, 1).temperature == 1.1 and retry_options(hot, 1).seed is None


def test_tries_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("QUIMBOT_FRESH_TRIES", raising=False)
    assert default_tries() == 3
    monkeypatch.setenv("QUIMBOT_FRESH_TRIES", "0")
    assert default_tries() == 0
    monkeypatch.setenv("QUIMBOT_FRESH_TRIES", "lots")
    with pytest.raises(InputError, match="QUIMBOT_FRESH_TRIES='lots'"):
        default_tries()


# -- through the chat service, against the OpenAI wire protocol ---------------------------------------

FIRST = "Nice! What did you buy?"


def scripted(*later: str):
    """A reply function for the fake server: FIRST to the first request, then ``later`` in turn."""
    replies = itertools.chain([FIRST], later, itertools.repeat(later[-1]))
    return lambda _messages: next(replies)


def chat(server: FakeOpenAI, tries: int = 3):
    store = Store(Database(memory=True))
    pool = BackendPool(Settings())
    service = ChatService(store, pool, fresh_tries=tries)
    spec = f"openai:{server.model}?base_url={server.base_url}&timeout=5&retries=0"
    first = list(service.send("I go to the market yesterday", model_spec=spec))[-1]
    assert first.error is None and first.text == FIRST
    updates = [dataclasses.replace(u) for u in service.send("I buyed some apples", model_spec=spec,
                                                            conversation_id=first.conversation_id)]
    pool.close()
    return store, first.conversation_id, updates


def test_a_reply_that_asks_again_is_replaced_and_the_dropped_one_logged():
    again = "Oh, you bought some apples. What did you buy?"
    fresh = "Oh, you bought some apples! Were they sweet?"
    with FakeOpenAI(reply=scripted(again, fresh)) as server:
        store, conversation, updates = chat(server)
        bodies = server.chat_bodies
    last = updates[-1]
    assert last.error is None and last.text == fresh and last.restarts == 1
    shown = [u.text for u in updates]
    assert again in shown and shown[shown.index(again) + 1] == ""  # streamed, then dropped for the new one
    assert len(bodies) == 3  # the first turn, the reply that asked again, the new one
    assert bodies[1].get("temperature") == 0.7 and bodies[2]["temperature"] == 0.8
    turns = store.turns(conversation)
    assert [(t["role"], t["status"]) for t in turns] == [("user", "ok"), ("assistant", "ok")] * 2
    assert turns[-1]["content"] == fresh
    events = [e for e in store.db["events"].rows_where("kind = ?", ["asked_again"])]
    assert len(events) == 1 and '"question": "what did you buy"' in events[0]["detail"]
    assert again in events[0]["detail"] and f'"turn_id": {turns[-1]["id"]}' in events[0]["detail"]


def test_when_every_try_asks_again_the_first_reply_is_kept():
    first_try = "Oh, you bought apples. What did you buy?"
    with FakeOpenAI(reply=scripted(first_try, "So what did you buy?", "What did you buy?")) as server:
        store, conversation, updates = chat(server, tries=2)
        count = server.chat_count
    assert count == 1 + 3  # the first turn, then the reply and two retries
    assert updates[-1].text == first_try and updates[-1].restarts == 3
    assert store.turns(conversation)[-1]["content"] == first_try
    assert store.db["events"].count_where("kind = ?", ["asked_again"]) == 3


def test_no_retry_when_turned_off():
    again = "Oh, you bought some apples. What did you buy?"
    with FakeOpenAI(reply=scripted(again, "Were they sweet?")) as server:
        store, conversation, updates = chat(server, tries=0)
        count = server.chat_count
    assert count == 2 and updates[-1].text == again and updates[-1].restarts == 0
    assert store.db["events"].count_where("kind = ?", ["asked_again"]) == 0


# -- the real default model ----------------------------------------------------------------------------

def test_the_default_model_asked_again_gets_a_new_question():
    """The bundled model, greedy, told the same thing twice in a row, asks its own follow-up again; the reply
    path asks something new instead, and says which question it dropped."""
    backend = load_backend("default", Settings())
    options = GenerationOptions.greedy(max_tokens=60)
    try:
        system = {"role": "system", "content": "You are a friendly English tutor. Reply in one short sentence, "
                  "then ask the learner one question."}
        learner = {"role": "user", "content": "I have a new camera and I take photos every day."}
        first = reply_text(backend.stream([system, learner], options))
        messages = [system, learner, {"role": "assistant", "content": first}, learner]
        plain = reply_text(backend.stream(messages, options))
        again = repeated_question(plain, [first])
        assert again, f"precondition: the greedy reply no longer asks again: {first!r} then {plain!r}"
        dropped: list[str] = []
        chunks = list(fresh_stream(backend, messages, options, 3, lambda _t, q: dropped.append(q)))
    finally:
        backend.close()
    fresh = reply_text(iter(chunks))
    assert dropped[0] == again and chunks[0].text and any(c.restart for c in chunks)
    assert fresh and asked(fresh) and repeated_question(fresh, [first]) is None, (first, fresh, dropped)
