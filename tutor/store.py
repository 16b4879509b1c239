"""The conversation log: conversations, turns and events in SQLite through sqlite-utils.

The store takes a ``sqlite_utils.Database`` so tests can pass ``Database(memory=True)``.
One lock serialises writes from the app's worker threads; WAL mode lets readers go on."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from .errors import NotFoundError, StoreError
from .migrations import migrate

TURN_FIELDS = (
    "status model_spec checkpoint level system_prompt options latency_ms first_token_ms "
    "prompt_tokens completion_tokens finish_reason error completed_at content"
).split()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def open_database(path: str | Path) -> Database:
    """Open (creating folders as needed) a database file usable from several threads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    except sqlite3.Error as exc:
        raise StoreError(f"Cannot open the conversation log at {path}: {exc}") from exc
    db = Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


class Store:
    def __init__(self, db: Database):
        self.db = db
        self._lock = threading.RLock()
        with self._lock:
            migrate(db)

    @classmethod
    def open(cls, path: str | Path) -> "Store":
        return cls(open_database(path))

    def query(self, sql: str, args=()) -> list[dict[str, Any]]:
        """Rows of a read, under the store's lock: the app's threads share one connection, and a read
        interleaved with another thread's savepoint broke its write ("no such savepoint")."""
        with self._lock:
            return list(self.db.query(sql, args))

    # -- writes -------------------------------------------------------------------------
    def _write(self, fn, *args, **kwargs):
        with self._lock:
            try:
                with self.db.conn:
                    return fn(*args, **kwargs)
            except sqlite3.Error as exc:
                raise StoreError(f"Writing to the conversation log failed: {exc}") from exc

    def create_conversation(self, *, level: str, model_spec: str, client: str = "app",
                            learner: str | None = None, title: str | None = None) -> int:
        stamp = now()
        row = {"created_at": stamp, "updated_at": stamp, "title": title or "", "level": level,
               "model_spec": model_spec, "client": client, "learner": learner}
        return self._write(lambda: self.db["conversations"].insert(row).last_pk)

    def add_turn(self, conversation_id: int, role: str, content: str, **fields: Any) -> int:
        unknown = set(fields) - set(TURN_FIELDS)
        if unknown:
            raise StoreError(f"Unknown turn fields: {sorted(unknown)}")
        if "options" in fields and not isinstance(fields["options"], (str, type(None))):
            fields["options"] = json.dumps(fields["options"], sort_keys=True)

        def insert() -> int:
            if not self.db.execute("SELECT 1 FROM conversations WHERE id = ?", [conversation_id]).fetchone():
                raise NotFoundError(f"Conversation {conversation_id} does not exist.")
            (idx,) = self.db.execute(
                "SELECT COALESCE(MAX(idx), -1) + 1 FROM turns WHERE conversation_id = ?", [conversation_id]
            ).fetchone()
            stamp = now()
            row = {"conversation_id": conversation_id, "idx": idx, "role": role, "content": content,
                   "status": "ok", "created_at": stamp, **fields}
            pk = self.db["turns"].insert(row).last_pk
            updates = {"updated_at": stamp}
            if role == "user":
                title = self.db.execute("SELECT title FROM conversations WHERE id = ?", [conversation_id]).fetchone()[0]
                if not title:
                    updates["title"] = " ".join(content.split())[:60]
            self.db["conversations"].update(conversation_id, updates)
            return pk

        return self._write(insert)

    def update_turn(self, turn_id: int, **fields: Any) -> None:
        unknown = set(fields) - set(TURN_FIELDS)
        if unknown:
            raise StoreError(f"Unknown turn fields: {sorted(unknown)}")
        if "options" in fields and not isinstance(fields["options"], (str, type(None))):
            fields["options"] = json.dumps(fields["options"], sort_keys=True)
        self._write(lambda: self.db["turns"].update(turn_id, fields))

    def log_event(self, kind: str, detail: dict[str, Any] | str, conversation_id: int | None = None) -> int:
        text = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True, default=str)
        row = {"created_at": now(), "conversation_id": conversation_id, "kind": kind, "detail": text}
        return self._write(lambda: self.db["events"].insert(row).last_pk)

    def recover_interrupted(self) -> int:
        """Mark replies left 'pending' by a crash as 'interrupted'; return how many."""
        def fix() -> int:
            cursor = self.db.execute(
                "UPDATE turns SET status = 'interrupted', error = 'the app stopped during this reply', "
                "completed_at = ? WHERE status = 'pending'", [now()]
            )
            return cursor.rowcount
        return self._write(fix)

    def delete_conversation(self, conversation_id: int) -> dict[str, int]:
        """Delete a conversation and everything hanging off it (turns, flags, suggestions, events,
        arena rounds), in one transaction; return how many rows of each went."""
        self.get_conversation(conversation_id)

        def delete() -> dict[str, int]:
            turn_ids = "SELECT id FROM turns WHERE conversation_id = ?"
            counts = {}
            for table, where in (("suggestions", f"turn_id IN ({turn_ids})"), ("flags", "conversation_id = ?"),
                                 ("events", "conversation_id = ?"),
                                 ("arena_rounds", "conversation_first = ? OR conversation_second = ?"),
                                 ("turns", "conversation_id = ?"), ("conversations", "id = ?")):
                if not self.db[table].exists():
                    continue
                args = [conversation_id] * where.count("?")
                counts[table] = self.db.execute(f"DELETE FROM {table} WHERE {where}", args).rowcount
            return counts

        return self._write(delete)

    def backup(self, path: str | Path) -> Path:
        """A consistent copy of the whole database, taken while the app may be writing."""
        import sqlite3 as _sqlite3

        path = Path(path)
        if path.exists():
            raise StoreError(f"{path} exists already; choose a new file for the backup.")
        path.parent.mkdir(parents=True, exist_ok=True)
        target = _sqlite3.connect(str(path))
        try:
            with self._lock:
                self.db.conn.backup(target)
        finally:
            target.close()
        return path

    # -- reads --------------------------------------------------------------------------
    def get_conversation(self, conversation_id: int) -> dict[str, Any]:
        with self._lock:
            rows = list(self.db.query("SELECT * FROM conversations WHERE id = ?", [conversation_id]))
            if not rows:
                raise NotFoundError(f"Conversation {conversation_id} does not exist.")
            conversation = rows[0]
            conversation["turns"] = self.turns(conversation_id)
        return conversation

    def turns(self, conversation_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(
                "SELECT * FROM turns WHERE conversation_id = ? ORDER BY idx", [conversation_id]
            ))

    def list_conversations(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(
                "SELECT c.*, (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) AS n_turns "
                "FROM conversations c ORDER BY c.updated_at DESC, c.id DESC LIMIT ? OFFSET ?",
                [limit, offset],
            ))

    def events(self, conversation_id: int | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if conversation_id is not None:
            where.append("conversation_id = ?")
            args.append(conversation_id)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        with self._lock:
            return list(self.db.query(sql, args))
