"""The SQL of promotions: which model is the learners' default, who made it so and when.

Every promotion and every rollback is a row; the newest row is the default now. A row remembers the row
under it (``restores``): a rollback returns to that row's model, so rolling back again walks further back,
down to the app's own default (``spec`` NULL: the model ``quimbot app --model`` names)."""

from __future__ import annotations

from dataclasses import dataclass

from tutor.store.database import Connection, now
from tutor.store.rows import Row


@dataclass
class Promotion(Row):
    id: int
    created_at: str
    action: str              # promote | rollback
    spec: str | None         # the learners' default from this row on; None: the app's own default
    previous: str | None     # the default before this row (None: the app's own default)
    restores: int | None     # the row a rollback of this one returns to (None: the app's own default)
    by: str | None
    note: str | None         # why (e.g. the compare recommendation it followed)


class PromotionTable:
    """``store.promotions``: the promotions table."""

    def __init__(self, connection: Connection):
        self.connection = connection

    def current(self) -> Promotion | None:
        """The newest row (None when nothing was ever promoted)."""
        row = self.connection.query_one("SELECT * FROM promotions ORDER BY id DESC LIMIT 1")
        return Promotion.from_row(row) if row else None

    def get(self, promotion_id: int | None) -> Promotion | None:
        if promotion_id is None:
            return None
        row = self.connection.query_one("SELECT * FROM promotions WHERE id = ?", [promotion_id])
        return Promotion.from_row(row) if row else None

    def history(self, limit: int = 20) -> list[Promotion]:
        return [Promotion.from_row(r) for r in self.connection.query(
            "SELECT * FROM promotions ORDER BY id DESC LIMIT ?", [limit])]

    def promote(self, spec: str, by: str | None, note: str | None = None) -> Promotion:
        """Make ``spec`` the default, in one transaction with reading the default it replaces."""
        with self.connection.transaction() as db:
            top = db.execute("SELECT id, spec FROM promotions ORDER BY id DESC LIMIT 1").fetchone()
            row = {"created_at": now(), "action": "promote", "spec": spec, "previous": top[1] if top else None,
                   "restores": top[0] if top else None, "by": by, "note": note}
            pk = db["promotions"].insert(row).last_pk
        return self.get(pk)

    def rollback(self, by: str | None) -> Promotion | None:
        """Return to the default under the newest row; None when there is nothing to roll back."""
        with self.connection.transaction() as db:
            top = db.execute("SELECT id, spec, restores FROM promotions ORDER BY id DESC LIMIT 1").fetchone()
            if top is None or top[1] is None:
                return None
            under = db.execute("SELECT spec, restores FROM promotions WHERE id = ?", [top[2]]).fetchone() \
                if top[2] is not None else None
            row = {"created_at": now(), "action": "rollback", "spec": under[0] if under else None,
                   "previous": top[1], "restores": under[1] if under else None, "by": by,
                   "note": f"rolled back promotion #{top[0]}"}
            pk = db["promotions"].insert(row).last_pk
        return self.get(pk)
