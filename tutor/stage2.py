"""Export flagged dialogues as Stage 2 training data (TRL formats), scrubbed of personal data,
gated by the schema, deduplicated by content hash, with a manifest per export.

For every flagged tutor reply, the dialogue up to the learner's message is the prompt:
  - each distinct rewrite a tester wrote gives an SFT row (target = the rewrite) in sft.jsonl
    and a preference row (chosen = rewrite, rejected = model reply) in preference.jsonl;
  - a reply flagged without any rewrite gives an unpaired preference row (label false, as TRL's
    KTO trainer reads it) in unpaired.jsonl.
Re-exporting into the same folder adds only rows whose content hash is not there yet."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.files import file_sha256
from core.hashing import HASH_SCHEME, content_hash
from core.jsonl import read_rows
from core.schema import GateReport, SchemaError, check_row
from tutor.feedback import Feedback, FlagFilters
from tutor.privacy import Scrubber, default_scrubber
from tutor.session import completed_exchanges
from tutor.store import Store, Turn, TurnStatus, now

FILES = {"sft": "sft.jsonl", "preference": "preference.jsonl", "unpaired": "unpaired.jsonl"}


def dialogue_before(store: Store, turn: Turn, include_system: bool) -> tuple[list[dict], Turn | None]:
    """The chat messages a tutor reply answered (the system prompt if asked, the completed exchanges before,
    and the learner's message), and that learner turn; ([], None) when there is no sent learner message."""
    turns = store.turns(turn["conversation_id"])
    before = [t for t in turns if t["idx"] < turn["idx"]]
    learner = next((t for t in reversed(before) if t["role"] == "user"), None)
    if learner is None or learner["status"] != TurnStatus.OK:
        return [], None
    history = completed_exchanges([t for t in before if t["idx"] < learner["idx"]])
    messages = [{"role": "system", "content": turn["system_prompt"]}] if include_system and turn["system_prompt"] else []
    return messages + history + [{"role": "user", "content": learner["content"]}], learner


class _DialogueScrubber:
    """Scrubs the texts of one export. A name found anywhere in a conversation (in any turn, or in any
    tester's rewrite of one) is replaced wherever it appears in that conversation's rows."""

    def __init__(self, store: Store, scrubber: Scrubber):
        self.store, self.scrubber = store, scrubber
        self.counts: Counter = Counter()
        self._names: dict[int, frozenset[str]] = {}
        self._done: dict[tuple[str, frozenset[str]], tuple[str, Counter]] = {}

    def names(self, conversation_id: int) -> frozenset[str]:
        if conversation_id not in self._names:
            texts = [t["content"] for t in self.store.turns(conversation_id)]
            texts += self.store.flags.rewrites_in_conversation(conversation_id)
            self._names[conversation_id] = frozenset(self.scrubber.names_in(texts))
        return self._names[conversation_id]

    def messages(self, conversation_id: int, messages: list[dict]) -> list[dict]:
        names = self.names(conversation_id)
        out = []
        for m in messages:
            key = (m["content"], names)
            if key not in self._done:  # a prompt repeats across rows: analyse each text once
                self._done[key] = self.scrubber.scrub(m["content"], names)
            text, found = self._done[key]
            self.counts.update(found)
            out.append({"role": m["role"], "content": text})
        return out


def build_rows(store: Store, filters: FlagFilters | None = None, include_system: bool = True,
               scrubber: Scrubber | None = None) -> tuple[list[tuple[str, dict]], dict[str, Any]]:
    """(kind, row) pairs for the flags matching ``filters``, and statistics for the manifest."""
    feedback = Feedback(store)
    flags = feedback.queue(filters, limit=1_000_000)
    by_turn: dict[int, list[dict]] = {}
    for flag in flags:
        by_turn.setdefault(flag["turn_id"], []).append(flag)
    scrub = _DialogueScrubber(store, scrubber or default_scrubber())
    rows: list[tuple[str, dict]] = []
    skipped: list[str] = []
    for turn_id, turn_flags in sorted(by_turn.items()):
        turn = store.turn(turn_id)
        prompt, learner = dialogue_before(store, turn, include_system)
        if not prompt:
            skipped.append(f"turn {turn_id}: no learner message before it")
            continue
        rewrites = sorted({f["rewrite"] for f in turn_flags if f["rewrite"]})
        cid = turn["conversation_id"]
        prompt = scrub.messages(cid, prompt)
        reply = scrub.messages(cid, [{"role": "assistant", "content": turn["content"]}])
        reasons = sorted({r for f in turn_flags for r in f["reasons"]})
        meta = {"source": "quimbot-flags", "conversation_id": turn["conversation_id"], "turn_id": turn_id,
                "user_turn_id": learner["id"], "flag_ids": [f["id"] for f in turn_flags], "reasons": reasons,
                "model_spec": turn["model_spec"], "checkpoint": turn["checkpoint"], "level": turn["level"]}
        for rewrite in rewrites:
            chosen = scrub.messages(cid, [{"role": "assistant", "content": rewrite}])
            rows.append(("sft", {"messages": prompt + chosen, "metadata": dict(meta)}))
            if chosen[0]["content"].strip() != reply[0]["content"].strip():
                rows.append(("preference", {"prompt": prompt, "chosen": chosen, "rejected": reply,
                                            "metadata": dict(meta)}))
        if not rewrites:
            rows.append(("unpaired", {"prompt": prompt, "completion": reply, "label": False, "metadata": dict(meta)}))
    for kind, row in rows:
        row["metadata"]["kind"] = kind
        row["metadata"]["content_hash"] = content_hash(row)
    stats = {"flags": len(flags), "flagged_replies": len(by_turn), "skipped": skipped,
             "pii_scrubbed": dict(scrub.counts), "pii_engine": scrub.scrubber.describe(),
             **{f"per_{k}": v for k, v in feedback.counts(filters).items()}}
    return rows, stats




def _write_atomic(path: Path, lines: list[str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_stage2(store: Store, out_dir: str | Path, filters: FlagFilters | None = None,
                  include_system: bool = True, scrubber: Scrubber | None = None) -> dict[str, Any]:
    """Write (or extend) the Stage 2 files in ``out_dir`` and a manifest; return the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, stats = build_rows(store, filters, include_system, scrubber)
    rejected: list[str] = []
    files: dict[str, Any] = {}
    added_total, duplicates = 0, 0
    for kind, name in FILES.items():
        path = out_dir / name
        existing_lines: list[str] = []
        seen: set[str] = set()
        if path.exists():
            report = GateReport()
            for row in read_rows(path, report):
                seen.add(row["metadata"].get("content_hash") or content_hash(row))
                existing_lines.append(json.dumps(row, ensure_ascii=False) + "\n")
            if report.rejected:
                raise InputError(f"{path} already holds rows that fail the schema gate; fix or move it first:\n"
                                 + report.summary())
        new_lines = []
        for row_kind, row in rows:
            if row_kind != kind:
                continue
            try:
                check_row(row)
            except SchemaError as exc:
                rejected.append(f"turn {row['metadata']['turn_id']} ({kind}): {exc}")
                continue
            if row["metadata"]["content_hash"] in seen:
                duplicates += 1
                continue
            seen.add(row["metadata"]["content_hash"])
            new_lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        if new_lines or path.exists():
            _write_atomic(path, existing_lines + new_lines)
            files[name] = {"rows": len(existing_lines) + len(new_lines), "added": len(new_lines),
                           "sha256": file_sha256(path)}
        added_total += len(new_lines)
    manifest = {"created_at": now(), "out_dir": str(out_dir), "filters": (filters or FlagFilters()).as_dict(),
                "include_system_prompt": include_system, "hash_scheme": HASH_SCHEME, "files": files,
                "rows_added": added_total, "duplicates_skipped": duplicates, "rejected": rejected, **stats}
    stamp = manifest["created_at"].replace(":", "").replace("-", "")[:15]
    manifest_path = out_dir / f"manifest-{stamp}.json"
    n = 1
    while manifest_path.exists():
        n += 1
        manifest_path = out_dir / f"manifest-{stamp}-{n}.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    manifest["manifest_path"] = str(manifest_path)
    return manifest
