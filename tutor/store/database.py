"""The connection under the store: opening the file, one lock for the app's threads, and the
transaction every write goes through."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from core.errors import StoreError


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


class Connection:
    """A sqlite-utils Database shared by the app's threads. One re-entrant lock serialises writes (and
    reads, see ``query``); WAL mode lets other processes read meanwhile."""

    def __init__(self, db: Database):
        self.db = db
        self.lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Hold the lock and run the block as one transaction (sqlite-utils' ``atomic``): committed when it
        ends, rolled back when it raises, sqlite-utils' table methods inside it included. A nested block is a
        savepoint of the outer one. An SQLite error becomes a StoreError."""
        with self.lock:
            try:
                with self.db.atomic():
                    yield self.db
            except sqlite3.Error as exc:
                raise StoreError(f"Writing to the conversation log failed: {exc}") from exc

    def query(self, sql: str, args=()) -> list[dict[str, Any]]:
        """Rows of a read, under the store's lock: the app's threads share one connection, and a read
        interleaved with another thread's savepoint broke its write ("no such savepoint")."""
        with self.lock:
            return list(self.db.query(sql, args))

    def query_one(self, sql: str, args=()) -> dict[str, Any] | None:
        rows = self.query(sql, args)
        return rows[0] if rows else None
