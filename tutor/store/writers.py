"""Writer locks: which process is writing a pending reply, and whether it still runs.

A process that writes pending replies holds an exclusive lock on a small file next to the database
(``<db>.writers/<id>.lock``) for as long as it lives; the operating system drops the lock when the
process ends, however it ends (kill -9 included). Recovery at start-up marks a pending reply
interrupted only when its writer's lock can be taken, so a second app started on the same database
leaves the first app's live replies alone."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

_HELD: dict[str, object] = {}  # writer id -> open lock file, held by this process
_HELD_LOCK = threading.Lock()


def lock_dir(db_file: str) -> Path:
    return Path(db_file + ".writers")


def try_lock(path: Path):
    """The open file with an exclusive lock taken, or None when another process holds it."""
    import fcntl

    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def register_writer(db_file: str) -> str:
    """A new writer id for this process, its lock taken (for a database file) and held until the process ends."""
    writer = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    handle = None
    if db_file:
        folder = lock_dir(db_file)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            handle = try_lock(folder / f"{writer}.lock")
        except ImportError:
            handle = None
    with _HELD_LOCK:
        _HELD[writer] = handle
    return writer


def writer_gone(writer: str | None, db_file: str) -> bool:
    """True when the process that wrote a pending reply is no longer running."""
    if writer is None:
        return True  # written before writers were recorded
    with _HELD_LOCK:
        if writer in _HELD:
            return False  # this process, still running
    if not db_file:
        return True  # an in-memory database lives in one process only
    path = lock_dir(db_file) / f"{writer}.lock"
    if not path.exists():
        return True
    try:
        handle = try_lock(path)
    except ImportError:  # no fcntl (Windows): fall back to treating every other writer as gone
        return True
    if handle is None:
        return False
    handle.close()
    return True


def forget_writer(writer: str, db_file: str) -> None:
    """Remove a gone writer's lock file."""
    if db_file:
        (lock_dir(db_file) / f"{writer}.lock").unlink(missing_ok=True)
