"""Stage 2 export: flagged dialogues -> TRL-ready JSONL, scrubbed, gated, deduplicated."""

import json

import pytest

from core.errors import InputError
from tutor.feedback import Feedback, FlagFilters
from tutor.privacy import Scrubber
from tutor.stage2 import export_stage2
from tutor.store import Store


def dialogue(store: Store, exchanges: list[tuple[str, str]], level="beginner", model="gguf:default"):
    cid = store.create_conversation(level=level, model_spec=model)
    turns = []
    for learner, reply in exchanges:
        store.add_turn(cid, "user", learner, level=level)
        turns.append(store.add_turn(cid, "assistant", reply, model_spec=model, checkpoint="/m/base.gguf",
                                    level=level, system_prompt="You are a friendly tutor."))
    return cid, turns


@pytest.fixture
def flagged(store):
    feedback = Feedback(store)
    _, (t1, t2) = dialogue(store, [
        ("Hi, my name is Ana Lopez, write me at ana@example.com", "Hello Ana! How are you?"),
        ("Yesterday I go to the store and call 612 345 678", "The correct form is went. It is the past tense."),
    ])
    _, (t3,) = dialogue(store, [("I has a cat", "Cats are nice.")], model="hf:default?adapter=runs/a/checkpoint-50")
    feedback.flag(t2, ["red_pen", "rule_dump"], "ana",
                  rewrite="Oh, you went to the store yesterday? What did you buy?")
    feedback.flag(t2, ["red_pen"], "ben", rewrite="Oh, you went to the store yesterday? What did you buy?")
    feedback.flag(t3, ["missed_error", "no_follow_up"], "ben")
    return store


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_rows_manifest_and_privacy(flagged, tmp_path):
    manifest = export_stage2(flagged, tmp_path / "s2")
    sft, pref, unpaired = (read(tmp_path / "s2" / n) for n in ("sft.jsonl", "preference.jsonl", "unpaired.jsonl"))
    assert len(sft) == 1 and len(pref) == 1 and len(unpaired) == 1  # two testers, one identical rewrite
    messages = sft[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[-1]["content"] == "Oh, you went to the store yesterday? What did you buy?"
    text = json.dumps([sft, pref, unpaired])
    assert "ana@example.com" not in text and "Ana Lopez" not in text and "612 345 678" not in text
    assert "[EMAIL]" in text and "[NAME]" in text and "[PHONE]" in text
    assert pref[0]["chosen"][0]["content"] == messages[-1]["content"]
    assert pref[0]["rejected"][0]["content"] == "The correct form is went. It is the past tense."
    assert pref[0]["prompt"] == messages[:-1]
    assert unpaired[0]["label"] is False and unpaired[0]["completion"][0]["content"] == "Cats are nice."
    meta = sft[0]["metadata"]
    assert meta["reasons"] == ["red_pen", "rule_dump"] and len(meta["flag_ids"]) == 2
    assert meta["content_hash"].startswith("qh1:") and meta["model_spec"] == "gguf:default"
    assert {"conversation_id", "turn_id", "user_turn_id", "checkpoint", "level"} <= set(meta)
    assert manifest["rows_added"] == 3 and manifest["per_reason"] == {"red_pen": 2, "rule_dump": 1,
                                                                      "missed_error": 1, "no_follow_up": 1}
    assert manifest["pii_scrubbed"]["email"] >= 1 and manifest["files"]["sft.jsonl"]["sha256"]
    assert manifest["pii_engine"]["engine"] in ("presidio", "regex") and manifest["pii_engine"]["detail"]
    saved = json.loads(open(manifest["manifest_path"]).read())
    assert saved["files"] == manifest["files"] and saved["hash_scheme"] == "qh1"


@pytest.mark.parametrize("engine", ["presidio", "regex"])
def test_personal_data_never_reaches_the_files_and_names_are_scrubbed_everywhere(store, tmp_path, engine):
    """Issue 15: what a tester's flag exported, in sft, preference and unpaired rows alike."""
    _, (t1, t2) = dialogue(store, [
        ("hi, my name is ana lopez and i live at 12 Baker Street, London NW1 6XE",
         "Hello Ana! Nice to meet you, Ana Lopez."),
        ("my card is 4539-1488-0343-6467 exp 11/27 cvc 482, call me on 020 7946 0958 / 020 7946 0321",
         "Thank you, Ana. Please see anaphoto.example.fr/portfolio or ftp://files.example.net/pub/cv.pdf"),
    ])
    _, (t3,) = dialogue(store, [("I'm Tom Baker, j'habite au 12 rue de la Paix, 75002 Paris", "Bonjour Tom!")])
    feedback = Feedback(store)
    feedback.flag(t2, ["red_pen"], "ben", rewrite="Oh, ana, you gave me your card? Keep it secret, Ana Lopez!")
    feedback.flag(t1, ["no_follow_up"], "ben")
    feedback.flag(t3, ["missed_error"], "ben")
    manifest = export_stage2(store, tmp_path / "s2", scrubber=Scrubber(engine))
    rows = [row for n in ("sft.jsonl", "preference.jsonl", "unpaired.jsonl") for row in read(tmp_path / "s2" / n)]
    text = "\n".join(m["content"] for row in rows for key in ("messages", "prompt", "chosen", "rejected", "completion")
                     for m in row.get(key, []))
    assert manifest["rows_added"] == 4
    for secret in ["ana", "Ana", "Lopez", "lopez", "Tom", "Baker", "NW1", "4539", "11/27", "482", "7946", "0321",
                   "anaphoto", "ftp", "files.example", "Paix", "75002"]:
        assert secret not in text, secret
    assert rows[0]["messages"][-1]["content"] == "Oh, [NAME], you gave me your card? Keep it secret, [NAME]!"
    assert manifest["pii_engine"]["engine"] == engine
    assert manifest["pii_scrubbed"]["name"] >= 6 and manifest["pii_scrubbed"]["card"] >= 3


def test_re_export_adds_no_duplicates(flagged, tmp_path):
    first = export_stage2(flagged, tmp_path / "s2")
    before = {n: (tmp_path / "s2" / n).read_text() for n in ("sft.jsonl", "preference.jsonl", "unpaired.jsonl")}
    second = export_stage2(flagged, tmp_path / "s2")
    assert second["rows_added"] == 0 and second["duplicates_skipped"] == first["rows_added"]
    assert {n: (tmp_path / "s2" / n).read_text() for n in before} == before
    # A new flag adds exactly its own rows.
    _, (t,) = dialogue(flagged, [("She are my friend", "OK.")])
    Feedback(flagged).flag(t, ["missed_error"], "ana", rewrite="She is your friend? How did you meet?")
    third = export_stage2(flagged, tmp_path / "s2")
    assert third["rows_added"] == 2
    assert len(read(tmp_path / "s2" / "sft.jsonl")) == 2 and len(read(tmp_path / "s2" / "unpaired.jsonl")) == 1


def test_filters_choose_what_is_exported(flagged, tmp_path):
    manifest = export_stage2(flagged, tmp_path / "s2", FlagFilters(model="checkpoint-50"))
    assert manifest["filters"] == {"model": "checkpoint-50"} and manifest["rows_added"] == 1
    assert not (tmp_path / "s2" / "sft.jsonl").exists()


def test_a_damaged_existing_file_is_not_overwritten(flagged, tmp_path):
    out = tmp_path / "s2"
    out.mkdir()
    (out / "sft.jsonl").write_text('{"messages": []}\n')
    with pytest.raises(InputError, match="sft.jsonl:1: 'messages' must be a non-empty list"):
        export_stage2(flagged, out)
    assert (out / "sft.jsonl").read_text() == '{"messages": []}\n'


def test_trl_and_datasets_read_the_export(flagged, tmp_path):
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    from tutor.config import Settings
    from tutor.models import default_hf_dir

    export_stage2(flagged, tmp_path / "s2")
    tokenizer = AutoTokenizer.from_pretrained(default_hf_dir(Settings().cache_dir))
    expected = {"sft.jsonl": {"messages"}, "preference.jsonl": {"prompt", "chosen", "rejected"},
                "unpaired.jsonl": {"prompt", "completion", "label"}}
    for name, columns in expected.items():
        data = load_dataset("json", data_files=str(tmp_path / "s2" / name), split="train")
        assert columns <= set(data.column_names) and len(data) >= 1
        example = data[0]
        assert is_conversational(example)
        rendered = apply_chat_template({k: example[k] for k in columns}, tokenizer)
        if name == "sft.jsonl":
            assert "What did you buy?" in rendered["text"]
        elif name == "preference.jsonl":
            assert rendered["chosen"].strip().startswith("Oh, you went") and "correct form" in rendered["rejected"]
            assert "<|im_start|>assistant" in rendered["prompt"]
        else:
            assert rendered["completion"].strip().startswith("Cats are nice") and rendered["label"] is False
