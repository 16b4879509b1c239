"""The tutor never writes a learner's misspelling back (tutor.spelling): the rule on real misspellings with
the real dictionaries (symspellpy, wordfreq), the streamed check, the chat service against the fake
OpenAI-compatible server (the real wire protocol, a reply chosen per request), and eval compare's report
of the model alone and the replies as shown."""

from __future__ import annotations

import json

import pytest
from fakes import FakeOpenAI
from sqlite_utils import Database

from core.errors import InputError
from tutor.backends import BackendPool, Chunk
from tutor.config import Settings
from tutor.session import ChatService
from tutor.spelling import correction, enabled, fix_copied, spelled_stream
from tutor.store import Store


def test_common_learner_misspellings_get_the_word_meant():
    for wrong, right in [("becouse", "because"), ("enviroment", "environment"), ("freinds", "friends"),
                         ("poeple", "people"), ("tommorow", "tomorrow"), ("concetrate", "concentrate"),
                         ("successfull", "successful")]:
        assert correction(wrong) == right, wrong


def test_no_guess_when_the_word_is_english_ambiguous_or_a_change_of_form():
    for word in ["because", "etc", "paris", "tiktok"]:  # English, or no near word
        assert correction(word) is None, word
    assert correction("realy") is None   # really, real, ready, reply: no clear winner
    assert correction("nocive") is None  # a false friend ("harmful"), not a typo of notice or novice
    assert correction("unmeaningful") is None  # "meaningful" would say the opposite
    assert correction("familys") is None  # "family" loses the plural: a grammar error, not spelling
    assert correction("ther") is None     # too short to guess: the, there, their, her
    # rare English words, and grammar errors whose fix is no spelling, found wrongly by an earlier rule
    assert correction("ceviche") is None    # not "device": two edits that are not doubled letters
    assert correction("treehouse") is None  # not "greenhouse"
    assert correction("teached") is None    # "taught", not "reached": teach + ed, a grammar error
    assert correction("choosed") is None    # not "chooses"


def test_on_our_own_typos_most_are_fixed_and_almost_none_made_wrong():
    """The thresholds' measure: ``learner_noise.typo`` of 600 words of wordfreq's ranks 2,000-20,000 (seeded),
    and 1,500 rare valid words of ranks 40,000-80,000 that must stay as they are. Chosen on this and on the
    212 prompts (where an earlier rule changed 3 valid words), never on JFLEG."""
    import random

    from wordfreq import top_n_list

    from train.data.learner_noise import typo

    rng = random.Random(1)
    words = [w for w in top_n_list("en", 20000)[2000:] if w.isalpha() and len(w) >= 5]
    rng.shuffle(words)
    pairs = [(w, typo(w, rng)) for w in words[:600]]
    pairs = [(w, t) for w, t in pairs if t != w]
    got = [correction(t) for _, t in pairs]
    fixed = sum(g == w for g, (w, _) in zip(got, pairs))
    wrong = sum(g is not None and g != w for g, (w, _) in zip(got, pairs))
    # with the pinned packages: 553 typos, 349 fixed, 12 made wrong (the README's and tutor/spelling.py's figures)
    assert len(pairs) > 500 and fixed >= 0.6 * len(pairs) and wrong <= 0.04 * (fixed + wrong), (len(pairs), fixed, wrong)
    # rare valid words (mostly names) that no dictionary here lists: 4 of these 1,500 changed (wyman -> woman)
    rare = [w for w in top_n_list("en", 80000)[40000:] if w.isalpha() and w.isascii() and len(w) >= 5][:1500]
    changed = [w for w in rare if correction(w) is not None]
    assert len(changed) <= 0.01 * len(rare), changed


def test_only_what_the_reply_copied_from_the_learner_is_changed():
    learner = "My freinds and I want to protect the enviroment becouse it is importent"
    reply = "Oh, so you and your freinds want to protect the enviroment? What do you do, Marek?"
    shown, fixes = fix_copied(learner, reply)
    assert shown == "Oh, so you and your friends want to protect the environment? What do you do, Marek?"
    assert [(f.wrong, f.right) for f in fixes] == [("freinds", "friends"), ("enviroment", "environment")]
    # a misspelling the learner did not write is the model's own: left for the metrics to see
    assert fix_copied("I like it", "I like the enviroment")[1] == []
    # a capitalised word inside the learner's sentence is taken for a name
    assert fix_copied("I met Freinds yesterday", "Oh, you met Freinds yesterday?")[1] == []
    assert fix_copied("Becouse it rains", "Becouse it rains? Oh no!")[0] == "Because it rains? Oh no!"


def stream(*pieces: str, learner: str, on: bool = True, fixes: list | None = None) -> list[Chunk]:
    chunks = [Chunk(text=p) for p in pieces] + [Chunk(completion_tokens=9, finish_reason="stop")]
    return list(spelled_stream(iter(chunks), learner, on_fix=None if fixes is None else fixes.append, on=on))


def test_the_stream_holds_a_word_back_until_it_ends():
    fixes: list = []
    chunks = stream("So your fre", "inds come tom", "morow", "? Great!", learner="My freinds come tommorow",
                    fixes=fixes)
    assert [c.text for c in chunks] == ["So your ", "friends come ", "", "tomorrow? Great!", ""]
    assert chunks[-1].completion_tokens == 9 and chunks[-1].finish_reason == "stop"
    assert [f.right for f in fixes] == ["friends", "tomorrow"]
    # only an unfinished word that may still become the learner's misspelling waits: the rest streams as it comes
    assert [c.text for c in stream("So you", "r fr", "iends co", "me", learner="My freinds come")] == \
        ["So you", "r ", "friends co", "me", ""]
    assert [c.text for c in stream("So yo", "u", learner="My friends come")] == ["So yo", "u", ""]
    # the last word is released by the end of the reply, even without a final chunk
    tail = list(spelled_stream(iter([Chunk(text="About the enviroment")]), "the enviroment", on=True))
    assert "".join(c.text for c in tail) == "About the environment"


def test_a_restart_drops_the_held_text_and_off_changes_nothing():
    chunks = list(spelled_stream(iter([Chunk(text="Your freinds"), Chunk(restart=True), Chunk(text="Nice!")]),
                                 "my freinds", on=True))
    assert [(c.text, c.restart) for c in chunks] == [("Your ", False), ("", True), ("Nice!", False)]
    assert [c.text for c in stream("Your freinds", learner="my freinds", on=False)] == ["Your freinds", ""]


def test_the_switch_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("QUIMBOT_SPELLING", raising=False)
    assert enabled()
    monkeypatch.setenv("QUIMBOT_SPELLING", "0")
    assert not enabled()
    monkeypatch.setenv("QUIMBOT_SPELLING", "yes")
    with pytest.raises(InputError, match="QUIMBOT_SPELLING='yes'"):
        enabled()


# -- through the chat service, against the OpenAI wire protocol ---------------------------------------

COPIED = "Oh, your freinds are coming tommorow? What will you cook for them?"


def send(server: FakeOpenAI, spelling: bool):
    store = Store(Database(memory=True))
    pool = BackendPool(Settings())
    service = ChatService(store, pool, fresh_tries=0, spelling=spelling)
    spec = f"openai:{server.model}?base_url={server.base_url}&timeout=5&retries=0"
    updates = list(service.send("My freinds is coming tommorow", model_spec=spec))
    pool.close()
    return store, updates


def test_the_learner_sees_and_the_log_keeps_the_corrected_reply_and_the_models_words():
    with FakeOpenAI(reply=lambda _messages: COPIED) as server:
        store, updates = send(server, spelling=True)
    last = updates[-1]
    want = "Oh, your friends are coming tomorrow? What will you cook for them?"
    assert last.error is None and last.text == want
    assert all("freinds" not in u.text and "tommorow" not in u.text for u in updates)  # never shown
    turns = store.turns(last.conversation_id)
    assert [(t["role"], t["status"]) for t in turns] == [("user", "ok"), ("assistant", "ok")]
    assert turns[0]["content"] == "My freinds is coming tommorow" and turns[1]["content"] == want
    events = [json.loads(e["detail"]) for e in store.db["events"].rows_where("kind = ?", ["spelling_fixed"])]
    assert events == [{"turn_id": turns[1]["id"], "model_wrote": "freinds", "shown": "friends"},
                      {"turn_id": turns[1]["id"], "model_wrote": "tommorow", "shown": "tomorrow"}]


def test_a_check_that_cannot_run_costs_the_learner_nothing(monkeypatch):
    import tutor.spelling

    def broken(_word):
        raise RuntimeError("symspellpy's dictionary is missing: /nowhere")

    monkeypatch.setattr(tutor.spelling, "correction", broken)
    with FakeOpenAI(reply=lambda _messages: COPIED) as server:
        store, updates = send(server, spelling=True)
    assert updates[-1].error is None and updates[-1].text == COPIED
    assert store.turns(updates[-1].conversation_id)[1]["status"] == "ok"
    events = list(store.db["events"].rows_where("kind = ?", ["spelling_check_failed"]))
    assert len(events) == 1 and "dictionary is missing" in events[0]["detail"]


def test_turned_off_the_model_reply_is_shown_as_it_is():
    with FakeOpenAI(reply=lambda _messages: COPIED) as server:
        store, updates = send(server, spelling=False)
    assert updates[-1].text == COPIED
    assert store.db["events"].count_where("kind = ?", ["spelling_fixed"]) == 0


# -- eval compare: the model alone and the replies as shown -----------------------------------------------

def test_compare_scores_the_replies_as_shown_and_keeps_the_model_alone(tmp_path):
    from train.evaluate.compare import compare

    prompts = [{"id": "s1", "learner": "My freinds come tommorow", "context": [], "error_type": "spelling",
                "corrections": ["friends come tomorrow"], "level": "intermediate"}]
    reply = "Oh, your freinds come tommorow? What will you cook?"
    with FakeOpenAI(reply=lambda _messages: reply) as server:
        spec = f"openai:{server.model}?base_url={server.base_url}&timeout=5&retries=0"
        report = compare([spec], prompts, tmp_path, progress=False)
        off = compare([spec], prompts, tmp_path / "off", progress=False, spelling=False)
    model = report["models"][0]
    assert model["replies"] == ["Oh, your friends come tomorrow? What will you cook?"]
    assert model["spelling"]["model_replies"] == [reply] and model["spelling"]["replies_fixed"] == 1
    assert model["metrics"]["takes_up_error"] == 1.0
    assert model["spelling"]["metrics_model_alone"]["takes_up_error"] == 0.0
    assert "misspellings copied by a reply, corrected" in (tmp_path / "report.md").read_text()
    assert off["models"][0]["replies"] == [reply] and off["models"][0]["metrics"]["takes_up_error"] == 0.0
