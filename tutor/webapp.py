"""Assembles the app: the learner view at /, the tester view (flags, review queue, export)
at /tester. The tester view needs a login whenever the app listens beyond localhost."""

from __future__ import annotations

import hmac
import os
import sys
from pathlib import Path

import gradio as gr

from .backends import BackendPool
from .config import Settings, is_local  # noqa: F401  (is_local is part of this module's API)
from .errors import QuimbotError
from .session import ChatService
from .store import Store
from .ui_chat import chat_panel, display, render_turns  # noqa: F401  (re-exported for callers)

TESTER_PATH = "/tester"


def build_learner_app(service: ChatService, settings: Settings, default_model: str = "default") -> gr.Blocks:
    """The learner's page: chat only, no flag controls."""
    with gr.Blocks(title="Quimbot") as demo:
        gr.Markdown("## Quimbot · practise English conversation")
        chat_panel(service, settings, default_model, local=is_local(settings.host), private=True)
    return demo


def load_testers(text: str | None = None, path: str | Path | None = None) -> dict[str, str]:
    """Tester accounts from ``name:password`` pairs, separated by commas or newlines
    (QUIMBOT_TESTERS, or a file given with --testers-file)."""
    raw = text if text is not None else os.environ.get("QUIMBOT_TESTERS", "")
    if path:
        try:
            raw += "\n" + Path(path).read_text()
        except OSError as exc:
            raise QuimbotError(f"Cannot read the testers file {path}: {exc.strerror}.") from exc
    accounts = {}
    for number, item in enumerate(raw.replace(",", "\n").splitlines(), start=1):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, password = item.partition(":")
        if not sep or not name.strip() or not password:
            raise QuimbotError(f"Tester account {number} is not NAME:PASSWORD (in QUIMBOT_TESTERS or the file).")
        accounts[name.strip()] = password
    return accounts


def make_auth(accounts: dict[str, str]):
    def check(username: str, password: str) -> bool:
        expected = accounts.get(username)
        return expected is not None and hmac.compare_digest(expected.encode(), (password or "").encode())
    return check


def create_server(settings: Settings, default_model: str = "default", testers: dict[str, str] | None = None,
                  service: ChatService | None = None):
    """A FastAPI app with both views mounted. Returns (app, tester_enabled, message)."""
    from fastapi import FastAPI

    if service is None:
        service = ChatService(Store.open(settings.db_path), BackendPool(settings), default_model=default_model)
    from .ui_tester import build_tester_app

    local = is_local(settings.host)
    app = FastAPI()
    message = ""
    tester_enabled = bool(testers) or local
    if tester_enabled:
        login = bool(testers)
        tester = build_tester_app(service, settings, default_model, login=login)
        tester.queue(default_concurrency_limit=8)
        app = gr.mount_gradio_app(app, tester, path=TESTER_PATH, auth=make_auth(testers) if login else None,
                                  auth_message="Quimbot tester login", server_name=settings.host,
                                  server_port=settings.port, footer_links=[])
        message = f"tester view at {TESTER_PATH}" + (" (login required)" if login else " (no login: localhost only)")
    else:
        message = ("tester view disabled: the app listens beyond localhost and no tester accounts are set "
                   "(QUIMBOT_TESTERS=name:password or --testers-file)")
    learner = build_learner_app(service, settings, default_model)
    learner.queue(default_concurrency_limit=8)
    app = gr.mount_gradio_app(app, learner, path="", server_name=settings.host, server_port=settings.port,
                              footer_links=[])
    return app, tester_enabled, message


def launch(settings: Settings, default_model: str = "default", preload: bool = False,
           testers_file: str | None = None, options=None) -> None:
    import uvicorn

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
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
