"""`quimbot data ...` end to end, through a parser built with train.data.commands.register."""

import argparse
import json

import pytest

from core.errors import DataError, QuimbotError
from core.hashing import content_hash
from core.jsonl import read_jsonl
from train.data.commands import register


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="quimbot")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def row(learner, tutor, source="cli"):
    r = {"messages": [{"role": "user", "content": learner}, {"role": "assistant", "content": tutor}],
         "metadata": {"source": source}}
    r["metadata"]["content_hash"] = content_hash(r)
    return r


ROWS = [row("Yesterday I go to the park", "Oh, you went to the park yesterday? What did you do there?"),
        row("I have two brother", "Two brothers! Are they older or younger?"),
        row("She have a cat", "She has a cat? That is lovely, cats are great company at home. What is its name?")]


def write(path, rows, extra=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(x + "\n" for x in extra), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", [[], ["validate"], ["dedup"], ["audit"], ["import"]], ids=" ".join)
def test_every_data_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        run([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: quimbot data " + " ".join(command)) and len(out.splitlines()) > 5


def test_validate_reports_every_bad_line_and_exits_1(tmp_path, capsys):
    good = write(tmp_path / "good.jsonl", ROWS)
    assert run(["validate", str(good)]) == 0
    assert "OK: 3 of 3 rows passed the gate in 1 file(s)" in capsys.readouterr().out
    bad_row = row("x", "y")
    bad_row["messages"].reverse()
    bad = tmp_path / "bad.jsonl"
    latin1 = b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'
    bad.write_bytes(write(tmp_path / "tmp", ROWS, [json.dumps(bad_row), "{nope"]).read_bytes() + latin1 + b"\n")
    out_json = tmp_path / "gate.json"
    assert run(["validate", str(good), str(bad), "--json", str(out_json)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:4: messages[0] is an assistant message where a user message should be" in out
    assert f"{bad}:5: not valid JSON" in out
    at = latin1.index(b"\xe9") + 1
    assert f"{bad}:6: not valid UTF-8 at byte {at} of the line (byte 0xe9" in out
    assert "REJECTED LINES: 6 of 9 rows passed the gate in 2 file(s)" in out
    data = json.loads(out_json.read_text())
    assert data["rejected"] == 3 and data["files"][str(bad)] == {"accepted": 3, "rejected": 3}
    with pytest.raises(DataError, match="does not exist"):
        run(["validate", str(tmp_path / "missing.jsonl")])
    with pytest.raises(DataError, match="--tokenizer only applies with --max-tokens"):
        run(["validate", str(good), "--tokenizer", str(tmp_path)])


@pytest.mark.slow
def test_validate_max_tokens_uses_the_default_models_chat_template(tmp_path, capsys):
    long = row("Tell me everything. " * 30, "Everything? " * 5)
    path = write(tmp_path / "rows.jsonl", [ROWS[0], long])
    assert run(["validate", str(path), "--max-tokens", "100"]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: row is " in out and "tokens long; the limit for the target model is 100" in out
    assert "1 of 2 rows passed" in out


def test_dedup_end_to_end(tmp_path, capsys):
    a = write(tmp_path / "a.jsonl", ROWS + [ROWS[0]])
    other = [row(r["messages"][0]["content"], r["messages"][1]["content"], source="other") for r in ROWS[:2]]
    near = row("She have a cat", ROWS[2]["messages"][1]["content"].replace("its", "her"), source="other")
    b = write(tmp_path / "b.jsonl", other + [near])
    out, report = tmp_path / "out" / "kept.jsonl", tmp_path / "dedup.json"
    assert run(["dedup", str(a), str(b), str(out), "--quiet"]) == 0
    assert len(list(read_jsonl(out))) == 6
    assert run(["dedup", str(a), str(b), str(out), "--scope", "across", "--near", "--threshold", "0.5",
                "--report", str(report), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "7 rows in, 3 kept" in printed and f"wrote 3 rows to {out}" in printed
    data = json.loads(report.read_text())
    assert data["per_source"]["other"] == {"rows": 3, "exact": 2, "near": 1, "kept": 0, "lost": 3, "lost_share": 1.0,
                                           "lost_to_other_sources": 3}
    assert {g["kind"] for g in data["groups"]} == {"exact", "near"}
    with pytest.raises(DataError, match="is also an input"):
        run(["dedup", str(a), str(a)])
    with pytest.raises(DataError, match="--threshold must be between 0 and 1"):
        run(["dedup", str(a), str(out), "--near", "--threshold", "1.5"])
    with pytest.raises(QuimbotError, match="--keep-near only applies with --near"):
        run(["dedup", str(a), str(out), "--keep-near"])


def test_audit_end_to_end(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder / "one.jsonl", ROWS)
    write(folder / "two.jsonl", [row("I goed home", "**Oh, I goed home?** The correct form is went.")], ["{x"])
    assert run(["audit", str(folder), "--quiet"]) == 0
    md = capsys.readouterr().out
    assert md.startswith(f"# Data audit: {folder}") and "Style-artifact score" in md
    out_json, out_md = tmp_path / "r" / "audit.json", tmp_path / "r" / "audit.md"
    assert run(["audit", str(folder), "--json", str(out_json), "--markdown", str(out_md), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "4 rows, 1 rejected, 0 exact duplicates" in printed and f"wrote {out_json}" in printed
    data = json.loads(out_json.read_text())
    two = data["files"][1]
    assert two["red_pen"]["count"] == two["markdown"]["count"] == two["echo"]["count"] == 1
    assert two["artifact_score"] > data["files"][0]["artifact_score"]
    assert out_md.read_text().startswith(f"# Data audit: {folder}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no \\*.jsonl files"):
        run(["audit", str(empty)])


def test_import_end_to_end(tmp_path, capsys):
    src = write(tmp_path / "alpaca.jsonl", [{"instruction": "I goed home", "output": "You went home? Why?"},
                                            {"instruction": "I has a dog"}])
    out, report = tmp_path / "rows.jsonl", tmp_path / "gate.json"
    assert run(["import", "pairs", str(src), str(out), "--source", "alpaca", "--prompt-field", "instruction",
                "--response-field", "output", "--report", str(report), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "2 records, 1 accepted, 1 rejected (pass rate 50.0%)" in printed
    assert f"{src}:2: record has no 'output' field" in printed
    (only,) = [r for _, r in read_jsonl(out)]
    assert only["metadata"]["source"] == "alpaca" and only["metadata"]["original_line"] == 1
    assert json.loads(report.read_text())["pass_rate"] == 0.5

    datasets = pytest.importorskip("datasets")
    share = datasets.Dataset.from_list([{"conversations": [{"from": "human", "value": "I goed"},
                                                           {"from": "gpt", "value": "You went? Where?"}]}])
    share.save_to_disk(str(tmp_path / "ds"))
    assert run(["import", "sharegpt", str(tmp_path / "ds"), str(tmp_path / "ds.jsonl"), "--quiet"]) == 0
    assert "1 records, 1 accepted, 0 rejected" in capsys.readouterr().out
    with pytest.raises(DataError, match="is the input"):
        run(["import", "pairs", str(src), str(src)])
