"""Duplicate rows: exact (same content hash) and near (MinHash over word shingles, LSH banding: see
train.data.minhash).

Exact duplicates share ``core.hashing.content_hash`` (the one versioned hash; the hash recorded in
``metadata.content_hash`` is used when present, since the gate has checked it). Near duplicates are
clusters of rows whose user and assistant text has an estimated Jaccard similarity of word 3-grams at
or above the threshold; the first row of a cluster (input order) is kept.

Scopes: ``within`` compares rows only with rows of the same source (``metadata.source``, or the
file name when a row has none). ``across`` compares the rows of the chosen sources (all sources
when none are named) with each other; rows of other sources are still deduplicated within their own
source. Cross-source dedup changes the mix ratios, so the report counts what each source lost,
and how much of that went to a copy kept from another source.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataError
from core.files import output_path, write_error
from core.hashing import content_hash
from core.jsonl import count_lines, no_rows, read_jsonl
from core.schema import GateReport
from train.data.minhash import MinHasher, near_duplicate_clusters, similarity, turn_words

SCOPES = ("within", "across")

@dataclass(frozen=True)
class RowRef:
    """Where a row came from: file (or dataset) and line, and its source label."""

    path: str
    line: int | None
    source: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path


def source_of(row: dict[str, Any], path: str | Path) -> str:
    """``metadata.source``, or the file name when a row has none."""
    meta = row.get("metadata")
    source = meta.get("source") if isinstance(meta, dict) else None
    return source if isinstance(source, str) and source.strip() else Path(path).name


@dataclass
class SourceCounts:
    rows: int = 0
    exact: int = 0            # removed: same content hash as a kept row
    near: int = 0             # near duplicates found (removed unless near duplicates are only reported)
    lost_to_other_sources: int = 0  # of the removed rows, those whose kept copy is from another source
    kept: int = 0

    def to_dict(self) -> dict[str, int | float]:
        lost = self.rows - self.kept
        return {"rows": self.rows, "exact": self.exact, "near": self.near, "kept": self.kept, "lost": lost,
                "lost_share": round(lost / self.rows, 4) if self.rows else 0.0,
                "lost_to_other_sources": self.lost_to_other_sources}


@dataclass
class DuplicateGroup:
    kind: str                     # "exact" or "near"
    kept: RowRef
    duplicates: list[RowRef]
    similarity: list[float] | None = None  # near: estimated Jaccard of each duplicate with the kept row
    removed: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "kept": str(self.kept), "kept_source": self.kept.source,
               "duplicates": [str(r) for r in self.duplicates], "removed": self.removed}
        if self.similarity is not None:
            out["similarity"] = [round(s, 3) for s in self.similarity]
        return out


@dataclass
class DedupReport:
    scope: str
    sources: list[str] | None
    near: bool
    threshold: float
    remove_near: bool
    per_source: dict[str, SourceCounts] = field(default_factory=dict)
    groups: list[DuplicateGroup] = field(default_factory=list)
    gate: GateReport = field(default_factory=GateReport)

    @property
    def rows_in(self) -> int:
        return sum(c.rows for c in self.per_source.values())

    @property
    def rows_kept(self) -> int:
        return sum(c.kept for c in self.per_source.values())

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "sources": self.sources, "near": self.near, "threshold": self.threshold,
                "remove_near": self.remove_near, "rows_in": self.rows_in, "rows_kept": self.rows_kept,
                "rejected": [str(e) for e in self.gate.rejected],
                "per_source": {s: c.to_dict() for s, c in sorted(self.per_source.items())},
                "groups": [g.to_dict() for g in self.groups]}

    def summary(self, limit: int = 10) -> str:
        what = f"scope {self.scope}" + (f" over {', '.join(self.sources)}" if self.sources else "")
        if self.near:
            what += f", near duplicates at Jaccard >= {self.threshold}" + ("" if self.remove_near else " (reported only)")
        lines = [f"{self.rows_in} rows in, {self.rows_kept} kept ({what}); {len(self.gate.rejected)} line(s) rejected "
                 "by the gate"]
        lines += [f"  {e}" for e in self.gate.rejected[:limit]]
        lines.append(f"{'source':<28} {'rows':>8} {'exact':>7} {'near':>7} {'kept':>8} {'lost':>7} {'to other':>9}")
        for name, c in sorted(self.per_source.items()):
            d = c.to_dict()
            lines.append(f"{name[:28]:<28} {c.rows:>8} {c.exact:>7} {c.near:>7} {c.kept:>8} "
                         f"{d['lost_share']:>7.1%} {c.lost_to_other_sources:>9}")
        for group in self.groups[:limit]:
            sims = "" if group.similarity is None else " (similarity " + ", ".join(
                f"{s:.2f}" for s in group.similarity[:5]) + ")"
            dups = ", ".join(str(r) for r in group.duplicates[:5]) + (" ..." if len(group.duplicates) > 5 else "")
            lines.append(f"  {group.kind}: kept {group.kept}; {'removed' if group.removed else 'found'} {dups}{sims}")
        if len(self.groups) > limit:
            lines.append(f"  ... and {len(self.groups) - limit} more duplicate groups")
        return "\n".join(lines)


@dataclass
class DedupResult:
    kept: list[dict[str, Any]]
    report: DedupReport


def dedup_rows(records: Iterable[tuple[dict[str, Any], RowRef]], *, scope: str = "within",
               sources: Sequence[str] | None = None, near: bool = False, threshold: float = 0.8,
               remove_near: bool = True, num_perm: int = 64, ngram: int = 3, progress: bool = False,
               gate: GateReport | None = None) -> DedupResult:
    """Deduplicate gated rows (each with its RowRef). Exact duplicates are always removed; near
    duplicates are found when ``near`` and removed when also ``remove_near``. The first row of each
    duplicate group (input order) is kept. Kept rows get ``metadata.content_hash`` and
    ``metadata.source`` filled in when missing."""
    if scope not in SCOPES:
        raise DataError(f"Unknown dedup scope {scope!r}; choose 'within' or 'across'.")
    if sources and scope != "across":
        raise DataError("A list of sources only applies to --scope across.")
    items = list(records)
    counts: dict[str, SourceCounts] = {}
    for _, ref in items:
        counts.setdefault(ref.source, SourceCounts()).rows += 1
    chosen = set(sources) if sources else None
    if chosen and chosen - set(counts):
        raise DataError(f"Unknown source(s) {', '.join(sorted(chosen - set(counts)))}; the input has "
                        f"{', '.join(sorted(counts)) or 'no rows'}.")

    def group_of(source: str) -> str:
        if scope == "across" and (chosen is None or source in chosen):
            return "\0across"
        return source

    report = DedupReport(scope=scope, sources=sorted(chosen) if chosen else None, near=near, threshold=threshold,
                         remove_near=remove_near, per_source=counts, gate=gate or GateReport())
    removed = bytearray(len(items))
    first: dict[tuple[str, str], int] = {}
    exact_groups: dict[int, list[int]] = {}
    for i, (row, ref) in enumerate(items):
        meta = row.setdefault("metadata", {})
        digest = meta.get("content_hash") or content_hash(row)
        meta["content_hash"] = digest
        meta.setdefault("source", ref.source)
        key = (group_of(ref.source), digest)
        kept = first.setdefault(key, i)
        if kept != i:
            removed[i] = 1
            exact_groups.setdefault(kept, []).append(i)
            _count_loss(counts, items, kept, i, "exact")
    for kept, dups in exact_groups.items():
        report.groups.append(DuplicateGroup("exact", items[kept][1], [items[d][1] for d in dups]))

    if near:
        alive = [i for i in range(len(items)) if not removed[i]]
        sig = signatures_of((items[i][0] for i in alive), len(alive), num_perm=num_perm, ngram=ngram,
                            progress=progress)
        labels: dict[str, int] = {}
        groups = np.array([labels.setdefault(group_of(items[i][1].source), len(labels)) for i in alive])
        for cluster in near_duplicate_clusters(sig, threshold, groups):
            kept, dups = alive[cluster[0]], [alive[c] for c in cluster[1:]]
            sims = similarity(sig[cluster[1:]], sig[cluster[0]]).tolist()
            report.groups.append(DuplicateGroup("near", items[kept][1], [items[d][1] for d in dups], sims,
                                                removed=remove_near))
            for d in dups:
                if remove_near:
                    removed[d] = 1
                _count_loss(counts, items, kept, d, "near", lost=remove_near)
    kept_rows = []
    for i, (row, ref) in enumerate(items):
        if not removed[i]:
            kept_rows.append(row)
            counts[ref.source].kept += 1
    return DedupResult(kept_rows, report)


def _count_loss(counts: dict[str, SourceCounts], items: list, kept: int, dup: int, kind: str,
                lost: bool = True) -> None:
    c = counts[items[dup][1].source]
    setattr(c, kind, getattr(c, kind) + 1)
    if lost and items[kept][1].source != items[dup][1].source:
        c.lost_to_other_sources += 1


def signatures_of(rows: Iterable[dict[str, Any]], total: int | None = None, *, num_perm: int = 64, ngram: int = 3,
                  batch: int = 4096, progress: bool = False) -> np.ndarray:
    """MinHash signatures of rows' training text, computed in batches."""
    hasher = MinHasher(num_perm, ngram)
    it: Iterable = rows
    if progress:
        from tqdm import tqdm

        it = tqdm(rows, total=total, unit="rows", desc="near-duplicate signatures")
    parts, pending = [], []
    for row in it:
        pending.append(turn_words(row))
        if len(pending) >= batch:
            parts.append(hasher.signatures(pending))
            pending = []
    parts.append(hasher.signatures(pending))
    return np.concatenate(parts) if parts else np.zeros((0, num_perm), dtype=np.uint32)


def read_records(paths: Sequence[str | Path], gate: GateReport, *, count_tokens: Callable[[dict], int] | None = None,
                 max_tokens: int | None = None, progress: bool = False) -> list[tuple[dict, RowRef]]:
    """Gated rows of JSONL files with their references; rejected lines land in ``gate``. A file that
    holds no rows at all (0 bytes, or blank lines only) is a DataError naming it."""
    records = []
    for path in paths:
        lines: Iterable = read_jsonl(path, gate, count_tokens=count_tokens, max_tokens=max_tokens)
        if progress:
            from tqdm import tqdm

            lines = tqdm(lines, total=count_lines(path), unit="rows", desc=f"read {Path(path).name}")
        name = str(path)
        seen = gate.accepted + len(gate.rejected)
        records += [(row, RowRef(name, number, source_of(row, path))) for number, row in lines]
        if gate.accepted + len(gate.rejected) == seen:
            raise no_rows(path)
    return records


def dedup_files(paths: Sequence[str | Path], *, count_tokens: Callable[[dict], int] | None = None,
                max_tokens: int | None = None, progress: bool = False, **options: Any) -> DedupResult:
    """Read JSONL files through the schema gate and deduplicate them (see :func:`dedup_rows`)."""
    gate = GateReport()
    records = read_records(paths, gate, count_tokens=count_tokens, max_tokens=max_tokens, progress=progress)
    return dedup_rows(records, gate=gate, progress=progress, **options)


def write_rows(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write rows as JSONL (UTF-8, one row per line) through a temporary file; returns the count."""
    path = output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n
