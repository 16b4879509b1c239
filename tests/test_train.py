"""Training: config, data checks, and real LoRA runs on the bundled SmolLM2 (a few steps each).

The slow tests train for real: adapter weights change and base weights do not, checkpoints load in
the transformers backend and chat, perplexity is computed for the base and every checkpoint, a
stopped run resumes with the same steps and data order, Stage 2 continues from a checkpoint, and
a DPO step runs."""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import pytest
from conftest import labelled_spans

from core.hashing import content_hash
from train.fit.config import ConfigError, TrainConfig, load_config
from tutor.config import Settings
from tutor.models import DEFAULT_HUB_ID

EVENTS = [("go", "went", "to the market"), ("buy", "bought", "a new jacket"), ("see", "saw", "a good film"),
          ("eat", "ate", "at a Thai place"), ("meet", "met", "my cousin"), ("visit", "visited", "my aunt"),
          ("take", "took", "the early train"), ("make", "made", "a big cake")]
WHENS = ["yesterday", "last weekend", "on Saturday", "last night", "this morning"]
QUESTIONS = ["What did you buy?", "Who went with you?", "How was it?", "Did you like it?", "Was it busy?"]


def stage1_rows(n: int, seed: int = 0) -> list[dict]:
    """Short learner sentences with a recast reply: "Oh, you went ...? What did you buy?"."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        base, past, rest = rng.choice(EVENTS)
        when = rng.choice(WHENS)
        messages = [{"role": "user", "content": f"I {base} {rest} {when}."},
                    {"role": "assistant", "content": f"Oh, you {past} {rest.replace('my ', 'your ')} {when}? "
                                                     f"{rng.choice(QUESTIONS)} ({i})"}]
        row = {"messages": messages, "metadata": {"source": "test", "index": i}}
        row["metadata"]["content_hash"] = content_hash(row)
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def tiny(tmp: Path, data: Path, **kw) -> TrainConfig:
    """A config that trains in seconds: batch 2, short rows, 4 steps, a checkpoint every 2."""
    values = dict(dataset=[str(data)], runs_dir=str(tmp / "runs"), run_name="tiny", max_steps=4, save_steps=2,
                  per_device_train_batch_size=2, gradient_accumulation_steps=1, max_length=96, logging_steps=1,
                  heldout_fraction=0.1, heldout_max=4, learning_rate=1e-3, warmup_steps=0.0, eval_batch_size=4)
    values.update(kw)
    return TrainConfig(**values)


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny batches here run as fast on one thread, and one thread is immune to the OpenMP spinning
    that made two-thread steps 40x slower whenever another process was busy on this 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("train-data")
    write_jsonl(d / "stage1.jsonl", stage1_rows(40))
    return d


# ------------------------------------------------------------------------------------------------
# config and CLI
# ------------------------------------------------------------------------------------------------

def test_unknown_config_key_names_key_and_valid_ones(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('dataset = "x.jsonl"\nlearning_rat = 1e-4\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    message = str(err.value)
    assert "'learning_rat'" in message and "learning_rate" in message and "lora_r" in message
    cfg.write_text('[trl]\nnot_an_option = 1\n')
    with pytest.raises(ConfigError, match="not_an_option"):
        load_config(cfg)
    cfg.write_text('lora_r = "sixteen"\n')
    with pytest.raises(ConfigError, match="lora_r"):
        load_config(cfg)


def test_flags_override_config_file(tmp_path):
    from train.fit.commands import build_parser, config_from

    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = ["a.jsonl"]\nlearning_rate = 3e-4\nmax_steps = 10\n[trl]\ndataloader_num_workers = 1\n')
    args = build_parser().parse_args(["train", "sft", "--config", str(cfg), "--max-steps", "5", "--truncate"])
    config = config_from(args)
    assert (config.learning_rate, config.max_steps, config.on_long) == (3e-4, 5, "truncate")
    assert config.run_name == "run" and config.dataset == ["a.jsonl"] and config.trl == {"dataloader_num_workers": 1}
    assert TrainConfig().lora_r == 16 and TrainConfig().effective_batch == 64  # Run 4 defaults
    yaml_cfg = tmp_path / "run.yaml"
    yaml_cfg.write_text("dataset: [b.jsonl]\nlora_r: 8\n")
    assert load_config(yaml_cfg).lora_r == 8
    with pytest.raises(ConfigError, match="method"):
        cfg.write_text('method = "dpo"\ndataset = ["a.jsonl"]\n')
        load_config(cfg, method="sft")


def test_default_config_file_is_valid():
    config = load_config(Path(__file__).resolve().parent.parent / "data" / "train_default.toml")
    assert config.base == "default" and config.device == "auto" and config.dataset


def test_every_train_command_has_help():
    from train.fit.commands import register

    parser = argparse.ArgumentParser(prog="quimbot")
    sub = parser.add_subparsers(dest="command")
    train_parser = register(sub)
    assert train_parser.description
    actions = [a for a in train_parser._actions if isinstance(a, argparse._SubParsersAction)][0]
    assert set(actions.choices) == {"sft", "dpo", "perplexity", "config"}
    for name, p in actions.choices.items():
        assert p.description, name
        assert all(a.help for a in p._actions if a.dest != "help"), name
        p.format_help()
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["train", "sft", "--help"])
    assert exited.value.code == 0


# ------------------------------------------------------------------------------------------------
# data checks (tokenizer only, no training)
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    from train.fit.models import load_tokenizer, resolve_models

    return load_tokenizer(resolve_models(TrainConfig(), Settings()))


def test_loss_mask_covers_assistant_tokens_only(tokenizer):
    from train.fit.loss_mask import encode_messages

    messages = [{"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Yesterday I go to the store."},
                {"role": "assistant", "content": "Oh, you went to the store yesterday? What did you buy?"},
                {"role": "user", "content": "I buyed two apple."},
                {"role": "assistant", "content": "You bought two apples! Are they for a pie?"}]
    for msgs in (messages, messages[1:]):  # with and without a system prompt (SmolLM2 adds its own)
        ids, labels = encode_messages(tokenizer, msgs)
        assert len(ids) == len(labels)
        assert ids == list(tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"])
        spans = labelled_spans(tokenizer, ids, labels)
        eos = tokenizer.eos_token
        assert spans == [messages[2]["content"] + eos, messages[4]["content"] + eos]


def test_schema_gate_refuses_with_file_and_line_unless_skip(tmp_path, data_dir):
    from core.errors import DataError
    from train.fit.prepare import prepare_run

    rows = stage1_rows(12)
    bad = [json.dumps(r) for r in rows[:5]]
    bad.append('{"messages": [{"role": "user", "content": "hi"}], "metadata": {}}')   # ends with a user turn
    bad.append("{not json")
    bad += [json.dumps(r) for r in rows[5:]]
    data = write_jsonl(tmp_path / "bad.jsonl", bad)
    with pytest.raises(DataError) as err:
        prepare_run(tiny(tmp_path, data), say=quiet, load=False)
    message = str(err.value)
    assert f"{data}:6:" in message and "must end with an assistant message" in message
    assert f"{data}:7:" in message and "not valid JSON" in message and "--skip-bad-rows" in message
    said = []
    run = prepare_run(tiny(tmp_path, data, skip_bad_rows=True), say=said.append, load=False)
    assert run.info["rows"]["skipped_bad"] == 2 and run.info["rows"]["accepted"] == 12
    assert any("skipping 2 bad row" in s for s in said)
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [preference_rows(1)[0]])
    with pytest.raises(DataError, match="is a preference row"):
        prepare_run(tiny(tmp_path, prefs), say=quiet, load=False)


def test_over_long_rows_refused_listed_or_explicitly_handled(tmp_path, tokenizer):
    from core.errors import DataError
    from train.fit.prepare import prepare_run

    rows = stage1_rows(10)
    rows[3]["messages"][0]["content"] = "Long story. " * 40      # a long learner turn
    rows[5]["messages"][1]["content"] = "Oh, really? " * 40      # a long reply
    for row in rows:
        row["metadata"]["content_hash"] = content_hash(row)
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    with pytest.raises(DataError) as err:
        prepare_run(tiny(tmp_path, data, max_length=80), say=quiet, load=False)
    message = str(err.value)
    assert f"{data}:4: " in message and f"{data}:6: " in message and "--truncate" in message
    assert f"{data}:5: " not in message and "max_length = 80" in message
    run = prepare_run(tiny(tmp_path, data, max_length=80, on_long="drop", heldout_fraction=0.0), say=quiet,
                      load=False)
    assert run.info["rows"]["dropped_long"] == 2 and len(run.train) == 8
    said = []
    run = prepare_run(tiny(tmp_path, data, max_length=80, on_long="truncate", heldout_fraction=0.0),
                      say=said.append, load=False)
    # the cut reply is kept; the long learner turn keeps no assistant token once cut, so it is left out, loudly
    assert run.info["rows"]["truncated"] == 1 and run.info["rows"]["dropped_long"] == 1 and len(run.train) == 9
    assert all(len(ex.input_ids) <= 80 for ex in run.train) and any(f"{data}:4" in s for s in said)


def test_missing_base_adapter_and_disk_are_refused(tmp_path, data_dir, monkeypatch):
    import shutil as shutil_module

    from core.errors import DataError
    from train.fit.config import TrainError
    from train.fit.prepare import prepare_run

    data = data_dir / "stage1.jsonl"
    with pytest.raises(TrainError, match="not found"):
        prepare_run(tiny(tmp_path, data, base=str(tmp_path / "no-such-model")), say=quiet, load=False)
    with pytest.raises(TrainError, match="adapter_config.json"):
        prepare_run(tiny(tmp_path, data, init_adapter=str(tmp_path / "no-such-ckpt")), say=quiet, load=False)
    with pytest.raises(DataError, match="not found"):
        prepare_run(tiny(tmp_path, tmp_path / "missing.jsonl"), say=quiet, load=False)

    class Tiny:
        free = 10 << 20
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: Tiny())
    with pytest.raises(TrainError, match="Not enough free disk"):
        prepare_run(tiny(tmp_path, data), say=quiet)


def test_heldout_split_is_stable_and_disjoint(tmp_path, data_dir):
    from train.fit.examples import Example, split_heldout

    rows = stage1_rows(200)
    examples = [Example("f", i + 1, r, r["metadata"]["content_hash"]) for i, r in enumerate(rows)]
    examples.append(Example("f", 999, rows[0], rows[0]["metadata"]["content_hash"]))  # a duplicate
    train, held = split_heldout(examples, 0.1, 50, seed=7)
    assert {e.hash for e in train}.isdisjoint({e.hash for e in held}) and 5 <= len(held) <= 40
    more = examples + [Example("g", i, r, r["metadata"]["content_hash"]) for i, r in enumerate(stage1_rows(50, 1))]
    _, held_more = split_heldout(more, 0.1, 50, seed=7)
    assert {e.hash for e in held} <= {e.hash for e in held_more}  # adding rows keeps the held-out ones
    _, held_other_seed = split_heldout(examples, 0.1, 50, seed=8)
    assert {e.hash for e in held} != {e.hash for e in held_other_seed}


# ------------------------------------------------------------------------------------------------
# real training
# ------------------------------------------------------------------------------------------------

class Snapshot:
    """Copies of the trainable (LoRA) and of some base weights when training starts and ends."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Snap(TrainerCallback):
            def __init__(self):
                self.begin, self.end = {}, {}

            @staticmethod
            def _take(model):
                lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
                base = {n: p.detach().clone() for n, p in model.named_parameters()
                        if not p.requires_grad and ("q_proj.base_layer" in n or "embed_tokens" in n)}
                return {"lora": lora, "base": base}

            def on_train_begin(self, args, state, control, model=None, **kwargs):
                self.begin = self._take(model)

            def on_train_end(self, args, state, control, model=None, **kwargs):
                self.end = self._take(model)

        return _Snap()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_dir):
    """One uninterrupted 4-step run (checkpoints at 2 and 4) shared by several tests."""
    from train.fit.training import train

    tmp = tmp_path_factory.mktemp("full")
    snap = Snapshot()
    result = train(tiny(tmp, data_dir / "stage1.jsonl"), say=quiet, callbacks=[snap])
    return result, snap, tmp


@pytest.mark.slow
def test_training_changes_adapter_not_base_and_writes_checkpoints(full_run, data_dir):
    import torch
    from safetensors.torch import load_file

    result, snap, _ = full_run
    assert result.steps == 4
    assert [p.name for p in result.checkpoints] == ["checkpoint-2", "checkpoint-4"]
    changed = [n for n in snap.begin["lora"] if not torch.equal(snap.begin["lora"][n], snap.end["lora"][n])]
    assert len(changed) == len(snap.begin["lora"]) > 0
    assert snap.begin["base"] and all(torch.equal(snap.begin["base"][n], snap.end["base"][n])
                                      for n in snap.begin["base"])
    final = result.checkpoints[-1]
    saved = load_file(final / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in saved.items())  # B starts at zero
    for ckpt in result.checkpoints:
        assert json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"] == DEFAULT_HUB_ID
        assert (ckpt / "tokenizer_config.json").is_file() and (ckpt / "optimizer.pt").is_file()
        prov = json.loads((ckpt / "quimbot-provenance.json").read_text())
        assert prov["step"] == int(ckpt.name.split("-")[1])
        data = data_dir / "stage1.jsonl"
        assert prov["datasets"][0]["sha256"] == __import__("hashlib").sha256(data.read_bytes()).hexdigest()
        assert prov["content_hashes"]["train"] + prov["content_hashes"]["heldout"] == 40
        assert prov["config"]["lora_r"] == 16 and prov["base_model"]["adapter_name"] == DEFAULT_HUB_ID
        assert {"commit", "dirty"} <= set(prov["git"]) and {"torch", "trl", "peft"} <= set(prov["versions"])
        assert prov["time"] and "heldout_perplexity" in prov
    # no held-out row was ever trained on
    heldout = {json.loads(line)["metadata"]["content_hash"]
               for line in (result.run_dir / "heldout.jsonl").read_text().splitlines()}
    seen = {h for line in (result.run_dir / "data_order.jsonl").read_text().splitlines()
            for h in json.loads(line)["rows"]}
    assert heldout and seen and heldout.isdisjoint(seen) and all(h.startswith("qh1:") for h in seen)


@pytest.mark.slow
def test_checkpoint_loads_in_transformers_backend_and_chats(full_run):
    from tutor.backends import GenerationOptions, load_backend

    result, _, tmp = full_run
    settings = Settings()
    backend = load_backend("hf:" + str(result.checkpoints[-1]), settings)
    try:
        assert backend.adapter == str(result.checkpoints[-1])
        chunks = list(backend.stream([{"role": "user", "content": "Yesterday I go to the park."}],
                                     GenerationOptions(temperature=0, max_tokens=8)))
        assert "".join(c.text for c in chunks if c.text).strip()
        assert chunks[-1].completion_tokens >= 1
    finally:
        backend.close()
    from tutor.catalog import list_models

    settings.runs_dir = result.run_dir.parent
    specs = [c.spec for c in list_models(settings)]
    assert [s for s in specs if "tiny/checkpoint" in s] == [f"hf:{p}" for p in result.checkpoints]


@pytest.mark.slow
def test_perplexity_for_base_and_every_checkpoint_and_cli_recompute(full_run):
    from train.fit.commands import main

    result, _, _ = full_run
    rows = result.perplexity
    assert [(r["step"], r["checkpoint"]) for r in rows] == [(0, "base"), (2, "checkpoint-2"), (4, "checkpoint-4")]
    assert all(r["perplexity"] > 1 and r["tokens"] > 0 for r in rows)
    assert rows[-1]["perplexity"] < rows[0]["perplexity"]  # 4 steps at lr 1e-3 on very regular data
    run = result.run_dir
    assert (run / "perplexity.png").stat().st_size > 1000
    assert len((run / "perplexity.csv").read_text().splitlines()) == 4
    (run / "perplexity.json").unlink()
    assert main(["perplexity", str(run)]) == 0
    again = json.loads((run / "perplexity.json").read_text())["results"]
    assert [round(r["perplexity"], 3) for r in again] == [round(r["perplexity"], 3) for r in rows]


@pytest.mark.slow
def test_stopped_run_resumes_with_same_steps_and_data_order(full_run, data_dir):
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from train.fit.config import TrainError
    from train.fit.training import train

    reference, _, _ = full_run
    tmp = reference.run_dir.parent.parent / "resume"

    class Killed(Exception):
        pass

    class KillAfterFirstCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Killed(f"killed after checkpoint-{state.global_step}")

    tmp.mkdir()
    data = tmp / "stage1.jsonl"
    shutil.copy(data_dir / "stage1.jsonl", data)
    config = tiny(tmp, data, perplexity=False)
    with pytest.raises(Killed):
        train(config, say=quiet, callbacks=[KillAfterFirstCheckpoint()])
    run_dir = tmp / "runs" / "tiny"
    assert [p.name for p in sorted(run_dir.glob("checkpoint-*"))] == ["checkpoint-2"]
    with pytest.raises(TrainError, match="--resume"):
        train(config, say=quiet)
    # a checkpoint the kill cut short (adapter written, optimizer state not): skipped, then redone
    half = run_dir / "checkpoint-3"
    half.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(run_dir / "checkpoint-2" / name, half / name)
    said = []
    result = train(tiny(tmp, data, perplexity=False, resume=True), say=said.append)
    assert any("checkpoint-3 is incomplete" in s for s in said)
    assert result.steps == 4 and [p.name for p in result.checkpoints] == ["checkpoint-2", "checkpoint-4"]
    order = (run_dir / "data_order.jsonl").read_text().splitlines()
    expected = (reference.run_dir / "data_order.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in order] == [1, 2, 3, 4]
    assert [json.loads(x)["rows"] for x in order] == [json.loads(x)["rows"] for x in expected]
    state = json.loads((run_dir / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    a = load_file(run_dir / "checkpoint-4" / "adapter_model.safetensors")
    b = load_file(reference.run_dir / "checkpoint-4" / "adapter_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in b)
    with pytest.raises(TrainError, match="per_device_train_batch_size was 2, now 4"):
        train(tiny(tmp, data, perplexity=False, resume=True, max_steps=6, per_device_train_batch_size=4), say=quiet)
    write_jsonl(data, stage1_rows(41))
    with pytest.raises(TrainError, match="changed since the run started"):
        train(tiny(tmp, data, perplexity=False, resume=True, max_steps=6), say=quiet)


def stage2_rows(n: int) -> list[dict]:
    """Flag-derived SFT rows as `quimbot export stage2` writes them: system + history + rewrite."""
    rows = []
    for i, row in enumerate(stage1_rows(n, seed=5)):
        messages = [{"role": "system", "content": "You are a friendly English conversation partner."},
                    *row["messages"][:1],
                    {"role": "assistant", "content": f"Nice! What happened next? ({i})"}]
        out = {"messages": messages, "metadata": {"source": "quimbot-flags", "kind": "sft", "turn_id": i}}
        out["metadata"]["content_hash"] = content_hash(out)
        rows.append(out)
    return rows


def preference_rows(n: int) -> list[dict]:
    rows = []
    for i, row in enumerate(stage1_rows(n, seed=9)):
        out = {"prompt": row["messages"][:1], "chosen": row["messages"][1:],
               "rejected": [{"role": "assistant", "content": f"The correct form is 'went'. You should say it. ({i})"}],
               "metadata": {"source": "quimbot-flags", "kind": "preference"}}
        out["metadata"]["content_hash"] = content_hash(out)
        rows.append(out)
    return rows


@pytest.mark.slow
def test_stage2_continues_from_a_stage1_checkpoint(full_run, tmp_path):
    import torch
    from safetensors.torch import load_file

    from train.fit.training import train

    stage1, _, _ = full_run
    init = stage1.checkpoints[-1]
    data = write_jsonl(tmp_path / "sft.jsonl", stage2_rows(16))
    snap = Snapshot()
    result = train(tiny(tmp_path, data, run_name="stage2", init_adapter=str(init), max_steps=2, save_steps=2),
                   say=quiet, callbacks=[snap])
    assert result.steps == 2
    start = load_file(init / "adapter_model.safetensors")
    begin = {k.replace(".default", ""): v for k, v in snap.begin["lora"].items()}
    matched = [k for k in start if k in begin]
    assert len(matched) == len(start) and all(torch.allclose(start[k], begin[k]) for k in matched)  # training began at the Stage 1 weights
    ckpt = result.checkpoints[-1]
    assert json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"] == DEFAULT_HUB_ID
    prov = json.loads((ckpt / "quimbot-provenance.json").read_text())
    assert prov["base_model"]["init_adapter"] == str(init.resolve())
    assert [r["checkpoint"] for r in result.perplexity] == ["base", "init-adapter", "checkpoint-2"]


@pytest.mark.slow
def test_dpo_step_runs_on_an_adapter(full_run, tmp_path):
    from train.fit.training import train

    stage1, _, _ = full_run
    data = write_jsonl(tmp_path / "preference.jsonl", preference_rows(12))
    snap = Snapshot()
    config = tiny(tmp_path, data, run_name="dpo", method="dpo", init_adapter=str(stage1.checkpoints[-1]),
                  max_steps=2, save_steps=2, learning_rate=5e-4, perplexity=False)
    result = train(config, say=quiet, callbacks=[snap])
    assert result.steps == 2
    import torch

    trained = [n for n in snap.begin["lora"] if ".default." in n]
    assert trained and any(not torch.equal(snap.begin["lora"][n], snap.end["lora"][n]) for n in trained)
    ckpt = result.checkpoints[-1]
    assert (ckpt / "adapter_model.safetensors").is_file()
    assert not any(p.is_dir() and (p / "adapter_config.json").exists() for p in ckpt.iterdir())  # no "ref" copy
    logs = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in entry for entry in logs)
    shutil.rmtree(result.run_dir)
