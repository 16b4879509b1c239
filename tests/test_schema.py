import json

import pytest

from core.hashing import content_hash
from core.jsonl import read_rows
from core.schema import GateReport, SchemaError, check_row

GOOD = {"messages": [{"role": "system", "content": "Be a tutor."}, {"role": "user", "content": "I goed home"},
                     {"role": "assistant", "content": "Oh, you went home? Why?"}], "metadata": {"source": "t"}}


def test_good_rows_pass():
    assert check_row(GOOD) == "sft"
    pref = {"prompt": [{"role": "user", "content": "I goed"}], "chosen": [{"role": "assistant", "content": "You went?"}],
            "rejected": [{"role": "assistant", "content": "Wrong: went."}], "metadata": {}}
    pref["metadata"]["content_hash"] = content_hash(pref)
    assert check_row(pref) == "preference"
    unpaired = {"prompt": [{"role": "user", "content": "I goed"}],
                "completion": [{"role": "assistant", "content": "Wrong."}], "label": False, "metadata": {}}
    assert check_row(unpaired) == "unpaired"


@pytest.mark.parametrize("mutate, reason", [
    (lambda r: r["messages"].pop(), "ends with a user message; it must end with an assistant message"),
    (lambda r: r["messages"][1].update(role="bot"), "messages[1] has role 'bot'"),
    (lambda r: r["messages"][2].update(content="  "), "messages[2] (assistant) has empty or non-text content"),
    (lambda r: r["messages"].insert(2, {"role": "system", "content": "x"}), "only the first message may be one"),
    (lambda r: r["messages"].insert(2, {"role": "user", "content": "x"}), "is a user message where an assistant"),
    (lambda r: r.pop("metadata"), "no 'metadata' object"),
    (lambda r: r["metadata"].update(content_hash="qh1:0000"), "does not match the row's content"),
    (lambda r: r.update(messages=[]), "non-empty list"),
])
def test_bad_rows_are_rejected_with_the_reason(mutate, reason):
    row = json.loads(json.dumps(GOOD))
    mutate(row)
    with pytest.raises(SchemaError) as info:
        check_row(row)
    assert reason in str(info.value)


def test_token_limit():
    with pytest.raises(SchemaError, match="row is 99 tokens long; the limit for the target model is 50"):
        check_row(GOOD, count_tokens=lambda row: 99, max_tokens=50)


def test_file_gate_reports_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    bad = json.loads(json.dumps(GOOD))
    bad["messages"].pop()
    path.write_text(json.dumps(GOOD) + "\n\n{not json\n" + json.dumps(bad) + "\n" + json.dumps(GOOD) + "\n")
    report = GateReport()
    rows = list(read_rows(path, report))
    assert len(rows) == 2 and report.accepted == 2
    assert [(e.line, e.path) for e in report.rejected] == [(3, str(path)), (4, str(path))]
    assert str(report.rejected[0]).startswith(f"{path}:3: not valid JSON")
    assert "it must end with an assistant message" in str(report.rejected[1])
    with pytest.raises(SchemaError, match=":3: not valid JSON"):
        list(read_rows(path))


def test_content_hash_is_versioned_and_ignores_metadata():
    h = content_hash(GOOD)
    assert h.startswith("qh1:") and len(h) == 4 + 64
    assert content_hash({**GOOD, "metadata": {"other": 1}}) == h
    changed = json.loads(json.dumps(GOOD))
    changed["messages"][2]["content"] += "!"
    assert content_hash(changed) != h


def test_mixed_encodings_bom_and_crlf_lose_only_the_bad_line(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = json.dumps(GOOD, ensure_ascii=False).encode()
    latin1 = json.dumps({**GOOD, "messages": GOOD["messages"][:1] + [
        {"role": "user", "content": "Je suis allé à Paris"}, GOOD["messages"][2]]}, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\r\n" + latin1.encode("latin-1") + b"\r\n" + good + b"\r\n")
    report = GateReport()
    rows = list(read_rows(path, report))
    assert len(rows) == 2 and report.accepted == 2
    assert len(report.rejected) == 1 and report.rejected[0].line == 2
    assert "not valid UTF-8" in str(report.rejected[0]) and str(report.rejected[0]).startswith(f"{path}:2:")


def _reference_hash(row):
    """qh1 as defined: sha256 of json.dumps of the NFC-normalised, stripped training fields, sorted."""
    import hashlib
    import unicodedata

    def norm(value):
        if isinstance(value, str):
            return unicodedata.normalize("NFC", value).strip()
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        return value

    keys = ("messages", "prompt", "chosen", "rejected", "completion", "label")
    core = {k: norm(row[k]) for k in keys if k in row}
    text = json.dumps(core, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "qh1:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _outcome(hash_function, row):
    try:
        return hash_function(row)
    except (UnicodeEncodeError, ValueError, TypeError) as exc:  # e.g. a lone surrogate cannot be UTF-8
        return type(exc)


def test_content_hash_fast_path_matches_the_definition():
    """content_hash writes message lists out itself (and caches system prompts); it must give the
    hash of the definition for any row: odd strings, extra keys, non-string values, other fields."""
    import random

    from core import hashing

    rng = random.Random(3)
    pieces = ["", " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x1c", "\u00a0", "\u2003", "\u3000", "\x00", "\x7f", '"',
              "\\", "/", "é", "e\u0301", "\u212b", "A\u030a", "ﬁ", "日本", "\U0001f600", "\ud800", "\u2028", "a", "Hi", "you",
              "went", "?", "'"]

    def text():
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))

    def message():
        r = rng.random()
        role = rng.choice(["system", "user", "assistant", " user", "assistant\n", "bot", "syst\u0065\u0301m"])
        if r < 0.7:
            return {"role": role, "content": text()} if rng.random() < 0.5 else {"content": text(), "role": role}
        if r < 0.8:
            return {"role": role, "content": text(), "name": text()}
        if r < 0.85:
            return {"role": role}
        if r < 0.9:
            return {"role": role, "content": rng.choice([None, 3, 2.5, True, [text()], {"a": text()}])}
        if r < 0.95:
            return {"content": text(), "x": text()}
        return rng.choice([text(), 7, None, [text()]])

    system = ["You are a tutor.", " You are a tutor. ", "Tu es prof\u0301.", "Tu es profé."]
    for _ in range(3000):
        messages = [message() for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.5:
            messages.insert(0, {"role": "system", "content": rng.choice(system)})
        row = {rng.choice(["messages", "prompt", "chosen", "rejected", "completion"]): messages, "metadata": {"x": 1}}
        if rng.random() < 0.3:
            row[rng.choice(["label", "chosen", "prompt"])] = rng.choice(
                [True, False, None, 1, text(), messages[:1], {"k": text()}, (text(),)])
        if rng.random() < 0.05:
            row["messages"] = rng.choice([(), {"role": "user"}, text(), [[text()]]])
        assert _outcome(content_hash, row) == _outcome(_reference_hash, row), row
    hashing._SYSTEM_CACHE.clear()
    for n in range(hashing._SYSTEM_CACHE_MAX + 10):  # the cache empties itself when full
        row = {"messages": [{"role": "system", "content": f"prompt {n} "}, {"role": "user", "content": "hi"}]}
        assert content_hash(row) == _reference_hash(row)
    assert len(hashing._SYSTEM_CACHE) <= hashing._SYSTEM_CACHE_MAX
    assert len(hashing._SYSTEM_STATES) <= hashing._SYSTEM_CACHE_MAX
    # the hash state cached after a system prompt is copied, never extended in place
    row = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}]}
    for _ in range(3):
        assert content_hash(row) == _reference_hash(row)
    assert content_hash({"messages": [{"role": "system", "content": "S"}]}) == \
        _reference_hash({"messages": [{"role": "system", "content": "S"}]})
    with pytest.raises(ValueError):
        content_hash({"metadata": {}})


@pytest.mark.parametrize("blank", ["", " ", "\t\n", "\u00a0", "\u3000 ", "\x1c", "\u2028"])
def test_whitespace_only_content_is_rejected(blank):
    row = json.loads(json.dumps(GOOD))
    row["messages"][1]["content"] = blank
    with pytest.raises(SchemaError, match=r"messages\[1\] \(user\) has empty or non-text content"):
        check_row(row)


def test_a_line_of_other_characters_than_ascii_blanks_is_reported(tmp_path):
    path = tmp_path / "ws.jsonl"
    path.write_bytes(b"\xef\xbb\xbf\n\x1c\n \t\n" + json.dumps(GOOD).encode() + b"\n")
    report = GateReport()
    assert len(list(read_rows(path, report))) == 1
    assert [e.line for e in report.rejected] == [1, 2] and all("not valid JSON" in str(e) for e in report.rejected)
