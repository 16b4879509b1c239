"""The SQL of background jobs: a `quimbot train ...` or `quimbot eval compare ...` process started from
the app, one at a time. What a job runs, and how, is decided by tutor.jobs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from tutor.store.database import Connection, now
from tutor.store.rows import Row

JOB_STATES = ("running", "done", "failed", "cancelled", "stopped")


@dataclass
class Job(Row):
    """One row of the jobs table. ``argv`` is the quimbot command line after "quimbot"."""

    id: int
    kind: str                    # train | compare
    argv: list[str]
    state: str                   # running | done | failed | cancelled | stopped
    out_dir: str | None          # the run folder (train) or the report folder (compare)
    log_path: str
    pid: int | None              # the job's process group leader
    exit_code: int | None
    started_at: str
    ended_at: str | None
    by: str | None
    cancel_requested_at: str | None = None
    cancelled_by: str | None = None
    resumed_from: int | None = None  # the job this one resumes (train --resume)

    def __post_init__(self):
        if isinstance(self.argv, str):
            self.argv = json.loads(self.argv)


class JobsTable:
    """``store.jobs``: the jobs table."""

    def __init__(self, connection: Connection):
        self.connection = connection

    def add_if_idle(self, *, kind: str, argv: list[str], out_dir: str | None, log_path: str, by: str | None,
                    resumed_from: int | None = None) -> int | None:
        """Insert a running job, in one transaction with the check that no job is running; None (nothing
        inserted) when one is."""
        with self.connection.transaction() as db:
            if db.execute("SELECT 1 FROM jobs WHERE state = 'running'").fetchone():
                return None
            row = {"kind": kind, "argv": json.dumps(argv), "state": "running", "out_dir": out_dir,
                   "log_path": log_path, "started_at": now(), "by": by, "resumed_from": resumed_from}
            return db["jobs"].insert(row).last_pk

    def set_pid(self, job_id: int, pid: int) -> None:
        with self.connection.transaction() as db:
            db["jobs"].update(job_id, {"pid": pid})

    def request_cancel(self, job_id: int, by: str | None) -> None:
        with self.connection.transaction() as db:
            db.execute("UPDATE jobs SET cancel_requested_at = ?, cancelled_by = ? WHERE id = ? AND state = 'running'",
                       [now(), by, job_id])

    def finish(self, job_id: int, state: str, exit_code: int | None) -> bool:
        """Record a running job's end; False when it had already ended (another watcher wrote it first)."""
        if state not in JOB_STATES or state == "running":
            raise ValueError(f"not an end state: {state!r}")
        with self.connection.transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, exit_code = ?, ended_at = ? WHERE id = ? AND state = 'running'",
                [state, exit_code, now(), job_id])
            return cursor.rowcount == 1

    def get(self, job_id: int) -> Job | None:
        row = self.connection.query_one("SELECT * FROM jobs WHERE id = ?", [job_id])
        return Job.from_row(row) if row else None

    def running(self) -> list[Job]:
        rows = self.connection.query("SELECT * FROM jobs WHERE state = 'running' ORDER BY id")
        return [Job.from_row(r) for r in rows]

    def recent(self, limit: int = 20, kind: str | None = None) -> list[Job]:
        where, args = ("WHERE kind = ?", [kind]) if kind else ("", [])
        return [Job.from_row(r) for r in self.connection.query(
            f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?", [*args, int(limit)])]
