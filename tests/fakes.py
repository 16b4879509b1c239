"""Small local servers that speak the real wire protocols of Ollama and of OpenAI-compatible
chat servers, for testing the remote backends without a network or a model.

Each server runs a ``ThreadingHTTPServer`` on 127.0.0.1 and a free port in a background
thread, speaks HTTP/1.1 with chunked streaming bodies (as Ollama's Go server and uvicorn do),
records every request it receives, and can be told to fail in one of several ways::

    with FakeOllama() as server:                       # or FakeOllama(mode="drop")
        backend = load_backend(f"ollama:{server.model}?host={server.url}", Settings())
        ...
        server.chat_bodies[-1]["options"]["num_predict"]

The reply is derived from the request (``reply_for(messages)``), so a test can check that
the messages really arrived; it is streamed one word per chunk, and cut short, with
``done_reason``/``finish_reason`` "length", when the request's token limit is smaller.

Error modes (``mode=``, changeable at any time; ``fail_first=N`` applies it to the first N
chat requests only, later ones succeed):

    ok            a normal streamed reply
    not_found     HTTP 404 for the model (also what an unknown model name gets)
    server_error  HTTP 500
    no_credits    HTTP 402, OpenRouter style (OpenAI-compatible server only)
    rate_limited  HTTP 429 with Retry-After: 1 (OpenAI-compatible server only)
    malformed     a line / SSE event that is not JSON, after two good chunks
    stream_error  an in-band error object after two good chunks (HTTP status stays 200)
    drop          the connection is closed after two good chunks, mid-body
    truncated     the body ends cleanly after two chunks, without the final done / [DONE]
    slow          nothing at all is sent for ``delay`` seconds (the client should time out)
    stall         two good chunks, then nothing for ``delay`` seconds

Options for load and concurrency tests: ``latency=SECONDS`` holds every chat request that long
before answering (each request has its own handler thread, so concurrent requests overlap, as on a
real batching server); ``reply=fn`` replaces ``reply_for`` (fn(messages) -> text);
``retry_after="2"`` (or None for no header) is what a 429 carries. ``in_flight`` / ``max_in_flight``
count chat requests being handled right now / at most at once.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = {"ok", "not_found", "server_error", "no_credits", "rate_limited", "malformed",
         "stream_error", "drop", "truncated", "slow", "stall"}
GOOD_CHUNKS_BEFORE_FAILURE = 2


def free_port() -> int:
    """A port nothing listens on right now (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def last_user_content(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # OpenAI content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content or ""
    return ""


def reply_for(messages: list[dict[str, Any]]) -> str:
    """The full reply the fakes give to ``messages``."""
    return f"Oh, you said: {last_user_content(messages)}? Tell me more."


def tutor_like_reply(messages: list[dict[str, Any]]) -> str:
    """A reply fn for ``reply=``: answers a ``quimbot data generate`` prompt the way a tutor model
    might (the correct form in a short reply, then a question), derived only from the prompt, so
    the same prompt always gets the same reply. Some pass the generation quality filter, some not."""
    prompt = last_user_content(messages)
    said = re.search(r'The learner said: "(.*)"', prompt)
    right = re.search(r'should be "(.*)"\.', prompt)
    topic = (said.group(1).split()[-1].strip(".,!?") if said and said.group(1).split() else "that")
    if right and len(prompt) % 5 == 0:  # now and then the red pen a real model also produces
        return f"The correct form is \"{right.group(1)}\", not what you wrote. Try again?"
    if right:
        return f"Oh, {right.group(1)}, nice! What did you like most about the {topic}?"
    return f"That sounds great. What else can you tell me about the {topic}?"


def reply_pieces(messages: list[dict[str, Any]], limit: int | None = None) -> tuple[list[str], str]:
    """The streamed pieces (one word each, with its leading space) and the finish reason."""
    pieces = re.findall(r"\s*\S+", reply_for(messages))
    if limit is not None and 0 <= limit < len(pieces):
        return pieces[:limit], "length"
    return pieces, "stop"


def prompt_token_count(messages: list[dict[str, Any]]) -> int:
    """The prompt 'token' count the fakes report: words in all messages plus 4 per message."""
    return sum(len(str(m.get("content") or "").split()) + 4 for m in messages or [])


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None  # parsed JSON, or the raw text when it was not JSON
    received_at: float = field(default_factory=time.monotonic)
    answered_at: float | None = None  # when the handler finished (monotonic)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeServer/1.0"
    fake: "_FakeServer"

    # quiet: no access log, no tracebacks when a client hangs up
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self.fake._handle(self, "GET")

    def do_POST(self) -> None:
        self.fake._handle(self, "POST")

    # -- helpers used by the fakes -------------------------------------------------------
    def read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def write_chunk(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode()
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def drop(self) -> None:
        """Close the connection abruptly, in the middle of a chunked body."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never wait for a stalled handler when stopping

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-stream are expected here


class _FakeServer:
    chat_path = ""
    port_wanted = 0  # 0: any free port

    def __init__(self, mode: str = "ok", *, models: tuple[str, ...] | list[str] = ("smollm2:135m",),
                 fail_first: int | None = None, delay: float = 10.0, latency: float = 0.0,
                 reply: Callable[[list[dict[str, Any]]], str] | None = None, retry_after: str | None = "1"):
        self.mode = mode
        self.models = list(models)
        self.fail_first = fail_first
        self.delay = delay
        self.latency = latency
        self.reply = reply
        self.retry_after = retry_after
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> "_FakeServer":
        handler = type(f"{type(self).__name__}Handler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", self.port_wanted), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # wake stalled handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model(self) -> str:
        return self.models[0]

    # -- what was received ---------------------------------------------------------------
    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path == self.chat_path]

    @property
    def chat_bodies(self) -> list[Any]:
        return [r.body for r in self.chat_requests]

    @property
    def chat_count(self) -> int:
        return len(self.chat_requests)

    # -- request handling ----------------------------------------------------------------
    def _record(self, handler: _Handler, method: str) -> tuple[RecordedRequest, int]:
        body = handler.read_body() if method == "POST" else None
        path = handler.path.split("?", 1)[0]
        request = RecordedRequest(method, path, {k.lower(): v for k, v in handler.headers.items()}, body)
        with self._lock:
            self.requests.append(request)
            n_chat = sum(1 for r in self.requests if r.method == "POST" and r.path == self.chat_path)
        return request, n_chat

    def _mode_for(self, n_chat: int) -> str:
        mode = self.mode
        if mode not in MODES:
            raise ValueError(f"unknown fake server mode {mode!r}")
        if self.fail_first is not None and n_chat > self.fail_first:
            return "ok"
        return mode

    def _wait(self) -> None:
        self._release.wait(self.delay)

    def _handle(self, handler: _Handler, method: str) -> None:
        request, n_chat = self._record(handler, method)
        is_chat = method == "POST" and request.path == self.chat_path
        if is_chat:
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if is_chat and self.latency > 0:
                self._release.wait(self.latency)
            self.route(handler, request, n_chat)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
        finally:
            request.answered_at = time.monotonic()
            if is_chat:
                with self._lock:
                    self.in_flight -= 1

    def pieces(self, messages: list[dict[str, Any]], limit: int | None) -> tuple[list[str], str]:
        """``reply_pieces``, or the pieces of ``self.reply(messages)`` when a reply function is set."""
        if self.reply is None:
            return reply_pieces(messages, limit)
        pieces = re.findall(r"\s*\S+", self.reply(messages))
        if limit is not None and 0 <= limit < len(pieces):
            return pieces[:limit], "length"
        return pieces, "stop"

    def route(self, handler: _Handler, request: RecordedRequest, n_chat: int) -> None:
        raise NotImplementedError


def _now_ollama() -> str:
    stamp = datetime.now(timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond:06d}123Z"


class FakeOllama(_FakeServer):
    """Speaks Ollama's REST API: POST /api/chat (NDJSON stream or one JSON object),
    GET /api/tags, GET /api/version."""

    chat_path = "/api/chat"
    version = "0.12.6"

    def route(self, handler: _Handler, request: RecordedRequest, n_chat: int) -> None:
        if request.method == "GET" and request.path == "/api/version":
            handler.send_json(200, {"version": self.version})
        elif request.method == "GET" and request.path == "/api/tags":
            handler.send_json(200, {"models": [self._tag(name) for name in self.models]})
        elif request.method == "POST" and request.path == "/api/chat":
            self._chat(handler, request.body, self._mode_for(n_chat))
        elif request.method == "GET" and request.path == "/":
            handler.send_response(200)
            handler.send_header("Content-Type", "text/plain; charset=utf-8")
            handler.send_header("Content-Length", "17")
            handler.end_headers()
            handler.wfile.write(b"Ollama is running")
        else:
            handler.send_response(404)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", "18")
            handler.end_headers()
            handler.wfile.write(b"404 page not found")

    @staticmethod
    def _tag(name: str) -> dict[str, Any]:
        return {
            "name": name, "model": name, "modified_at": "2025-01-01T00:00:00.000000000Z",
            "size": 91_739_413, "digest": uuid.uuid5(uuid.NAMESPACE_URL, name).hex * 2,
            "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                        "parameter_size": "134.52M", "quantization_level": "Q4_1"},
        }

    def _chat(self, handler: _Handler, body: Any, mode: str) -> None:
        if not isinstance(body, dict):
            handler.send_json(400, {"error": "invalid request body"})
            return
        model = body.get("model", "")
        if mode == "not_found" or model not in self.models:
            handler.send_json(404, {"error": f"model '{model}' not found"})
            return
        if mode == "server_error":
            handler.send_json(500, {"error": "llama runner process has terminated: exit status 2"})
            return
        if mode == "slow":
            self._wait()
        messages = body.get("messages") or []
        options = body.get("options") or {}
        limit = options.get("num_predict")
        pieces, reason = self.pieces(messages, limit if isinstance(limit, int) and limit >= 0 else None)
        final = {
            "model": model, "created_at": _now_ollama(),
            "message": {"role": "assistant", "content": "" if body.get("stream", True) else "".join(pieces)},
            "done_reason": reason, "done": True,
            "total_duration": 912_345_678, "load_duration": 12_345_678,
            "prompt_eval_count": prompt_token_count(messages), "prompt_eval_duration": 100_000_000,
            "eval_count": len(pieces), "eval_duration": 800_000_000,
        }
        if not body.get("stream", True):
            handler.send_json(200, final)
            return
        handler.start_stream("application/x-ndjson")
        for i, piece in enumerate(pieces):
            if i == GOOD_CHUNKS_BEFORE_FAILURE and mode != "ok":
                if mode == "malformed":
                    handler.write_chunk('{"model": "' + model + '", "message": {"role": "assistant", "cont\n')
                elif mode == "stream_error":
                    handler.write_chunk(json.dumps({"error": "an error was encountered while running the "
                                                             "model: unexpected EOF"}) + "\n")
                    handler.end_stream()
                    return
                elif mode == "drop":
                    handler.drop()
                    return
                elif mode == "truncated":
                    handler.end_stream()
                    return
                elif mode == "stall":
                    self._wait()
                    handler.drop()
                    return
            line = {"model": model, "created_at": _now_ollama(),
                    "message": {"role": "assistant", "content": piece}, "done": False}
            handler.write_chunk(json.dumps(line) + "\n")
        handler.write_chunk(json.dumps(final) + "\n")
        handler.end_stream()


class FakeOpenAI(_FakeServer):
    """Speaks the OpenAI chat API: POST /v1/chat/completions (SSE stream or one JSON object),
    GET /v1/models. ``base_url`` is what a client is given."""

    chat_path = "/v1/chat/completions"

    def __init__(self, mode: str = "ok", *, models: tuple[str, ...] | list[str] = ("tutor-test",), **kw: Any):
        super().__init__(mode, models=models, **kw)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def route(self, handler: _Handler, request: RecordedRequest, n_chat: int) -> None:
        if request.method == "GET" and request.path == "/v1/models":
            handler.send_json(200, {"object": "list", "data": [
                {"id": name, "object": "model", "created": 1_735_689_600, "owned_by": "fake"}
                for name in self.models]})
        elif request.method == "POST" and request.path == self.chat_path:
            self._chat(handler, request.body, self._mode_for(n_chat))
        else:
            handler.send_json(404, {"error": {"message": f"Unknown request URL: {request.method} {request.path}",
                                              "type": "invalid_request_error", "param": None, "code": None}})

    def _chat(self, handler: _Handler, body: Any, mode: str) -> None:
        if not isinstance(body, dict):
            handler.send_json(400, {"error": {"message": "We could not parse the JSON body of your request.",
                                              "type": "invalid_request_error", "param": None, "code": None}})
            return
        model = body.get("model", "")
        if mode == "not_found" or model not in self.models:
            handler.send_json(404, {"error": {
                "message": f"The model `{model}` does not exist or you do not have access to it.",
                "type": "invalid_request_error", "param": None, "code": "model_not_found"}})
            return
        if mode == "no_credits":  # OpenRouter's shape
            handler.send_json(402, {"error": {
                "message": "Insufficient credits. Add more using https://openrouter.ai/settings/credits",
                "code": 402}})
            return
        if mode == "rate_limited":
            handler.send_json(429, {"error": {"message": "Rate limit exceeded: free-models-per-min.",
                                              "code": 429}},
                            headers={"Retry-After": self.retry_after} if self.retry_after is not None else None)
            return
        if mode == "server_error":
            handler.send_json(500, {"error": {"message": "The server had an error while processing your "
                                                         "request.", "type": "server_error", "param": None,
                                              "code": None}})
            return
        if mode == "slow":
            self._wait()
        messages = body.get("messages") or []
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        pieces, reason = self.pieces(messages, limit if isinstance(limit, int) else None)
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        usage = {"prompt_tokens": prompt_token_count(messages), "completion_tokens": len(pieces),
                 "total_tokens": prompt_token_count(messages) + len(pieces)}
        if not body.get("stream"):
            handler.send_json(200, {
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                             "logprobs": None, "finish_reason": reason}],
                "usage": usage, "system_fingerprint": "fp_fake"})
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def event(delta: dict[str, Any], finish: str | None = None) -> str:
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                     "system_fingerprint": "fp_fake",
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                chunk["usage"] = None
            return f"data: {json.dumps(chunk)}\n\n"

        handler.start_stream("text/event-stream; charset=utf-8",
                             {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        handler.write_chunk(": OPENROUTER PROCESSING\n\n")  # SSE comment, as OpenRouter sends
        handler.write_chunk(event({"role": "assistant", "content": ""}))
        for i, piece in enumerate(pieces):
            if i == GOOD_CHUNKS_BEFORE_FAILURE and mode != "ok":
                if mode == "malformed":
                    handler.write_chunk('data: {"id": "' + ident + '", "choices": [{"delta": {"cont\n\n')
                elif mode == "stream_error":  # OpenRouter: an error event after the 200 status
                    handler.write_chunk("data: " + json.dumps({
                        "id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                        "error": {"code": 502, "message": "Provider returned error"},
                        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
                    }) + "\n\n")
                    handler.write_chunk("data: [DONE]\n\n")
                    handler.end_stream()
                    return
                elif mode == "drop":
                    handler.drop()
                    return
                elif mode == "truncated":
                    handler.end_stream()
                    return
                elif mode == "stall":
                    self._wait()
                    handler.drop()
                    return
            handler.write_chunk(event({"content": piece}))
        handler.write_chunk(event({}, reason))
        if include_usage:
            handler.write_chunk("data: " + json.dumps({
                "id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_fake", "choices": [], "usage": usage}) + "\n\n")
        handler.write_chunk("data: [DONE]\n\n")
        handler.end_stream()


# ------------------------------------------------------------------ as a process of its own
def _serve_forever(server: _FakeServer) -> None:
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    with server:
        print(f"fake server listening on {server.url}", flush=True)
        stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Run a fake server in its own process (so it does not share the client's interpreter):

        python tests/fakes.py openai --port 8000 [--latency 0.3] [--reply tutor] [--model NAME ...]
        python tests/fakes.py vllm serve BASE --enable-lora --lora-modules NAME=PATH ... --port 8000 [...]

    The ``vllm`` form takes vLLM's own command line (what ``vllm serve`` would be given), refuses LoRA
    modules without ``--enable-lora`` as vLLM does, and lists the base (or ``--served-model-name``) and
    every LoRA module as models; other vLLM options are accepted and ignored."""
    import argparse
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["vllm", "serve"]:
        p = argparse.ArgumentParser(prog="fake vllm serve")
        p.add_argument("model")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--enable-lora", action="store_true")
        p.add_argument("--lora-modules", nargs="+", default=[])
        p.add_argument("--served-model-name", nargs="+")
        p.add_argument("--latency", type=float, default=0.0)
        args, _ignored = p.parse_known_args(argv[2:])
        if args.lora_modules and not args.enable_lora:
            print("error: --lora-modules needs --enable-lora", file=sys.stderr)
            return 2
        names = list(args.served_model_name or [args.model])
        for item in args.lora_modules:
            if item.lstrip().startswith("{"):
                names.append(json.loads(item)["name"])
            else:
                names.append(item.split("=", 1)[0])
        server = FakeOpenAI(models=names, latency=args.latency)
    elif argv[:1] == ["openai"]:
        p = argparse.ArgumentParser(prog="fakes.py openai")
        p.add_argument("--port", type=int, default=0)
        p.add_argument("--latency", type=float, default=0.0)
        p.add_argument("--reply", choices=("echo", "tutor"), default="echo")
        p.add_argument("--model", action="append", dest="models")
        args = p.parse_args(argv[1:])
        server = FakeOpenAI(models=args.models or ["tutor-test"], latency=args.latency,
                            reply=tutor_like_reply if args.reply == "tutor" else None)
    else:
        print(main.__doc__, file=sys.stderr)
        return 2
    server.port_wanted = args.port
    _serve_forever(server)
    return 0


def run_fake_process(args: list[str], timeout: float = 60):
    """Start ``python tests/fakes.py ARGS`` and wait until it listens; returns the Popen (stop it with
    ``stop_fake_process``). ARGS must include ``--port``."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    ready = threading.Event()
    lines: list[str] = []

    def watch() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    if not ready.wait(timeout):
        stop_fake_process(proc)
        raise RuntimeError(f"fake server {args[:2]} did not start: {''.join(lines)[-2000:]}")
    return proc


def stop_fake_process(proc) -> None:
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())
