"""Converting other chat-data formats into Quimbot's row format (JSONL files are read by core.jsonl).

Importing: three input formats, from a JSONL file or a ``datasets`` dataset saved on disk
(``Dataset.save_to_disk``; read with ``datasets.load_from_disk``, never from the network):

  sharegpt  {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}
            speakers human/user/gpt/assistant/bot/model/chatgpt/system and their variants;
            a top-level "system" string becomes the system message.
  messages  {"messages": [{"role": "user", "content": ...}, ...]} (OpenAI / TRL); a "metadata"
            object already on the record is kept.
  pairs     one prompt and one response field per record, e.g. prompt/response,
            instruction/output (+ optional input appended to the prompt), question/answer.

Every converted row passes the schema gate (core.schema.check_row); a record that cannot be
converted or fails the gate is reported with its file:line (or dataset[split][index]) and reason.
Accepted rows get ``metadata.source``, ``metadata.original_index`` (the dataset index; for JSONL the
line number minus one, and ``original_line``), ``metadata.original_file``, ``metadata.format`` and
``metadata.content_hash``.
The import report is a candidate-corpus gate report: pass rate, rejection reasons counted, and the
audit's style-artifact score of the accepted rows, so a small clean corpus can be chosen over a
large noisy one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.files import check_input, output_path, write_error
from core.hashing import content_hash
from core.jsonl import count_lines, iter_json_lines, no_rows, reason_key
from core.schema import GateReport, SchemaError, check_row

FORMATS = ("sharegpt", "messages", "pairs")
SPEAKERS = {
    "human": "user", "user": "user", "usr": "user", "prompter": "user", "question": "user", "learner": "user",
    "student": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant", "model": "assistant",
    "chatgpt": "assistant", "bard": "assistant", "claude": "assistant", "gpt-4": "assistant", "gpt4": "assistant",
    "answer": "assistant", "ai": "assistant", "tutor": "assistant", "teacher": "assistant", "system": "system",
}

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
    audit: Any = None  # train.data.audit.FileAudit of the accepted rows

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
    from train.data.audit import Auditor  # audit reads files through this module

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
