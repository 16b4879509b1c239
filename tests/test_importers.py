"""Reading JSONL safely (bad bytes, BOM, CRLF, bad JSON, bad rows) and the three importers, from
JSONL files and from datasets saved with save_to_disk."""

import json

import pytest

from core.errors import DataError
from core.hashing import content_hash
from core.jsonl import iter_json_lines, line_chunks, read_jsonl, reason_key
from core.schema import GateReport, SchemaError
from train.data.importers import FieldOptions, import_corpus


def row(learner="Yesterday I go to the store", tutor="Oh, you went to the store yesterday? What did you buy?",
        **meta):
    r = {"messages": [{"role": "system", "content": "Be a tutor."}, {"role": "user", "content": learner},
                      {"role": "assistant", "content": tutor}], "metadata": {"source": "t", **meta}}
    r["metadata"]["content_hash"] = content_hash(r)
    return r


def dumps(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def test_malformed_file_every_bad_line_reported_good_rows_survive(tmp_path):
    wrong_role = row()
    wrong_role["messages"][1]["role"] = "learner"
    wrong_role["metadata"].pop("content_hash")
    empty_turn = row()
    empty_turn["messages"][2]["content"] = "   "
    empty_turn["metadata"].pop("content_hash")
    trailing_user = row()
    trailing_user["messages"].append({"role": "user", "content": "And you?"})
    trailing_user["metadata"].pop("content_hash")
    long_row = row(tutor="Oh, you went to the store yesterday? " + "What did you buy there? " * 40)
    edited = row()
    edited["messages"][2]["content"] = "Edited after hashing?"
    good_unicode = row(learner="I eat crêpes at the café", tutor="Oh, you ate crêpes at the café? Were they good?")
    lines = [
        b"\xef\xbb\xbf" + dumps(row()),                                   # 1: BOM on the first line: fine
        b"{not json",                                                     # 2: bad JSON
        dumps(wrong_role),                                                # 3: wrong role
        b"",                                                              # 4: blank: skipped
        dumps(empty_turn),                                                # 5: empty turn
        dumps(trailing_user),                                             # 6: ends with a user turn
        '{"messages": [{"role": "user", "content": "café"}]}'.encode("latin-1"),  # 7: Latin-1 bytes
        dumps(long_row),                                                  # 8: too many tokens
        dumps(edited),                                                    # 9: hash does not match
        dumps(good_unicode),                                              # 10: good, UTF-8 multibyte
        b"[1, 2]",                                                        # 11: not an object
        dumps(row(learner="I have two brother", tutor="You have two brothers? Older or younger?")),  # 12: good
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")  # CRLF line endings: fine
    report = GateReport()
    count = lambda r: sum(len(m["content"].split()) for m in r["messages"])  # noqa: E731 - words as "tokens"
    got = list(read_jsonl(path, report, count_tokens=count, max_tokens=60))
    assert [n for n, _ in got] == [1, 10, 12]
    assert got[1][1]["messages"][1]["content"] == "I eat crêpes at the café"
    assert report.accepted == 3
    errors = {e.line: str(e) for e in report.rejected}
    assert sorted(errors) == [2, 3, 5, 6, 7, 8, 9, 11]
    assert all(e.path == str(path) for e in report.rejected)
    assert errors[2].startswith(f"{path}:2: not valid JSON")
    assert "messages[1] has role 'learner'" in errors[3]
    assert "messages[2] (assistant) has empty or non-text content" in errors[5]
    assert "ends with a user message" in errors[6]
    # the Latin-1 "é" (0xe9) is byte 47 of the line
    assert f"{path}:7: not valid UTF-8 at byte 47 of the line (byte 0xe9" in errors[7]
    assert "tokens long; the limit for the target model is 60" in errors[8]
    assert "does not match the row's content" in errors[9]
    assert "row is a list, not a JSON object" in errors[11]


def test_without_a_report_the_first_bad_line_raises_with_its_location(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(dumps(row()) + b"\n" + b"\xff\xfe{}\n")
    with pytest.raises(SchemaError, match=r"bad\.jsonl:2: not valid UTF-8 at byte 1 of the line \(byte 0xff"):
        list(read_jsonl(path))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="Cannot read .*nope.jsonl"):
        list(iter_json_lines(tmp_path / "nope.jsonl"))


def test_line_chunks_split_on_line_boundaries(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(dumps({"i": i, "pad": "x" * (i % 7)}) + b"\n" for i in range(200)))
    whole = [v["i"] for _, v in iter_json_lines(path)]
    chunks = line_chunks(path, 7)
    assert len(chunks) == 7 and chunks[0][0] == 0 and chunks[-1][1] == path.stat().st_size
    pieces = []
    for start, end in chunks:
        pieces += [v["i"] for _, v in iter_json_lines(path, start=start, end=end)]
    assert pieces == whole == list(range(200))


def test_reason_key_groups_reasons_for_counting():
    assert reason_key("messages[3] has role 'bot'; expected one of system, user, assistant") == \
        "messages[N] has role ...; expected one of system, user, assistant"
    assert reason_key("not valid UTF-8 at byte 12 of the line (byte 0xe9 near 'caf'); re-save") == \
        "not valid UTF-8 at byte N of the line (...); re-save"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


SHAREGPT = [
    {"conversations": [{"from": "human", "value": "I goed to school"},
                       {"from": "gpt", "value": "Oh, you went to school? What did you learn?"}]},
    {"system": "You are a tutor.",
     "conversations": [{"from": "Human", "value": "She have a cat"}, {"from": "ChatGPT", "value": "She has a cat? Nice!"},
                       {"from": "user", "value": "Yes, black"}, {"from": "assistant", "value": "A black cat! Name?"}]},
    {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hello"},
                       {"from": "bot", "value": "Hi! How are you today?"}]},
    {"conversations": [{"from": "robot", "value": "beep"}, {"from": "gpt", "value": "boop"}]},      # unknown speaker
    {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hi"},
                       {"from": "human", "value": "bye"}]},                                          # ends with human
    {"conversations": []},                                                                          # empty
    {"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": None}]},           # no text
]


def test_sharegpt_from_jsonl(tmp_path):
    src = write_jsonl(tmp_path / "share.jsonl", SHAREGPT)
    out = tmp_path / "out.jsonl"
    report = import_corpus("sharegpt", src, out, source="sharegpt-demo")
    assert (report.records, report.accepted, len(report.rejected)) == (7, 3, 4)
    rows = [r for _, r in read_jsonl(out)]  # the written rows pass the gate again
    assert [m["role"] for m in rows[1]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert rows[1]["messages"][0]["content"] == "You are a tutor."
    assert rows[2]["messages"][0] == {"role": "system", "content": "Be kind."}
    meta = rows[1]["metadata"]
    assert meta["source"] == "sharegpt-demo" and meta["original_index"] == 1 and meta["original_line"] == 2
    assert meta["format"] == "sharegpt" and meta["content_hash"] == content_hash(rows[1])
    errors = {e.line: str(e) for e in report.rejected}
    assert sorted(errors) == [4, 5, 6, 7]
    assert errors[4].startswith(f"{src}:4: conversations[0] has speaker 'robot'")
    assert "ends with a user message" in errors[5]
    assert "'conversations' is missing or not a non-empty list" in errors[6]
    assert "conversations[1].value is NoneType, not text" in errors[7]
    assert report.pass_rate == pytest.approx(3 / 7)
    counted = dict(report.reasons)
    assert sum(counted.values()) == 4
    assert [n for reason, n in counted.items() if reason.startswith("conversations[N] has speaker ...;")] == [1]


def test_messages_from_jsonl_keep_metadata_and_map_roles(tmp_path):
    records = [{"messages": [{"role": "human", "content": "I am agree"},
                             {"role": "assistant", "content": "You agree? Why?"}], "metadata": {"level": "beginner",
                                                                                               "content_hash": "qh1:x"}},
               {"messages": [{"role": "user", "content": "hi"}, {"role": "critic", "content": "no"}]}]
    src = write_jsonl(tmp_path / "msgs.jsonl", records)
    report = import_corpus("messages", src, tmp_path / "out.jsonl")
    assert report.accepted == 1 and report.source == "msgs"
    (only,) = [r for _, r in read_jsonl(tmp_path / "out.jsonl")]
    assert only["messages"][0] == {"role": "user", "content": "I am agree"}
    assert only["metadata"]["level"] == "beginner" and only["metadata"]["content_hash"] == content_hash(only)
    assert "messages[1] has speaker 'critic'" in str(report.rejected[0]) and report.rejected[0].line == 2


def test_pairs_with_configurable_fields(tmp_path):
    records = [{"instruction": "Correct me: I goed home", "input": "(casual chat)", "output": "You went home? Why?"},
               {"instruction": "Hi", "output": 42},
               {"question": "no instruction field", "output": "x"}]
    src = write_jsonl(tmp_path / "alpaca.jsonl", records)
    fields = FieldOptions(prompt="instruction", response="output", input="input")
    report = import_corpus("pairs", src, tmp_path / "out.jsonl", fields=fields)
    (first,) = [r for _, r in read_jsonl(tmp_path / "out.jsonl")]
    assert first["messages"] == [{"role": "user", "content": "Correct me: I goed home\n\n(casual chat)"},
                                 {"role": "assistant", "content": "You went home? Why?"}]
    errors = [str(e) for e in report.rejected]
    assert "'output' is int, not text" in errors[0]
    assert "record has no 'instruction' field" in errors[1] and "--prompt-field" in errors[1]
    # the defaults are prompt/response
    src2 = write_jsonl(tmp_path / "pr.jsonl", [{"prompt": "I has a dog", "response": "You have a dog? Cute!"}])
    assert import_corpus("pairs", src2, tmp_path / "out2.jsonl").accepted == 1


def test_import_token_limit_and_unknown_format(tmp_path):
    src = write_jsonl(tmp_path / "pr.jsonl", [{"prompt": "short", "response": "ok then?"},
                                              {"prompt": "long " * 50, "response": "ok"}])
    report = import_corpus("pairs", src, None, count_tokens=lambda r: len(r["messages"][0]["content"].split()),
                           max_tokens=10)
    assert report.accepted == 1 and "50 tokens long" in str(report.rejected[0]) and report.output is None
    with pytest.raises(DataError, match="Unknown format 'csv'"):
        import_corpus("csv", src, None)


def test_import_from_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    share = datasets.Dataset.from_list([{"conversations": c["conversations"]} for c in SHAREGPT[:1] + SHAREGPT[3:4]])
    share.save_to_disk(str(tmp_path / "share_ds"))
    report = import_corpus("sharegpt", tmp_path / "share_ds", tmp_path / "a.jsonl", source="hub-copy")
    assert report.accepted == 1 and len(report.rejected) == 1
    assert str(report.rejected[0]).startswith(f"{tmp_path / 'share_ds'}[1]: conversations[0] has speaker 'robot'")
    (r,) = [r for _, r in read_jsonl(tmp_path / "a.jsonl")]
    assert r["metadata"]["original_index"] == 0 and "original_line" not in r["metadata"]

    pairs = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"input": "I goed", "output": "You went?"}] * 2),
        "test": datasets.Dataset.from_list([{"input": "She have", "output": "She has?"}])})
    pairs.save_to_disk(str(tmp_path / "pairs_ds"))
    fields = FieldOptions(prompt="input", response="output")
    assert import_corpus("pairs", tmp_path / "pairs_ds", None, fields=fields).accepted == 2  # train by default
    test = import_corpus("pairs", tmp_path / "pairs_ds", tmp_path / "t.jsonl", fields=fields, split="test")
    assert test.accepted == 1 and test.audit.rows == 1
    with pytest.raises(DataError, match="holds the splits train, test"):
        import_corpus("pairs", tmp_path / "pairs_ds", None, fields=fields, split="dev")

    msgs = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "I goed"},
                                                     {"role": "assistant", "content": "You went? Where?"}]}])
    msgs.save_to_disk(str(tmp_path / "msgs_ds"))
    assert import_corpus("messages", tmp_path / "msgs_ds", None).accepted == 1
    (tmp_path / "not_a_dataset").mkdir()
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        import_corpus("messages", tmp_path / "not_a_dataset", None)


def test_gate_report_lets_a_small_clean_corpus_beat_a_large_noisy_one(tmp_path):
    questions = ["Where did you go?", "Who came with you?", "Was it fun?", "What did you eat?", "How long was it?",
                 "Do you go often?", "What did you see?", "Would you go again?", "Was it busy?", "How was the weather?"]
    clean = [{"prompt": f"Yesterday I go to place number {i}",
              "response": f"{opener} you went to place number {i} yesterday? {questions[i]}"}
             for i, opener in enumerate(["Oh,", "Nice,", "Really?", "Wow,", "Ah,", "Cool,", "Great,", "Hmm,",
                                         "Lovely,", "So"])]
    noisy = [{"prompt": f"I have {n} brother", "response": f"That sounds great! **I have {n} brothers**? Correction: "
              "you should say brothers. What do you like to do?"} for n in range(40)]
    noisy += [{"prompt": "hi"}] * 20
    good = import_corpus("pairs", write_jsonl(tmp_path / "clean.jsonl", clean), None)
    bad = import_corpus("pairs", write_jsonl(tmp_path / "noisy.jsonl", noisy), None)
    assert good.pass_rate == 1.0 and bad.pass_rate == pytest.approx(40 / 60)
    assert bad.reasons["record has no 'response' field (fields: prompt); choose the fields with --prompt-field/"
                       "--response-field"] == 20
    assert good.artifact_score < 0.15 < 0.5 < bad.artifact_score
    summary = bad.summary()
    assert "pass rate 66.7%" in summary and "style-artifact score" in summary and "20 x record has no" in summary
    data = bad.to_dict()
    assert data["rejected"] == 20 and data["artifacts"]["red_pen"] == 1.0
    json.dumps(data)
