"""Files Quimbot reads and writes: opened safely (never a named pipe, a folder or a link loop), written
atomically, hashed. Every error is a DataError that names the file."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from core.errors import DataError


def _file_kind(mode: int) -> str | None:
    """What a file that is not a regular file is, or None for a regular file."""
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"

def _open_problem(name: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return f"Cannot read {name}: it is a symbolic link loop (following it leads back to itself); " \
               "point it at a real file."
    if exc.errno == errno.ENOENT and os.path.islink(name):
        return f"Cannot read {name}: it is a symbolic link to {os.readlink(name)}, which does not exist."
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"Cannot read {name}: it does not exist."
    return f"Cannot read {name}: {exc.strerror}."

def open_data(path: str | Path) -> BinaryIO:
    """Open a data file for reading (binary), or raise DataError naming it: missing, a symbolic link
    loop or a broken link, a folder, a named pipe, a device. The file is opened without blocking and
    checked before anything reads it, so a named pipe is refused at once instead of hanging."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DataError(_open_problem(name, exc)) from None
    try:
        kind = _file_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise DataError(f"Cannot read {name}: it is {kind}, not a regular file; Quimbot reads a data file more "
                            "than once (to count, split and hash it), so save the data to a file first.")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise

def check_input(path: str | Path) -> None:
    """Raise DataError (see :func:`open_data`) unless ``path`` is a regular file that can be opened."""
    open_data(path).close()

def output_path(path: str | Path) -> Path:
    """``path`` checked as a file to write: not a folder, not a symbolic link loop, in a folder that
    exists or can be created (missing folders are created). Raises DataError naming the path."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError(f"Cannot write {path}: it is a symbolic link loop.") from None
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise DataError(f"Cannot write {path}: it is a folder; name a file in it, e.g. {path / 'out.jsonl'}.")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"Cannot write {path}: a part of {parent} is a file, not a folder.") from None
    except OSError as exc:
        raise DataError(f"Cannot write {path}: cannot create the folder {parent} ({exc.strerror}).") from None
    return path

def write_error(path: str | Path, exc: OSError) -> DataError:
    """The error for a file that could not be written."""
    return DataError(f"Cannot write {path}: {exc.strerror or exc}.")


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open_data(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (UTF-8, a final newline) atomically: a reader sees the old file or
    the new one, never half of one. Values JSON cannot hold are written as their str()."""
    path = output_path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    return path
