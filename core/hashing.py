"""One versioned content hash, used everywhere a row must be recognised (dedup, provenance).

The hash covers only what a model would train on (messages, or prompt/chosen/rejected, or
prompt/completion/label), never metadata, and carries its scheme as a prefix ("qh1:") so that a
future scheme cannot be confused with this one.

qh1 is the SHA-256 of ``json.dumps(core, sort_keys=True, ensure_ascii=False, separators=(",", ":"))``
where ``core`` holds the row's training fields with every string NFC-normalised and stripped. The
usual shape of a field, a list of ``{"role": str, "content": str}`` messages, is written out
directly (the same text json.dumps gives, without building the normalised copy first); anything
else goes through json.dumps. tests/test_schema.py checks both paths against the definition."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from json.encoder import encode_basestring
from typing import Any

HASH_SCHEME = "qh1"
TRAINING_KEYS = ("messages", "prompt", "chosen", "rejected", "completion", "label")
_SORTED_KEYS = tuple(sorted(TRAINING_KEYS))  # the order sort_keys gives the top-level fields
_ENCODE = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode
_NFC = unicodedata.normalize
_SHA256 = hashlib.sha256
_SYSTEM_CACHE: dict[str, str] = {}  # system prompt -> its normalised JSON text (rows share a few prompts)
_SYSTEM_CACHE_MAX = 256
_ROLE_ENDS = {role: f',"role":"{role}"}}' for role in ("system", "user", "assistant")}
_OTHER_KEYS = tuple(k for k in TRAINING_KEYS if k != "messages")
_SYSTEM_STATES: dict[str, Any] = {}  # system prompt -> SHA-256 state after it (see content_hash)


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return (value if value.isascii() else unicodedata.normalize("NFC", value)).strip()
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def _text(value: str) -> str:
    """A string as it appears in the canonical JSON: NFC, stripped, JSON-escaped (NFC leaves ASCII as is)."""
    return encode_basestring((value if value.isascii() else _NFC("NFC", value)).strip())


def _messages_json(value: Any) -> str | None:
    """The canonical JSON of a list of messages that each hold exactly a string "role" and a string
    "content" (what json.dumps writes for its normalised copy, keys sorted), or None for any other value."""
    if type(value) is not list:
        return None
    out = []
    append, cache, ends, nfc, escape = out.append, _SYSTEM_CACHE, _ROLE_ENDS, _NFC, encode_basestring
    for message in value:
        if type(message) is not dict or len(message) != 2 or "content" not in message or "role" not in message:
            return None
        content, role = message["content"], message["role"]
        if type(content) is not str or type(role) is not str:
            return None
        if role in ends:
            end = ends[role]
        else:
            end = ',"role":' + _text(role) + "}"
        if role == "system":
            text = cache.get(content)
            if text is None:
                if len(cache) >= _SYSTEM_CACHE_MAX:
                    cache.clear()
                text = cache[content] = _text(content)
        else:
            text = escape((content if content.isascii() else nfc("NFC", content)).strip())
        append('{"content":' + text + end)
    return "[" + ",".join(out) + "]"


def canonical_json(row: dict[str, Any]) -> str:
    """The text qh1 hashes: the row's normalised training fields as sorted, compact JSON."""
    parts = []
    for key in _SORTED_KEYS:
        if key in row:
            value = row[key]
            text = _messages_json(value)
            parts.append(f'"{key}":' + (_ENCODE(_normalise(value)) if text is None else text))
    if not parts:
        raise ValueError("row has none of the training fields " + ", ".join(TRAINING_KEYS))
    return "{" + ",".join(parts) + "}"


def _system_state(first: Any):
    """The SHA-256 state after the canonical text up to and including a leading system message
    (rows share a few system prompts, often most of a row's bytes), or None for any other message."""
    if type(first) is not dict or len(first) != 2 or first.get("role") != "system":
        return None
    content = first.get("content")
    if type(content) is not str:
        return None
    state = _SYSTEM_STATES.get(content)
    if state is None:
        if len(_SYSTEM_STATES) >= _SYSTEM_CACHE_MAX:
            _SYSTEM_STATES.clear()
        state = _SYSTEM_STATES[content] = _SHA256(
            ('{"messages":[{"content":' + _text(content) + _ROLE_ENDS["system"]).encode("utf-8"))
    return state


def content_hash(row: dict[str, Any]) -> str:
    """``qh1:<sha256>`` of the row's training content (metadata excluded)."""
    messages = row.get("messages")
    if type(messages) is list and messages and not any(key in row for key in _OTHER_KEYS):
        state = _system_state(messages[0])
        if state is not None:  # hash the rest onto the cached state of the system message
            rest = _messages_json(messages[1:])
            if rest is not None:
                state = state.copy()
                state.update(("," + rest[1:] + "}" if len(messages) > 1 else "]}").encode("utf-8"))
                return HASH_SCHEME + ":" + state.hexdigest()
    return HASH_SCHEME + ":" + _SHA256(canonical_json(row).encode("utf-8")).hexdigest()
