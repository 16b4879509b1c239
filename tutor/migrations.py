"""The SQLite schema, as an append-only list of migrations applied idempotently at start-up.

Never edit or reorder a migration that has shipped: add a new one at the end."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from sqlite_utils import Database

MIGRATIONS: list[Callable[[Database], None]] = []


def migration(fn: Callable[[Database], None]) -> Callable[[Database], None]:
    MIGRATIONS.append(fn)
    return fn


def migrate(db: Database) -> list[str]:
    """Apply every migration not yet applied; return the names applied now."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _quimbot_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT name FROM _quimbot_migrations").fetchall()}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with db.conn:
            fn(db)
            db.execute(
                "INSERT INTO _quimbot_migrations (name, applied_at) VALUES (?, ?)",
                [fn.__name__, datetime.now(timezone.utc).isoformat()],
            )
        applied.append(fn.__name__)
    return applied


@migration
def m001_conversations_turns_events(db: Database) -> None:
    db["conversations"].create(
        {
            "id": int,
            "created_at": str,
            "updated_at": str,
            "title": str,
            "level": str,
            "model_spec": str,
            "client": str,
            "learner": str,
        },
        pk="id",
    )
    db["turns"].create(
        {
            "id": int,
            "conversation_id": int,
            "idx": int,
            "role": str,
            "content": str,
            "status": str,  # ok | pending | error | interrupted | rejected
            "model_spec": str,
            "checkpoint": str,
            "level": str,
            "system_prompt": str,
            "options": str,  # JSON
            "latency_ms": float,
            "first_token_ms": float,
            "prompt_tokens": int,
            "completion_tokens": int,
            "finish_reason": str,
            "error": str,
            "created_at": str,
            "completed_at": str,
        },
        pk="id",
        foreign_keys=[("conversation_id", "conversations", "id")],
        not_null={"conversation_id", "idx", "role", "content", "status", "created_at"},
    )
    db["turns"].create_index(["conversation_id", "idx"], unique=True)
    db["events"].create(
        {"id": int, "created_at": str, "conversation_id": int, "kind": str, "detail": str},
        pk="id",
    )
    db["events"].create_index(["conversation_id"])


@migration
def m002_flags_and_suggestions(db: Database) -> None:
    db["flags"].create(
        {
            "id": int,
            "turn_id": int,
            "conversation_id": int,
            "reasons": str,  # JSON list of reason codes
            "note": str,
            "rewrite": str,  # the reply the tester wanted, or NULL
            "tester": str,
            "created_at": str,
            "updated_at": str,
            "removed_at": str,  # flags are removed softly, so nothing a tester wrote is lost
            "removed_by": str,
        },
        pk="id",
        foreign_keys=[("turn_id", "turns", "id"), ("conversation_id", "conversations", "id")],
        not_null={"turn_id", "conversation_id", "reasons", "tester", "created_at", "updated_at"},
    )
    db["flags"].create_index(["turn_id"])
    db["suggestions"].create(
        {
            "id": int,
            "turn_id": int,
            "reason": str,
            "evidence": str,
            "detector": str,
            "status": str,  # open | confirmed | dismissed
            "decided_by": str,
            "decided_at": str,
            "created_at": str,
        },
        pk="id",
        foreign_keys=[("turn_id", "turns", "id")],
        not_null={"turn_id", "reason", "detector", "status", "created_at"},
    )
    db["suggestions"].create_index(["turn_id", "reason", "detector"], unique=True)


@migration
def m003_arena(db: Database) -> None:
    db["arena_rounds"].create(
        {
            "id": int,
            "created_at": str,
            "tester": str,
            "learner": str,          # the learner message both models answered
            "level": str,
            "model_first": str,      # shown first (the order is random, the names hidden until the vote)
            "model_second": str,
            "conversation_first": int,
            "conversation_second": int,
            "vote": str,             # first | second | tie | both_bad, NULL until voted
            "voted_at": str,
        },
        pk="id",
        not_null={"created_at", "learner", "model_first", "model_second"},
    )


@migration
def m004_turn_writer(db: Database) -> None:
    # The process that writes a pending reply: start-up recovery marks a pending reply interrupted
    # only when its writer is gone (its lock is free), never one another live app is still writing.
    db["turns"].add_column("writer", str)
    db["turns"].create_index(["status"])


@migration
def m005_jobs(db: Database) -> None:
    # Background jobs started from the app (quimbot train ..., eval compare ...), one running at a time.
    db["jobs"].create(
        {
            "id": int,
            "kind": str,                 # train | compare
            "argv": str,                 # JSON: the quimbot command line after "quimbot"
            "state": str,                # running | done | failed | cancelled | stopped
            "out_dir": str,              # the run folder (train) or the report folder (compare)
            "log_path": str,
            "pid": int,                  # the job's process group leader
            "exit_code": int,
            "started_at": str,
            "ended_at": str,
            "by": str,
            "cancel_requested_at": str,
            "cancelled_by": str,
            "resumed_from": int,         # the job this one resumes (train --resume)
        },
        pk="id",
        not_null={"kind", "argv", "state", "log_path", "started_at"},
    )
    db["jobs"].create_index(["state"])


@migration
def m006_promotions(db: Database) -> None:
    # The learners' default model: every promotion and rollback is a row, the newest is in force.
    db["promotions"].create(
        {
            "id": int,
            "created_at": str,
            "action": str,     # promote | rollback
            "spec": str,       # the learners' default from here on; NULL: the app's own default
            "previous": str,   # the default before (NULL: the app's own default)
            "restores": int,   # the row a rollback of this one returns to (NULL: the app's own default)
            "by": str,
            "note": str,
        },
        pk="id",
        not_null={"created_at", "action"},
    )
