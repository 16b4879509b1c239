"""Prompt sets for the pedagogy metrics (``data/prompts/tutoring_prompts.jsonl``): learner turns with the
corrected forms a recast would contain, checked row by row."""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import QuimbotError

PROMPTS_PATH = Path(__file__).resolve().parents[2] / "data" / "prompts" / "tutoring_prompts.jsonl"
LEVELS = ("beginner", "intermediate", "advanced")


class PromptSetError(QuimbotError):
    """A prompt set file with a row that does not follow the schema."""


def read_checked_jsonl(path: str | Path, problem, error: type[QuimbotError], missing: str) -> list[dict]:
    """Rows of a JSONL file, each checked by ``problem(row) -> str | None``; ids must be unique. Raises
    ``error`` naming the line and the fix (``missing``: what to say when the file is not there)."""
    path = Path(path)
    if not path.exists():
        raise error(f"No {missing} at {path}.")
    rows, ids = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where} is not JSON ({exc.msg}); write one JSON object per line.") from None
        found = problem(row)
        if found:
            raise error(f"{where}: {found}.")
        if row["id"] in ids:
            raise error(f"{where}: id {row['id']!r} is used twice; ids must be unique.")
        ids.add(row["id"])
        rows.append(row)
    return rows


def load_prompts(path: str | Path = PROMPTS_PATH) -> list[dict]:
    """A prompt set, checked row by row; raises PromptSetError naming the line and the fix."""
    return read_checked_jsonl(path, _prompt_problem, PromptSetError,
                              "prompt set; pass the path of a tutoring_prompts.jsonl file")


def _prompt_problem(row: object) -> str | None:
    if not isinstance(row, dict):
        return "a row must be a JSON object"
    if not isinstance(row.get("id"), str) or not row["id"]:
        return "'id' must be a non-empty string"
    if not isinstance(row.get("learner"), str) or not row["learner"].strip():
        return "'learner' must be the learner's message"
    corrections = row.get("corrections")
    if not isinstance(corrections, list) or not all(isinstance(c, str) and c.strip() for c in corrections):
        return "'corrections' must be a list of non-empty strings"
    if row.get("error_type") is None and corrections:
        return "a row without 'error_type' must have no corrections"
    if row.get("error_type") is not None and (not isinstance(row["error_type"], str) or not corrections):
        return "a row with an 'error_type' needs at least one correction"
    if row.get("level") not in LEVELS:
        return f"'level' must be one of {', '.join(LEVELS)}"
    context = row.get("context", [])
    if not isinstance(context, list) or not all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
            for m in context):
        return "'context' must be a list of {role: user|assistant, content} messages"
    return None
