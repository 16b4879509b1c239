"""Near duplicates: MinHash signatures of word shingles, LSH banding, and clusters (union-find).

The text of a row's user and assistant turns (system prompts left out, since many rows share one) is
lower-cased and split into words; every run of ``ngram`` words (3) is a shingle. Each word gets a 64-bit
blake2b hash, a shingle's hash mixes its words' hashes (splitmix64). The signature is a one-permutation
MinHash: the shingle hash's top bits pick one of ``num_perm`` bins, its low 32 bits are the value, each
bin keeps its minimum, and empty bins borrow from the next non-empty bin to the right ("rotation"
densification). The share of equal bins between two signatures estimates the Jaccard similarity of the
two shingle sets. Candidates come from LSH banding (``bands`` x ``rows`` = ``num_perm`` bins, chosen for
the threshold by minimising false positives + false negatives); inside a bucket each row is compared
with the bucket's first row and with its predecessor, so work stays linear in the bucket size, never
O(n^2). Pairs whose estimate reaches the threshold are joined into clusters (union-find); the first row
of a cluster (input order) is kept. A cluster can chain (A~B, B~C), so the dedup report gives each
removed row's similarity to the kept one."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EMPTY = np.uint32(0xFFFFFFFF)
WORD = re.compile(r"[\w']+")
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + _MIX[0]
    x = (x ^ (x >> np.uint64(30))) * _MIX[1]
    x = (x ^ (x >> np.uint64(27))) * _MIX[2]
    return x ^ (x >> np.uint64(31))


class _WordHashes(dict):
    """word -> 64-bit blake2b hash, computed once per distinct word (stable across runs)."""

    def __missing__(self, word: str) -> int:
        value = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
        if len(self) < 2_000_000:
            self[word] = value
        return value


def turn_words(row: dict[str, Any]) -> list[list[str]]:
    """The words of each user and assistant turn of a row (system prompts left out, since many rows
    share one): messages, or prompt + chosen + rejected, or prompt + completion."""
    out = []
    for key in ("messages", "prompt", "chosen", "rejected", "completion"):
        for message in row.get(key) or ():
            if isinstance(message, dict) and message.get("role") in ("user", "assistant"):
                out.append(words(str(message.get("content") or "")))
    return out


# bytes.translate table of the ASCII fast path: letters lower-cased, word characters kept, the rest a space
ASCII_WORDS = bytes(c + 32 if 65 <= c <= 90 else c if (48 <= c <= 57 or 97 <= c <= 122 or c in (39, 95) or c > 127)
                     else 32 for c in range(256))


def words(text: str) -> list[str]:
    """Lower-cased words (letters, digits, underscore, apostrophe) of a text: ``[\\w']+``. ASCII text
    takes a faster path (bytes.translate + split) that gives the same words."""
    if text.isascii():
        return text.encode("ascii").translate(ASCII_WORDS).decode("ascii").split()
    return WORD.findall(text.lower())


@dataclass
class Shingles:
    """What one batch of turns gives: row signatures, and the word 3-grams of the turns marked
    ``counted`` (hash, and the hashes of their words, to count them and name the top ones).

    The words of a 3-gram are kept as its start in the batch's word hashes (``ngram_at``) and
    gathered on demand (``words``): counting only ever names the first occurrence of each 3-gram."""

    signatures: np.ndarray | None
    ngram_hashes: np.ndarray
    ngram_at: np.ndarray       # (n,) start of each n-gram in word_hash
    word_hash: np.ndarray      # the batch's word hashes, back to back
    ngram: int = 3

    def words(self, index: np.ndarray | None = None) -> np.ndarray:
        """(k, ngram) word hashes of the n-grams at ``index`` (all of them by default)."""
        at = self.ngram_at if index is None else self.ngram_at[index]
        if not len(at):
            return np.zeros((0, self.ngram), dtype=np.uint64)
        return np.stack([self.word_hash[at + j] for j in range(self.ngram)], axis=1)


class MinHasher:
    """One-permutation MinHash signatures (``num_perm`` bins, a power of two) of word shingles.

    Shingles are the runs of ``ngram`` words inside each turn (a turn shorter than that is one
    shingle); a row's signature covers the shingles of all its turns."""

    def __init__(self, num_perm: int = 64, ngram: int = 3):
        if num_perm < 8 or num_perm > 1024 or num_perm & (num_perm - 1):
            raise ValueError("num_perm must be a power of two between 8 and 1024")
        if ngram < 1:
            raise ValueError("ngram must be at least 1")
        self.num_perm, self.ngram = num_perm, ngram
        self._shift = np.uint64(64 - (num_perm.bit_length() - 1))
        self.word_hashes = _WordHashes()

    def signatures(self, rows: Sequence[Sequence[Sequence[str]]]) -> np.ndarray:
        """``(len(rows), num_perm)`` uint32 signatures of rows given as lists of turns' words;
        a row without any word is all EMPTY (it matches nothing)."""
        flat: list[str] = []
        lens, per_row = [], []
        for turns in rows:
            per_row.append(len(turns))
            for w in turns:
                flat += w
                lens.append(len(w))
        return self.batch(flat, lens, per_row).signatures

    def _no_ngrams(self) -> Shingles:
        return Shingles(None, np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64),
                        self.ngram)

    def ngrams(self, flat: list[str], lens: Sequence[int], counted: Sequence[bool] | None = None) -> Shingles:
        """Only the n-grams of ``batch`` (no signatures): the hashes and word hashes of the ``ngram``-word
        runs of the turns marked in ``counted`` that have at least ``ngram`` words, in order; the same
        values ``batch`` gives, computed for those turns only."""
        g = self.ngram
        lens_a = np.asarray(lens, dtype=np.int64)
        per = np.where(lens_a >= g, lens_a - (g - 1), 0)
        if counted is not None:
            per[~np.asarray(counted, dtype=bool)] = 0
        total = int(per.sum())
        if not total:
            return self._no_ngrams()
        word_hash = np.fromiter(map(self.word_hashes.__getitem__, flat), dtype=np.uint64, count=len(flat))
        starts = np.cumsum(lens_a) - lens_a
        at = np.repeat(starts - (np.cumsum(per) - per), per) + np.arange(total, dtype=np.int64)
        columns = [word_hash[at + j] for j in range(g)]
        h = columns[0]
        for column in columns[1:]:
            h = _splitmix(h) ^ column
        return Shingles(None, _splitmix(h), at, word_hash, g)

    def batch(self, flat: list[str], lens: Sequence[int], per_row: Sequence[int], counted: Sequence[bool] | None = None,
              signatures: bool = True) -> Shingles:
        """Shingle a batch: ``flat`` holds the words of all turns back to back, ``lens`` each turn's
        word count, ``per_row`` each row's number of turns; n-grams of turns marked in ``counted``
        are returned for counting."""
        if not signatures:
            if counted is None:
                return self._no_ngrams()
            return self.ngrams(flat, lens, counted)
        n, k, g = len(per_row), self.num_perm, self.ngram
        word_hash = np.fromiter(map(self.word_hashes.__getitem__, flat), dtype=np.uint64, count=len(flat))
        lens_a = np.asarray(lens, dtype=np.int64)
        counts = np.where(lens_a >= g, lens_a - (g - 1), (lens_a > 0).astype(np.int64))
        total = int(counts.sum())
        turn = np.repeat(np.arange(len(lens_a)), counts)
        starts = np.cumsum(lens_a) - lens_a
        pos = starts[turn] + (np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts))
        end = (starts + lens_a)[turn]
        h = word_hash[pos] if total else np.zeros(0, dtype=np.uint64)
        last = max(len(flat) - 1, 0)
        for j in range(1, g):
            nxt = pos + j
            h = _splitmix(h) ^ np.where(nxt < end, word_hash[np.minimum(nxt, last)] if total else h, np.uint64(0))
        h = _splitmix(h)
        if counted is not None and total:
            mask = np.asarray(counted, dtype=bool)[turn] & (lens_a[turn] >= g)
            found = Shingles(None, h[mask], pos[mask], word_hash, g)
        else:
            found = self._no_ngrams()
        if not signatures:
            return found
        sig = np.full((n, k), EMPTY, dtype=np.uint32)
        if total:
            row = np.repeat(np.arange(n, dtype=np.int64), np.asarray(per_row, dtype=np.int64))[turn]
            bins = (h >> self._shift).astype(np.int64)
            values = np.minimum((h & np.uint64(0xFFFFFFFF)).astype(np.uint32), EMPTY - np.uint32(1))
            np.minimum.at(sig.reshape(-1), row * k + bins, values)
            has_words = np.zeros(n, dtype=bool)
            has_words[row] = True
            sig = _densify(sig)
            sig[~has_words] = EMPTY
        found.signatures = sig
        return found


def _densify(sig: np.ndarray) -> np.ndarray:
    """Fill each empty bin from the next non-empty bin to the right (circular), offset by the distance."""
    empty = sig == EMPTY
    if not empty.any():
        return sig
    n, k = sig.shape
    far = np.int32(2 * k)
    col = np.arange(k, dtype=np.int32)
    pos = np.empty((n, 2 * k), dtype=np.int32)
    np.copyto(pos[:, :k], np.where(empty, far, col))
    np.copyto(pos[:, k:], np.where(empty, far, col + np.int32(k)))
    nxt = np.minimum.accumulate(pos[:, ::-1], axis=1)[:, ::-1][:, :k]
    ok = empty & (nxt < far)
    src = np.where(ok, nxt % np.int32(k), col)
    filled = np.take_along_axis(sig, src, axis=1) + (nxt - col).astype(np.uint32) * np.uint32(0x9E3779B1)
    return np.where(ok, np.minimum(filled, EMPTY - np.uint32(1)), sig)


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) with bands * rows <= num_perm that minimise the false-positive area
    below ``threshold`` plus the false-negative area above it (P(candidate) = 1 - (1 - s^r)^b)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold must be between 0 and 1 (exclusive)")
    s = np.linspace(0.0, 1.0, 401)
    below, above = s < threshold, s >= threshold
    best, best_cost = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1.0 - (1.0 - s ** rows) ** bands
            cost = p[below].sum() + (1.0 - p[above]).sum()
            if cost < best_cost:
                best, best_cost = (bands, rows), cost
    return best


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Estimated Jaccard similarity: the share of equal bins (works on single rows or on stacks)."""
    return (a == b).mean(axis=-1)


def near_duplicate_clusters(sig: np.ndarray, threshold: float = 0.8, groups: np.ndarray | None = None
                            ) -> list[list[int]]:
    """Clusters (lists of row indices, ascending, size >= 2) of rows whose signatures reach
    ``threshold``; only rows with the same ``groups`` value are compared. The first index of each
    cluster is the one to keep."""
    n, k = sig.shape
    if n < 2:
        return []
    bands, rows = lsh_params(threshold, k)
    live = np.flatnonzero(~(sig == EMPTY).all(axis=1))
    if len(live) < 2:
        return []
    group_mix = None if groups is None else _splitmix(np.asarray(groups, dtype=np.uint64)[live])
    firsts, seconds = [], []
    prime = np.uint64(0x100000001B3)
    for band in range(bands):
        cols = sig[live, band * rows:(band + 1) * rows].astype(np.uint64)
        key = np.zeros(len(live), dtype=np.uint64)
        for c in range(rows):
            key = key * prime + cols[:, c]
        if group_mix is not None:
            key = key ^ group_mix
        order = np.argsort(key, kind="stable")
        ks = key[order]
        same = ks[1:] == ks[:-1]
        if not same.any():
            continue
        pos = np.flatnonzero(same) + 1
        start_flag = np.concatenate([[True], ~same])
        group_start = np.maximum.accumulate(np.where(start_flag, np.arange(len(ks)), 0))
        firsts += [order[pos - 1], order[group_start[pos]]]
        seconds += [order[pos], order[pos]]
    if not firsts:
        return []
    a = live[np.concatenate(firsts)]
    b = live[np.concatenate(seconds)]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    code = np.unique(lo.astype(np.int64) * n + hi.astype(np.int64))
    lo, hi = code // n, code % n
    keep = lo != hi
    if groups is not None:
        g = np.asarray(groups)
        keep &= g[lo] == g[hi]
    lo, hi = lo[keep], hi[keep]
    ok = np.zeros(len(lo), dtype=bool)
    for s in range(0, len(lo), 50_000):
        ok[s:s + 50_000] = similarity(sig[lo[s:s + 50_000]], sig[hi[s:s + 50_000]]) >= threshold
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(lo[ok].tolist(), hi[ok].tolist()):
        rx, ry = root(x), root(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)  # the root is always the earliest row
    clusters: dict[int, list[int]] = {}
    for x in sorted(set(lo[ok].tolist()) | set(hi[ok].tolist())):
        clusters.setdefault(root(x), []).append(x)
    return [members for _, members in sorted(clusters.items())]
