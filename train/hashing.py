"""One versioned content hash, used everywhere a row must be recognised (dedup, provenance).

The hash covers only what a model would train on (messages, or prompt/chosen/rejected, or
prompt/completion/label), never metadata, and carries its scheme as a prefix ("qh1:") so that a
future scheme cannot be confused with this one."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Any

HASH_SCHEME = "qh1"
TRAINING_KEYS = ("messages", "prompt", "chosen", "rejected", "completion", "label")


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value).strip()
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def content_hash(row: dict[str, Any]) -> str:
    """``qh1:<sha256>`` of the row's training content (metadata excluded)."""
    core = {k: _normalise(row[k]) for k in TRAINING_KEYS if k in row}
    if not core:
        raise ValueError("row has none of the training fields " + ", ".join(TRAINING_KEYS))
    canonical = json.dumps(core, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{HASH_SCHEME}:{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
