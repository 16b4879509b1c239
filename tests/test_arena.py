"""The blind arena: rounds on the real default model, votes stored, win rates with intervals."""

import random

import pytest

from core.errors import InputError, NotFoundError
from tutor.arena import Arena, wilson
from tutor.backends import GenerationOptions
from tutor.session import ChatService

pytestmark = pytest.mark.slow
A, B = "default", "gguf:default?n_ctx=1024"  # the same weights under two specs: enough to test the arena


def test_round_vote_and_tally(store, shared_pool):
    arena = Arena(ChatService(store, shared_pool), rng=random.Random(1))
    options = GenerationOptions(temperature=0, max_tokens=12)
    first = arena.ask("Yesterday I go to the store", A, B, "beginner", tester="ana", options=options)
    assert first["first"].strip() and first["second"].strip()
    convs = store.list_conversations()
    assert len(convs) == 2 and {c["client"] for c in convs} == {"arena"}  # both replies are logged turns
    revealed = arena.vote(first["id"], "first", "ana")
    assert {revealed["first"], revealed["second"]} == {A, B}
    with pytest.raises(InputError, match="already has a vote"):
        arena.vote(first["id"], "second", "ana")
    with pytest.raises(InputError, match="one of first, second, tie, both_bad"):
        arena.vote(first["id"], "maybe", "ana")
    with pytest.raises(NotFoundError):
        arena.vote(999, "tie", "ana")
    with pytest.raises(InputError, match="two different models"):
        arena.ask("hello", A, A)
    winner = revealed["first"]
    for vote in ("tie", "both_bad"):
        r = arena.ask("I has a cat", A, B, options=options)
        arena.vote(r["id"], vote, "ben")
    table = {t["model"]: t for t in arena.table()}
    assert table[winner]["wins"] == 1 and table[winner]["ties"] == 1 and table[winner]["both_bad"] == 1
    loser = B if winner == A else A
    assert table[loser]["losses"] == 1 and table[loser]["rounds"] == 3
    assert table[winner]["win_rate"] == 0.75 and table[loser]["win_rate"] == 0.25
    assert 0 <= table[winner]["ci_low"] < 0.75 < table[winner]["ci_high"] <= 1


def test_wilson_interval():
    low, high = wilson(50, 100)
    assert round(low, 3) == 0.404 and round(high, 3) == 0.596
    assert wilson(0, 0) == (0.0, 1.0)
    assert wilson(10, 10)[1] == 1.0 and wilson(10, 10)[0] > 0.69
