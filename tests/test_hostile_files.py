"""Hostile data files through every reader: `quimbot data validate|dedup|audit|import|mix`, the audit's
multi-process path and `quimbot train`'s dataset gate. A hostile line costs only its own line (a clear
reason with file:line); a file that cannot be read (named pipe, symbolic link loop, empty) or written
(a folder, a folder that cannot be made) is one clear error naming it; nothing hangs or crashes."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import DataError
from core.hashing import content_hash
from core.jsonl import iter_json_lines
from core.schema import GateReport
from quimbot.cli import main
from train.data.audit import audit_path
from train.fit.examples import gate as training_gate

ROOT = Path(__file__).resolve().parent.parent


def row(learner, tutor="Oh, you went home? What did you do there?"):
    r = {"messages": [{"role": "user", "content": learner}, {"role": "assistant", "content": tutor}],
         "metadata": {"source": "hostile"}}
    r["metadata"]["content_hash"] = content_hash(r)
    return r


def line(value) -> bytes:
    return json.dumps(value).encode()


GOOD = [line(row(f"Yesterday I go home number {i}")) for i in range(3)]
DEEP = b"[" * 100_000 + b"]" * 100_000
# hostile line -> the reason every reader gives for it
SHAPES = {
    "deep-100000": (DEEP, "nests lists and objects more than 100 levels deep"),
    "deep-object-3000": (b'{"a": ' * 3000 + b"1" + b"}" * 3000, "nests lists and objects more than 100 levels deep"),
    "int-5000-digits": (b'{"messages": [], "n": ' + b"7" * 5000 + b"}", "holds an integer of more than 4,300 digits"),
    "chosen-of-strings": (line({"prompt": [{"role": "user", "content": "Hi"}], "chosen": ["x"],
                                "rejected": [{"role": "assistant", "content": "Hello!"}], "metadata": {}}),
                          "'chosen' must be a list holding exactly one assistant message"),
    "lone-surrogate": (line(row("I goed home")).replace(b"I goed home", b"I goed \\ud800 home"),
                       "holds a lone UTF-16 surrogate (\\ud800)"),
    "NaN": (line({**row("I goed home"), "metadata": {"score": float("nan")}}), "holds NaN, which JSON does not allow"),
    "Infinity": (line({**row("I goed home"), "metadata": {"score": float("inf")}}), "holds Infinity"),
    "1e400": (line(row("I goed home"))[:-1] + b', "x": 1e400}', "holds the number 1e400, too large for a 64-bit float"),
}
SHAPE_IDS = list(SHAPES)


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def hostile_file(tmp_path, shape) -> Path:
    path = tmp_path / f"{shape}.jsonl"
    path.write_bytes(b"\n".join([GOOD[0], SHAPES[shape][0], GOOD[1]]) + b"\n")
    return path


def one_error(errors, start: str) -> bool:
    """``errors`` is one error whose text starts with ``start`` (file:line: reason)."""
    return len(errors) == 1 and str(errors[0]).startswith(start)


def strict_rows(path: Path) -> list:
    """Every line of a written file as strict JSON (NaN/Infinity refused), or AssertionError."""
    def refuse(name):
        raise AssertionError(f"{path} holds {name}")

    return [json.loads(text, parse_constant=refuse) for text in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("shape", SHAPE_IDS)
def test_a_hostile_line_costs_only_its_line_in_validate_dedup_and_import(tmp_path, shape):
    path = hostile_file(tmp_path, shape)
    reason = SHAPES[shape][1]
    code, out, _ = cli("data", "validate", path, "--quiet")
    assert code == 1
    assert f"{path}:2: {reason}" in out and f"{path}: 2 rows accepted, 1 rejected" in out

    kept = tmp_path / "dedup.jsonl"
    code, out, _ = cli("data", "dedup", path, kept, "--quiet")
    assert code == 0 and f"{path}:2: {reason}" in out
    assert [r["messages"][0]["content"] for r in strict_rows(kept)] == [
        json.loads(GOOD[0])["messages"][0]["content"], json.loads(GOOD[1])["messages"][0]["content"]]

    converted = tmp_path / "import.jsonl"
    code, out, _ = cli("data", "import", "messages", path, converted, "--quiet")
    assert code == 0 and "3 records, 2 accepted, 1 rejected" in out and f"{path}:2: " in out
    if shape != "chosen-of-strings":  # a preference row is not a 'messages' record: rejected for that
        assert f"{path}:2: {reason}" in out
    assert len(strict_rows(converted)) == 2


@pytest.mark.parametrize("shape", SHAPE_IDS)
def test_a_hostile_line_costs_only_its_line_in_audit_mix_and_training(tmp_path, shape):
    path = hostile_file(tmp_path, shape)
    reason = SHAPES[shape][1]
    report = tmp_path / "audit.json"
    code, out, _ = cli("data", "audit", path, "--json", report, "--quiet")
    assert code == 0 and f"{path}: 2 rows, 1 rejected" in out
    assert one_error(json.loads(report.read_text())["total"]["rejection_examples"], f"{path}:2: {reason}")

    config = tmp_path / "mix.toml"
    mixed = tmp_path / "mix.jsonl"
    config.write_text(f'total = 2\nseed = 1\nout = "{mixed}"\n[[sources]]\nname = "h"\npath = "{path}"\nratio = 1.0\n')
    code, out, _ = cli("data", "mix", config)
    assert code == 0 and "h: 2 rows" in out and "1 rejected by the gate" in out
    manifest = json.loads((tmp_path / "mix.jsonl.manifest.json").read_text())
    assert one_error(manifest["inputs"][0]["rejected_examples"], f"{path}:2: {reason}")
    assert len(strict_rows(mixed)) == 2

    examples, gate = training_gate([str(path)], "sft", skip_bad_rows=True, say=lambda *a: None)
    assert [ex.line for ex in examples] == [1, 3] and one_error(gate.rejected, f"{path}:2: {reason}")
    with pytest.raises(DataError, match="fails the schema gate") as err:
        training_gate([str(path)], "sft", skip_bad_rows=False)
    assert f"{path}:2: {reason}" in str(err.value)


@pytest.mark.parametrize("shape", SHAPE_IDS)
def test_the_audits_multi_process_chunks_and_both_json_readers_agree_on_hostile_lines(tmp_path, shape):
    rows = [line(row(f"I have {i} brother and {i} sister", f"You have {i} brothers? Are they older?"))
            for i in range(60)]
    rows.insert(30, SHAPES[shape][0])
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    expected = f"{path}:31: {SHAPES[shape][1]}"
    json_ok = shape == "chosen-of-strings"  # that line is JSON; the gate rejects it, not the reader
    for read_only in (False, True):  # json.loads, and orjson with the json.loads fallback (the audit's)
        report = GateReport()
        numbers = [n for n, _ in iter_json_lines(path, report, read_only=read_only)]
        assert numbers == [n for n in range(1, 62) if n != 31 or json_ok]
        assert not report.rejected if json_ok else one_error(report.rejected, expected)
    audit = audit_path(path, workers=2, chunk_bytes=max(4096, path.stat().st_size // 6), near=False).total
    assert audit.rows == 60 and audit.rejected == 1 and one_error(audit.rejection_examples, expected)


def test_json_errors_say_at_column_once(tmp_path):
    path = tmp_path / "torn.jsonl"
    path.write_bytes(GOOD[0] + b"\n{\"messages\": \"abc")  # the last line, torn
    code, out, _ = cli("data", "validate", path, "--quiet")
    assert code == 1 and f"{path}:2: not valid JSON (Unterminated string starting at column 14)" in out
    assert "at at" not in out


@pytest.mark.parametrize("content, why", [(b"", "the file is 0 bytes"), (b"\n  \n\t\n", "the file holds only blank lines")],
                         ids=["0-bytes", "blank-lines"])
def test_a_file_without_rows_is_an_error_in_every_command(tmp_path, content, why):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    message = f"{path}: no rows ({why}); nothing to read."
    code, out, _ = cli("data", "validate", path, "--quiet")
    assert code == 1 and message in out and out.rstrip().splitlines()[-1].startswith("NO ROWS: 0 of 0 rows")
    good = tmp_path / "good.jsonl"
    good.write_bytes(GOOD[0] + b"\n")
    code, out, _ = cli("data", "validate", good, path, "--quiet")  # good rows elsewhere do not hide it
    assert code == 1 and message in out and f"{good}: 1 rows accepted, 0 rejected" in out
    config = tmp_path / "mix.toml"
    config.write_text(f'total = 2\nout = "{tmp_path / "m.jsonl"}"\n[[sources]]\npath = "{path}"\nratio = 1.0\n')
    for argv in (["dedup", path, tmp_path / "d.jsonl"], ["audit", path], ["audit", path, "--workers", "2"],
                 ["import", "messages", path, tmp_path / "i.jsonl"], ["mix", config]):
        code, out, err = cli("data", *argv, "--quiet") if argv[0] != "mix" else cli("data", *argv)
        assert code == 2 and message in err, argv
        assert not (tmp_path / "d.jsonl").exists() and not (tmp_path / "i.jsonl").exists()
    with pytest.raises(DataError, match="no rows"):
        training_gate([str(path)], "sft", skip_bad_rows=True)


def test_symbolic_link_loops_and_broken_links_are_named_as_such(tmp_path):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    broken = tmp_path / "broken.jsonl"
    broken.symlink_to(tmp_path / "gone.jsonl")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "ok.jsonl").write_bytes(GOOD[0] + b"\n")
    (folder / "inner.jsonl").symlink_to(folder / "inner.jsonl")
    config = tmp_path / "mix.toml"
    for path, says in ((loop, f"Cannot read {loop}: it is a symbolic link loop"),
                       (broken, f"Cannot read {broken}: it is a symbolic link to {tmp_path / 'gone.jsonl'}, which "
                                "does not exist"),
                       (folder, f"Cannot read {folder / 'inner.jsonl'}: it is a symbolic link loop")):
        config.write_text(f'total = 2\nout = "{tmp_path / "m.jsonl"}"\n[[sources]]\npath = "{path}"\nratio = 1.0\n')
        for argv in (["validate", path, "--quiet"], ["dedup", path, tmp_path / "d.jsonl"], ["audit", path],
                     ["import", "messages", path, tmp_path / "i.jsonl"], ["mix", config]):
            if argv[0] in ("import", "mix") and path == folder:
                continue  # import reads a folder as a saved dataset, mix sources are files
            code, _, err = cli("data", *argv)
            assert code == 2 and says in err, argv
        if path != folder:
            with pytest.raises(DataError, match="symbolic link"):
                training_gate([str(path)], "sft", skip_bad_rows=True)
    with pytest.raises(DataError, match="symbolic link loop"):
        list(iter_json_lines(loop))


FIFO_SCRIPT = r"""
import contextlib, io, json, sys
from quimbot.cli import main
from core.errors import DataError
from train.fit.examples import gate as training_gate
fifo, tmp = sys.argv[1], sys.argv[2]
open(tmp + "/mix.toml", "w").write(f'total = 2\nout = "{tmp}/m.jsonl"\n[[sources]]\npath = "{fifo}"\nratio = 1.0\n')
results = []
for argv in (["validate", fifo], ["dedup", fifo, tmp + "/d.jsonl"], ["audit", fifo], ["audit", fifo, "--workers", "2"],
             ["import", "messages", fifo, tmp + "/i.jsonl"], ["mix", tmp + "/mix.toml"], ["mix", fifo]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        results.append((argv[0], main(["data", *argv]), err.getvalue()))
try:
    training_gate([fifo], "sft", skip_bad_rows=True)
except DataError as exc:
    results.append(("train", 2, str(exc)))
print(json.dumps(results))
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need a POSIX system")
def test_a_named_pipe_is_refused_at_once_by_every_command(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    # in a child process with a bound, so that a reader which blocks on the pipe fails the test instead of hanging it
    done = subprocess.run([sys.executable, "-c", FIFO_SCRIPT, str(fifo), str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.splitlines()[-1])
    assert [name for name, _, _ in results] == ["validate", "dedup", "audit", "audit", "import", "mix", "mix", "train"]
    for name, code, err in results:
        assert code == 2 and f"{fifo}: it is a named pipe (FIFO), not a regular file" in err, (name, err)


@pytest.mark.parametrize("problem", ["folder", "parent-is-a-file"])
def test_an_output_path_that_cannot_be_a_file_is_one_clear_error(tmp_path, problem):
    data = tmp_path / "rows.jsonl"
    data.write_bytes(b"\n".join(GOOD) + b"\n")
    if problem == "folder":
        bad = tmp_path / "outdir"
        bad.mkdir()
        says = f"Cannot write {bad}: it is a folder"
    else:
        bad = data / "out.jsonl"
        says = f"Cannot write {bad}: a part of {data} is a file, not a folder"
    config = tmp_path / "mix.toml"
    config.write_text(f'total = 2\nout = "{bad}"\n[[sources]]\npath = "{data}"\nratio = 1.0\n')
    for argv in (["validate", data, "--json", bad], ["dedup", data, bad], ["dedup", data, tmp_path / "d.jsonl",
                 "--report", bad], ["audit", data, "--json", bad], ["audit", data, "--markdown", bad],
                 ["import", "messages", data, bad], ["import", "messages", data, tmp_path / "i.jsonl", "--report", bad],
                 ["mix", config]):
        code, _, err = cli("data", *argv)
        assert code == 2 and says in err, argv
    # a folder that is only missing is made, as before
    code, _, _ = cli("data", "dedup", data, tmp_path / "new" / "sub" / "kept.jsonl", "--quiet")
    assert code == 0 and len(strict_rows(tmp_path / "new" / "sub" / "kept.jsonl")) == 3


def test_generate_refuses_a_pipe_a_link_loop_and_a_hostile_resumed_file(tmp_path):
    pipe = tmp_path / "pipe.jsonl"
    os.mkfifo(pipe)
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    code, _, err = cli("data", "generate", "--out", str(pipe), "--n", "2")
    assert code == 2 and "named pipe" in err and "Traceback" not in err
    code, _, err = cli("data", "generate", "--out", str(loop), "--n", "2")
    assert code == 2 and "symbolic link loop" in err
    made = tmp_path / "made.jsonl"
    assert cli("data", "generate", "--out", str(made), "--n", "2")[0] == 0
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    (tmp_path / "deep.jsonl.params.json").write_text((tmp_path / "made.jsonl.params.json").read_text())
    code, _, err = cli("data", "generate", "--out", str(deep), "--n", "2")
    assert code == 2 and "deep.jsonl: the line at byte 0 is not a generated entry" in err
