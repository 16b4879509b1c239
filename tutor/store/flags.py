"""The SQL of flags (a tester's verdict on a tutor reply) and suggestions (the detector's), and the
review queue's queries. What may be flagged, and how, is decided by tutor.feedback."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tutor.store.database import Connection, now
from tutor.store.rows import Flag, QueuedFlag, Suggestion, SuggestionStatus


@dataclass
class FlagFilters:
    reason: str | None = None
    model: str | None = None     # substring of the model spec or checkpoint
    tester: str | None = None
    date_from: str | None = None  # ISO date or timestamp, inclusive
    date_to: str | None = None    # ISO date or timestamp, inclusive (a bare date means the whole day)

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause (on flags ``f`` joined to their turns ``t``) and its arguments."""
        where, args = ["f.removed_at IS NULL"], []
        if self.reason:
            where.append("EXISTS (SELECT 1 FROM json_each(f.reasons) WHERE value = ?)")
            args.append(self.reason)
        if self.model:
            where.append("(t.model_spec LIKE ? OR t.checkpoint LIKE ?)")
            args += [f"%{self.model}%"] * 2
        if self.tester:
            where.append("f.tester = ?")
            args.append(self.tester)
        if self.date_from:
            where.append("f.created_at >= ?")
            args.append(self.date_from)
        if self.date_to:
            where.append("f.created_at <= ?")
            args.append(self.date_to + ("T99" if len(self.date_to) == 10 else ""))
        return " AND ".join(where), args


class FlagTables:
    """``store.flags``: the flags and suggestions tables."""

    def __init__(self, connection: Connection):
        self.connection = connection

    # -- flags ---------------------------------------------------------------------------
    def add(self, turn_id: int, conversation_id: int, reasons: list[str], tester: str, note: str | None,
            rewrite: str | None) -> int:
        stamp = now()
        row = {"turn_id": turn_id, "conversation_id": conversation_id, "reasons": json.dumps(reasons),
               "note": note, "rewrite": rewrite, "tester": tester, "created_at": stamp, "updated_at": stamp}
        with self.connection.transaction() as db:
            return db["flags"].insert(row).last_pk

    def update(self, flag_id: int, *, note: str | None, rewrite: str | None, reasons: list[str] | None = None) -> None:
        fields: dict[str, Any] = {"updated_at": now(), "note": note, "rewrite": rewrite}
        if reasons is not None:
            fields["reasons"] = json.dumps(reasons)
        with self.connection.transaction() as db:
            db["flags"].update(flag_id, fields)

    def remove(self, flag_id: int, by: str) -> None:
        """Flags are removed softly (``removed_at``), so nothing a tester wrote is lost."""
        with self.connection.transaction() as db:
            db["flags"].update(flag_id, {"removed_at": now(), "removed_by": by})

    def get(self, flag_id: int) -> Flag | None:
        """The flag, or None when there is none or it was removed."""
        row = self.connection.query_one("SELECT * FROM flags WHERE id = ? AND removed_at IS NULL", [flag_id])
        return Flag.from_row(row) if row else None

    def live_flag_of(self, turn_id: int, tester: str) -> int | None:
        """The id of the tester's flag on a reply, if they have one."""
        row = self.connection.query_one(
            "SELECT id FROM flags WHERE turn_id = ? AND tester = ? AND removed_at IS NULL", [turn_id, tester])
        return row["id"] if row else None

    def for_turn(self, turn_id: int) -> list[Flag]:
        return [Flag.from_row(r) for r in self.connection.query(
            "SELECT * FROM flags WHERE turn_id = ? AND removed_at IS NULL ORDER BY id", [turn_id])]

    def rewrites_in_conversation(self, conversation_id: int) -> list[str]:
        """Every rewrite testers wrote of a reply in the conversation (removed flags included)."""
        return [r["rewrite"] for r in self.connection.query(
            "SELECT f.rewrite FROM flags f JOIN turns t ON t.id = f.turn_id "
            "WHERE t.conversation_id = ? AND f.rewrite IS NOT NULL", [conversation_id])]

    # -- review queue --------------------------------------------------------------------
    def queue(self, filters: FlagFilters | None = None, limit: int = 500) -> list[QueuedFlag]:
        """Live flags matching ``filters``, newest first, with their reply and the learner message before it."""
        where, args = (filters or FlagFilters()).where()
        sql = ("SELECT f.*, t.content AS reply, t.model_spec, t.checkpoint, t.level, "
               "(SELECT u.content FROM turns u WHERE u.conversation_id = t.conversation_id AND u.idx < t.idx "
               " AND u.role = 'user' ORDER BY u.idx DESC LIMIT 1) AS learner "
               f"FROM flags f JOIN turns t ON t.id = f.turn_id WHERE {where} ORDER BY f.created_at DESC LIMIT ?")
        return [QueuedFlag.from_row(r) for r in self.connection.query(sql, [*args, limit])]

    def counts(self, filters: FlagFilters | None = None) -> dict[str, dict[str, int]]:
        """Live flags matching ``filters`` per reason and per checkpoint (or model spec), most first."""
        where, args = (filters or FlagFilters()).where()
        by_reason = {r["value"]: r["n"] for r in self.connection.query(
            f"SELECT j.value, COUNT(*) AS n FROM flags f JOIN turns t ON t.id = f.turn_id, json_each(f.reasons) j "
            f"WHERE {where} GROUP BY j.value ORDER BY n DESC", args)}
        by_checkpoint = {r["k"]: r["n"] for r in self.connection.query(
            f"SELECT COALESCE(t.checkpoint, t.model_spec) AS k, COUNT(*) AS n FROM flags f "
            f"JOIN turns t ON t.id = f.turn_id WHERE {where} GROUP BY k ORDER BY n DESC", args)}
        return {"reason": by_reason, "checkpoint": by_checkpoint}

    # -- suggestions ---------------------------------------------------------------------
    def add_suggestions(self, turn_id: int, found: list[tuple[str, str]], detector: str) -> None:
        """Store (reason, evidence) suggestions of a detector version; ones stored already are kept as they are."""
        stamp = now()
        rows = [{"turn_id": turn_id, "reason": reason, "evidence": evidence, "detector": detector,
                 "status": str(SuggestionStatus.OPEN), "created_at": stamp} for reason, evidence in found]
        if rows:
            with self.connection.transaction() as db:
                db["suggestions"].insert_all(rows, ignore=True)

    def suggestions_for_turn(self, turn_id: int) -> list[Suggestion]:
        return [Suggestion.from_row(r) for r in self.connection.query(
            "SELECT * FROM suggestions WHERE turn_id = ? ORDER BY id", [turn_id])]

    def suggestion(self, suggestion_id: int) -> Suggestion | None:
        row = self.connection.query_one("SELECT * FROM suggestions WHERE id = ?", [suggestion_id])
        return Suggestion.from_row(row) if row else None

    def decide_suggestion(self, suggestion_id: int, status: SuggestionStatus, by: str) -> None:
        with self.connection.transaction() as db:
            db["suggestions"].update(suggestion_id, {"status": str(status), "decided_by": by, "decided_at": now()})

    def replies_without_suggestions(self, detector: str) -> list[int]:
        """Ids of the finished tutor replies this detector version has not looked at yet."""
        return [r["id"] for r in self.connection.query(
            "SELECT id FROM turns WHERE role = 'assistant' AND status = 'ok' AND id NOT IN "
            "(SELECT turn_id FROM suggestions WHERE detector = ?)", [detector])]
