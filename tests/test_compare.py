"""`quimbot eval compare` end to end on the real default model and a LoRA checkpoint, and flag
replay, with the real prompt set and the pedagogy metrics."""

import json
from argparse import ArgumentParser

import pytest

from train.evaluate.compare import Rule, compare, known_perplexity, load_jfleg, recommend
from train.evaluate.prompt_sets import load_prompts
from train.evaluate.replay import label, replay
from tutor.backends import GenerationOptions
from tutor.config import Settings
from tutor.feedback import Feedback
from tutor.models import default_hf_dir

pytestmark = pytest.mark.slow
FAST = GenerationOptions(temperature=0, max_tokens=24, seed=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A LoRA checkpoint folder laid out as training writes it, with its perplexity curve."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path_factory.mktemp("runs") / "stage1"
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(default_hf_dir(Settings().cache_dir)),
                           LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(run / "checkpoint-50")
    (run / "perplexity.json").write_text(json.dumps({"results": [  # as `quimbot train` writes it
        {"step": 0, "checkpoint": "base", "perplexity": 9.5},
        {"step": 50, "checkpoint": "checkpoint-50", "perplexity": 4.25}]}))
    return run / "checkpoint-50"


def test_compare_base_and_checkpoint_writes_the_side_by_side_report(checkpoint, tmp_path):
    prompts = load_prompts()[:6]
    specs = ["hf:default", f"hf:{checkpoint}"]
    report = compare(specs, prompts, tmp_path, options=FAST, batch_size=4, progress=False)
    assert [m["spec"] for m in report["models"]] == specs
    for model in report["models"]:
        assert len(model["replies"]) == 6 and all(r.strip() for r in model["replies"])
        assert {"pedagogy_score", "good_move", "takes_up_error", "red_pen", "echo", "diversity", "style"} <= set(
            model["metrics"])
    assert report["models"][1]["perplexity"] == 4.25 and report["models"][1]["step"] == 50
    assert report["recommendation"]["model"] in specs
    md = (tmp_path / "report.md").read_text()
    assert "## Replies side by side" in md and prompts[0]["learner"] in md
    assert "## Metric calibration" in md and "held-out kappa" in md
    assert report["calibration"]["heldout"]["n"] >= 100 and "calibration" in report["recommendation"]
    html = (tmp_path / "report.html").read_text()
    assert "<table>" in html and "Recommendation" in html and "Metric calibration" in html
    assert (tmp_path / "checkpoints.png").stat().st_size > 1000  # step 0 (base) and step 50 on one figure
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["models"][0]["replies"] == report["models"][0]["replies"]
    # Batched generation gives the same greedy replies as one at a time.
    single = compare(["hf:default"], prompts[:3], tmp_path / "single", options=FAST, batch_size=1, progress=False)
    assert single["models"][0]["replies"][0] == report["models"][0]["replies"][0]


def test_recommendation_rule():
    models = [{"spec": "a", "perplexity": 5.0, "metrics": {"pedagogy_score": 0.60}},
              {"spec": "b", "perplexity": 4.0, "metrics": {"pedagogy_score": 0.59}},
              {"spec": "c", "perplexity": 3.0, "metrics": {"pedagogy_score": 0.40}}]
    assert recommend(models, Rule(margin=0.02))["model"] == "b"  # as good a teacher, lower perplexity
    assert recommend(models, Rule(margin=0.0))["model"] == "a"
    assert known_perplexity("default") == (None, None)


def test_jfleg_prompts_are_read_where_present():
    from train.evaluate.commands import JFLEG

    if not (JFLEG / "dev.src").exists():
        pytest.skip("../shared/data/jfleg-dev is not beside this checkout")
    prompts = load_jfleg(JFLEG, limit=50)
    assert len(prompts) == 50 and sum(1 for p in prompts if p["corrections"]) > 30


def test_jfleg_sentences_are_detokenized_and_corrections_carry_context():
    from train.evaluate.commands import JFLEG
    from train.evaluate.pedagogy import telling

    if not (JFLEG / "dev.src").exists():
        pytest.skip("../shared/data/jfleg-dev is not beside this checkout")
    prompts = load_jfleg(JFLEG)
    learners = " ".join(p["learner"] for p in prompts)
    assert " n't" not in learners and " ," not in learners and " ." not in learners and "do n't" not in learners
    assert all(p["learner"] == p["learner"].strip() for p in prompts)
    corrections = [c for p in prompts for c in p["corrections"]]
    assert corrections and all(len(c.split()) >= 2 and telling(c) for c in corrections)
    assert all(p["corrections"] == [] for p in prompts if p["error_type"] is None)  # never None: no find_errors
    # a reply that only happens to contain "the" or "can" takes nothing up
    first = next(p for p in prompts if p["corrections"])
    from train.evaluate.pedagogy import score_prompt

    assert score_prompt(first, "The weather can be nice. What do you think about it?").takes_up_error is False


def test_replay_labels(store, checkpoint, tmp_path):
    assert label(["red_pen"], []) == "fixed" and label(["red_pen"], ["red_pen"]) == "still broken"
    assert label([], ["no_follow_up"]) == "regressed" and label([], []) == "fine"
    cid = store.create_conversation(level="beginner", model_spec="default")
    store.add_turn(cid, "user", "Yesterday I go to the cinema", level="beginner")
    turn = store.add_turn(cid, "assistant", "The correct form is went. Use the past tense.", level="beginner",
                          model_spec="default", system_prompt="x")
    Feedback(store).flag(turn, ["red_pen", "rule_dump"], "ana")
    result = replay(store, "hf:default", f"hf:{checkpoint}", tmp_path, options=FAST, progress=False)
    assert result["flagged_replies"] == 1
    row = result["rows"][0]
    assert row["label"] in ("fixed", "still broken", "regressed", "fine") and row["old_reply"] and row["new_reply"]
    assert row["label"] == label(row["old_problems"], row["new_problems"])
    assert (tmp_path / "replay.md").read_text().startswith("# Flag replay")


def test_eval_cli_help():
    from train.evaluate.commands import register

    parser = ArgumentParser(prog="quimbot")
    register(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "compare", "--help"])
