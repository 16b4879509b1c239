"""Assembles the app: the learner view at /, the tester view (flags, review queue, export)
at /tester. The tester view needs a login whenever the app listens beyond localhost."""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import urlsplit

import gradio as gr
from starlette.requests import Request

from tutor.auth import LoginLimiter, load_testers, make_auth  # noqa: F401  (load_testers, make_auth: this module's API)
from tutor.backends import BackendPool
from tutor.config import MAX_BODY_BYTES, Settings, allowed_host_names, is_local  # noqa: F401  (is_local: API)
from tutor.jobs import Jobs
from tutor.session import ChatService
from tutor.store import Store
from webui.chat import chat_panel, display, render_turns  # noqa: F401  (re-exported for callers)

TESTER_PATH = "/tester"
# What a page of the app may load: its own scripts, styles, fonts and images, and data:/blob: URLs
# Gradio makes itself. Nothing remote: a markdown image or any media URL in a message is never
# fetched by a learner's or tester's browser, even if a renderer let one through.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; media-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; frame-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def _hostname(value: str) -> str | None:
    try:
        return (urlsplit(value if "//" in value else "//" + value).hostname or "").lower() or None
    except ValueError:
        return None


class Guard:
    """ASGI middleware in front of both views; every check happens before Gradio sees the request.

    - **Host and Origin**: the Host header must name an address the app answers to
      (``config.allowed_host_names``) and an Origin header, when sent, too (``null`` is refused): a
      page on another site cannot reach a localhost app through DNS rebinding or post to it.
    - **Body size**: a body over ``max_body`` bytes is refused (413) by its Content-Length before a
      byte is read, or as soon as a chunked body passes the limit.
    - **Tester login**: attempts on ``login_paths`` go through ``limiter`` (a back-off per account and
      per client address); one that comes too early is refused (429) without checking the password.
    - **Event calls**: a queue/join body naming an event that does not exist is refused (422) with one
      log line instead of a server error and a traceback.
    - Responses carry a Content-Security-Policy that forbids loading anything remote."""

    def __init__(self, app, *, hosts: set[str] | None, max_body: int = MAX_BODY_BYTES,
                 limiter: LoginLimiter | None = None, login_paths: tuple[str, ...] = (),
                 events: dict[str, gr.Blocks] | None = None):
        self.app = app
        self.hosts = hosts
        self.max_body = max_body
        self.limiter = limiter
        self.login_paths = set(login_paths)
        self.events = events or {}  # path prefix -> Blocks mounted there

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refuse_origin(headers)
        if refusal:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _respond(send, 403, refusal)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, _with_headers(send))
        length = headers.get("content-length", "")
        if length.strip().isdigit() and int(length) > self.max_body:
            return await _respond(send, 413, f"Request body too large (limit {self.max_body:,} bytes).")
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await _respond(send, 413, f"Request body too large (limit {self.max_body:,} bytes).")
        replay = _replayer(body, receive)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if method == "POST" and path.endswith("/gradio_api/queue/join"):
            refusal = self._refuse_event(path[: -len("/gradio_api/queue/join")], body)
            if refusal:
                print(f"quimbot: refused an event call: {refusal}", file=sys.stderr, flush=True)
                return await _respond(send, 422, refusal)
        if method == "POST" and self.limiter is not None and path in self.login_paths:
            return await self._login(scope, receive, send, body)
        return await self.app(scope, replay, _with_headers(send))

    def _refuse_origin(self, headers: dict[str, str]) -> str | None:
        host = _hostname(headers.get("host", ""))
        if self.hosts is not None and host not in self.hosts:
            return "This address is not served here (unexpected Host header)."
        origin = headers.get("origin")
        if origin is not None:
            origin_host = _hostname(origin) if origin.strip().lower() != "null" else None
            allowed = self.hosts if self.hosts is not None else {host}
            if origin_host is None or origin_host not in allowed:
                return "Requests from other sites are refused (unexpected Origin header)."
        return None

    def _refuse_event(self, prefix: str, body: bytes) -> str | None:
        blocks = self.events.get(prefix)
        if blocks is None:
            return None
        try:
            payload = json.loads(body)
        except ValueError:
            return None  # Gradio answers malformed JSON with a plain 422 itself
        if not isinstance(payload, dict):
            return None
        fn_index = payload.get("fn_index")
        if fn_index is None:
            return None  # Gradio answers "No function index provided." itself
        if isinstance(fn_index, bool) or not isinstance(fn_index, int) or fn_index not in blocks.fns:
            return f"no event number {str(fn_index)[:40]!r} in this app"
        return None

    async def _login(self, scope, receive, send, body: bytes):
        form = await Request(scope, _replayer(body, receive)).form()
        account = str(form.get("username") or "")
        address = (scope.get("client") or ("unknown",))[0]
        wait = self.limiter.begin(account, address)
        if wait > 0:
            seconds = max(1, int(wait + 0.999))
            return await _respond(send, 429, f"Too many login attempts; try again in {seconds} s.",
                                  [(b"retry-after", str(seconds).encode())])
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, _replayer(body, receive), _with_headers(watch))
        if status.get("code") == 200:
            self.limiter.succeeded(account, address)


def _replayer(body: bytes, receive):
    """An ASGI receive that hands out the body already read, then what the client sends next."""
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _with_headers(send):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            message = {**message, "headers": list(message.get("headers", []))
                       + [(k, v) for k, v in SECURITY_HEADERS if k not in names]}
        await send(message)
    return wrapped


async def _respond(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS, *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def build_learner_app(service: ChatService, settings: Settings, default_model: str = "default") -> gr.Blocks:
    """The learner's page: chat only, no flag controls."""
    with gr.Blocks(title="Quimbot") as demo:
        gr.Markdown("## Quimbot · practise English conversation")
        # The model picked when the page opens: the learners' default (the promoted model) as it is then.
        panel = chat_panel(service, settings, service.learners_default, local=is_local(settings.host), private=True)
        # A new conversation (the conversation cleared) starts on the learners' default as it is now.
        panel.conversation.change(lambda cid: gr.update() if cid else gr.update(value=service.learners_default()),
                                  [panel.conversation], [panel.model], api_visibility="private")
    return demo


def create_server(settings: Settings, default_model: str = "default", testers: dict[str, str] | None = None,
                  service: ChatService | None = None):
    """The app: both views mounted on one FastAPI app, behind ``Guard``. Returns (app, tester_enabled,
    message); ``app.app`` is the FastAPI app."""
    from fastapi import FastAPI

    if service is None:
        service = ChatService(Store.open(settings.db_path), BackendPool(settings), default_model=default_model)
    from fastapi.responses import RedirectResponse

    from webui.compare_tab import reports_folder  # report.html links: the only files the tester view serves
    from webui.tester import build_tester_app

    local = is_local(settings.host)
    app = FastAPI()
    message = ""
    events: dict[str, gr.Blocks] = {}
    # run_history=False: Gradio would otherwise keep every call (the learner's message and the reply)
    # in the browser, readable at /gradio_api/runs by the next person at the same device; off, it
    # records nothing and deletes what an earlier version of the app left there.
    mount = dict(server_name=settings.host, server_port=settings.port, footer_links=[], run_history=False,
                 max_file_size=MAX_BODY_BYTES)
    tester_enabled = bool(testers) or local
    login = bool(testers)
    if tester_enabled:
        jobs = Jobs(service.store, settings)  # background jobs (Train, Compare): one runner for the app
        jobs.reattach()  # jobs an earlier app left running: still alive stay running, the others end as stopped
        tester = build_tester_app(service, settings, default_model, login=login, jobs=jobs)
        tester.queue(default_concurrency_limit=8)

        def to_tester_view(request: Request):
            query = request.url.query
            return RedirectResponse(TESTER_PATH + "/" + (f"?{query}" if query else ""), status_code=307)

        app.add_api_route(TESTER_PATH, to_tester_view, methods=["GET", "HEAD"], include_in_schema=False)
        app = gr.mount_gradio_app(app, tester, path=TESTER_PATH, auth=make_auth(testers) if login else None,
                                  auth_message="Quimbot tester login", allowed_paths=[str(reports_folder(settings))],
                                  **mount)
        events[TESTER_PATH] = tester
        message = f"tester view at {TESTER_PATH}" + (" (login required)" if login else " (no login: localhost only)")
    else:
        message = ("tester view disabled: the app listens beyond localhost and no tester accounts are set "
                   "(QUIMBOT_TESTERS=name:password or --testers-file)")
    learner = build_learner_app(service, settings, default_model)
    learner.queue(default_concurrency_limit=8)
    app = gr.mount_gradio_app(app, learner, path="", **mount)
    events[""] = learner
    guarded = Guard(app, hosts=allowed_host_names(settings), limiter=LoginLimiter() if login else None,
                    login_paths=(f"{TESTER_PATH}/login", f"{TESTER_PATH}/login/"), events=events)
    return guarded, tester_enabled, message


def launch(settings: Settings, default_model: str = "default", preload: bool = False,
           testers_file: str | None = None, options=None) -> None:
    import uvicorn

    if not settings.allow_hub:
        # The transformers backend reads this when it loads a model: only the local cache, no hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    store = Store.open(settings.db_path)
    recovered = store.recover_interrupted()
    pool = BackendPool(settings)
    service = ChatService(store, pool, default_model=default_model, default_options=options)
    if preload:
        pool.get(default_model)
    testers = load_testers(path=testers_file)
    app, _, message = create_server(settings, default_model, testers, service)
    if not is_local(settings.host):
        print(f"quimbot: listening on {settings.host}: anyone who can reach this address can chat.", file=sys.stderr)
    if recovered:
        print(f"quimbot: marked {recovered} reply(ies) cut off by an earlier stop as interrupted.", file=sys.stderr)
    print(f"quimbot: conversation log {settings.db_path}", file=sys.stderr)
    print(f"quimbot: {message}", file=sys.stderr)
    print(f"quimbot: open http://{settings.host}:{settings.port}/", file=sys.stderr, flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                h11_max_incomplete_event_size=16 * 1024)
