"""The tutor's sub-commands of ``quimbot``: testers, chat, conversations, flags, export stage2, backup
and models. quimbot.cli assembles them with the web UI's and the training stages' commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import QuimbotError
from tutor.config import Settings, settings_from_args
from tutor.feedback import REASONS, FlagFilters
from tutor.prompts import DEFAULT_LEVEL, LEVELS
from tutor.store import Store

SPEC_HELP = (
    "model spec: 'default' (bundled SmolLM2 GGUF), 'gguf:PATH', 'hf:default', "
    "'hf:default?adapter=runs/RUN/checkpoint-N', 'ollama:NAME', "
    "'openai:NAME?base_url=http://127.0.0.1:8000/v1', 'openrouter:NAME'"
)


def add_paths(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    """--db, --runs-dir, --exports-dir. ``nested``: on a sub-command of a command that has them too, so an
    option not given here leaves the one given before the sub-command (``models --db X promote``)."""
    unset = {"default": argparse.SUPPRESS} if nested else {}
    parser.add_argument("--db", type=Path, help="SQLite conversation log (env QUIMBOT_DB, default ./var/quimbot.db)",
                        **unset)
    parser.add_argument("--runs-dir", type=Path, help="training runs folder (env QUIMBOT_RUNS_DIR, default ./runs)",
                        **unset)
    parser.add_argument("--exports-dir", type=Path,
                        help="exports folder (env QUIMBOT_EXPORTS_DIR, default ./exports)", **unset)


def add_generation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7; 0 = greedy)")
    parser.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling (default 0.9)")
    parser.add_argument("--max-tokens", type=int, default=200, help="longest reply in tokens (default 200)")
    parser.add_argument("--seed", type=int, help="random seed for reproducible replies")


def _add_flag_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", dest="f_reason", help="only flags with this reason code")
    parser.add_argument("--model", dest="f_model", help="only replies whose model spec or checkpoint contains this")
    parser.add_argument("--tester", dest="f_tester", help="only flags by this tester")
    parser.add_argument("--since", dest="f_from", help="only flags from this date on (YYYY-MM-DD)")
    parser.add_argument("--until", dest="f_to", help="only flags up to this date (YYYY-MM-DD)")


def _filters(args: argparse.Namespace) -> FlagFilters:
    return FlagFilters(reason=args.f_reason, model=args.f_model, tester=args.f_tester,
                       date_from=args.f_from, date_to=args.f_to)


def register(sub) -> argparse._SubParsersAction:
    """Add the tutor's commands before ``models`` (testers ... backup) to ``sub``; return the ``export``
    command's sub-commands, where the training stages add theirs."""
    p = sub.add_parser("testers", help="tester accounts", description="Tester accounts for the /tester login.")
    tsub = p.add_subparsers(dest="testers_command", metavar="ACTION", required=True)
    q = tsub.add_parser("hash", help="print a NAME:HASH line (argon2id) for --testers-file",
                        description="Asks for the password twice on a terminal (or reads one line from stdin) and "
                        "prints NAME:$argon2id$... for the testers file. Passwords need at least 12 characters.")
    q.add_argument("name", help="the tester's name")
    q.set_defaults(func=cmd_testers_hash)

    p = sub.add_parser("chat", help="chat with a model in the terminal",
                       description="Chat in the terminal. Type /new for a new conversation, /quit to leave. "
                       "With --message, send one message (repeatable) and exit.")
    p.add_argument("--model", "-M", default="default", help=SPEC_HELP)
    p.add_argument("--level", choices=LEVELS, default=DEFAULT_LEVEL, help=f"learner level (default {DEFAULT_LEVEL})")
    p.add_argument("--conversation", "-c", type=int, help="continue this logged conversation id")
    p.add_argument("--learner", help="learner name stored with new conversations (for per-learner deletion)")
    p.add_argument("--message", "-m", action="append", help="send this message and exit (repeatable)")
    add_generation(p)
    add_paths(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("conversations", help="list or show logged conversations",
                       description="Read the conversation log.")
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = csub.add_parser("list", help="list recent conversations", description="List recent conversations, newest first.")
    q.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_paths(q)
    q.set_defaults(func=cmd_conversations_list)
    q = csub.add_parser("show", help="show one conversation, turn by turn",
                        description="Show one conversation with each turn's model, status and timings.")
    q.add_argument("id", type=int, help="conversation id (see `quimbot conversations list`)")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_paths(q)
    q.set_defaults(func=cmd_conversations_show)

    p = sub.add_parser("flags", help="list, add or remove flags on tutor replies",
                       description="Flags testers put on tutor replies (the same data as the tester view).")
    fsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = fsub.add_parser("list", help="the review queue, with filters", description="List flagged replies.")
    _add_flag_filters(q)
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_paths(q)
    q.set_defaults(func=cmd_flags_list)
    q = fsub.add_parser("add", help="flag a tutor reply", description="Flag a tutor reply (a turn id, see "
                        "`quimbot conversations show`). Flagging a reply again as the same tester edits the flag.")
    q.add_argument("turn", type=int, help="turn id of the tutor reply")
    q.add_argument("--reason", "-r", action="append", required=True,
                   help="reason code (repeatable): " + ", ".join(REASONS))
    q.add_argument("--tester", required=True, help="who flags")
    q.add_argument("--note", help="free text")
    q.add_argument("--rewrite", help="the reply you wanted")
    add_paths(q)
    q.set_defaults(func=cmd_flags_add)
    q = fsub.add_parser("remove", help="remove a flag", description="Remove a flag (kept in the database as removed).")
    q.add_argument("flag", type=int, help="flag id")
    q.add_argument("--tester", required=True, help="who removes it")
    add_paths(q)
    q.set_defaults(func=cmd_flags_remove)
    q = fsub.add_parser("suggest", help="run the detector on logged replies",
                        description="Store detector suggestions for every logged tutor reply that has none yet.")
    add_paths(q)
    q.set_defaults(func=cmd_flags_suggest)
    q = fsub.add_parser("detector-eval", help="agreement of the detector with human labels",
                        description="Precision and recall of the detector on a labelled JSONL file "
                        "({learner, reply, level, flags} per line), e.g. data/detector_heldout.jsonl.")
    q.add_argument("file", type=Path, help="labelled JSONL file")
    q.set_defaults(func=cmd_detector_eval)

    p = sub.add_parser("export", help="export Stage 2 data, GGUF files and Ollama Modelfiles",
                       description="Export data and models out of the workbench.")
    esub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = esub.add_parser("stage2", help="flagged dialogues as Stage 2 training JSONL",
                        description="Write sft.jsonl, preference.jsonl and unpaired.jsonl (TRL formats) from "
                        "flagged replies, scrubbed of personal data, deduplicated by content hash (re-exporting "
                        "into the same folder adds no duplicates), with a manifest.")
    q.add_argument("out", type=Path, nargs="?", help="output folder (default EXPORTS_DIR/stage2/flags)")
    q.add_argument("--no-system", action="store_true", help="leave the system prompt out of the rows")
    _add_flag_filters(q)
    add_paths(q)
    q.set_defaults(func=cmd_export_stage2)
    q = csub.add_parser("delete", help="delete conversations and everything about them",
                        description="Delete conversations (their turns, flags, suggestions, events and arena rounds) "
                        "by id, or every conversation of a learner. Exported files are not touched.")
    q.add_argument("ids", type=int, nargs="*", help="conversation ids")
    q.add_argument("--learner", help="delete every conversation of this learner")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_paths(q)
    q.set_defaults(func=cmd_conversations_delete)

    p = sub.add_parser("backup", help="copy the conversation log safely, even while the app runs",
                       description="Write a consistent copy of the SQLite database (SQLite's online backup).")
    p.add_argument("out", type=Path, help="new file for the copy")
    add_paths(p)
    p.set_defaults(func=cmd_backup)
    return esub


def register_models(sub) -> None:
    """Add ``models`` (listed last in ``quimbot --help``)."""
    p = sub.add_parser("models", help="list the models the picker offers",
                       description="List model specs found without registration: the bundled model, GGUF "
                       "files in the exports folder, checkpoints in the runs folder, and QUIMBOT_MODELS.")
    add_paths(p)
    p.set_defaults(func=cmd_models)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    q = msub.add_parser("promote", help="make a model the learners' default",
                        description="Make a checkpoint (hf:runs/RUN/checkpoint-N), an accepted GGUF export "
                        "(gguf:exports/...gguf) or the bundled model (default) the learners' default: the learner "
                        "page uses it from the next conversation on. Recorded with who and when.")
    q.add_argument("spec", help="the model spec to promote (see `quimbot models`)")
    q.add_argument("--by", help="who promotes (recorded)")
    q.add_argument("--note", help="why (recorded)")
    add_paths(q, nested=True)
    q.set_defaults(func=cmd_models_promote)
    q = msub.add_parser("rollback", help="return to the learners' default before the last promotion",
                        description="Undo the newest promotion: the learners' default returns to the one before "
                        "(again and again, down to the app's own default).")
    q.add_argument("--by", help="who rolls back (recorded)")
    add_paths(q, nested=True)
    q.set_defaults(func=cmd_models_rollback)


def _service(settings: Settings, default_model: str = "default"):
    from tutor.backends import BackendPool
    from tutor.session import ChatService

    return ChatService(Store.open(settings.db_path), BackendPool(settings), default_model=default_model)


def cmd_testers_hash(args: argparse.Namespace) -> int:
    from tutor.auth import main as auth_main

    return auth_main(["hash", args.name])


def cmd_chat(args: argparse.Namespace) -> int:
    from tutor.backends import GenerationOptions

    settings = settings_from_args(args)
    service = _service(settings, args.model)
    options = GenerationOptions(temperature=args.temperature, top_p=args.top_p,
                                max_tokens=args.max_tokens, seed=args.seed)
    conversation = args.conversation
    if conversation is not None:
        service.store.get_conversation(conversation)  # NotFoundError if wrong

    def say(text: str) -> bool:
        nonlocal conversation
        ok = True
        if conversation is None and args.learner and text.strip():
            conversation = service.new_conversation(model_spec=args.model, level=args.level, client="cli",
                                                    learner=args.learner)
        printed, restarts = 0, 0
        for update in service.send(text, conversation_id=conversation, model_spec=args.model,
                                   level=args.level, options=options, client="cli"):
            conversation = update.conversation_id
            if update.error:
                print(f"\n[error] {update.error}", file=sys.stderr)
                ok = False
            elif update.restarts > restarts:  # the reply asked again what the tutor asked before (tutor.fresh)
                restarts, printed = update.restarts, 0
                sys.stdout.write("\n[asked that before; again] ")
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

    rows = Store.open(settings_from_args(args).db_path).list_conversations(limit=args.limit)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
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

    conversation = Store.open(settings_from_args(args).db_path).get_conversation(args.id)
    if args.json:
        print(json.dumps(conversation.as_dict(), indent=2))
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


def cmd_flags_list(args: argparse.Namespace) -> int:
    from tutor.feedback import Feedback

    feedback = Feedback(Store.open(settings_from_args(args).db_path))
    rows = feedback.queue(_filters(args))
    if args.json:
        print(json.dumps({"flags": [r.as_dict() for r in rows], "counts": feedback.counts(_filters(args))},
                         indent=2))
        return 0
    for r in rows:
        print(f"flag {r['id']}  turn {r['turn_id']}  {r['created_at'][:16]}  {r['tester']}  "
              f"[{', '.join(r['reasons'])}]  {r['checkpoint'] or r['model_spec']}")
        print(f"    learner> {r['learner']}\n    tutor>   {' '.join(r['reply'].split())[:160]}")
        if r["rewrite"]:
            print(f"    wanted>  {r['rewrite']}")
    counts = feedback.counts(_filters(args))
    print(f"{len(rows)} flagged replies; per reason: {counts['reason']}; per checkpoint: {counts['checkpoint']}")
    return 0


def cmd_flags_add(args: argparse.Namespace) -> int:
    from tutor.feedback import Feedback

    flag_id = Feedback(Store.open(settings_from_args(args).db_path)).flag(
        args.turn, args.reason, args.tester, note=args.note, rewrite=args.rewrite)
    print(f"flag {flag_id}")
    return 0


def cmd_flags_remove(args: argparse.Namespace) -> int:
    from tutor.feedback import Feedback

    Feedback(Store.open(settings_from_args(args).db_path)).remove(args.flag, by=args.tester)
    print(f"removed flag {args.flag}")
    return 0


def cmd_flags_suggest(args: argparse.Namespace) -> int:
    from tutor.detector import DETECTOR_VERSION
    from tutor.feedback import Feedback

    checked = Feedback(Store.open(settings_from_args(args).db_path)).suggest_all()
    print(f"checked {checked} replies with detector {DETECTOR_VERSION}")
    return 0


def cmd_detector_eval(args: argparse.Namespace) -> int:
    from tutor.detector import evaluate

    try:
        lines = args.file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise QuimbotError(f"Cannot read {args.file}: {exc.strerror}.") from exc
    rows = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise QuimbotError(f"{args.file}:{number}: not valid JSON ({exc.msg}).") from exc
    table = evaluate(rows)
    print(f"{len(rows)} labelled replies in {args.file}")
    print(f"{'reason':<14} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>10} {'recall':>8}")
    for reason, c in table.items():
        print(f"{reason:<14} {c['tp']:>4} {c['fp']:>4} {c['fn']:>4} {c['precision']:>10.2f} {c['recall']:>8.2f}")
    return 0


def cmd_export_stage2(args: argparse.Namespace) -> int:
    from tutor.stage2 import export_stage2

    settings = settings_from_args(args)
    out = args.out or Path(settings.exports_dir) / "stage2" / "flags"
    manifest = export_stage2(Store.open(settings.db_path), out, _filters(args), include_system=not args.no_system)
    for name, info in manifest["files"].items():
        print(f"{out / name}: {info['rows']} rows ({info['added']} new)")
    print(f"{manifest['rows_added']} rows added, {manifest['duplicates_skipped']} duplicates skipped, "
          f"personal data replaced: {manifest['pii_scrubbed'] or 'none'}")
    for problem in manifest["rejected"] + manifest["skipped"]:
        print(f"not exported: {problem}", file=sys.stderr)
    print(f"manifest: {manifest['manifest_path']}")
    return 0


def cmd_conversations_delete(args: argparse.Namespace) -> int:

    store = Store.open(settings_from_args(args).db_path)
    ids = list(args.ids)
    if args.learner:
        ids += store.conversations_of(args.learner)
    if not ids:
        raise QuimbotError("Name conversation ids or --learner NAME.")
    if not args.yes:
        if not sys.stdin.isatty():
            raise QuimbotError("Refusing to delete without confirmation: add --yes.")
        if input(f"Delete {len(ids)} conversation(s) {ids}? [y/N] ").strip().lower() != "y":
            print("nothing deleted")
            return 1
    for cid in ids:
        counts = store.delete_conversation(cid)
        print(f"conversation {cid}: deleted " + ", ".join(f"{n} {t}" for t, n in counts.items() if n))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:

    path = Store.open(settings_from_args(args).db_path).backup(args.out)
    print(f"backup written to {path}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from tutor.catalog import list_models

    from tutor.promotion import learners_default

    settings = settings_from_args(args)
    current = learners_default(Store.open(settings.db_path))
    for choice in list_models(settings):
        print(f"{choice.spec}\t{choice.label}" + ("\t[learners' default]" if choice.spec == current.spec else ""))
    print(f"learners' default: {current.describe()}", file=sys.stderr)
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from tutor.promotion import promote

    settings = settings_from_args(args)
    done = promote(Store.open(settings.db_path), args.spec, settings, args.by, note=args.note)
    print(f"promoted {done.spec} (promotion #{done.id}, by {done.by or 'unknown'}); before: "
          f"{done.previous or 'the app default'}. New learner conversations use it.")
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    from tutor.promotion import rollback

    settings = settings_from_args(args)
    print(f"rolled back; learners' default: {rollback(Store.open(settings.db_path), settings, args.by).describe()}")
    return 0


