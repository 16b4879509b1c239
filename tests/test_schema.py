import json

import pytest

from train.hashing import content_hash
from train.schema import GateReport, SchemaError, check_row, read_rows

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
