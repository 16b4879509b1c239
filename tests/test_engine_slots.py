"""A conversation keeps its llama-server slot, so dropping its oldest exchanges costs no re-evaluation."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from tutor.backends.llama_server import SlotTable


def _conversation(n: int, tag: str) -> list[dict]:
    messages = [{"role": "system", "content": "You are a friendly English tutor."}]
    for i in range(n):
        messages.append({"role": "user", "content": f"{tag} {i}: Last summer I visit my cousin in a small town "
                                                    "near the sea and we go swimming every morning."})
        messages.append({"role": "assistant", "content": f"Oh, you visited your cousin by the sea ({tag} {i})? "
                                                         "That sounds lovely. What did you do in the evenings?"})
    return messages


def test_a_continued_exchange_goes_back_to_its_slot_and_a_new_one_to_the_least_recent():
    table = SlotTable(3)
    first = [{"role": "system", "content": "s"}, {"role": "user", "content": "Hello, I am Ana."}]
    a = table.take(first)
    b = table.take([{"role": "system", "content": "s"}, {"role": "user", "content": "Hi, I am Bo."}])
    assert a != b and None not in (a, b)
    table.release(a, first, " Hi Ana! Where are you from? ")
    table.release(b, [{"role": "user", "content": "Hi, I am Bo."}], "Hello Bo!")
    # Ana's next turn, with the history trimmed to the last exchange: her own slot, though others are free.
    later = [{"role": "system", "content": "s"}, {"role": "user", "content": "Hello, I am Ana."},
             {"role": "assistant", "content": "Hi Ana! Where are you from?"}, {"role": "user", "content": "Spain."}]
    assert table.take(later) == a
    # A new learner gets the slot used longest ago that is free (never the busy one).
    c = table.take([{"role": "user", "content": "Good morning."}])
    assert c not in (a, None)
    assert table.take([{"role": "user", "content": "Anyone?"}]) not in (a, c)
    assert table.take([{"role": "user", "content": "Full?"}]) is None  # every slot busy: the server queues it


def test_a_failed_reply_forgets_the_slots_cache():
    table = SlotTable(2)
    msgs = [{"role": "user", "content": "I like tea."}]
    slot = table.take(msgs)
    table.release(slot, msgs, None)
    assert table.last[slot] is None and not table.busy[slot]


def _prompt_evals(backend, at_least: int, timeout: float = 30.0) -> list[int]:
    """The prompt-evaluation counts in the server's log, once it holds at least `at_least` of them. The server
    writes a request's timings after it has sent the last chunk, so a read right after the reply can miss
    them (one CI run did): wait for the line, with a bound."""
    deadline = time.monotonic() + timeout
    while True:
        log = backend.server.log_tail(1_000_000)
        counts = [int(n) for n in re.findall(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens", log)]
        if len(counts) >= at_least:
            return counts
        assert time.monotonic() < deadline, (f"{len(counts)} prompt evaluations logged after {timeout:.0f} s, "
                                             f"expected {at_least}; the log ends:\n{log[-1500:]}")
        time.sleep(0.05)


def test_trimmed_history_is_not_evaluated_again_while_another_learner_chats(settings):
    """The session layer drops the oldest exchanges once a conversation fills its context. The trimmed
    prompt then shares only the system prompt with its slot's cache: without a slot per conversation the
    server put it on another slot and evaluated all of it again; now only the new message is evaluated."""
    from tutor.backends import GenerationOptions
    from tutor.backends.llama_server import LlamaServerBackend
    from tutor.specs import parse_spec

    backend = LlamaServerBackend(parse_spec("gguf:default"), settings)
    options = GenerationOptions(temperature=0, max_tokens=12)
    try:
        def reply(messages: list[dict]) -> str:
            return "".join(c.text or "" for c in backend.stream(messages, options)).strip()

        ana = _conversation(8, "Ana")
        ana.append({"role": "user", "content": "Then I came home by train."})
        ana_reply = reply(ana)
        full = _prompt_evals(backend, 1)[-1]
        assert full > 300, f"the first prompt should be evaluated whole ({full} tokens)"

        # Another learner chats at the same time, on another slot.
        bo_done = threading.Event()

        def bo() -> None:
            reply(_conversation(2, "Bo") + [{"role": "user", "content": "My brother have a new camera."}])
            bo_done.set()

        thread = threading.Thread(target=bo)
        thread.start()
        thread.join(timeout=120)
        assert bo_done.is_set()

        # Ana's next turn, trimmed as build_messages does: the 4 oldest exchanges dropped.
        trimmed = [ana[0], *ana[1 + 8:], {"role": "assistant", "content": ana_reply},
                   {"role": "user", "content": "It was a long trip."}]
        assert reply(trimmed)
        count = backend.count_tokens(trimmed)
        evals = _prompt_evals(backend, 3)
        assert len(evals) == 3, evals  # Ana, Bo, then Ana again: one line per request
        again = evals[-1]
        assert again < count / 3, (f"the trimmed prompt ({count} tokens) was evaluated again: {again} tokens; its "
                                   "kept history should have come from the slot's cache")
    finally:
        backend.supervisor.close()


def test_a_new_conversation_prefers_a_free_slot_that_holds_its_system_prompt():
    table = SlotTable(2)
    tutor = {"role": "system", "content": "You are a friendly English tutor."}
    other = {"role": "system", "content": "You are a strict examiner."}
    s0 = table.take([other, {"role": "user", "content": "Hi."}])
    s1 = table.take([tutor, {"role": "user", "content": "Hello."}])
    table.release(s0, [other, {"role": "user", "content": "Hi."}], "Hello.")
    table.release(s1, [tutor, {"role": "user", "content": "Hello."}], "Hi there!")
    # The slot used longest ago is the examiner's, but the tutor's cache starts with this prompt.
    assert table.take([tutor, {"role": "user", "content": "Good evening."}]) == s1
    assert table.take([tutor, {"role": "user", "content": "And me?"}]) == s0  # busy: the other free slot
    wide = SlotTable(3)
    wide.release(wide.take([tutor, {"role": "user", "content": "Hello."}]), [tutor, {"role": "user", "content": "Hello."}],
                 "Hi!")
    assert wide.take([tutor, {"role": "user", "content": "Hi."}]) != 0  # an unused slot before another's cache


def test_the_step_size_is_configurable_and_checked(monkeypatch):
    import pytest

    from core.errors import BackendError
    from tutor.backends.llama_server import server_command
    from tutor.engine import EngineConfig

    monkeypatch.setenv("QUIMBOT_ENGINE_BATCH", "128")
    config = EngineConfig.from_env()
    argv = server_command(Path("llama-server"), Path("m.gguf"), (), config)(8080)
    assert argv[argv.index("-b") + 1] == "128" and argv[argv.index("-ub") + 1] == "128"
    assert "--cache-reuse" in argv
    assert argv[argv.index("-fa") + 1] == "off"  # as the in-process engine of the parity check
    monkeypatch.setenv("QUIMBOT_ENGINE_BATCH", "4")
    with pytest.raises(BackendError, match="QUIMBOT_ENGINE_BATCH=4"):
        EngineConfig.from_env()


def test_more_engine_flags_come_from_the_environment_and_cannot_take_over_the_app(monkeypatch):
    import pytest

    from core.errors import BackendError
    from tutor.backends.llama_server import server_command
    from tutor.engine import EngineConfig

    monkeypatch.setenv("QUIMBOT_ENGINE_ARGS", "-fa on --temp '0.5'")
    argv = server_command(Path("llama-server"), Path("m.gguf"), (), EngineConfig.from_env())(8080)
    assert argv[-4:] == ["-fa", "on", "--temp", "0.5"]  # last, so they override the app's own flags
    assert argv[-6:-4] == ["-fa", "off"]  # the app's own choice, which the later "-fa on" overrides
    monkeypatch.setenv("QUIMBOT_ENGINE_ARGS", "--port=9000")
    with pytest.raises(BackendError, match="--port, which the app sets itself"):
        EngineConfig.from_env()
    monkeypatch.setenv("QUIMBOT_ENGINE_ARGS", "-fa 'on")
    with pytest.raises(BackendError, match="cannot be split"):
        EngineConfig.from_env()
    monkeypatch.delenv("QUIMBOT_ENGINE_ARGS")
    assert EngineConfig.from_env().extra_args == ()
