"""Reading JSONL safely, and converting other chat-data formats into Quimbot's row format.

Reading: every JSONL reader (validate, dedup, audit and its worker processes, import, mix,
train.schema.read_rows, training's dataset gate) goes through :func:`iter_json_lines`, which reads
bytes, so a line that is not valid UTF-8 becomes one reported error ("file:line: not valid UTF-8 at
byte N ...") instead of a crash that loses the rest of the file; so do JSON that no row can be (NaN,
Infinity, nesting deeper than MAX_DEPTH, an integer too long for Python, a lone UTF-16 surrogate). A
UTF-8 byte-order mark and CRLF line endings are accepted. Files are opened by :func:`open_data`,
which refuses a named pipe, a folder or a symbolic link loop by name before anything reads (or
waits on) it. :func:`read_jsonl` adds the schema gate and yields ``(line, row)``.

Importing: three input formats, from a JSONL file or a ``datasets`` dataset saved on disk
(``Dataset.save_to_disk``; read with ``datasets.load_from_disk``, never from the network):

  sharegpt  {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}
            speakers human/user/gpt/assistant/bot/model/chatgpt/system and their variants;
            a top-level "system" string becomes the system message.
  messages  {"messages": [{"role": "user", "content": ...}, ...]} (OpenAI / TRL); a "metadata"
            object already on the record is kept.
  pairs     one prompt and one response field per record, e.g. prompt/response,
            instruction/output (+ optional input appended to the prompt), question/answer.

Every converted row passes the schema gate (train.schema.check_row); a record that cannot be
converted or fails the gate is reported with its file:line (or dataset[split][index]) and reason.
Accepted rows get ``metadata.source``, ``metadata.original_index`` (the dataset index; for JSONL the
line number minus one, and ``original_line``), ``metadata.original_file``, ``metadata.format`` and
``metadata.content_hash``.
The import report is a candidate-corpus gate report: pass rate, rejection reasons counted, and the
audit's style-artifact score of the accepted rows, so a small clean corpus can be chosen over a
large noisy one.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from tutor.errors import QuimbotError

from .hashing import content_hash
from .schema import GateReport, SchemaError, check_row, decode_line

BOM = b"\xef\xbb\xbf"
FORMATS = ("sharegpt", "messages", "pairs")
SPEAKERS = {
    "human": "user", "user": "user", "usr": "user", "prompter": "user", "question": "user", "learner": "user",
    "student": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant", "model": "assistant",
    "chatgpt": "assistant", "bard": "assistant", "claude": "assistant", "gpt-4": "assistant", "gpt4": "assistant",
    "answer": "assistant", "ai": "assistant", "tutor": "assistant", "teacher": "assistant", "system": "system",
}


class DataError(QuimbotError):
    """A data file, folder or option the data pipeline cannot use (missing, unreadable, wrong kind)."""


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


def no_rows(path: str | Path) -> DataError:
    """The error for a data file that holds no rows (0 bytes, or blank lines only)."""
    try:
        size = os.stat(path).st_size
    except OSError:  # pragma: no cover - it was just read
        size = -1
    why = "the file is 0 bytes" if size == 0 else "the file holds only blank lines"
    return DataError(f"{path}: no rows ({why}); nothing to read.")


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


# ------------------------------------------------------------------------------------------ converting

@dataclass
class FieldOptions:
    """Where the parts of a record are. ``pairs`` uses prompt/response (+ optional input/system);
    ``sharegpt`` uses conversations/role_key/content_key; ``messages`` uses messages."""

    prompt: str = "prompt"
    response: str = "response"
    input: str | None = None      # appended to the prompt after a blank line (Alpaca "input")
    system: str | None = None     # a field holding a system prompt (pairs, sharegpt)
    conversations: str = "conversations"
    role_key: str = "from"
    content_key: str = "value"
    messages: str = "messages"


class ConversionError(ValueError):
    """A record that cannot be turned into a row; its message is the reason."""


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ConversionError(f"{what} is {type(value).__name__}, not text")
    return value


def _role(name: Any, where: str) -> str:
    role = SPEAKERS.get(str(name).strip().lower()) if isinstance(name, str) else None
    if role is None:
        raise ConversionError(f"{where} has speaker {name!r}; known speakers: {', '.join(sorted(SPEAKERS))}")
    return role


def _turns(items: Any, what: str, role_key: str, content_key: str) -> list[dict[str, str]]:
    if not isinstance(items, list) or not items:
        raise ConversionError(f"'{what}' is missing or not a non-empty list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConversionError(f"{what}[{i}] is not an object")
        keys = (role_key, content_key) if role_key in item else ("role", "content") if "role" in item else \
            ("from", "value")
        if keys[0] not in item:
            raise ConversionError(f"{what}[{i}] has no '{role_key}' field (the speaker)")
        out.append({"role": _role(item[keys[0]], f"{what}[{i}]"),
                    "content": _text(item.get(keys[1]), f"{what}[{i}].{keys[1]}")})
    return out


def convert_record(record: Any, fmt: str, fields: FieldOptions | None = None) -> dict[str, Any]:
    """One input record as a row ``{"messages": [...], "metadata": {...}}`` (not yet gated)."""
    fields = fields or FieldOptions()
    if not isinstance(record, dict):
        raise ConversionError(f"record is a {type(record).__name__}, not a JSON object")
    metadata: dict[str, Any] = {}
    if fmt == "sharegpt":
        messages = _turns(record.get(fields.conversations), fields.conversations, fields.role_key, fields.content_key)
        system = record.get(fields.system or "system")
        if isinstance(system, str) and system.strip() and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
    elif fmt == "messages":
        messages = _turns(record.get(fields.messages), fields.messages, "role", "content")
        if isinstance(record.get("metadata"), dict):
            metadata.update(record["metadata"])
            metadata.pop("content_hash", None)  # recomputed below for the converted row
    elif fmt == "pairs":
        for name in (fields.prompt, fields.response):
            if name not in record:
                raise ConversionError(f"record has no '{name}' field (fields: {', '.join(sorted(record))[:200]}); "
                                      "choose the fields with --prompt-field/--response-field")
        prompt = _text(record[fields.prompt], f"'{fields.prompt}'")
        extra = record.get(fields.input) if fields.input else None
        if isinstance(extra, str) and extra.strip():
            prompt = f"{prompt.rstrip()}\n\n{extra.strip()}"
        messages = [{"role": "user", "content": prompt},
                    {"role": "assistant", "content": _text(record[fields.response], f"'{fields.response}'")}]
        system = record.get(fields.system) if fields.system else None
        if isinstance(system, str) and system.strip():
            messages.insert(0, {"role": "system", "content": system})
    else:
        raise DataError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    return {"messages": messages, "metadata": metadata}


def iter_records(input_path: str | Path, report: GateReport, *, split: str | None = None
                 ) -> Iterator[tuple[str, int, int | None, Any]]:
    """``(where, index, line, record)`` from a JSONL file or a dataset folder saved with
    ``save_to_disk``. ``where`` is the file or ``dir[split]``; ``index`` is the dataset index, or for
    JSONL the line number minus one; JSONL lines that are not UTF-8/JSON go to ``report``."""
    path = Path(input_path)
    if path.is_dir():
        yield from _dataset_records(path, split)
        return
    for number, record in iter_json_lines(path, report):
        yield str(path), number - 1, number, record


def _dataset_records(path: Path, split: str | None) -> Iterator[tuple[str, int, None, Any]]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DataError("Reading a saved dataset needs the 'datasets' package.") from exc
    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{path} is not a dataset saved with save_to_disk (nor a JSONL file): {exc}") from exc
    if isinstance(data, datasets.DatasetDict):
        names = list(data)
        chosen = split or ("train" if "train" in data else names[0] if len(names) == 1 else None)
        if chosen not in data:
            raise DataError(f"{path} holds the splits {', '.join(names)}; choose one with --split.")
        data, split = data[chosen], chosen
    elif split:
        raise DataError(f"{path} is a single dataset without splits; leave out --split.")
    where = f"{path}[{split}]" if split else str(path)
    for index, record in enumerate(data):
        yield where, index, None, record


@dataclass
class ImportReport:
    """The candidate-corpus gate report of one import."""

    input: str
    output: str | None
    format: str
    source: str
    records: int = 0
    accepted: int = 0
    rejected: list[SchemaError] = field(default_factory=list)
    audit: Any = None  # train.audit.FileAudit of the accepted rows

    @property
    def pass_rate(self) -> float:
        return self.accepted / self.records if self.records else 0.0

    @property
    def reasons(self) -> Counter:
        return Counter(reason_key(e.reason) for e in self.rejected)

    @property
    def artifact_score(self) -> float | None:
        return None if self.audit is None else self.audit.artifact_score

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output, "format": self.format, "source": self.source,
                "records": self.records, "accepted": self.accepted, "rejected": len(self.rejected),
                "pass_rate": round(self.pass_rate, 4), "rejection_reasons": dict(self.reasons.most_common()),
                "rejections": [str(e) for e in self.rejected],
                "artifact_score": None if self.audit is None else round(self.audit.artifact_score, 4),
                "artifacts": None if self.audit is None else self.audit.artifact_components()}

    def summary(self, limit: int = 20) -> str:
        lines = [f"{self.input} ({self.format}) -> {self.output or '(not written)'}, source {self.source!r}",
                 f"{self.records} records, {self.accepted} accepted, {len(self.rejected)} rejected "
                 f"(pass rate {self.pass_rate:.1%})"]
        if self.audit is not None:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in self.audit.artifact_components().items())
            lines.append(f"style-artifact score {self.audit.artifact_score:.3f} (0 clean .. 1 all artifacts; {parts})")
        for reason, n in self.reasons.most_common():
            lines.append(f"  {n:>6} x {reason}")
        lines += [f"  {e}" for e in self.rejected[:limit]]
        if len(self.rejected) > limit:
            lines.append(f"  ... and {len(self.rejected) - limit} more")
        return "\n".join(lines)


def import_corpus(fmt: str, input_path: str | Path, output: str | Path | None = None, *, source: str | None = None,
                  fields: FieldOptions | None = None, split: str | None = None,
                  count_tokens: Callable[[dict], int] | None = None, max_tokens: int | None = None,
                  progress: bool = False) -> ImportReport:
    """Convert ``input_path`` (JSONL or saved dataset) in format ``fmt`` into rows, gate them, write
    the accepted rows to ``output`` (JSONL; nothing written when None) and audit them."""
    from .audit import Auditor  # audit reads files through this module

    if fmt not in FORMATS:
        raise DataError(f"Unknown format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    fields = fields or FieldOptions()
    source = source or Path(input_path).stem
    report = ImportReport(input=str(input_path), output=None if output is None else str(output), format=fmt,
                          source=source)
    gate = GateReport()
    auditor = Auditor(str(input_path))
    if not Path(input_path).is_dir():
        check_input(input_path)  # before the output is created
    out_fh = None
    if output is not None:
        try:
            out_fh = open(output_path(output), "w", encoding="utf-8")
        except OSError as exc:
            raise write_error(output, exc) from None
    records: Iterable = iter_records(input_path, gate, split=split)
    if progress:
        from tqdm import tqdm

        total = None if Path(input_path).is_dir() else count_lines(input_path)
        records = tqdm(records, total=total, unit="rows", desc=f"import {Path(input_path).name}")
    try:
        for where, index, number, record in records:
            report.records += 1
            try:
                row = convert_record(record, fmt, fields)
                meta = row["metadata"]
                meta.update(source=source, original_index=index, original_file=str(input_path), format=fmt)
                if number is not None:
                    meta["original_line"] = number
                meta["content_hash"] = content_hash(row)
                check_row(row, count_tokens=count_tokens, max_tokens=max_tokens)
            except (ConversionError, SchemaError) as exc:
                reason = exc.reason if isinstance(exc, SchemaError) else str(exc)
                report.rejected.append(SchemaError(reason, *_location(where, index, number)))
                continue
            report.accepted += 1
            auditor.add(row, number if number is not None else f"{where}[{index}]", digest=meta["content_hash"])
            if out_fh is not None:
                try:
                    out_fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                except OSError as exc:
                    raise write_error(output, exc) from None
    finally:
        if out_fh is not None:
            out_fh.close()
    report.records += len(gate.rejected)  # lines that were not even JSON
    if not report.records:
        if output is not None:
            Path(output).unlink(missing_ok=True)  # the empty file this call made
        raise no_rows(input_path) if not Path(input_path).is_dir() else DataError(f"{input_path}: no records.")
    report.rejected = gate.rejected + report.rejected
    report.rejected.sort(key=lambda e: e.line or 0)  # JSONL: line order; datasets: index order (stable)
    report.audit = auditor.finish(f"{source} (accepted rows of {input_path})", report.rejected)
    return report


def _location(where: str, index: int, number: int | None) -> tuple[str, int | None]:
    """JSONL: (file, line). Dataset: ("dir[split][index]", None), so index 0 is still shown."""
    return (where, number) if number is not None else (f"{where}[{index}]", None)
