"""The SQL of arena rounds (two models' replies to one learner message and a tester's vote)."""

from __future__ import annotations

from tutor.store.database import Connection, now
from tutor.store.rows import ArenaRound, Vote


class ArenaTable:
    """``store.arena``: the arena_rounds table."""

    def __init__(self, connection: Connection):
        self.connection = connection

    def add(self, *, tester: str, learner: str, level: str, model_first: str, model_second: str,
            conversation_first: int, conversation_second: int) -> int:
        row = {"created_at": now(), "tester": tester, "learner": learner, "level": level,
               "model_first": model_first, "model_second": model_second, "conversation_first": conversation_first,
               "conversation_second": conversation_second}
        with self.connection.transaction() as db:
            return db["arena_rounds"].insert(row).last_pk

    def get(self, round_id: int) -> ArenaRound | None:
        row = self.connection.query_one("SELECT * FROM arena_rounds WHERE id = ?", [round_id])
        return ArenaRound.from_row(row) if row else None

    def record_vote(self, round_id: int, vote: Vote, tester: str) -> None:
        with self.connection.transaction() as db:
            db["arena_rounds"].update(round_id, {"vote": vote, "voted_at": now(), "tester": tester})

    def voted_rounds(self) -> list[ArenaRound]:
        return [ArenaRound.from_row(r) for r in self.connection.query(
            "SELECT * FROM arena_rounds WHERE vote IS NOT NULL")]

    def votes(self) -> list[tuple[str, str, Vote]]:
        """(model shown first, model shown second, vote) of every voted round."""
        return [(r["model_first"], r["model_second"], r["vote"]) for r in self.connection.query(
            "SELECT model_first, model_second, vote FROM arena_rounds WHERE vote IS NOT NULL")]
