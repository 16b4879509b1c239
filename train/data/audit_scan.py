"""Streaming scan of JSONL files for the audit: rows through the gate, counted (train.data.audit_counts),
hashed (content hash, MinHash) and their tutor 3-grams counted in batches. Files of 16 MB or more are read
in 8 MB chunks by one worker process per CPU (up to 8), whose counters are then added up; the result is
the same as in one process."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.hashing import content_hash
from core.jsonl import iter_json_lines, line_chunks
from core.schema import GateReport, SchemaError, check_row
from train.data.audit_counts import Counts
from train.data.minhash import MinHasher


@dataclass
class Scan:
    """What scanning one file (or one chunk of it) gives; chunks of a file are joined with ``join``."""

    stats: Counts
    rejected: list[tuple[str, int | str]]   # (reason, line)
    digests: list[str]                      # content hash of each accepted row, in order
    refs: list[int | str]                   # line (or reference) of each accepted row
    signatures: np.ndarray | None           # MinHash signature of each accepted row
    grams: tuple[np.ndarray, np.ndarray, np.ndarray]  # tutor 3-grams: hash, count, word hashes
    vocab: dict[int, str]                   # word hash -> word, to name the top 3-grams
    lines: int = 0                          # lines the chunk spans (to number the next chunk's lines)

    @staticmethod
    def join(parts: list[Scan]) -> Scan:
        if len(parts) == 1:
            return parts[0]
        out = Scan(Counts(), [], [], [], None, _no_grams(), {})
        shift = 0
        for part in parts:
            out.stats.merge(part.stats, shift)
            out.rejected += [(reason, line + shift) for reason, line in part.rejected]
            out.digests += part.digests
            out.refs += [line + shift for line in part.refs]
            out.vocab.update(part.vocab)
            shift += part.lines
        out.lines = shift
        sigs = [p.signatures for p in parts if p.signatures is not None]
        out.signatures = np.concatenate(sigs) if sigs else None
        out.grams = reduce_grams([p.grams for p in parts])
        return out


def _no_grams() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros((0, 3), np.uint64)


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts in a sorted array."""
    new = np.empty(len(ordered), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    return np.flatnonzero(new)


def count_hashes(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(h, return_index=True, return_counts=True)`` (counts as int64), with a faster unstable
    sort: the first index of each value is the least index among its equal entries."""
    order = np.argsort(h)
    ordered = h[order]
    starts = _run_starts(ordered)
    counts = np.diff(np.append(starts, len(ordered))).astype(np.int64)
    return ordered[starts], np.minimum.reduceat(order, starts), counts


def reduce_grams(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add up 3-gram counts by hash (keeping the words of each hash's first occurrence). Each part is
    sorted by hash, without repeats (as count_hashes and this function give them)."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return _no_grams()
    if len(parts) == 1:
        return parts[0]
    h = np.concatenate([p[0] for p in parts])
    # every part is sorted by hash: a stable sort merges the runs (and keeps the earliest of equals first)
    order = np.argsort(h, kind="stable")
    ordered = h[order]
    starts = _run_starts(ordered)
    counts = np.add.reduceat(np.concatenate([p[1] for p in parts])[order], starts)
    return ordered[starts], counts.astype(np.int64), np.concatenate([p[2] for p in parts])[order[starts]]


class Scanner:
    """Counts rows one by one; words go to MinHash/3-gram counting in batches."""

    def __init__(self, near: bool = True, num_perm: int = 64, batch: int = 4096):
        self.stats = Counts()
        self.near, self.batch = near, batch
        self.hasher = MinHasher(num_perm)
        self.digests: list[str] = []
        self.refs: list[int | str] = []
        self._sigs: list[np.ndarray] = []
        self._grams: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._flat: list[str] = []
        self._lens: list[int] = []
        self._per_row: list[int] = []
        self._counted: list[bool] = []

    def add(self, row: dict[str, Any], kind: str, ref: int | str, digest: str) -> None:
        self._per_row.append(self.stats.add(row, kind, ref, self._flat, self._lens,
                                            self._counted if self.near else None, self.near))
        self.digests.append(digest)
        self.refs.append(ref)
        if len(self._per_row) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        self.stats.settle()
        if not self._per_row:
            return
        if self.near:
            found = self.hasher.batch(self._flat, self._lens, self._per_row, self._counted)
            self._sigs.append(found.signatures)
        else:
            found = self.hasher.ngrams(self._flat, self._lens)  # tutor turns only (see add)
        if len(found.ngram_hashes):
            unique, first, counts = count_hashes(found.ngram_hashes)
            self._grams.append((unique, counts, found.words(first)))
        self._flat, self._lens, self._per_row, self._counted = [], [], [], []

    def result(self, rejected: list[tuple[str, int | str]], lines: int = 0) -> Scan:
        self._flush()
        k = self.hasher.num_perm
        sigs = (np.concatenate(self._sigs) if self._sigs else np.zeros((0, k), np.uint32)) if self.near else None
        grams = reduce_grams(self._grams)
        wanted = set(grams[2].reshape(-1).tolist())
        vocab = {h: w for w, h in self.hasher.word_hashes.items() if h in wanted}
        return Scan(self.stats, rejected, self.digests, self.refs, sigs, grams, vocab, lines)


def _scan_chunk(task: tuple) -> Scan:
    """Scan the lines of one byte range of a JSONL file through the gate (runs in a worker process)."""
    path, start, end, last, near, num_perm, count_tokens, max_tokens = task
    gate = GateReport()
    scanner = Scanner(near, num_perm)
    rejected: list[tuple[str, int | str]] = []
    add = scanner.add
    for number, row in iter_json_lines(path, gate, start=start, end=end, read_only=True):
        try:
            kind = check_row(row, count_tokens=count_tokens, max_tokens=max_tokens)
        except SchemaError as exc:
            rejected.append((exc.reason, number))
            continue
        add(row, kind, number, row["metadata"].get("content_hash") or content_hash(row))
    if gate.rejected:
        rejected = sorted(rejected + [(e.reason, e.line) for e in gate.rejected], key=lambda r: r[1])
    # a chunk that is not the file's last ends on a line boundary: its lines are the lines read
    return scanner.result(rejected, 0 if last else gate.lines)


CHUNK_BYTES = 8 << 20
PARALLEL_BYTES = 16 << 20


def default_workers(total_bytes: int) -> int:
    """Worker processes for scanning: one per CPU (at most 8) for 16 MB of data or more, else 1."""
    return min(os.cpu_count() or 1, 8) if total_bytes >= PARALLEL_BYTES else 1


def scan_files(files: list[Path], *, near: bool = True, num_perm: int = 64, workers: int | None = None,
               count_tokens: Callable[[dict], int] | None = None, max_tokens: int | None = None,
               progress: bool = False, chunk_bytes: int = CHUNK_BYTES) -> list[Scan]:
    """Scan JSONL files in byte-range chunks, in ``workers`` processes (1: in this process; a
    ``count_tokens`` function always runs here). Returns one joined Scan per file."""
    sizes = [f.stat().st_size for f in files]
    if workers is None:
        workers = default_workers(sum(sizes))
    if count_tokens is not None:
        workers = 1
    tasks, owner = [], []
    for n, (file, size) in enumerate(zip(files, sizes)):
        parts = max(1, -(-size // chunk_bytes), workers if size >= chunk_bytes // 4 else 1)
        if workers > 1 and parts > 1:  # a multiple of the workers, so that none sits idle at the end
            parts = -(-parts // workers) * workers
        chunks = line_chunks(file, parts)
        for k, (start, end) in enumerate(chunks):
            tasks.append((str(file), start, end, k == len(chunks) - 1, near, num_perm, count_tokens, max_tokens))
            owner.append(n)

    def progress_bar():
        if not progress:
            return None
        from tqdm import tqdm

        return tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="audit", mininterval=0.5)

    results: list[Scan] = []
    bar = None
    try:
        if workers <= 1 or len(tasks) == 1:
            bar = progress_bar()
            for task in tasks:
                results.append(_scan_chunk(task))
                if bar is not None:
                    bar.update(task[2] - task[1])
        else:
            context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                                  else "spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
                done = pool.map(_scan_chunk, tasks)  # workers start here, before any progress-bar thread
                bar = progress_bar()
                for task, result in zip(tasks, done):
                    results.append(result)
                    if bar is not None:
                        bar.update(task[2] - task[1])
    finally:
        if bar is not None:
            bar.close()
    per_file: list[list[Scan]] = [[] for _ in files]
    for n, result in zip(owner, results):
        per_file[n].append(result)
    return [Scan.join(parts) for parts in per_file]
