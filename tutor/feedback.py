"""Flags on tutor replies: the teaching taxonomy, flag CRUD, detector suggestions that a tester
confirms or dismisses, and the review queue's queries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.errors import InputError, NotFoundError
from tutor.detector import DETECTOR_VERSION, suggest_flags
from tutor.store import Store, now

REASONS: dict[str, str] = {
    "red_pen": "explicit “red-pen” correction",
    "rule_dump": "rule dump / grammar lecture",
    "missed_error": "missed the learner's error",
    "wrong_correction": "wrong correction",
    "over_correction": "over-correction of what was fine",
    "tone": "patronising or discouraging tone",
    "too_long": "too long or too hard for the level",
    "no_follow_up": "dialogue does not continue (no follow-up)",
    "off_topic": "off-topic",
    "other": "other (see note)",
}
MAX_NOTE_CHARS = 2000
MAX_REWRITE_CHARS = 4000


@dataclass
class FlagFilters:
    reason: str | None = None
    model: str | None = None     # substring of the model spec or checkpoint
    tester: str | None = None
    date_from: str | None = None  # ISO date or timestamp, inclusive
    date_to: str | None = None    # ISO date or timestamp, inclusive (a bare date means the whole day)

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


def _check_reasons(reasons: list[str]) -> list[str]:
    cleaned = sorted({r.strip() for r in reasons or [] if r and r.strip()})
    unknown = [r for r in cleaned if r not in REASONS]
    if unknown:
        raise InputError(f"Unknown flag reason(s) {unknown}; choose from: {', '.join(REASONS)}.")
    if not cleaned:
        raise InputError("Pick at least one reason for the flag.")
    return cleaned


def _check_text(value: str | None, limit: int, what: str) -> str | None:
    if value is None:
        return None
    value = str(value).replace("\r\n", "\n").strip()
    if len(value) > limit:
        raise InputError(f"The {what} is {len(value):,} characters long; the limit is {limit:,}.")
    return value or None


class Feedback:
    """Flags and suggestions on top of the conversation store."""

    def __init__(self, store: Store):
        self.store = store
        self.db = store.db

    # -- flags ---------------------------------------------------------------------------
    def _assistant_turn(self, turn_id: int) -> dict[str, Any]:
        rows = list(self.store.query("SELECT * FROM turns WHERE id = ?", [turn_id]))
        if not rows:
            raise NotFoundError(f"Turn {turn_id} does not exist.")
        if rows[0]["role"] != "assistant" or rows[0]["status"] != "ok":
            raise InputError(f"Turn {turn_id} is not a completed tutor reply; only those can be flagged.")
        return rows[0]

    def flag(self, turn_id: int, reasons: list[str], tester: str, note: str | None = None,
             rewrite: str | None = None) -> int:
        """Flag a tutor reply. The same tester flagging the same reply again edits their flag."""
        tester = (tester or "").strip()
        if not tester:
            raise InputError("Say who is flagging (a tester name).")
        reasons = _check_reasons(reasons)
        note = _check_text(note, MAX_NOTE_CHARS, "note")
        rewrite = _check_text(rewrite, MAX_REWRITE_CHARS, "rewrite")
        turn = self._assistant_turn(turn_id)
        existing = list(self.store.query(
            "SELECT id FROM flags WHERE turn_id = ? AND tester = ? AND removed_at IS NULL", [turn_id, tester]))
        if existing:
            self.update(existing[0]["id"], reasons=reasons, note=note, rewrite=rewrite)
            return existing[0]["id"]
        stamp = now()
        row = {"turn_id": turn_id, "conversation_id": turn["conversation_id"], "reasons": json.dumps(reasons),
               "note": note, "rewrite": rewrite, "tester": tester, "created_at": stamp, "updated_at": stamp}
        return self.store._write(lambda: self.db["flags"].insert(row).last_pk)

    def update(self, flag_id: int, *, reasons: list[str] | None = None, note: str | None = None,
               rewrite: str | None = None) -> None:
        self.get(flag_id)
        fields: dict[str, Any] = {"updated_at": now(), "note": _check_text(note, MAX_NOTE_CHARS, "note"),
                                  "rewrite": _check_text(rewrite, MAX_REWRITE_CHARS, "rewrite")}
        if reasons is not None:
            fields["reasons"] = json.dumps(_check_reasons(reasons))
        self.store._write(lambda: self.db["flags"].update(flag_id, fields))

    def remove(self, flag_id: int, by: str) -> None:
        self.get(flag_id)
        self.store._write(lambda: self.db["flags"].update(flag_id, {"removed_at": now(), "removed_by": by}))

    def get(self, flag_id: int) -> dict[str, Any]:
        rows = list(self.store.query("SELECT * FROM flags WHERE id = ? AND removed_at IS NULL", [flag_id]))
        if not rows:
            raise NotFoundError(f"Flag {flag_id} does not exist (or was removed).")
        return _decode(rows[0])

    def flags_for_turn(self, turn_id: int) -> list[dict[str, Any]]:
        return [_decode(r) for r in self.store.query(
            "SELECT * FROM flags WHERE turn_id = ? AND removed_at IS NULL ORDER BY id", [turn_id])]

    # -- suggestions ---------------------------------------------------------------------
    def suggest(self, turn_id: int) -> list[dict[str, Any]]:
        """Run the detector on a reply and store its suggestions (once per detector version)."""
        turn = self._assistant_turn(turn_id)
        learner = list(self.store.query(
            "SELECT content FROM turns WHERE conversation_id = ? AND idx < ? AND role = 'user' "
            "ORDER BY idx DESC LIMIT 1", [turn["conversation_id"], turn["idx"]]))
        found = suggest_flags(turn["content"], learner[0]["content"] if learner else "", turn["level"] or "")
        stamp = now()
        rows = [{"turn_id": turn_id, "reason": s.reason, "evidence": s.evidence, "detector": DETECTOR_VERSION,
                 "status": "open", "created_at": stamp} for s in found]
        if rows:
            self.store._write(lambda: self.db["suggestions"].insert_all(rows, ignore=True))
        return self.suggestions_for_turn(turn_id)

    def suggestions_for_turn(self, turn_id: int) -> list[dict[str, Any]]:
        return list(self.store.query("SELECT * FROM suggestions WHERE turn_id = ? ORDER BY id", [turn_id]))

    def decide(self, suggestion_id: int, confirm: bool, tester: str) -> int | None:
        """Confirm (adds the reason to the tester's flag on that reply) or dismiss a suggestion."""
        rows = list(self.store.query("SELECT * FROM suggestions WHERE id = ?", [suggestion_id]))
        if not rows:
            raise NotFoundError(f"Suggestion {suggestion_id} does not exist.")
        suggestion = rows[0]
        flag_id = None
        if confirm:
            mine = [f for f in self.flags_for_turn(suggestion["turn_id"]) if f["tester"] == (tester or "").strip()]
            reasons = (mine[0]["reasons"] if mine else []) + [suggestion["reason"]]
            flag_id = self.flag(suggestion["turn_id"], reasons, tester,
                                note=mine[0]["note"] if mine else None, rewrite=mine[0]["rewrite"] if mine else None)
        status = "confirmed" if confirm else "dismissed"
        self.store._write(lambda: self.db["suggestions"].update(
            suggestion_id, {"status": status, "decided_by": tester, "decided_at": now()}))
        return flag_id

    # -- review queue --------------------------------------------------------------------
    def _where(self, filters: FlagFilters) -> tuple[str, list[Any]]:
        where, args = ["f.removed_at IS NULL"], []
        if filters.reason:
            where.append("EXISTS (SELECT 1 FROM json_each(f.reasons) WHERE value = ?)")
            args.append(filters.reason)
        if filters.model:
            where.append("(t.model_spec LIKE ? OR t.checkpoint LIKE ?)")
            args += [f"%{filters.model}%"] * 2
        if filters.tester:
            where.append("f.tester = ?")
            args.append(filters.tester)
        if filters.date_from:
            where.append("f.created_at >= ?")
            args.append(filters.date_from)
        if filters.date_to:
            where.append("f.created_at <= ?")
            args.append(filters.date_to + ("T99" if len(filters.date_to) == 10 else ""))
        return " AND ".join(where), args

    def queue(self, filters: FlagFilters | None = None, limit: int = 500) -> list[dict[str, Any]]:
        where, args = self._where(filters or FlagFilters())
        sql = ("SELECT f.*, t.content AS reply, t.model_spec, t.checkpoint, t.level, "
               "(SELECT u.content FROM turns u WHERE u.conversation_id = t.conversation_id AND u.idx < t.idx "
               " AND u.role = 'user' ORDER BY u.idx DESC LIMIT 1) AS learner "
               f"FROM flags f JOIN turns t ON t.id = f.turn_id WHERE {where} ORDER BY f.created_at DESC LIMIT ?")
        return [_decode(r) for r in self.store.query(sql, [*args, limit])]

    def counts(self, filters: FlagFilters | None = None) -> dict[str, dict[str, int]]:
        where, args = self._where(filters or FlagFilters())
        by_reason = {r["value"]: r["n"] for r in self.store.query(
            f"SELECT j.value, COUNT(*) AS n FROM flags f JOIN turns t ON t.id = f.turn_id, json_each(f.reasons) j "
            f"WHERE {where} GROUP BY j.value ORDER BY n DESC", args)}
        by_checkpoint = {r["k"]: r["n"] for r in self.store.query(
            f"SELECT COALESCE(t.checkpoint, t.model_spec) AS k, COUNT(*) AS n FROM flags f "
            f"JOIN turns t ON t.id = f.turn_id WHERE {where} GROUP BY k ORDER BY n DESC", args)}
        return {"reason": by_reason, "checkpoint": by_checkpoint}


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    if isinstance(row.get("reasons"), str):
        row["reasons"] = json.loads(row["reasons"])
    return row
