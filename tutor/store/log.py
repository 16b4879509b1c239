"""The conversation log: conversations, turns and events, and the tables hanging off them (flags and
suggestions as ``store.flags``, arena rounds as ``store.arena``), in SQLite through sqlite-utils.

The store takes a ``sqlite_utils.Database`` so tests can pass ``Database(memory=True)``.
One lock serialises writes from the app's worker threads; WAL mode lets readers go on.
Every SQL statement of the tutor is in this package."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from core.errors import NotFoundError, StoreError
from tutor.migrations import migrate
from tutor.store.arena import ArenaTable
from tutor.store.database import Connection, now, open_database
from tutor.store.flags import FlagTables
from tutor.store.jobs import JobsTable
from tutor.store.promotions import PromotionTable
from tutor.store.rows import TURN_FIELDS, Conversation, ConversationSummary, Event, Turn, TurnStatus
from tutor.store.writers import forget_writer, register_writer, writer_gone


def _turn_fields(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(TURN_FIELDS)
    if unknown:
        raise StoreError(f"Unknown turn fields: {sorted(unknown)}")
    if "options" in fields and not isinstance(fields["options"], (str, type(None))):
        fields["options"] = json.dumps(fields["options"], sort_keys=True)
    if "status" in fields and fields["status"] is not None:
        fields["status"] = str(fields["status"])  # a TurnStatus is stored as its plain string
    return fields


class Store(Connection):
    def __init__(self, db: Database):
        super().__init__(db)
        self._writer: str | None = None
        with self.lock:
            migrate(db)
        rows = db.execute("PRAGMA database_list").fetchall()
        self._file = next((row[2] for row in rows if row[1] == "main"), "") or ""
        self.flags = FlagTables(self)
        self.arena = ArenaTable(self)
        self.jobs = JobsTable(self)
        self.promotions = PromotionTable(self)

    def writer_id(self) -> str:
        """This store's writer id, registered (and its lock taken) on first use."""
        with self.lock:
            if self._writer is None:
                self._writer = register_writer(self._file)
            return self._writer

    @classmethod
    def open(cls, path: str | Path) -> "Store":
        return cls(open_database(path))

    # -- writes -------------------------------------------------------------------------
    def create_conversation(self, *, level: str, model_spec: str, client: str = "app",
                            learner: str | None = None, title: str | None = None) -> int:
        stamp = now()
        row = {"created_at": stamp, "updated_at": stamp, "title": title or "", "level": level,
               "model_spec": model_spec, "client": client, "learner": learner}
        with self.transaction() as db:
            return db["conversations"].insert(row).last_pk

    def add_turn(self, conversation_id: int, role: str, content: str, **fields: Any) -> int:
        fields = _turn_fields(fields)
        writer = self.writer_id() if fields.get("status") == TurnStatus.PENDING else None

        with self.transaction() as db:
            if not db.execute("SELECT 1 FROM conversations WHERE id = ?", [conversation_id]).fetchone():
                raise NotFoundError(f"Conversation {conversation_id} does not exist.")
            (idx,) = db.execute(
                "SELECT COALESCE(MAX(idx), -1) + 1 FROM turns WHERE conversation_id = ?", [conversation_id]
            ).fetchone()
            stamp = now()
            row = {"conversation_id": conversation_id, "idx": idx, "role": role, "content": content,
                   "status": str(TurnStatus.OK), "created_at": stamp, **fields}
            if row["status"] == TurnStatus.PENDING:
                row["writer"] = writer
            pk = db["turns"].insert(row).last_pk
            updates = {"updated_at": stamp}
            if role == "user":
                title = db.execute("SELECT title FROM conversations WHERE id = ?", [conversation_id]).fetchone()[0]
                if not title:
                    updates["title"] = " ".join(content.split())[:60]
            db["conversations"].update(conversation_id, updates)
            return pk

    def update_turn(self, turn_id: int, **fields: Any) -> None:
        fields = _turn_fields(fields)
        if fields.get("status") == TurnStatus.OK:
            fields.setdefault("error", None)  # a reply that finished has no error left over
        with self.transaction() as db:
            db["turns"].update(turn_id, fields)

    def log_event(self, kind: str, detail: dict[str, Any] | str, conversation_id: int | None = None) -> int:
        text = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True, default=str)
        row = {"created_at": now(), "conversation_id": conversation_id, "kind": kind, "detail": text}
        with self.transaction() as db:
            return db["events"].insert(row).last_pk

    def recover_interrupted(self) -> int:
        """Mark replies left 'pending' by a process that is gone (crashed, killed) as 'interrupted';
        return how many. Replies a live process is still writing (another app on the same database,
        or this one) are left alone: see tutor.store.writers."""
        with self.lock:
            writers = [row[0] for row in self.db.execute(
                "SELECT DISTINCT writer FROM turns WHERE status = 'pending'").fetchall()]
        gone = [w for w in writers if writer_gone(w, self._file)]
        if not gone:
            return 0
        with self.transaction() as db:
            stamp, count = now(), 0
            for writer in gone:
                where = "writer IS NULL" if writer is None else "writer = ?"
                cursor = db.execute(
                    "UPDATE turns SET status = 'interrupted', error = 'the app stopped during this reply', "
                    f"completed_at = ? WHERE status = 'pending' AND {where}",
                    [stamp] + ([] if writer is None else [writer]))
                count += cursor.rowcount
        for writer in gone:
            if writer is not None:
                forget_writer(writer, self._file)
        return count

    def delete_conversation(self, conversation_id: int) -> dict[str, int]:
        """Delete a conversation and everything hanging off it (turns, flags, suggestions, events,
        arena rounds), in one transaction; return how many rows of each went."""
        self.get_conversation(conversation_id)
        with self.transaction() as db:
            turn_ids = "SELECT id FROM turns WHERE conversation_id = ?"
            counts = {}
            for table, where in (("suggestions", f"turn_id IN ({turn_ids})"), ("flags", "conversation_id = ?"),
                                 ("events", "conversation_id = ?"),
                                 ("arena_rounds", "conversation_first = ? OR conversation_second = ?"),
                                 ("turns", "conversation_id = ?"), ("conversations", "id = ?")):
                if not db[table].exists():
                    continue
                args = [conversation_id] * where.count("?")
                counts[table] = db.execute(f"DELETE FROM {table} WHERE {where}", args).rowcount
            return counts

    def backup(self, path: str | Path) -> Path:
        """A consistent copy of the whole database, taken while the app may be writing."""
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path} exists already; choose a new file for the backup.")
        path.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(str(path))
        try:
            with self.lock:
                self.db.conn.backup(target)
        finally:
            target.close()
        return path

    # -- reads --------------------------------------------------------------------------
    def get_conversation(self, conversation_id: int) -> Conversation:
        with self.lock:
            row = self.query_one("SELECT * FROM conversations WHERE id = ?", [conversation_id])
            if row is None:
                raise NotFoundError(f"Conversation {conversation_id} does not exist.")
            return Conversation.from_row({**row, "turns": self.turns(conversation_id)})

    def turns(self, conversation_id: int) -> list[Turn]:
        return [Turn.from_row(r) for r in self.query(
            "SELECT * FROM turns WHERE conversation_id = ? ORDER BY idx", [conversation_id])]

    def turn(self, turn_id: int) -> Turn:
        row = self.query_one("SELECT * FROM turns WHERE id = ?", [turn_id])
        if row is None:
            raise NotFoundError(f"Turn {turn_id} does not exist.")
        return Turn.from_row(row)

    def learner_message_before(self, turn: Turn) -> str | None:
        """The text of the last learner message before a turn of its conversation."""
        row = self.query_one(
            "SELECT content FROM turns WHERE conversation_id = ? AND idx < ? AND role = 'user' "
            "ORDER BY idx DESC LIMIT 1", [turn.conversation_id, turn.idx])
        return row["content"] if row else None

    def last_reply(self, conversation_id: int) -> str | None:
        """The text of a conversation's last completed tutor reply."""
        row = self.query_one("SELECT content FROM turns WHERE conversation_id = ? AND role = 'assistant' "
                             "AND status = 'ok' ORDER BY idx DESC LIMIT 1", [conversation_id])
        return row["content"] if row else None

    def list_conversations(self, limit: int = 50, offset: int = 0,
                           ids: list[int] | None = None) -> list[ConversationSummary]:
        """Conversations, most recently updated first; only those in ``ids`` when it is given."""
        where, args = "", []
        if ids is not None:  # ids, not strings that SQLite would compare as numbers
            where, args = "WHERE c.id IN (SELECT value FROM json_each(?)) ", [json.dumps([int(i) for i in ids
                                                                                           if isinstance(i, int)])]
        return [ConversationSummary.from_row(r) for r in self.query(
            "SELECT c.*, (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id) AS n_turns "
            f"FROM conversations c {where}ORDER BY c.updated_at DESC, c.id DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )]

    def conversations_of(self, learner: str) -> list[int]:
        """Ids of every conversation stored with this learner name."""
        return [r["id"] for r in self.query("SELECT id FROM conversations WHERE learner = ?", [learner])]

    def events(self, conversation_id: int | None = None, kind: str | None = None) -> list[Event]:
        where, args = [], []
        if conversation_id is not None:
            where.append("conversation_id = ?")
            args.append(conversation_id)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [Event.from_row(r) for r in self.query(sql, args)]
