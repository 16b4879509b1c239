"""Exact and near-duplicate removal: keep-first, scopes, the per-source loss report, MinHash quality."""

import json
import random
import re

import numpy as np
import pytest

from core.errors import DataError
from core.hashing import content_hash
from core.jsonl import read_jsonl
from core.schema import GateReport
from train.data.dedup import RowRef, dedup_files, dedup_rows, write_rows
from train.data.minhash import MinHasher, lsh_params, near_duplicate_clusters, similarity, turn_words, words

STORY = ("Oh, you went to the market with your sister last weekend? That sounds like a lovely way to spend a "
         "Saturday morning together. What did the two of you buy there, and did you cook something with it?")


def row(learner, tutor=STORY, source=None, hashed=True):
    r = {"messages": [{"role": "system", "content": "Be a tutor."}, {"role": "user", "content": learner},
                      {"role": "assistant", "content": tutor}], "metadata": {}}
    if source:
        r["metadata"]["source"] = source
    if hashed:
        r["metadata"]["content_hash"] = content_hash(r)
    return r


def write(path, rows, extra_lines=()):
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def refs(group):
    return [str(group.kept)] + [str(r) for r in group.duplicates]


def test_exact_duplicates_keep_the_first_and_say_where(tmp_path):
    a, b = row("Last weekend I go to the market"), row("I has two sister")
    unhashed_a = row("Last weekend I go to the market", hashed=False)  # same content, no recorded hash
    path = write(tmp_path / "rows.jsonl", [a, b, a, unhashed_a, b], extra_lines=["{broken"])
    result = dedup_files([path])
    report = result.report
    assert [r["messages"][1]["content"] for r in result.kept] == ["Last weekend I go to the market",
                                                                  "I has two sister"]
    assert [g.kind for g in report.groups] == ["exact", "exact"]
    assert refs(report.groups[0]) == [f"{path}:1", f"{path}:3", f"{path}:4"]
    assert refs(report.groups[1]) == [f"{path}:2", f"{path}:5"]
    counts = report.per_source["rows.jsonl"]  # no metadata.source: the file name is the source
    assert (counts.rows, counts.exact, counts.near, counts.kept, counts.lost_to_other_sources) == (5, 3, 0, 2, 0)
    assert [str(e) for e in report.gate.rejected] == [f"{path}:6: not valid JSON (Expecting property name enclosed "
                                                      "in double quotes at column 2)"]
    assert all(r["metadata"]["content_hash"] == content_hash(r) and r["metadata"]["source"] == "rows.jsonl"
               for r in result.kept)
    out = tmp_path / "kept.jsonl"
    assert write_rows(result.kept, out) == 2
    gate = GateReport()
    assert [r for _, r in read_jsonl(out, gate)] == result.kept and not gate.rejected
    assert "5 rows in, 2 kept" in report.summary()
    json.dumps(report.to_dict())


def test_scopes_and_the_per_source_loss_report(tmp_path):
    shared = "Yesterday I go to the park"
    a = write(tmp_path / "a.jsonl", [row(shared, source="local"), row("I goed home", source="local")])
    b = write(tmp_path / "b.jsonl", [row(shared, source="remote"), row("She have a cat", source="remote"),
                                     row("She have a cat", source="remote")])
    c = write(tmp_path / "c.jsonl", [row(shared, source="stage2")])

    within = dedup_files([a, b, c], scope="within").report
    assert {s: (n.rows, n.kept) for s, n in within.per_source.items()} == {
        "local": (2, 2), "remote": (3, 2), "stage2": (1, 1)}

    across = dedup_files([a, b, c], scope="across").report
    assert {s: n.to_dict()["lost"] for s, n in across.per_source.items()} == {"local": 0, "remote": 2, "stage2": 1}
    assert across.per_source["remote"].lost_to_other_sources == 1  # one lost to local, one to itself
    assert across.per_source["stage2"].lost_to_other_sources == 1
    group = next(g for g in across.groups if str(g.kept) == f"{a}:1")
    assert [str(r) for r in group.duplicates] == [f"{b}:1", f"{c}:1"]

    only_two = dedup_files([a, b, c], scope="across", sources=["local", "stage2"]).report
    assert only_two.per_source["stage2"].lost_to_other_sources == 1
    assert only_two.per_source["remote"].lost_to_other_sources == 0  # not in the set: deduped only within
    assert only_two.per_source["remote"].kept == 2
    assert only_two.sources == ["local", "stage2"]
    summary = only_two.summary()
    assert re.search(r"stage2\s+1\s+1\s+0\s+0\s+100.0%\s+1", summary), summary

    with pytest.raises(DataError, match=r"Unknown source\(s\) typo; the input has local, remote, stage2"):
        dedup_files([a, b, c], scope="across", sources=["local", "typo"])
    with pytest.raises(DataError, match="only applies to --scope across"):
        dedup_files([a], scope="within", sources=["local"])
    with pytest.raises(DataError, match="Unknown dedup scope"):
        dedup_files([a], scope="everywhere")


def test_near_duplicates_found_removed_or_only_reported(tmp_path):
    near = STORY.replace("lovely", "nice")          # one word changed in a long reply
    other = ("Really? You have two brothers and one sister? That is a big family. Do you all live in the same "
             "city, or do you have to travel to see each other?")
    rows = [row("Last weekend I go to the market with my sister", source="s"),
            row("Last weekend I go to the market with my sister", near, source="s"),
            row("I have two brother and one sister", other, source="s")]
    path = write(tmp_path / "near.jsonl", rows)
    assert len(dedup_files([path]).kept) == 3  # exact only: all different
    removed = dedup_files([path], near=True, threshold=0.7)
    assert len(removed.kept) == 2 and removed.kept[1]["messages"][1]["content"].startswith("I have two")
    (group,) = removed.report.groups
    assert group.kind == "near" and refs(group) == [f"{path}:1", f"{path}:2"] and group.similarity[0] >= 0.7
    assert removed.report.per_source["s"].near == 1
    kept = dedup_files([path], near=True, threshold=0.7, remove_near=False)
    assert len(kept.kept) == 3 and not kept.report.groups[0].removed and kept.report.per_source["s"].near == 1
    assert "(reported only)" in kept.report.summary() and "found" in kept.report.summary()


def test_near_duplicates_respect_the_scope(tmp_path):
    near = STORY.replace("Saturday", "Sunday")
    a = write(tmp_path / "a.jsonl", [row("Last weekend I go to the market", source="a")])
    b = write(tmp_path / "b.jsonl", [row("Last weekend I go to the market", near, source="b")])
    assert len(dedup_files([a, b], near=True, threshold=0.7).kept) == 2
    across = dedup_files([a, b], near=True, threshold=0.7, scope="across")
    assert len(across.kept) == 1 and across.report.per_source["b"].lost_to_other_sources == 1


def test_dedup_rows_api_takes_any_references():
    records = [(row("I goed"), RowRef("ds[train][0]", None, "hub")), (row("I goed"), RowRef("ds[train][5]", None, "hub"))]
    result = dedup_rows(records)
    assert len(result.kept) == 1 and refs(result.report.groups[0]) == ["ds[train][0]", "ds[train][5]"]


def _jaccard(x, y, n=3):
    a = {tuple(x[i:i + n]) for i in range(len(x) - n + 1)}
    b = {tuple(y[i:i + n]) for i in range(len(y) - n + 1)}
    return len(a & b) / len(a | b)


def test_minhash_estimates_jaccard_without_bias():
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(400)]
    hasher = MinHasher(num_perm=128)
    errors = []
    for _ in range(200):
        x = [rng.choice(vocab) for _ in range(rng.randint(15, 80))]
        y = list(x)
        for _ in range(rng.randint(0, 12)):
            y[rng.randrange(len(y))] = rng.choice(vocab)
        sig = hasher.signatures([[x], [y]])
        errors.append(float(similarity(sig[0], sig[1])) - _jaccard(x, y))
    assert abs(np.mean(errors)) < 0.02 and np.std(errors) < 0.08
    same = hasher.signatures([[["just", "two"]], [["just", "two"]], [[]]])
    assert similarity(same[0], same[1]) == 1.0 and (same[2] == np.uint32(0xFFFFFFFF)).all()


def test_lsh_finds_planted_pairs_among_many_distinct_rows():
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(3000)]
    rows = [[[rng.choice(vocab) for _ in range(30)]] for _ in range(3000)]
    rows[2500] = [list(rows[10][0])]
    rows[2500][0][5] = "changed"
    rows[2900] = [list(rows[700][0])]
    sig = MinHasher().signatures(rows)  # one word of 30 changed: 3-gram Jaccard 25/31 = 0.81
    clusters = near_duplicate_clusters(sig, 0.7)
    assert clusters == [[10, 2500], [700, 2900]]
    groups = np.zeros(len(rows), dtype=int)
    groups[2900] = 1  # in another group: not compared
    assert near_duplicate_clusters(sig, 0.7, groups) == [[10, 2500]]


def test_lsh_parameters_fit_the_threshold():
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = lsh_params(threshold, 64)
        assert bands * rows <= 64
        assert abs((1 / bands) ** (1 / rows) - threshold) < 0.12
    with pytest.raises(ValueError):
        lsh_params(1.0, 64)


def test_words_fast_path_matches_the_regex():
    rng = random.Random(11)
    alphabet = [chr(i) for i in range(128)]
    pattern = re.compile(r"[\w']+")
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert words(text) == pattern.findall(text.lower())
    assert words("Ça va? I'm at the CAFÉ_2!") == ["ça", "va", "i'm", "at", "the", "café_2"]
    assert turn_words(row("I goed")) == [["i", "goed"], words(STORY)]


def test_ngrams_are_the_batch_ngrams():
    rng = random.Random(6)
    vocab = ["a", "b", "c", "went", "park", "you", "i'm", "café"]
    hasher = MinHasher(64)
    for _ in range(200):
        turns = [[rng.choice(vocab) for _ in range(rng.choice([0, 1, 2, 3, 4, 9]))] for _ in range(rng.randint(0, 8))]
        counted = [rng.random() < 0.6 for _ in turns]
        flat = [w for t in turns for w in t]
        lens = [len(t) for t in turns]
        full = hasher.batch(flat, lens, [len(turns)], counted)
        only = hasher.ngrams(flat, lens, counted)
        assert only.signatures is None
        assert np.array_equal(only.ngram_hashes, full.ngram_hashes)
        assert np.array_equal(only.words(), full.words())
        assert np.array_equal(hasher.batch(flat, lens, [len(turns)], counted, signatures=False).ngram_hashes,
                              full.ngram_hashes)
