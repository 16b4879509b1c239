"""The conversation log: conversations, turns and events in SQLite through sqlite-utils.

The store takes a ``sqlite_utils.Database`` so tests can pass ``Database(memory=True)``.
One lock serialises writes from the app's worker threads; WAL mode lets readers go on."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from core.errors import NotFoundError, StoreError
from tutor.migrations import migrate

TURN_FIELDS = (
    "status model_spec checkpoint level system_prompt options latency_ms first_token_ms "
    "prompt_tokens completion_tokens finish_reason error completed_at content"
).split()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# -- writer locks ---------------------------------------------------------------------------------
# A process that writes pending replies holds an exclusive lock on a small file next to the database
# (``<db>.writers/<id>.lock``) for as long as it lives; the operating system drops the lock when the
# process ends, however it ends (kill -9 included). Recovery at start-up marks a pending reply
# interrupted only when its writer's lock can be taken, so a second app started on the same database
# leaves the first app's live replies alone.
_HELD: dict[str, object] = {}  # writer id -> open lock file, held by this process
_HELD_LOCK = threading.Lock()


def _lock_dir(db_file: str) -> Path:
    return Path(db_file + ".writers")


def _try_lock(path: Path):
    """The open file with an exclusive lock taken, or None when another process holds it."""
    import fcntl

    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _writer_gone(writer: str | None, db_file: str) -> bool:
    """True when the process that wrote a pending reply is no longer running."""
    if writer is None:
        return True  # written before writers were recorded
    with _HELD_LOCK:
        if writer in _HELD:
            return False  # this process, still running
    if not db_file:
        return True  # an in-memory database lives in one process only
    path = _lock_dir(db_file) / f"{writer}.lock"
    if not path.exists():
        return True
    try:
        handle = _try_lock(path)
    except ImportError:  # no fcntl (Windows): fall back to treating every other writer as gone
        return True
    if handle is None:
        return False
    handle.close()
    return True


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
        self._writer: str | None = None
        with self._lock:
            migrate(db)
        rows = db.execute("PRAGMA database_list").fetchall()
        self._file = next((row[2] for row in rows if row[1] == "main"), "") or ""

    def writer_id(self) -> str:
        """This store's writer id, registered (and its lock taken) on first use."""
        with self._lock:
            if self._writer is None:
                writer = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
                handle = None
                if self._file:
                    folder = _lock_dir(self._file)
                    folder.mkdir(parents=True, exist_ok=True)
                    try:
                        handle = _try_lock(folder / f"{writer}.lock")
                    except ImportError:
                        handle = None
                with _HELD_LOCK:
                    _HELD[writer] = handle
                self._writer = writer
            return self._writer

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

        writer = self.writer_id() if fields.get("status") == "pending" else None

        def insert() -> int:
            if not self.db.execute("SELECT 1 FROM conversations WHERE id = ?", [conversation_id]).fetchone():
                raise NotFoundError(f"Conversation {conversation_id} does not exist.")
            (idx,) = self.db.execute(
                "SELECT COALESCE(MAX(idx), -1) + 1 FROM turns WHERE conversation_id = ?", [conversation_id]
            ).fetchone()
            stamp = now()
            row = {"conversation_id": conversation_id, "idx": idx, "role": role, "content": content,
                   "status": "ok", "created_at": stamp, **fields}
            if row["status"] == "pending":
                row["writer"] = writer
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
        if fields.get("status") == "ok":
            fields.setdefault("error", None)  # a reply that finished has no error left over
        self._write(lambda: self.db["turns"].update(turn_id, fields))

    def log_event(self, kind: str, detail: dict[str, Any] | str, conversation_id: int | None = None) -> int:
        text = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True, default=str)
        row = {"created_at": now(), "conversation_id": conversation_id, "kind": kind, "detail": text}
        return self._write(lambda: self.db["events"].insert(row).last_pk)

    def recover_interrupted(self) -> int:
        """Mark replies left 'pending' by a process that is gone (crashed, killed) as 'interrupted';
        return how many. Replies a live process is still writing (another app on the same database,
        or this one) are left alone: see the writer locks above."""
        with self._lock:
            writers = [row[0] for row in self.db.execute(
                "SELECT DISTINCT writer FROM turns WHERE status = 'pending'").fetchall()]
        gone = [w for w in writers if _writer_gone(w, self._file)]
        if not gone:
            return 0

        def fix() -> int:
            stamp, count = now(), 0
            for writer in gone:
                where = "writer IS NULL" if writer is None else "writer = ?"
                cursor = self.db.execute(
                    "UPDATE turns SET status = 'interrupted', error = 'the app stopped during this reply', "
                    f"completed_at = ? WHERE status = 'pending' AND {where}",
                    [stamp] + ([] if writer is None else [writer]))
                count += cursor.rowcount
            return count

        count = self._write(fix)
        for writer in gone:
            if writer is not None and self._file:
                (_lock_dir(self._file) / f"{writer}.lock").unlink(missing_ok=True)
        return count

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
