"""Audit a data file or folder before it goes into a mix: what is in it, and which style artifacts a
model trained on it would learn.

Per file and for the whole folder: rows, exact duplicates (content hash), near duplicates
(MinHash, see train.data.dedup), rows the schema gate rejected (reasons counted), messages per row,
tutor reply length in words (mean/median/p90), and the style artifacts the seed project's data had:

  openers        the most repeated first 1, 2 and 3 words of tutor turns ("that sounds ...")
  trigrams       the most repeated word 3-grams in tutor turns
  "?" endings    the share of tutor turns that end in a question mark
  follow-ups     the final question of each tutor turn; stock questions are the 10 most common ones
                 that occur in more than one row; their share of rows, and distinct follow-ups / rows
  learner side   distinct learner utterances (and their share), the most repeated learner openers
  markdown       **, __, backticks, headings, bullet or numbered lists, *emphasis* in tutor turns
  red pen        explicit correction in tutor turns (tutor.detector's RED_PEN patterns, and its
                 "a small mistake" rule when the learner did not bring up mistakes)
  echo           a tutor turn that says the learner's first-person words as its own: the learner
                 writes "I have two brother", the tutor "Oh, I have two brothers?" (the recast should
                 be "you have two brothers"). Detected when the tutor turn has I/my/I'm/... followed
                 by at least 2 of the 4 words that follow the same pronoun in the previous learner
                 turn (equal, or one a prefix of the other, e.g. brother/brothers), one of them a
                 content word (not think/know/to/the/...).

Style-artifact score in [0, 1] (0 = none of these artifacts; a mix can downweight or drop a source
by it). Each component is a share scaled so that a plainly broken corpus saturates it at 1:

  opener     = min(1, dominant 2-word tutor opener share / 0.5)     weight 0.20
  stock      = min(1, stock follow-up question row share / 0.5)     weight 0.20
  echo       = min(1, echoing tutor turn share / 0.25)              weight 0.20
  red_pen    = min(1, red-pen tutor turn share / 0.25)              weight 0.20
  markdown   = min(1, markdown tutor turn share / 0.25)             weight 0.10
  monotony   = clamp((share of tutor turns ending in "?" - 0.75) / 0.25, 0, 1)   weight 0.10
  score      = sum(weight * component)

(the dominant opener only counts when it opens more than one turn). Everything streams: one pass
over each file keeping counters, one content hash and one MinHash signature per row; no pairwise
comparison. Files of 16 MB or more are read in 8 MB chunks by one worker process per CPU (up to 8),
whose counters are then added up; the result is the same as in one process.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataError
from core.files import output_path, write_error
from core.hashing import content_hash
from core.jsonl import jsonl_files, no_rows, reason_key
from core.schema import SchemaError, check_row
from train.data.audit_counts import Counts, quantile
from train.data.audit_report import ARTIFACT_WEIGHTS, TOP, AuditReport, FileAudit
from train.data.audit_scan import CHUNK_BYTES, Scan, Scanner, reduce_grams, scan_files
from train.data.minhash import near_duplicate_clusters, similarity


class Auditor:
    """Streaming audit of rows that passed the gate: ``add`` each row with its reference (a line
    number, or a string such as "data/set[train][17]"), then ``finish``."""

    def __init__(self, path: str = "<rows>", *, near: bool = True, threshold: float = 0.8, num_perm: int = 64):
        self.path, self.near, self.threshold = path, near, threshold
        self._scanner = Scanner(near, num_perm)
        self._rejected: list[tuple[str, int | str]] = []

    def add(self, row: dict[str, Any], ref: int | str, kind: str | None = None, digest: str | None = None) -> None:
        """Count one row (``kind`` and ``digest`` are worked out when not given; the row is gated)."""
        if kind is None:
            kind = check_row(row)
        if digest is None:
            digest = row["metadata"].get("content_hash") or content_hash(row)
        self._scanner.add(row, kind, ref, digest)

    def reject(self, reason: str, ref: int | str) -> None:
        self._rejected.append((reason, ref))

    def finish(self, name: str | None = None, rejected: list[SchemaError] | None = None) -> FileAudit:
        """The audit; ``rejected`` replaces the rejections recorded with ``reject``."""
        if rejected is not None:
            self._rejected = [(e.reason, e.line if e.line is not None else str(e.path)) for e in rejected]
        scan = self._scanner.result(self._rejected)
        scan.stats.place(_where(self.path))
        return _build(name or self.path, [(self.path, scan)], self.threshold)


def _where(path: str) -> Callable[[int | str], str]:
    return lambda ref: ref if isinstance(ref, str) else f"{path}:{ref}"


def _build(name: str, scans: list[tuple[str, Scan]], threshold: float) -> FileAudit:
    """A FileAudit from the scans of one or more files (exact and near duplicates across all of them)."""
    if len(scans) == 1:
        stats = scans[0][1].stats
        stats.settle()
    else:
        stats = Counts()
        for _, scan in scans:
            stats.merge(scan.stats)
    first: dict[str, tuple[int, int | str]] = {}       # content hash -> (file index, line) of its first row
    groups: dict[str, list[tuple[int, int | str]]] = {}
    duplicates = 0
    near = all(scan.signatures is not None for _, scan in scans)
    keep_sigs, sig_refs, rejected = [], [], []
    for n, (path, scan) in enumerate(scans):
        rejected += [SchemaError(reason, *((ref, None) if isinstance(ref, str) else (path, ref)))
                     for reason, ref in scan.rejected]
        keep = []
        for i, digest in enumerate(scan.digests):
            seen = first.get(digest)
            if seen is None:
                first[digest] = (n, scan.refs[i])
                keep.append(i)
            else:
                duplicates += 1
                groups.setdefault(digest, [seen]).append((n, scan.refs[i]))
        if near:
            keep_sigs.append(scan.signatures[keep])
            sig_refs += [(n, scan.refs[i]) for i in keep]
    wheres = [_where(path) for path, _ in scans]

    def where(ref: tuple[int, int | str]) -> str:
        return wheres[ref[0]](ref[1])

    exact_groups = [[where(r) for r in g] for g in sorted(groups.values(), key=len, reverse=True)[:TOP]]
    near_count, near_clusters = None, []
    if near:
        sig = np.concatenate(keep_sigs)
        clusters = near_duplicate_clusters(sig, threshold)
        near_count = sum(len(c) - 1 for c in clusters)
        for c in sorted(clusters, key=len, reverse=True)[:TOP]:
            sims = similarity(sig[c[1:]], sig[c[0]])
            near_clusters.append({"rows": [where(sig_refs[i]) for i in c], "size": len(c),
                                  "min_similarity": round(float(sims.min()), 3)})
    grams = reduce_grams([scan.grams for _, scan in scans]) if len(scans) > 1 else scans[0][1].grams
    vocab: dict[int, str] = {}
    for _, scan in scans:
        vocab.update(scan.vocab)
    top = np.argsort(-grams[1], kind="stable")[:15]
    trigrams = [(" ".join(vocab.get(h, "?") for h in grams[2][i].tolist()), int(grams[1][i])) for i in top]
    s = stats
    tutor, learner = s.tutor_turns, s.learner_turns
    hist = s.reply_words
    total_words = sum(k * v for k, v in hist.items())
    top_questions = [(q, n) for q, n in s.follow_ups.most_common(TOP) if n > 1]
    stock = {q for q, _ in top_questions}
    stock_rows = sum(1 for qs in s.row_follow_ups if (qs in stock if isinstance(qs, str) else not stock.isdisjoint(qs))
                     ) if stock else 0
    o2 = s.openers[1].most_common(1)
    dominant = (o2[0][0], o2[0][1], o2[0][1] / tutor) if o2 and o2[0][1] > 1 and tutor else None
    reasons = Counter(reason_key(e.reason) for e in rejected)
    audit = FileAudit(
        name=name, files=[path for path, _ in scans], lines=s.rows + len(rejected), rows=s.rows,
        rejected=len(rejected), rejection_reasons=dict(reasons.most_common()),
        rejection_examples=[str(e) for e in rejected[:20]], kinds=dict(s.kinds), exact_duplicates=duplicates,
        exact_groups=exact_groups, near_duplicates=near_count, near_clusters=near_clusters,
        near_threshold=threshold if near else None, turns=dict(s.turns), tutor_turns=tutor, learner_turns=learner,
        reply_words={"mean": total_words / tutor if tutor else 0.0, "median": quantile(hist, 0.5),
                     "p90": quantile(hist, 0.9), "max": float(max(hist)) if hist else 0.0},
        openers={n + 1: c.most_common(TOP) for n, c in enumerate(s.openers)},
        trigrams=[(t, c) for t, c in trigrams if c > 0],
        question_ending_share=s.question_endings / tutor if tutor else 0.0,
        follow_ups={"rows_with_follow_up": len(s.row_follow_ups), "distinct": len(s.follow_ups),
                    "distinct_per_row": len(s.follow_ups) / s.rows if s.rows else 0.0,
                    "stock_rows": stock_rows, "stock_share": stock_rows / s.rows if s.rows else 0.0,
                    "top": [{"question": q, "rows": n} for q, n in top_questions]},
        learner={"utterances": learner, "distinct": len(s.learner_utterances),
                 "distinct_share": len(s.learner_utterances) / learner if learner else 0.0,
                 "distinct_openers": len(s.learner_openers), "top_openers": s.learner_openers.most_common(TOP)},
        markdown=_artifact(s.markdown, tutor, s.examples["markdown"]),
        red_pen=_artifact(s.red_pen, tutor, s.examples["red_pen"]),
        echo=_artifact(s.echo, tutor, s.examples["echo"]),
        dominant_opener=dominant,
    )
    audit.artifact_score = round(sum(ARTIFACT_WEIGHTS[k][0] * v for k, v in audit.artifact_components().items()), 4)
    return audit


def _artifact(count: int, turns: int, examples: list) -> dict[str, Any]:
    return {"count": count, "share": count / turns if turns else 0.0, "examples": [dict(e) for e in examples]}


def audit_path(path: str | Path, *, near: bool = True, threshold: float = 0.8, num_perm: int = 64,
               count_tokens: Callable[[dict], int] | None = None, max_tokens: int | None = None,
               workers: int | None = None, progress: bool = False, chunk_bytes: int = CHUNK_BYTES) -> AuditReport:
    """Audit a JSONL file, or every ``*.jsonl`` under a folder: one FileAudit per file, and the total
    (duplicates across files count there). Lines that fail the gate are counted with their reasons.
    Big files are read in ``chunk_bytes`` pieces by ``workers`` processes (see :func:`scan_files`)."""
    files = jsonl_files(path)
    scans = scan_files(files, near=near, num_perm=num_perm, workers=workers, count_tokens=count_tokens,
                       max_tokens=max_tokens, progress=progress, chunk_bytes=chunk_bytes)
    if not any(scan.stats.rows or scan.rejected for scan in scans):
        if len(files) == 1:
            raise no_rows(files[0])
        raise DataError(f"{path}: no rows in any of its {len(files)} *.jsonl files; nothing to audit.")
    audits = []
    for file, scan in zip(files, scans):
        scan.stats.place(_where(str(file)))
        audits.append(_build(str(file), [(str(file), scan)], threshold))
    if len(files) == 1:
        return AuditReport(str(path), audits, audits[0])
    total = _build(f"{path} (all {len(files)} files)", [(str(f), s) for f, s in zip(files, scans)], threshold)
    return AuditReport(str(path), audits, total)


def write_report(report: AuditReport, json_path: str | Path | None = None, markdown_path: str | Path | None = None
                 ) -> None:
    """Write the report as JSON and/or Markdown."""
    for path, text in ((json_path, lambda: json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"),
                       (markdown_path, report.to_markdown)):
        if path:
            path = output_path(path)
            try:
                path.write_text(text(), encoding="utf-8")
            except OSError as exc:
                raise write_error(path, exc) from None
