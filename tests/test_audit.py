"""The audit: inventory, style artifacts and the artifact score, on small crafted files."""

import json
import random
from pathlib import Path

import pytest

from core.hashing import content_hash
from train.data.audit import Auditor, audit_path
from train.data.minhash import words
from tutor.detector import suggest_flags
from tutor.teaching.overt import red_pen_hit
from tutor.teaching.replies import echo_hit, final_question

ROOT = Path(__file__).resolve().parent.parent

# A clean corpus: varied openers, each reply a recast said from the tutor's side plus its own question.
CLEAN = [
    ("Yesterday I go to the park", "Oh, you went to the park yesterday? What did you do there?"),
    ("I have two brother", "Two brothers, nice! Are they older or younger than you?"),
    ("My mother cook very well", "Your mother cooks very well? What is her best dish?"),
    ("I am agree with you", "So you agree with me. Which part convinced you?"),
    ("She don't like coffee", "Hmm, she doesn't like coffee. Does she drink tea instead, then?"),
    ("We goed to the beach last summer", "You went to the beach last summer - lovely. Was the water warm?"),
    ("I want learning Spanish", "You want to learn Spanish! Why Spanish and not Italian?"),
    ("He have a big dog", "He has a big dog. I love big dogs."),
    ("I can to swim very good", "You can swim really well - since when?"),
    ("Last week I buy a new phone", "Really, you bought a new phone last week? Which one did you choose?"),
    ("My sister is more taller than me", "Your sister is taller than you? How tall is she?"),
    ("I listen music every day", "You listen to music every day. What kind of music?"),
]


def row(learner, tutor, source="t", history=()):
    messages = [{"role": "system", "content": "Be a friendly tutor."}]
    for past_learner, past_tutor in history:
        messages += [{"role": "user", "content": past_learner}, {"role": "assistant", "content": past_tutor}]
    messages += [{"role": "user", "content": learner}, {"role": "assistant", "content": tutor}]
    r = {"messages": messages, "metadata": {"source": source}}
    r["metadata"]["content_hash"] = content_hash(r)
    return r


def write(path, rows, extra_lines=()):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
                    + "".join(line + "\n" for line in extra_lines), encoding="utf-8")
    return path


def audit_rows(tmp_path, pairs, name="f.jsonl", **kw):
    return audit_path(write(tmp_path / name, [row(a, b) for a, b in pairs]), **kw).total


def test_clean_file_scores_low_and_counts_right(tmp_path):
    audit = audit_rows(tmp_path, CLEAN)
    assert (audit.rows, audit.rejected, audit.exact_duplicates, audit.near_duplicates) == (12, 0, 0, 0)
    assert audit.red_pen["count"] == audit.echo["count"] == audit.markdown["count"] == 0
    assert audit.dominant_opener is None  # no 2-word opener is used twice
    assert audit.follow_ups["stock_share"] == 0.0
    assert audit.follow_ups["distinct"] == sum("?" in b for _, b in CLEAN) == 11
    assert audit.question_ending_share == pytest.approx(sum(b.endswith("?") for _, b in CLEAN) / 12)
    assert audit.artifact_score < 0.1
    lengths = sorted(len(words(b)) for _, b in CLEAN)
    assert audit.reply_words["mean"] == pytest.approx(sum(lengths) / 12)
    assert audit.reply_words["max"] == max(lengths)
    assert lengths[5] <= audit.reply_words["median"] <= lengths[6]
    assert audit.learner["distinct"] == 12 and audit.turns == {2: 12}


def test_dominant_opener_stock_questions_and_question_monotony(tmp_path):
    pairs = [(f"I goed to city {i}", f"That sounds amazing! You went to city {i}? What did you like most?")
             for i in range(8)]
    pairs += [(f"I eated fish {i}", f"That sounds tasty! You ate fish {i}? What did you like most?") for i in range(4)]
    audit = audit_rows(tmp_path, pairs)
    assert audit.dominant_opener == ("that sounds", 12, 1.0)
    assert audit.openers[1][0] == ("that", 12) and audit.openers[3][0] == ("that sounds amazing", 8)
    assert audit.follow_ups["top"] == [{"question": "what did you like most?", "rows": 12}]
    assert audit.follow_ups["stock_share"] == 1.0 and audit.follow_ups["distinct_per_row"] == pytest.approx(1 / 12)
    assert audit.question_ending_share == 1.0
    assert ("what did you", 12) in audit.trigrams and ("you like most", 12) in audit.trigrams
    parts = audit.artifact_components()
    assert parts["opener"] == parts["stock"] == parts["monotony"] == 1.0
    assert audit.artifact_score == pytest.approx(0.5)
    assert audit.learner["top_openers"][0] == ("i goed to", 8)


def test_echo_of_the_learners_first_person(tmp_path):
    assert echo_hit(words("Oh, I have two brothers? Are they older?"), words("I have two brother"))
    assert echo_hit(words("Oh, I went to the store yesterday?"), words("Yesterday I go to the store"))
    assert not echo_hit(words("Oh, you have two brothers? Are they older?"), words("I have two brother"))
    assert not echo_hit(words("I think so too! Why?"), words("I think so"))
    assert not echo_hit(words("I see. My brother lives there too."), words("I have two brother"))
    pairs = [("I have two brother", "Oh, I have two brothers? Are they older?"),
             ("My dog are very big", "My dog is very big? What breed is it?"),
             ("I have two brother", "Oh, you have two brothers? Are they older?")]
    audit = audit_rows(tmp_path, pairs)
    assert audit.echo["count"] == 2 and audit.echo["share"] == pytest.approx(2 / 3)
    assert audit.echo["examples"][0]["learner"] == "I have two brother"
    assert audit.echo["examples"][0]["ref"].endswith("f.jsonl:1")
    assert audit.artifact_components()["echo"] == 1.0


def test_markdown_leftovers(tmp_path):
    pairs = [("I goed home", "**Great!** You went home? Why?"),
             ("I goed home", "You went home.\n- Why?\n- When?"),
             ("I goed home", "You went home? Say `went`."),
             ("I goed home", "## Recast\nYou went home?"),
             ("I goed home", "You *went* home? Why so early?"),
             ("I goed home", "You went home at 5 * 3 pm? Why?"),   # arithmetic, not markdown
             ("I goed home", "You went home? snake_case is fine."),
             ("I goed home", "You went home? #1 reason?")]
    audit = audit_rows(tmp_path, pairs)
    assert audit.markdown["count"] == 5
    assert [e["ref"].rsplit(":", 1)[1] for e in audit.markdown["examples"]] == ["1", "2", "3", "4", "5"]


def test_red_pen_phrasing(tmp_path):
    pairs = [("Yesterday I go to the store", "The correct form is 'went'. What did you buy?"),
             ("Yesterday I go to the store", "You should say 'I went'. What did you buy?"),
             ("I made a mistake?", "A small mistake, no problem. What did you buy?"),  # learner brought it up
             ("Yesterday I go to the store", "There's a small mistake: went. What did you buy?"),
             ("Yesterday I go to the store", "Oh, you went to the store? What did you buy?")]
    audit = audit_rows(tmp_path, pairs)
    assert audit.red_pen["count"] == 3
    assert audit.artifact_components()["red_pen"] == 1.0


def test_red_pen_screen_agrees_with_the_detector():
    """red_pen_hit skips the regexes for replies without their key words; it must find exactly what
    the detector finds, on the labelled replies and on replies built from the detector's patterns."""
    cases = []
    for name in ("detector_labelled.jsonl", "detector_heldout.jsonl"):
        for line in (ROOT / "data" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                cases.append((item["reply"], item.get("learner", "")))
    rng = random.Random(5)
    fragments = ["the correct form is", "you should say", "it should be", "instead of 'go'", "say went instead of",
                 "we don't say", "you cannot write", "your grammar is", "you need 'went'", "is incorrect",
                 "sounds wrong", "let me correct", "Corrections:", "grammatically", "the proper way to say",
                 "the right word is", "not go, but went", "'go' -> 'went'", "'go' → 'went'",
                 "here's a revised version", "a small mistake", "an error", "Nice!", "you went?", "What then?",
                 "RIGHT WAY TO SAY", "Not Go But Went", "YOU SHOULD WRITE"]
    for _ in range(400):
        cases.append((" ".join(rng.sample(fragments, 3)), rng.choice(["", "I made an error"])))
    for reply, learner in cases:
        expected = any(s.reason == "red_pen" for s in suggest_flags(reply, learner))
        assert (red_pen_hit(reply, learner) is not None) == expected, (reply, learner)


def test_follow_up_is_the_final_question():
    assert final_question("Oh, you went home? Nice. Why   so early?") == "why so early?"
    assert final_question("No question here.") is None
    assert final_question("Really?\nWhat did you eat?") == "what did you eat?"


def test_rejections_duplicates_and_turns(tmp_path):
    rows = [row(a, b) for a, b in CLEAN[:4]]
    rows.append(rows[0])                                                     # exact duplicate
    rows.append(row(CLEAN[0][0], CLEAN[0][1].replace("there", "over there")))  # near duplicate
    rows.append(row("And then?", "Then you went home? Why?", history=[CLEAN[1]]))
    bad_role = row("x", "y")
    bad_role["messages"][1]["role"] = "bot"
    path = write(tmp_path / "mixed.jsonl", rows, extra_lines=["{oops", json.dumps(bad_role), "[]"])
    audit = audit_path(path, threshold=0.5).total
    assert (audit.lines, audit.rows, audit.rejected) == (10, 7, 3)
    assert audit.rejection_reasons == {"not valid JSON (Expecting property name enclosed in double quotes at "
                                       "column N)": 1,
                                       "messages[N] has role ...; expected one of system, user, assistant": 1,
                                       "row is a list, not a JSON object": 1}
    assert audit.rejection_examples[0] == f"{path}:8: not valid JSON (Expecting property name enclosed in double " \
                                          "quotes at column 2)"
    assert audit.exact_duplicates == 1 and audit.exact_groups == [[f"{path}:1", f"{path}:5"]]
    # row 6 rewords row 1; row 7 holds row 2's exchange and one more
    assert audit.near_duplicates == 2
    assert [c["rows"] for c in audit.near_clusters] == [[f"{path}:1", f"{path}:6"], [f"{path}:2", f"{path}:7"]]
    assert audit.turns == {2: 6, 4: 1}
    assert audit.tutor_turns == 8 and audit.learner_turns == 8


def test_folder_audit_per_file_and_total(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write(folder / "a.jsonl", [row(a, b, source="a") for a, b in CLEAN[:6]])
    write(folder / "b.jsonl", [row(a, b, source="b") for a, b in CLEAN[4:]],
          extra_lines=['{"messages": []}'])
    report = audit_path(folder)
    assert [f.name for f in report.files] == [str(folder / "a.jsonl"), str(folder / "b.jsonl")]
    assert [f.rows for f in report.files] == [6, 8]
    assert [f.exact_duplicates for f in report.files] == [0, 0]
    total = report.total
    assert total.rows == 14 and total.rejected == 1 and total.exact_duplicates == 2
    assert total.exact_groups[0] == [f"{folder / 'a.jsonl'}:5", f"{folder / 'b.jsonl'}:1"]
    md = report.to_markdown()
    assert "| a.jsonl" not in md and f"| {folder / 'a.jsonl'} | 6 |" in md
    assert "Style-artifact score = 0.2 opener" in md and "## " + total.name in md
    data = json.loads(json.dumps(report.to_dict()))
    assert data["total"]["rows"] == 14 and len(data["files"]) == 2
    assert set(data["total"]["artifact_components"]) == {"opener", "stock", "echo", "red_pen", "markdown", "monotony"}


def test_workers_and_chunks_give_the_same_report(tmp_path):
    rng = random.Random(2)
    rows = []
    for i in range(300):
        a, b = rng.choice(CLEAN)
        rows.append(row(f"{a} number {i % 120}", b if i % 3 else "**" + b))
    extra = ['{"bad": ', "[1]"]
    path = write(tmp_path / "big.jsonl", rows, extra_lines=extra)
    one = audit_path(path, workers=1).total.to_dict()
    many = audit_path(path, workers=2, chunk_bytes=4000).total.to_dict()
    assert one["exact_duplicates"] > 0 and one["near_duplicates"] > 0 and one["rejected"] == 2
    assert many == one


def test_preference_rows_and_the_streaming_auditor():
    prompt = [{"role": "user", "content": "I has a cat"}]
    pref = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "You have a cat? What's its name?"}],
            "rejected": [{"role": "assistant", "content": "The correct form is 'have'."}], "metadata": {}}
    unpaired = {"prompt": prompt, "completion": [{"role": "assistant", "content": "Wrong! **have**"}],
                "label": False, "metadata": {}}
    auditor = Auditor("mem")
    auditor.add(pref, "pref[0]")
    auditor.add(unpaired, 7)
    audit = auditor.finish()
    assert audit.kinds == {"preference": 1, "unpaired": 1}
    assert audit.tutor_turns == 1 and audit.red_pen["count"] == audit.markdown["count"] == 0  # rejected/bad skipped
    assert audit.learner_turns == 2 and audit.learner["distinct"] == 1


def test_word_screen_never_hides_a_red_pen_hit():
    """The audit asks red_pen_hit only about replies whose words could hold a screen key
    (_maybe_red_pen). One red-pen phrase per reply (each pattern, each key), in any case, amid
    neutral words and punctuation: the screen must never say no where red_pen_hit finds something."""
    from tutor.teaching.overt import maybe_red_pen

    rng = random.Random(9)
    phrases = ["the correct form", "corrected sentence", "you should say", "it should be", "instead of 'go'",
               "say went instead of", "we don't say", "you can't use", "we do not say", "we never say",
               "you cannot write", "your sentence is", "your grammar has", "your english needs", "you need 'went'",
               'you need to use "went"', "is incorrect", "sounds wrong", "was not correct", "let me correct",
               "corrections", "grammatically", "proper way to say", "right form is", "the right word is",
               "the correct verb is", "not go, but went", "'go' -> 'went'", "'go' \u2192 'went'", "'go' => 'went'",
               "here's a revised version", "a small mistake", "an error", "there's an error", "your mistakes"]
    glue = [" ", "  ", "\n", ", ", ". ", " (", ' "', "! "]
    filler = ["you went", "Nice", "What then?", "I have two brothers", "Caf\u00e9", "na\u00efve", "OK", ""]
    for phrase in phrases:
        for _ in range(40):
            phrase_case = rng.choice([phrase, phrase.upper(), phrase.title(), phrase.capitalize()])
            reply = rng.choice(filler) + rng.choice(glue) + phrase_case + rng.choice(glue) + rng.choice(filler)
            learner = rng.choice(["", "I goed", "I made an error"])
            if red_pen_hit(reply, learner) is not None:
                assert maybe_red_pen(reply, words(reply)), reply
    for reply in ("Nice, you went to the park. What did you do there?", "Lovely! Who did you go with?"):
        assert red_pen_hit(reply) is None and not maybe_red_pen(reply, words(reply))


def test_audit_without_near_duplicates_counts_the_same(tmp_path):
    """Without near-duplicate detection the audit takes a shorter path (tutor words only, no
    signatures); every other figure must be the same as with it."""
    rng = random.Random(4)
    rows = []
    for i in range(400):
        a, b = rng.choice(CLEAN)
        history = [rng.choice(CLEAN)] if i % 3 == 0 else ()
        rows.append(row(f"{a} {i % 50}", rng.choice([b, "**" + b, "The correct form is: went. " + b, "Ok?", "Hm"]),
                        history=history))
    path = write(tmp_path / "f.jsonl", rows, extra_lines=["[1]"])
    for kw in ({"workers": 1}, {"workers": 2, "chunk_bytes": 5000}):
        with_near = audit_path(path, **kw).total.to_dict()
        without = audit_path(path, near=False, **kw).total.to_dict()
        assert with_near["near_duplicates"] > 0 and without["near_duplicates"] is None
        for key in ("near_duplicates", "near_clusters", "near_threshold", "artifact_components", "artifact_score"):
            with_near.pop(key), without.pop(key)
        assert without == with_near and without["trigrams"]


def test_count_hashes_is_np_unique():
    import numpy as np

    from train.data.audit_scan import count_hashes

    rng = np.random.default_rng(1)
    for n in (1, 2, 10, 5000):
        h = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)[rng.integers(0, max(1, n // 3), n)]
        expected = np.unique(h, return_index=True, return_counts=True)
        for got, want in zip(count_hashes(h), expected):
            assert np.array_equal(got, want)


def test_reduce_grams_is_np_unique_over_the_parts():
    """_reduce_grams merges sorted parts with a stable sort; it must give what np.unique over the
    concatenation gives: sorted hashes, summed counts, the words of the first occurrence."""
    import numpy as np

    from train.data.audit_scan import count_hashes, reduce_grams

    rng = np.random.default_rng(5)
    pool = rng.integers(0, 2**64 - 1, size=300, dtype=np.uint64, endpoint=True)
    for n_parts in (1, 2, 5):
        parts, all_h, all_c, all_w = [], [], [], []
        for _ in range(n_parts):
            h = pool[rng.integers(0, 300, rng.integers(1, 400))]
            unique, first, counts = count_hashes(h)
            words = rng.integers(0, 2**63, size=(len(unique), 3), dtype=np.uint64)
            parts.append((unique, counts, words))
            all_h.append(unique), all_c.append(counts), all_w.append(words)
        h, c, w = np.concatenate(all_h), np.concatenate(all_c), np.concatenate(all_w)
        unique, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        expected = (unique, np.bincount(inverse.reshape(-1), weights=c, minlength=len(unique)).astype(np.int64),
                    w[first])
        for got, want in zip(reduce_grams(parts), expected):
            assert np.array_equal(got, want) and got.dtype == want.dtype


def test_the_audits_fast_json_reader_passes_and_fails_the_same_lines(tmp_path):
    """The audit reads lines with orjson and falls back to json.loads on anything orjson refuses:
    the same lines must pass and fail, with the same messages, as the json.loads reader gives."""
    from core.jsonl import iter_json_lines
    from core.schema import GateReport

    good = json.dumps(row("I goed home", "Oh, you went home? Why?"))
    lines = [good.encode(), b'{"a": NaN, "messages": []}', b'{"n": 123456789012345678901234567890}',
             b'{"s": "\\ud800"}', b'\xff\xfe not utf-8', b'\xef\xbb\xbf' + good.encode(), b"", b"   ",
             b"\x1c", b'{"a": 1} trailing', b"[1, 2]", b'{"t": "caf\xc3\xa9"}', b'{"x": 1e400}', good.encode()]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    got = {}
    for read_only in (False, True):
        report = GateReport()
        values = list(iter_json_lines(path, report, read_only=read_only))
        got[read_only] = ([n for n, _ in values], [str(e) for e in report.rejected], values)
    assert got[True][:2] == got[False][:2]
    # NaN (2), a lone surrogate (4) and 1e400 (13, Infinity as a float) are refused by both readers
    assert got[False][0] == [1, 3, 6, 11, 12, 14] and len(got[False][1]) == 6
    assert [e.split(": ", 1)[0] for e in got[False][1] if "holds" in e] == [f"{path}:{n}" for n in (2, 4, 13)]
    for (n, fast), (_, slow) in zip(got[True][2], got[False][2]):
        if n == 3:   # orjson reads a 30-digit integer as a float: why only read-only callers use it
            assert fast == {"n": float(slow["n"])}
        else:
            assert fast == slow
    total = audit_path(path).total
    assert total.rows == 3 and total.exact_duplicates == 2 and total.rejected == len(lines) - 2 - 3


def test_line_numbers_survive_chunking_with_blank_and_bad_lines(tmp_path):
    """Chunks number their lines from the lines the previous chunks read (blank ones included)."""
    rng = random.Random(6)
    lines = []
    for i in range(240):
        a, b = rng.choice(CLEAN)
        lines.append(json.dumps(row(f"{a} {i}", b)))
        if i % 17 == 0:
            lines.append("")
        if i % 29 == 0:
            lines.append('{"broken": ')
    path = tmp_path / "gaps.jsonl"
    path.write_text("\n".join(lines) + "\n")
    expected = [f"{path}:{n}" for n, text in enumerate(lines, 1) if text.startswith('{"broken')]
    for kw in ({"workers": 1}, {"workers": 2, "chunk_bytes": 3000}):
        audit = audit_path(path, **kw).total
        assert [e.split(": ")[0] for e in audit.rejection_examples] == expected[:20], kw
