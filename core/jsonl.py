"""The one JSONL reader of Quimbot, and safe file writes.

Every JSONL reader (validate, dedup, audit and its worker processes, import, mix, training's dataset gate,
the Stage 2 export) goes through :func:`iter_json_lines`, which reads bytes, so a line that is not valid
UTF-8 becomes one reported error ("file:line: not valid UTF-8 at byte N ...") instead of a crash that
loses the rest of the file; so do JSON that no row can be (NaN, Infinity, nesting deeper than MAX_DEPTH,
an integer too long for Python, a lone UTF-16 surrogate). A UTF-8 byte-order mark and CRLF line endings
are accepted. Files are opened by :func:`open_data`, which refuses a named pipe, a folder or a symbolic
link loop by name before anything reads (or waits on) it. :func:`read_jsonl` adds the schema gate and
yields ``(line, row)``; :func:`read_rows` is the same without the line numbers.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.files import check_input, open_data
from core.schema import GateReport, SchemaError, check_row, decode_line

BOM = b"\xef\xbb\xbf"

# --------------------------------------------------------------------------------------------- reading

MAX_DEPTH = 100  # lists and objects inside each other; a row needs 3 (row > messages > message)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # a \uD800-\uDFFF escape (a pair, or half of one)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # what is left in decoded text when a pair was not whole
_TOO_DEEP = (f"nests lists and objects more than {MAX_DEPTH} levels deep (a row needs 3); a line that deep is "
             "broken or hostile data, not a training row")


class _Refused(ValueError):
    """A JSON value the reader does not let through (NaN, Infinity, an overflowing number)."""


def _constant(name: str) -> Any:  # json calls this for NaN, Infinity and -Infinity
    raise _Refused(f"holds {name}, which JSON does not allow (written back, the row would break other JSON "
                   "readers); use null or a number")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise _Refused(f"holds the number {shown}, too large for a 64-bit float (it would be written back as "
                       "Infinity, which is not JSON); use a smaller number or a string")
    return value


_DECODE = json.JSONDecoder(parse_float=_float, parse_constant=_constant).decode  # json.loads, minus NaN/Infinity


def _json_error(exc: json.JSONDecodeError) -> str:
    """"not valid JSON (Expecting value at column 5)"; a message that ends in "at" ("Unterminated string
    starting at") takes the column directly."""
    joint = " " if exc.msg.endswith(" at") else " at "
    return f"not valid JSON ({exc.msg}{joint}column {exc.colno})"


def _digits_error() -> str:
    return (f"holds an integer of more than {sys.get_int_max_str_digits():,} digits, more than Python reads; "
            "write it as a string")


def _hostile(raw: bytes, value: Any) -> str | None:
    """Why a parsed line cannot be used though it is JSON (nested too deep, a lone UTF-16 surrogate), or
    None. Cheap byte checks first; the value is only walked when a line could be either."""
    deep = raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
    escaped = b"\\" in raw and _SURROGATE_ESCAPE.search(raw) is not None  # one-byte search first: faster
    if not (deep or escaped):
        return None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if escaped:
                found = _LONE_SURROGATE.search(item)
                if found:
                    return (f"holds a lone UTF-16 surrogate ({ascii(found.group())[1:-1]}), which is half of a "
                            "character and cannot be written as UTF-8; fix or remove that \\u escape")
        elif isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                return _TOO_DEEP
            if isinstance(item, dict):
                stack += [(key, depth) for key in item]
                item = item.values()
            stack += [(child, depth + 1) for child in item]
    return None


def no_rows(path: str | Path) -> DataError:
    """The error for a data file that holds no rows (0 bytes, or blank lines only)."""
    try:
        size = os.stat(path).st_size
    except OSError:  # pragma: no cover - it was just read
        size = -1
    why = "the file is 0 bytes" if size == 0 else "the file holds only blank lines"
    return DataError(f"{path}: no rows ({why}); nothing to read.")


def line_chunks(path: str | Path, parts: int) -> list[tuple[int, int]]:
    """Split a file into about ``parts`` byte ranges that start and end on line boundaries."""
    with open_data(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if parts <= 1 or size == 0:
            return [(0, size)]
        bounds = [0]
        for k in range(1, parts):
            fh.seek(max(bounds[-1], size * k // parts))
            fh.readline()
            pos = fh.tell()
            if pos >= size:
                break
            if pos > bounds[-1]:
                bounds.append(pos)
    bounds.append(size)
    return list(zip(bounds[:-1], bounds[1:]))


def iter_json_lines(path: str | Path, report: GateReport | None = None, *, start: int = 0, end: int | None = None,
                    first_line: int = 1, read_only: bool = False) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line of a JSONL file (or of the byte range
    ``start``-``end``, whose first line is ``first_line``). This is the one JSONL reader of the data
    pipeline and of training. Lines that are not UTF-8, not JSON, or JSON that a row can never be
    (NaN or Infinity, a number too large for Python, nesting more than MAX_DEPTH deep, a lone UTF-16
    surrogate) go to ``report.rejected`` with file and line, or raise SchemaError at once when no
    report is given; either way they cost only their own line. A file that cannot be read (missing,
    a folder, a named pipe, a symbolic link loop) raises DataError before any line is read.

    ``read_only``: the values are only looked at, never written back (the audit): lines are parsed
    with orjson where it is installed (gradio brings it), about 2.5x faster than json.loads. A line
    orjson refuses (NaN, a lone surrogate, invalid UTF-8, a blank line ...) goes the json.loads way,
    so the same lines pass and fail with the same messages. orjson reads integers beyond 64 bits as
    floats, which is why rows that may be written out again never take this path."""
    name = str(path)
    decode = _DECODE
    fast = _orjson_loads() if read_only else None
    with open_data(path) as fh:
        if start:
            fh.seek(start)
        remaining = None if end is None else end - start
        number = first_line - 1
        for raw in fh:
            number += 1
            if remaining is not None:
                remaining -= len(raw)
                if remaining < 0:  # the first line of the next range
                    number -= 1
                    break
            line = raw[3:] if raw[:3] == BOM else raw
            if fast is not None:
                try:
                    value = fast(line)
                except (ValueError, RecursionError):
                    pass
                else:
                    problem = _hostile(line, value)
                    if problem is None:
                        yield number, value
                        continue
            try:
                value = decode(line.decode("utf-8"))
            except UnicodeDecodeError:
                error = _line_error(line, name, number)
            except json.JSONDecodeError as exc:
                if not raw.strip():  # blank: ASCII whitespace only (a line holding just a BOM is reported)
                    continue
                error = SchemaError(_json_error(exc), name, number)
            except _Refused as exc:
                error = SchemaError(str(exc), name, number)
            except RecursionError:
                error = SchemaError(_TOO_DEEP, name, number)
            except ValueError:  # int(): more digits than sys.get_int_max_str_digits()
                error = SchemaError(_digits_error(), name, number)
            else:
                problem = _hostile(line, value)
                if problem is None:
                    yield number, value
                    continue
                error = SchemaError(problem, name, number)
            if report is None:
                raise error
            report.rejected.append(error)
        if report is not None:
            report.lines += number - first_line + 1


def _orjson_loads():
    try:
        import orjson
    except ImportError:  # pragma: no cover - gradio depends on it
        return None
    return orjson.loads


def _line_error(raw: bytes, name: str, number: int) -> SchemaError:
    try:
        decode_line(raw, name, number)
    except SchemaError as exc:
        return exc
    return SchemaError("could not be decoded", name, number)  # pragma: no cover - decode_line raised above


def count_lines(path: str | Path) -> int:
    """Number of lines in a file (for progress bars), counted in 1 MiB blocks."""
    n = 0
    with open_data(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


def read_jsonl(path: str | Path, report: GateReport | None = None, *, count_tokens: Callable[[dict], int] | None = None,
               max_tokens: int | None = None) -> Iterator[tuple[int, dict]]:
    """``(line number, row)`` for every row of a JSONL file that passes the schema gate; every other
    line lands in ``report`` with its file, line and reason (or raises at once without a report)."""
    name = str(path)
    for number, row in iter_json_lines(path, report):
        try:
            check_row(row, count_tokens=count_tokens, max_tokens=max_tokens)
        except SchemaError as exc:
            error = SchemaError(exc.reason, name, number)
            if report is None:
                raise error from None
            report.rejected.append(error)
            continue
        if report is not None:
            report.accepted += 1
        yield number, row


def jsonl_files(path: str | Path) -> list[Path]:
    """The JSONL files a path names: the file itself, or every ``*.jsonl`` under a folder (sorted).
    A name that is not a readable regular file (missing, a named pipe, a symbolic link loop) is a
    DataError naming it, also inside a folder (sub-folders named *.jsonl are passed over)."""
    path = Path(path)
    if path.is_dir():
        files = []
        for p in sorted(path.rglob("*.jsonl")):
            if not p.is_dir():
                check_input(p)
                files.append(p)
        if not files:
            raise DataError(f"{path} holds no *.jsonl files.")
        return files
    check_input(path)
    return [path]


def reason_key(reason: str) -> str:
    """A rejection reason with its numbers and quoted values generalised, for counting:
    "messages[3] has role 'bot'" -> "messages[N] has role ..."."""
    reason = re.sub(r"\(byte 0x[0-9a-f]{2} near .*?\); ", "(...); ", reason)
    reason = re.sub(r"(role|speaker) .*?(;|$)", lambda m: f"{m.group(1)} ...{m.group(2)}", reason)
    return re.sub(r"(?<![\w-])\d[\d,]*", "N", reason)


def read_rows(path: str | Path, report: GateReport | None = None, **limits: Any) -> Iterator[dict[str, Any]]:
    """Yield the rows of a JSONL file that pass the gate; every other line lands in ``report``
    (or raises at once when no report is given), with its file and line number: :func:`read_jsonl`
    without the line numbers."""
    for _, row in read_jsonl(path, report, **limits):
        yield row
