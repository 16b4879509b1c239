"""The Ollama and OpenAI-compatible backends against local servers that speak the real wire
protocols (tests/fakes.py), and the openai backend against llama.cpp's real server.

Every error mode must end in a BackendError that tells the user what happened, after a
bounded number of requests, and through the chat service it must show up in the reply's
``error`` and in the SQLite log."""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import pytest
from conftest import serve_subprocess
from fakes import FakeOllama, FakeOpenAI, free_port, prompt_token_count, reply_for, reply_pieces
from sqlite_utils import Database

from core.errors import BackendError
from tutor.backends import BackendPool, Chunk, GenerationOptions, load_backend
from tutor.config import Settings
from tutor.session import ChatService
from tutor.store import Store

MESSAGES = [
    {"role": "system", "content": "You are a friendly English tutor."},
    {"role": "user", "content": "I goed to the park yesterday"},
]
OPTIONS = GenerationOptions(temperature=0.3, top_p=0.8, max_tokens=64, seed=7, stop=["\nLearner:"])
# Generous: only proves a call returns instead of hanging or retrying without end.
DOES_NOT_HANG_S = 30


@pytest.fixture
def ollama_server():
    with FakeOllama() as server:
        yield server


@pytest.fixture
def openai_server():
    with FakeOpenAI() as server:
        yield server


def ollama_spec(server: FakeOllama, model: str | None = None, timeout: float = 5) -> str:
    return f"ollama:{model or server.model}?host={server.url}&timeout={timeout}"


def openai_spec(server: FakeOpenAI, *, retries: int = 0, timeout: float = 5, model: str | None = None) -> str:
    return f"openai:{model or server.model}?base_url={server.base_url}&timeout={timeout}&retries={retries}"


def collect(spec: str, messages=MESSAGES, options: GenerationOptions = OPTIONS) -> list[Chunk]:
    backend = load_backend(spec, Settings())
    try:
        return list(backend.stream(messages, options))
    finally:
        backend.close()


def collect_until_error(spec: str, messages=MESSAGES, options: GenerationOptions = OPTIONS):
    """(text chunks received before the failure, the BackendError, seconds taken)."""
    backend = load_backend(spec, Settings())
    received: list[str] = []
    start = time.monotonic()
    try:
        with pytest.raises(BackendError) as info:
            for chunk in backend.stream(messages, options):
                if chunk.text:
                    received.append(chunk.text)
    finally:
        backend.close()
    return received, info.value, time.monotonic() - start


def check_stream(chunks: list[Chunk], messages=MESSAGES, finish: str = "stop", limit: int | None = None) -> None:
    pieces, _ = reply_pieces(messages, limit)
    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 3, f"the reply should arrive in several chunks, got {texts!r}"
    assert "".join(texts) == "".join(pieces)
    final = chunks[-1]
    assert final.finish_reason == finish
    assert final.prompt_tokens == prompt_token_count(messages)
    assert final.completion_tokens == len(pieces)


# -- Ollama ------------------------------------------------------------------------------------

def test_ollama_streams_the_reply_in_chunks_with_usage(ollama_server):
    chunks = collect(ollama_spec(ollama_server))
    check_stream(chunks)
    assert "".join(c.text for c in chunks) == reply_for(MESSAGES)
    assert ollama_server.chat_count == 1
    body = ollama_server.chat_bodies[0]
    assert body["model"] == ollama_server.model
    assert body["stream"] is True
    assert body["messages"] == MESSAGES
    assert body["options"] == {"temperature": 0.3, "top_p": 0.8, "num_predict": 64, "seed": 7,
                               "stop": ["\nLearner:"]}


def test_ollama_reply_cut_by_max_tokens_reports_length(ollama_server):
    chunks = collect(ollama_spec(ollama_server), options=GenerationOptions(max_tokens=3))
    check_stream(chunks, finish="length", limit=3)
    options = ollama_server.chat_bodies[0]["options"]
    assert options["num_predict"] == 3
    assert "seed" not in options and "stop" not in options  # unset options are not sent


def test_fake_ollama_speaks_the_protocol_the_official_client_expects(ollama_server):
    """The fake itself: non-streaming chat, /api/tags and /api/version through real clients."""
    import httpx
    import ollama

    client = ollama.Client(host=ollama_server.url, timeout=5)
    reply = client.chat(model=ollama_server.model, messages=MESSAGES, stream=False)
    assert reply.done and reply.message.content == reply_for(MESSAGES)
    assert reply.eval_count == len(reply_pieces(MESSAGES)[0]) and reply.total_duration > 0
    assert [m.model for m in client.list().models] == [ollama_server.model]
    assert httpx.get(f"{ollama_server.url}/api/version", timeout=5).json()["version"]
    client.close()


@pytest.mark.parametrize("mode, expected, partial", [
    ("server_error", ["500", "llama runner process has terminated"], 0),
    ("not_found", ["404", "not found", "ollama pull"], 0),
    ("malformed", ["broken answer"], 2),
    ("stream_error", ["unexpected EOF"], 2),
    ("drop", ["connection", "lost"], 2),
    ("truncated", ["before it finished"], 2),
    ("slow", ["did not answer in time", "timeout="], 0),
    ("stall", ["did not answer in time"], 2),
])
def test_ollama_failures_raise_a_clear_backend_error_after_one_request(ollama_server, mode, expected, partial):
    ollama_server.mode = mode
    received, error, took = collect_until_error(ollama_spec(ollama_server, timeout=0.5))
    message = str(error)
    for word in expected:
        assert word.lower() in message.lower(), message
    assert ollama_server.url in message
    assert "-1" not in message  # the client's "no status" marker must not leak to users
    assert received == reply_pieces(MESSAGES)[0][:partial]
    assert ollama_server.chat_count == 1  # the ollama client never retries
    assert took < DOES_NOT_HANG_S


def test_ollama_unknown_model_names_the_model_and_the_fix(ollama_server):
    _, error, _ = collect_until_error(ollama_spec(ollama_server, model="llama9:70b"))
    assert "model 'llama9:70b' not found" in str(error)
    assert "ollama pull llama9:70b" in str(error)


def test_ollama_server_down_cannot_reach(ollama_server):
    spec = f"ollama:{ollama_server.model}?host=http://127.0.0.1:{free_port()}&timeout=5"
    received, error, took = collect_until_error(spec)
    assert received == []
    assert str(error).startswith("Cannot reach Ollama at http://127.0.0.1:")
    assert "ollama serve" in str(error)
    assert took < DOES_NOT_HANG_S


# -- OpenAI-compatible -------------------------------------------------------------------------

def test_openai_streams_the_reply_in_chunks_with_usage(openai_server):
    chunks = collect(openai_spec(openai_server))
    check_stream(chunks)
    assert openai_server.chat_count == 1
    body = openai_server.chat_bodies[0]
    assert body["model"] == openai_server.model
    assert body["messages"] == MESSAGES
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"], body["stop"]) == (
        0.3, 0.8, 64, 7, ["\nLearner:"])


def test_openai_reply_cut_by_max_tokens_reports_length(openai_server):
    chunks = collect(openai_spec(openai_server), options=GenerationOptions(max_tokens=4))
    check_stream(chunks, finish="length", limit=4)
    body = openai_server.chat_bodies[0]
    assert body["max_tokens"] == 4
    assert "seed" not in body and "stop" not in body


def test_openai_key_comes_from_the_named_variable(openai_server, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test-key")
    monkeypatch.setenv("MY_TUTOR_KEY", "sk-mine")
    collect(f"openrouter:{openai_server.model}?base_url={openai_server.base_url}&retries=0")
    collect(openai_spec(openai_server) + "&api_key_env=MY_TUTOR_KEY")
    auth = [r.headers["authorization"] for r in openai_server.chat_requests]
    assert auth == ["Bearer sk-or-test-key", "Bearer sk-mine"]


@pytest.mark.parametrize("mode, retries, expected, requests, partial", [
    ("no_credits", 1, ["402", "credits", "Insufficient credits"], 1, 0),  # not worth retrying
    ("not_found", 1, ["404", "tutor-test", "does not exist"], 1, 0),
    ("rate_limited", 1, ["429", "wait"], 2, 0),
    ("server_error", 2, ["500"], 3, 0),
    ("malformed", 1, ["broken answer"], 1, 2),
    ("stream_error", 1, ["Provider returned error"], 1, 2),
    ("drop", 1, ["connection", "lost"], 1, 2),
    ("slow", 0, ["did not answer in time", "timeout="], 1, 0),
    ("stall", 0, ["did not answer in time"], 1, 2),
])
def test_openai_failures_raise_a_clear_backend_error_after_bounded_requests(
        openai_server, mode, retries, expected, requests, partial):
    openai_server.mode = mode
    received, error, took = collect_until_error(openai_spec(openai_server, retries=retries, timeout=0.5))
    message = str(error)
    for word in expected:
        assert word.lower() in message.lower(), message
    assert openai_server.base_url in message
    assert received == reply_pieces(MESSAGES)[0][:partial]
    assert openai_server.chat_count == requests
    assert took < DOES_NOT_HANG_S


def test_openai_slow_server_is_retried_only_as_often_as_asked(openai_server):
    openai_server.mode = "slow"
    _, error, _ = collect_until_error(openai_spec(openai_server, retries=1, timeout=0.3))
    assert "did not answer in time" in str(error)
    assert openai_server.chat_count == 2


def test_openai_retry_recovers_from_one_server_error(openai_server):
    openai_server.mode, openai_server.fail_first = "server_error", 1
    chunks = collect(openai_spec(openai_server, retries=1))
    check_stream(chunks)
    assert openai_server.chat_count == 2
    assert openai_server.chat_bodies[0] == openai_server.chat_bodies[1]


def test_openai_retries_are_clamped(openai_server):
    many = load_backend(openai_spec(openai_server, retries=1000), Settings())
    negative = load_backend(openai_spec(openai_server, retries=-3), Settings())
    default = load_backend(f"openai:x?base_url={openai_server.base_url}", Settings())
    assert (many.client.max_retries, negative.client.max_retries, default.client.max_retries) == (5, 0, 1)
    for backend in (many, negative, default):
        backend.close()


def test_openai_server_down_cannot_reach():
    spec = f"openai:tutor-test?base_url=http://127.0.0.1:{free_port()}/v1&timeout=5"  # default: 1 retry
    received, error, took = collect_until_error(spec)
    assert received == []
    assert str(error).startswith("Cannot reach http://127.0.0.1:")
    assert "is the server running" in str(error)
    assert took < DOES_NOT_HANG_S


# -- through the chat service and the SQLite log -----------------------------------------------

@pytest.fixture
def chat():
    store = Store(Database(memory=True))
    pool = BackendPool(Settings())
    yield ChatService(store, pool), store
    pool.close()


def run_send(service: ChatService, text: str, spec: str, **kw):
    """All updates, as snapshots: the service may yield the same object again, changed."""
    updates = [dataclasses.replace(u, stats=dict(u.stats)) for u in service.send(text, model_spec=spec, **kw)]
    assert updates and updates[-1].done
    return updates


def test_chat_service_streams_from_ollama_and_sends_the_history(chat, ollama_server):
    service, store = chat
    spec = ollama_spec(ollama_server)
    first = run_send(service, "I goed to the park", spec)
    last = first[-1]
    assert last.error is None
    sent = ollama_server.chat_bodies[0]["messages"]
    assert sent[0]["role"] == "system" and sent[-1] == {"role": "user", "content": "I goed to the park"}
    assert last.text == reply_for(sent)
    assert len([u for u in first if not u.done]) >= 3  # intermediate updates while streaming
    assert last.stats["completion_tokens"] == len(reply_pieces(sent)[0])
    assert last.stats["prompt_tokens"] == prompt_token_count(sent)
    assert last.stats["finish_reason"] == "stop"

    second = run_send(service, "And I eated an ice cream", spec, conversation_id=last.conversation_id)
    assert second[-1].error is None
    sent2 = ollama_server.chat_bodies[1]["messages"]
    assert sent2[1:] == [{"role": "user", "content": "I goed to the park"},
                         {"role": "assistant", "content": last.text},
                         {"role": "user", "content": "And I eated an ice cream"}]
    turns = store.turns(last.conversation_id)
    assert [(t["role"], t["status"]) for t in turns] == [("user", "ok"), ("assistant", "ok")] * 2
    assert turns[1]["content"] == last.text and turns[1]["completion_tokens"] == last.stats["completion_tokens"]
    assert turns[1]["checkpoint"] == f"{ollama_server.model}@{ollama_server.url}"


@pytest.mark.parametrize("engine, mode, expected, partial", [
    ("ollama", "server_error", "answered 500", 0),
    ("ollama", "drop", "lost", 2),
    ("openai", "no_credits", "402", 0),
    ("openai", "stream_error", "Provider returned error", 2),
    ("openai", "down", "Cannot reach", 0),
])
def test_chat_service_reports_and_logs_backend_errors(chat, engine, mode, expected, partial):
    service, store = chat
    server = FakeOllama() if engine == "ollama" else FakeOpenAI()
    with server:
        if mode == "down":
            spec = f"openai:tutor-test?base_url=http://127.0.0.1:{free_port()}/v1&retries=0"
        else:
            server.mode = mode
            spec = ollama_spec(server) if engine == "ollama" else openai_spec(server)
        updates = run_send(service, "I goed to the park", spec)
        last = updates[-1]
        assert last.error and expected in last.error
        assert server.chat_count == (0 if mode == "down" else 1)
    turns = store.turns(last.conversation_id)
    assert [(t["role"], t["status"]) for t in turns] == [("user", "ok"), ("assistant", "error")]
    assert turns[0]["content"] == "I goed to the park"
    assert turns[1]["error"] == last.error
    assert turns[1]["content"] == "".join(reply_pieces(
        [{"role": "user", "content": "I goed to the park"}])[0][:partial])
    assert turns[1]["completed_at"]
    # A failed exchange is not sent as history next time.
    assert service.history(last.conversation_id) == []


# -- the real llama.cpp OpenAI-compatible server -----------------------------------------------

@pytest.fixture(scope="module")
def llama_cpp_server(tmp_path_factory):
    from tutor.models import default_gguf_path

    port = free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf_path()),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    with serve_subprocess(cmd, f"http://127.0.0.1:{port}/v1/models", log_path,
                          {**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.mark.slow
def test_openai_backend_streams_from_the_real_llama_cpp_server(llama_cpp_server):
    backend = load_backend(f"openai:smollm2?base_url={llama_cpp_server}", Settings())
    try:
        chunks = list(backend.stream(
            [{"role": "system", "content": "You are a friendly English tutor."},
             {"role": "user", "content": "Hello! How are you today?"}],
            GenerationOptions(temperature=0.0, max_tokens=24, seed=1, stop=["\nUser:"]),
        ))
    finally:
        backend.close()
    texts = [c.text for c in chunks if c.text]
    assert texts and "".join(texts).strip(), "the real server should stream a non-empty reply"
    assert len(texts) > 1
    assert chunks[-1].finish_reason in ("stop", "length")


def test_a_key_goes_only_to_listed_hosts_and_only_from_key_variables(settings, monkeypatch):
    """On the command line too (the UI refuses such specs earlier): a server variable like HOME is
    never a bearer token, and a typed server that is not in the model list gets no key. Nothing is sent."""
    from core.errors import ModelSpecError
    from tutor.backends import load_backend

    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    with pytest.raises(ModelSpecError, match="not a key variable|meant for a key"):
        load_backend("openai:m?base_url=http://127.0.0.1:9/v1&api_key_env=HOME", settings)
    typed = load_backend("openai:m?base_url=http://tutor.example/v1", settings)
    assert typed.client.api_key == "not-needed"
    settings.extra_models = ["openai:m?base_url=http://tutor.example/v1"]
    listed = load_backend("openai:m?base_url=http://tutor.example/v1", settings)
    assert listed.client.api_key == "sk-secret"
