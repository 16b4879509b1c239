"""The ``quimbot`` command line. Every command has ``--help``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .config import DEFAULT_HOST, DEFAULT_PORT, Settings
from .errors import QuimbotError
from .prompts import DEFAULT_LEVEL, LEVELS

SPEC_HELP = (
    "model spec: 'default' (bundled SmolLM2 GGUF), 'gguf:PATH', 'hf:default', "
    "'hf:default?adapter=runs/RUN/checkpoint-N', 'ollama:NAME', "
    "'openai:NAME?base_url=http://127.0.0.1:8000/v1', 'openrouter:NAME'"
)


def _add_paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, help="SQLite conversation log (env QUIMBOT_DB, default ./var/quimbot.db)")
    parser.add_argument("--runs-dir", type=Path, help="training runs folder (env QUIMBOT_RUNS_DIR, default ./runs)")
    parser.add_argument("--exports-dir", type=Path,
                        help="exports folder (env QUIMBOT_EXPORTS_DIR, default ./exports)")


def _add_generation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7; 0 = greedy)")
    parser.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling (default 0.9)")
    parser.add_argument("--max-tokens", type=int, default=200, help="longest reply in tokens (default 200)")
    parser.add_argument("--seed", type=int, help="random seed for reproducible replies")


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings()
    for name in ("db", "runs_dir", "exports_dir"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(settings, "db_path" if name == "db" else name, value)
    for spec in getattr(args, "extra_model", None) or []:
        settings.extra_models.append(spec)
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quimbot",
        description="Quimbot: train and test conversational English tutors. "
        "Chat with any checkpoint, log every turn, flag poor replies.",
    )
    parser.add_argument("--version", action="version", version=f"quimbot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("app", help="open the chat app in the browser",
                       description="Start the Gradio chat app. It listens on 127.0.0.1 unless --host says otherwise.")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=int(os.environ.get("QUIMBOT_PORT", DEFAULT_PORT)),
                   help=f"port (env QUIMBOT_PORT, default {DEFAULT_PORT})")
    p.add_argument("--model", default="default", help="model selected at start; " + SPEC_HELP)
    p.add_argument("--extra-model", action="append", metavar="SPEC",
                   help="add a spec to the model picker (repeatable; env QUIMBOT_MODELS adds more)")
    p.add_argument("--preload", action="store_true", help="load the start model before serving")
    _add_paths(p)
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("chat", help="chat with a model in the terminal",
                       description="Chat in the terminal. Type /new for a new conversation, /quit to leave. "
                       "With --message, send one message (repeatable) and exit.")
    p.add_argument("--model", "-M", default="default", help=SPEC_HELP)
    p.add_argument("--level", choices=LEVELS, default=DEFAULT_LEVEL, help=f"learner level (default {DEFAULT_LEVEL})")
    p.add_argument("--conversation", "-c", type=int, help="continue this logged conversation id")
    p.add_argument("--message", "-m", action="append", help="send this message and exit (repeatable)")
    _add_generation(p)
    _add_paths(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("conversations", help="list or show logged conversations",
                       description="Read the conversation log.")
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = csub.add_parser("list", help="list recent conversations", description="List recent conversations, newest first.")
    q.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_paths(q)
    q.set_defaults(func=cmd_conversations_list)
    q = csub.add_parser("show", help="show one conversation, turn by turn",
                        description="Show one conversation with each turn's model, status and timings.")
    q.add_argument("id", type=int, help="conversation id (see `quimbot conversations list`)")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_paths(q)
    q.set_defaults(func=cmd_conversations_show)

    p = sub.add_parser("models", help="list the models the picker offers",
                       description="List model specs found without registration: the bundled model, GGUF "
                       "files in the exports folder, checkpoints in the runs folder, and QUIMBOT_MODELS.")
    _add_paths(p)
    p.set_defaults(func=cmd_models)
    return parser


def _service(settings: Settings, default_model: str = "default"):
    from .backends import BackendPool
    from .session import ChatService
    from .store import Store

    return ChatService(Store.open(settings.db_path), BackendPool(settings), default_model=default_model)


def cmd_app(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .webapp import launch

    settings = settings_from(args)
    settings.host, settings.port = args.host, args.port
    launch(settings, default_model=args.model, preload=args.preload)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .backends import GenerationOptions

    settings = settings_from(args)
    service = _service(settings, args.model)
    options = GenerationOptions(temperature=args.temperature, top_p=args.top_p,
                                max_tokens=args.max_tokens, seed=args.seed)
    conversation = args.conversation
    if conversation is not None:
        service.store.get_conversation(conversation)  # NotFoundError if wrong

    def say(text: str) -> bool:
        nonlocal conversation
        ok = True
        printed = 0
        for update in service.send(text, conversation_id=conversation, model_spec=args.model,
                                   level=args.level, options=options, client="cli"):
            conversation = update.conversation_id
            if update.error:
                print(f"\n[error] {update.error}", file=sys.stderr)
                ok = False
            elif len(update.text) > printed and not update.done:
                sys.stdout.write(update.text[printed:])
                sys.stdout.flush()
                printed = len(update.text)
        if ok:
            print()
        return ok

    if args.message:
        results = [say(m) for m in args.message]
        if conversation is not None:
            print(f"[conversation {conversation}]", file=sys.stderr)
        return 0 if all(results) else 1
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"Chatting with {args.model} ({args.level}). /new starts over, /quit leaves.", file=sys.stderr)
    while True:
        try:
            line = input("you> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            break
        if line.strip() in ("/quit", "/exit"):
            break
        if line.strip() == "/new":
            conversation = None
            print("[new conversation]", file=sys.stderr)
            continue
        if interactive:
            sys.stdout.write("tutor> ")
        say(line)
    if conversation is not None:
        print(f"[conversation {conversation}]", file=sys.stderr)
    return 0


def cmd_conversations_list(args: argparse.Namespace) -> int:
    from .store import Store

    rows = Store.open(settings_from(args).db_path).list_conversations(limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("No conversations logged yet.")
        return 0
    print(f"{'id':>5}  {'updated':<19}  {'turns':>5}  {'level':<12}  {'model':<24}  title")
    for r in rows:
        print(f"{r['id']:>5}  {r['updated_at'][:19]:<19}  {r['n_turns']:>5}  {r['level']:<12}  "
              f"{(r['model_spec'] or '')[:24]:<24}  {r['title']}")
    return 0


def cmd_conversations_show(args: argparse.Namespace) -> int:
    from .store import Store

    conversation = Store.open(settings_from(args).db_path).get_conversation(args.id)
    if args.json:
        print(json.dumps(conversation, indent=2))
        return 0
    print(f"Conversation {conversation['id']} - {conversation['level']} - started {conversation['created_at'][:19]}")
    for t in conversation["turns"]:
        who = "learner" if t["role"] == "user" else "tutor"
        meta = []
        if t["role"] == "assistant":
            meta.append(t["model_spec"] or "")
            if t["latency_ms"] is not None:
                meta.append(f"{t['latency_ms']:.0f} ms")
            if t["completion_tokens"] is not None:
                meta.append(f"{t['completion_tokens']} tokens")
        if t["status"] != "ok":
            meta.append(t["status"] + (f": {t['error']}" if t["error"] else ""))
        suffix = f"   [{', '.join(m for m in meta if m)}]" if meta else ""
        print(f"\n{who}> {t['content']}{suffix}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .catalog import list_models

    for choice in list_models(settings_from(args)):
        print(f"{choice.spec}\t{choice.label}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except QuimbotError as exc:
        print(f"quimbot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
