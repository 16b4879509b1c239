"""The `quimbot` command line, on the real default model and a real database file."""

import json
import subprocess
import sys

import pytest

from quimbot.cli import build_parser, main

COMMANDS = [["app"], ["chat"], ["conversations"], ["conversations", "list"], ["conversations", "show"], ["models"],
            ["flags"], ["flags", "list"], ["flags", "add"], ["flags", "remove"], ["flags", "suggest"],
            ["flags", "detector-eval"], ["export"], ["export", "stage2"], ["conversations", "delete"], ["backup"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: quimbot " + " ".join(command)) and len(out.splitlines()) > 3


def test_installed_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "quimbot.cli", "--help"], capture_output=True, text=True, check=True)
    assert "chat" in out.stdout and "conversations" in out.stdout
    parser = build_parser()
    assert parser.prog == "quimbot"


@pytest.mark.slow
def test_chat_then_list_and_show(tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    code = main(["chat", "--db", db, "--temperature", "0", "--max-tokens", "20", "--level", "advanced",
                 "-m", "Yesterday I go to the store", "-m", "I buyed apples"])
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() and "[conversation 1]" in err

    assert main(["conversations", "list", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert "Yesterday I go to the store" in listing and "advanced" in listing

    assert main(["conversations", "show", "1", "--db", db, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [t["role"] for t in shown["turns"]] == ["user", "assistant", "user", "assistant"]
    assert shown["turns"][2]["content"] == "I buyed apples"
    assert all(t["status"] == "ok" for t in shown["turns"])
    assert shown["turns"][1]["content"] in out

    assert main(["conversations", "show", "1", "--db", db]) == 0
    text = capsys.readouterr().out
    assert "learner> I buyed apples" in text and "gguf:default" in text

    # Continue the same conversation from the CLI, reading messages from standard input.
    import io
    sys_stdin = sys.stdin
    sys.stdin = io.StringIO("My sister have a car\n/quit\n")
    try:
        assert main(["chat", "--db", db, "-c", "1", "--max-tokens", "10"]) == 0
    finally:
        sys.stdin = sys_stdin
    capsys.readouterr()
    assert main(["conversations", "show", "1", "--db", db, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["turns"]) == 6


def test_cli_errors_are_clear(tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    assert main(["conversations", "show", "42", "--db", db]) == 2
    assert "Conversation 42 does not exist" in capsys.readouterr().err
    assert main(["chat", "--db", db, "--model", "gguf:/missing.gguf", "-m", "hi"]) == 1
    assert "[error] GGUF file not found: /missing.gguf" in capsys.readouterr().err
    assert main(["chat", "--db", db, "-m", "   "]) == 1
    assert "Your message is empty" in capsys.readouterr().err
    assert main(["conversations", "list", "--db", db]) == 0
    assert "1 " in capsys.readouterr().out  # the conversation with the failed reply is logged


def test_models_lists_the_default(tmp_path, capsys):
    assert main(["models", "--runs-dir", str(tmp_path), "--exports-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("default\t")


@pytest.mark.slow
def test_flag_and_export_from_the_command_line(tmp_path, capsys):
    db = str(tmp_path / "cli.db")
    assert main(["chat", "--db", db, "--temperature", "0", "--max-tokens", "24", "-m", "I has two brother"]) == 0
    capsys.readouterr()
    assert main(["flags", "add", "2", "--db", db, "-r", "missed_error", "-r", "no_follow_up", "--tester", "ana",
                 "--rewrite", "You have two brothers? Are they older than you?"]) == 0
    assert capsys.readouterr().out.strip() == "flag 1"
    assert main(["flags", "add", "1", "--db", db, "-r", "tone", "--tester", "ana"]) == 2
    assert "not a completed tutor reply" in capsys.readouterr().err
    assert main(["flags", "add", "2", "--db", db, "-r", "grumpy", "--tester", "ana"]) == 2
    assert "Unknown flag reason" in capsys.readouterr().err
    assert main(["flags", "list", "--db", db, "--reason", "missed_error", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [f["id"] for f in listed["flags"]] == [1] and listed["counts"]["reason"]["no_follow_up"] == 1
    out_dir = tmp_path / "s2"
    assert main(["export", "stage2", str(out_dir), "--db", db]) == 0
    assert "2 rows added, 0 duplicates skipped" in capsys.readouterr().out
    assert main(["export", "stage2", str(out_dir), "--db", db]) == 0
    assert "0 rows added, 2 duplicates skipped" in capsys.readouterr().out
    assert main(["flags", "remove", "1", "--db", db, "--tester", "ana"]) == 0
    assert main(["flags", "list", "--db", db]) == 0
    assert "0 flagged replies" in capsys.readouterr().out
    assert main(["flags", "detector-eval", str(tmp_path / "missing.jsonl")]) == 2
    assert "Cannot read" in capsys.readouterr().err


def test_backup_and_delete_a_learners_conversations(tmp_path, capsys):
    from tutor.store import Store

    db = tmp_path / "cli.db"
    store = Store.open(db)
    for learner in ("ana", "ana", "ben"):
        cid = store.create_conversation(level="beginner", model_spec="default", learner=learner)
        store.add_turn(cid, "user", f"hello from {learner}")
    assert main(["backup", str(tmp_path / "copy.db"), "--db", str(db)]) == 0
    assert main(["conversations", "delete", "--learner", "ana", "--db", str(db)]) == 2
    assert "add --yes" in capsys.readouterr().err
    assert main(["conversations", "delete", "--learner", "ana", "--yes", "--db", str(db)]) == 0
    assert [c["learner"] for c in Store.open(db).list_conversations()] == ["ben"]
    assert len(Store.open(tmp_path / "copy.db").list_conversations()) == 3
