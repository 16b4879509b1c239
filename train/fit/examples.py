"""The rows a run trains on: schema gate (file:line), token lengths, and the held-out split.

    gate(paths, kind, skip_bad_rows)     rows of one kind (SFT or preference), every bad line reported
    apply_length_limit(...)              refuse (default), truncate or drop rows over max_length, never silently
    split_heldout(...)                   held-out rows chosen by content hash, stable when other rows change
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.hashing import content_hash
from core.jsonl import iter_json_lines, no_rows
from core.schema import GateReport, SchemaError, check_row
from train.fit.config import ConfigError
from train.fit.loss_mask import chat_messages, conversation_of, encode_messages, template_ids


@dataclass
class Example:
    path: str
    line: int
    row: dict[str, Any]
    hash: str
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


KIND_HELP = {"sft": "SFT rows ({\"messages\": [...]})", "preference": "preference rows (prompt/chosen/rejected)"}


def read_examples(paths: list[str], kind: str, report: GateReport) -> list[Example]:
    """Rows of ``kind`` from JSONL files, each with its file and line; every other line is recorded in
    ``report`` (bad JSON, schema failures, rows of another kind). Lines are read by the data pipeline's
    one JSONL reader (core.jsonl.iter_json_lines); a file that cannot be read, or holds no rows,
    is a DataError naming it."""
    if not paths:
        raise ConfigError("No training data: give a dataset (--dataset FILE or dataset = [...] in the config).")
    examples: list[Example] = []
    for name in paths:
        path = Path(name).expanduser()
        if not path.exists() and not path.is_symlink():
            raise DataError(f"Dataset not found: {name}")
        seen = report.accepted + len(report.rejected)
        try:
            for number, row in iter_json_lines(path, report):
                try:
                    found = check_row(row)
                    if found != kind:
                        raise SchemaError(f"is a {found} row; this run trains on {KIND_HELP.get(kind, kind)}")
                except SchemaError as exc:
                    report.rejected.append(SchemaError(exc.reason, str(path), number))
                    continue
                report.accepted += 1
                examples.append(Example(str(path), number, row, row["metadata"].get("content_hash")
                                        or content_hash(row)))
        except DataError as exc:
            raise DataError(f"Dataset: {exc}") from None
        if report.accepted + len(report.rejected) == seen:
            raise DataError(f"Dataset {no_rows(path)}")
    return examples


def gate(paths: list[str], kind: str, skip_bad_rows: bool, say=print) -> tuple[list[Example], GateReport]:
    report = GateReport()
    examples = read_examples(paths, kind, report)
    if report.rejected:
        if not skip_bad_rows:
            raise DataError("The dataset fails the schema gate; nothing was trained.\n" + report.summary()
                            + "\nFix these rows, or pass --skip-bad-rows to train without them.")
        say(f"schema gate: skipping {len(report.rejected)} bad row(s) (--skip-bad-rows):\n" + report.summary())
    if not examples:
        raise DataError(f"No usable {KIND_HELP.get(kind, kind)} in {', '.join(paths)}.")
    return examples, report


def encode_examples(tokenizer, examples: list[Example]) -> None:
    for ex in examples:
        ex.input_ids, ex.labels = encode_messages(tokenizer, conversation_of(ex.row))


def preference_lengths(tokenizer, examples: list[Example]) -> dict[int, int]:
    """Tokens of the longer of prompt+chosen and prompt+rejected, per preference row (keyed by id(example))."""
    lengths = {}
    for ex in examples:
        prompt = chat_messages(ex.row["prompt"])
        lengths[id(ex)] = max(len(template_ids(tokenizer, prompt + chat_messages(ex.row[key])))
                              for key in ("chosen", "rejected"))
    return lengths


def apply_length_limit(examples: list[Example], max_length: int, on_long: str, say=print,
                       lengths: dict[int, int] | None = None) -> tuple[list[Example], dict[str, int]]:
    """Refuse (default), truncate or drop rows over ``max_length`` tokens; never silently."""
    lengths = lengths or {id(ex): len(ex.input_ids) for ex in examples}
    long = [ex for ex in examples if lengths[id(ex)] > max_length]
    stats = {"truncated": 0, "dropped_long": 0}
    if not long:
        return examples, stats
    listing = "\n".join(f"  {ex.where}: {lengths[id(ex)]:,} tokens" for ex in long[:30])
    if len(long) > 30:
        listing += f"\n  ... and {len(long) - 30} more"
    if on_long == "refuse":
        raise DataError(f"{len(long)} row(s) are longer than max_length = {max_length:,} tokens; nothing was "
                        f"trained.\n{listing}\nRaise --max-length, or pass --truncate (keep the start) or "
                        "--drop-long (leave them out).")
    if on_long == "drop":
        say(f"dropping {len(long)} row(s) longer than {max_length} tokens (--drop-long):\n{listing}")
        stats["dropped_long"] = len(long)
        return [ex for ex in examples if lengths[id(ex)] <= max_length], stats
    if any(not ex.input_ids for ex in long):  # preference rows: TRL's DPOTrainer truncates them
        say(f"{len(long)} row(s) longer than {max_length} tokens will be truncated by the trainer (--truncate):"
            f"\n{listing}")
        stats["truncated"] = len(long)
        return examples, stats
    kept = []
    emptied = []
    for ex in examples:
        if lengths[id(ex)] > max_length:
            ex.input_ids, ex.labels = ex.input_ids[:max_length], ex.labels[:max_length]
            if all(label == -100 for label in ex.labels):
                emptied.append(ex)
                continue
        kept.append(ex)
    stats["truncated"] = len(long) - len(emptied)
    stats["dropped_long"] = len(emptied)
    say(f"truncating {len(long)} row(s) to {max_length} tokens (--truncate):\n{listing}")
    if emptied:
        say(f"  {len(emptied)} of them kept no assistant token after truncation and are left out: "
            + ", ".join(ex.where for ex in emptied[:10]))
    return kept, stats


def heldout_score(seed: int, digest: str) -> float:
    """A number in [0, 1) fixed by the seed and the row's content hash."""
    h = hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest()
    return int(h[:15], 16) / 16 ** 15


def split_heldout(examples: list[Example], fraction: float, max_rows: int, seed: int
                  ) -> tuple[list[Example], list[Example]]:
    """Held-out rows chosen by content hash: a row is held out when its seeded score is below
    ``fraction`` (at least one distinct row when fraction > 0, at most ``max_rows``). Copies of a
    held-out row are held out too, so it is never trained on. Stable when other rows change."""
    if fraction <= 0 or max_rows <= 0:
        return examples, []
    hashes = sorted({ex.hash for ex in examples}, key=lambda h: heldout_score(seed, h))
    if len(hashes) < 2:
        return examples, []
    chosen = [h for h in hashes if heldout_score(seed, h) < fraction] or hashes[:1]
    chosen = set(chosen[:min(max_rows, len(hashes) - 1)])
    train = [ex for ex in examples if ex.hash not in chosen]
    heldout, seen = [], set()
    for ex in examples:
        if ex.hash in chosen and ex.hash not in seen:
            seen.add(ex.hash)
            heldout.append(ex)
    return train, heldout
