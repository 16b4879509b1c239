"""The schema gate: every row Quimbot writes or trains on passes here, or is reported with
its file, line and reason. Nothing is dropped silently.

Row kinds (TRL's formats, plus a ``metadata`` object with provenance and ``content_hash``):
  sft         {"messages": [system?, user, assistant, user, assistant, ...]}
  preference  {"prompt": [system?, user, ..., user], "chosen": [assistant], "rejected": [assistant]}
  unpaired    {"prompt": [...], "completion": [assistant], "label": true|false}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import QuimbotError
from core.hashing import content_hash

ROLES = ("system", "user", "assistant")


def _a(role: str) -> str:
    return ("an " if role == "assistant" else "a ") + role


class SchemaError(QuimbotError):
    """A row that breaks the row format. ``str()`` says where (file:line) and why."""

    def __init__(self, reason: str, path: str | None = None, line: int | None = None):
        self.reason, self.path, self.line = reason, path, line
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(where + reason)


def row_kind(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "sft"
    if "chosen" in row or "rejected" in row:
        return "preference"
    if "completion" in row:
        return "unpaired"
    raise SchemaError("row has no 'messages', no 'prompt'/'chosen'/'rejected' and no 'prompt'/'completion'")


def _check_messages(messages: Any, where: str, *, must_end_with: str | None) -> None:
    if not isinstance(messages, list) or not messages:
        raise SchemaError(f"'{where}' must be a non-empty list of messages")
    expected = "user"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise SchemaError(f"{where}[{i}] is not an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise SchemaError(f"{where}[{i}] has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content or content.isspace():  # i.e. not content.strip()
            raise SchemaError(f"{where}[{i}] ({role}) has empty or non-text content")
        if role == "system":
            if i != 0:
                raise SchemaError(f"{where}[{i}] is a system message; only the first message may be one")
            continue
        if role != expected:
            raise SchemaError(f"{where}[{i}] is {_a(role)} message where {_a(expected)} message should be "
                              "(after an optional system message, user and assistant alternate)")
        expected = "assistant" if role == "user" else "user"
    last = messages[-1]["role"]
    if must_end_with and last != must_end_with:
        raise SchemaError(f"'{where}' ends with {_a(last)} message; it must end with {_a(must_end_with)} message")


def check_row(row: Any, *, count_tokens: Callable[[dict], int] | None = None,
              max_tokens: int | None = None) -> str:
    """Raise SchemaError if the row is malformed; return its kind."""
    if not isinstance(row, dict):
        raise SchemaError(f"row is a {type(row).__name__}, not a JSON object")
    kind = row_kind(row)
    if kind == "sft":
        _check_messages(row["messages"], "messages", must_end_with="assistant")
    else:
        _check_messages(row.get("prompt"), "prompt", must_end_with="user")
        answers = ("chosen", "rejected") if kind == "preference" else ("completion",)
        for key in answers:
            value = row.get(key)
            if (not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict)
                    or value[0].get("role") != "assistant"):
                raise SchemaError(f"'{key}' must be a list holding exactly one assistant message")
            _check_messages([{"role": "user", "content": "x"}, *value], key, must_end_with="assistant")
        if kind == "preference" and row["chosen"][0]["content"].strip() == row["rejected"][0]["content"].strip():
            raise SchemaError("'chosen' and 'rejected' are the same reply")
        if kind == "unpaired" and not isinstance(row.get("label"), bool):
            raise SchemaError("'label' must be true or false")
    metadata = row.get("metadata")
    if not isinstance(metadata, dict):
        raise SchemaError("row has no 'metadata' object (provenance and content_hash)")
    recorded = metadata.get("content_hash")
    if recorded is not None and recorded != _hash(row):
        raise SchemaError(f"metadata.content_hash {recorded!r} does not match the row's content "
                          "(was the row edited after it was hashed?)")
    if count_tokens is not None and max_tokens is not None:
        n = count_tokens(row)
        if n > max_tokens:
            raise SchemaError(f"row is {n:,} tokens long; the limit for the target model is {max_tokens:,}")
    return kind


def _hash(row: dict[str, Any]) -> str:
    try:
        return content_hash(row)
    except UnicodeEncodeError as exc:  # a lone UTF-16 surrogate, e.g. from a "\\ud800" escape
        raise SchemaError(f"the row's text holds a lone UTF-16 surrogate ({ascii(exc.object[exc.start])[1:-1]}), "
                          "which is half of a character and cannot be written as UTF-8") from None
    except RecursionError:
        raise SchemaError("the row's training fields nest lists and objects too deeply to be hashed") from None


@dataclass
class GateReport:
    accepted: int = 0
    rejected: list[SchemaError] = field(default_factory=list)
    lines: int = 0  # lines read (blank ones included), set by core.jsonl.iter_json_lines

    def summary(self) -> str:
        lines = [f"{self.accepted} rows accepted, {len(self.rejected)} rejected"]
        lines += [f"  {err}" for err in self.rejected[:50]]
        if len(self.rejected) > 50:
            lines.append(f"  ... and {len(self.rejected) - 50} more")
        return "\n".join(lines)


def decode_line(raw: bytes, path: str, number: int) -> str:
    """The text of one line, or SchemaError("file:line: not valid UTF-8 at byte N ...")."""
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        near = raw[max(0, exc.start - 24):exc.start + 8].decode("utf-8", "backslashreplace").strip()
        raise SchemaError(f"not valid UTF-8 at byte {exc.start + 1} of the line (byte 0x{raw[exc.start]:02x} "
                          f"near {near!r}); the file mixes encodings - re-save this line as UTF-8",
                          path, number) from None
