"""kill -9 of a real training run between two checkpoints, then `quimbot train sft --resume`.

The run is a real `python -m quimbot.cli train sft` subprocess (LoRA on the bundled SmolLM2, the tiny
settings of test_train.py: batch 2, short rows, 6 steps, a checkpoint every 2). It is SIGKILLed once
checkpoint-2 is complete and step 3 has started, so the kill lands between checkpoint-2 and checkpoint-4;
the resumed run must finish at step 6 with checkpoints 2, 4, 6, the same data order as an uninterrupted
reference run of the same config, and the same final adapter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import stage1_rows, tiny, write_jsonl

from train.fit.commands import to_toml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
MAX_STEPS, SAVE_STEPS = 6, 2


def train_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "quimbot.cli", "train", "sft", "--config", str(config), *extra]


def env() -> dict:
    # One torch thread: as fast on these tiny batches and immune to OpenMP spinning on a busy 2-core machine
    # (see test_train.one_torch_thread); the same in every run, so the numerics match too.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_to_end(cmd: list[str], log: Path, timeout: float = 600) -> None:
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=env(), stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
    assert proc.returncode == 0, f"{cmd[3:6]} exited {proc.returncode}:\n{log.read_text()[-3000:]}"


def order_steps(run_dir: Path) -> list[dict]:
    path = run_dir / "data_order.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            break
    return out


def checkpoint_names(run_dir: Path) -> list[str]:
    return sorted((p.name for p in run_dir.glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))


def test_kill_9_between_checkpoints_then_resume_matches_uninterrupted_run(tmp_path):
    import torch
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "stage1.jsonl", stage1_rows(40))
    configs = {}
    for name in ("reference", "killed"):
        config = tiny(tmp_path, data, run_name=name, max_steps=MAX_STEPS, save_steps=SAVE_STEPS, perplexity=False)
        configs[name] = tmp_path / f"{name}.toml"
        configs[name].write_text(to_toml(config))
    runs = tmp_path / "runs"

    # 1. the run that gets killed
    killed_dir = runs / "killed"
    log = tmp_path / "killed.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(train_cmd(configs["killed"]), cwd=ROOT, env=env(), stdout=fh,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and proc.poll() is None:
                first_done = (killed_dir / "checkpoint-2" / "trainer_state.json").is_file()
                # step 3 has started: checkpoint-2 is finished (on_save included), checkpoint-4 is not written yet
                if first_done and any(s["step"] > SAVE_STEPS for s in order_steps(killed_dir)):
                    break
                time.sleep(0.02)
            assert proc.poll() is None, f"training ended before it could be killed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no checkpoint-2 within 600 s:\n{log.read_text()[-3000:]}"
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    after_kill = checkpoint_names(killed_dir)
    assert after_kill[0] == "checkpoint-2"
    # Between checkpoints: nothing beyond checkpoint-2 is complete (a checkpoint-4 folder, if any, is half-written).
    assert "checkpoint-6" not in after_kill
    if "checkpoint-4" in after_kill:
        assert not (killed_dir / "checkpoint-4" / "trainer_state.json").is_file()
    logged = order_steps(killed_dir)
    assert logged and max(s["step"] for s in logged) < MAX_STEPS

    # 2. without --resume the run refuses to start over an existing one; with it, it continues
    refused = subprocess.run(train_cmd(configs["killed"]), cwd=ROOT, env=env(), capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode != 0 and "--resume" in refused.stderr
    run_to_end(train_cmd(configs["killed"], "--resume"), tmp_path / "resumed.log")
    resumed_log = (tmp_path / "resumed.log").read_text()
    assert "resuming from" in resumed_log and "checkpoint-2" in resumed_log

    # 3. the uninterrupted reference run of the same config
    run_to_end(train_cmd(configs["reference"]), tmp_path / "reference.log")
    ref_dir = runs / "reference"

    expected = [f"checkpoint-{s}" for s in range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS)]
    assert checkpoint_names(ref_dir) == expected
    assert checkpoint_names(killed_dir) == expected
    for name in expected:
        state = json.loads((killed_dir / name / "trainer_state.json").read_text())
        assert state["global_step"] == int(name.split("-")[1]) and state["max_steps"] == MAX_STEPS
        prov = json.loads((killed_dir / name / "quimbot-provenance.json").read_text())
        assert prov["step"] == state["global_step"]
    assert json.loads((killed_dir / "quimbot-run.json").read_text())["resumed_from"].endswith("checkpoint-2")

    order = order_steps(killed_dir)
    reference = order_steps(ref_dir)
    assert [s["step"] for s in order] == list(range(1, MAX_STEPS + 1))  # each step logged once: none lost, none twice
    assert [s["rows"] for s in order] == [s["rows"] for s in reference]
    assert (killed_dir / "data_order.jsonl").read_text() == (ref_dir / "data_order.jsonl").read_text()

    final = f"checkpoint-{MAX_STEPS}"
    a = load_file(killed_dir / final / "adapter_model.safetensors")
    b = load_file(ref_dir / final / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in b)
