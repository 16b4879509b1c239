"""How much does Quimbot's training loop cost on top of a plain PyTorch loop?

Compares the time per optimizer step of

  quimbot  the SFTTrainer that `quimbot train sft` builds (train.fit.sft.build_sft_trainer): TRL's loss
           on assistant tokens, gradient clipping, LR schedule, logging every step (the s/step line
           and train_log.jsonl), the data-order log, callbacks;
  plain    a hand-written loop: ``loss = model(**batch).loss; loss.backward(); AdamW.step();
           zero_grad()`` - nothing else.

Same model (the bundled SmolLM2-135M-Instruct with the same rank-16 all-linear LoRA, built from
the same seed), same device and precision (train.fit.models.choose_device: fp32 on CPU), and the very same
batches: the plain loop iterates over the batches of the trainer's own data loader, so both
process identical tokens. Gradient accumulation is 1, so one step = one batch.

Interleaved: after every Quimbot step (timed from the end of the previous pair to the trainer's
on_step_end), a callback runs one plain step on the batch that step just used - so both sides
see the same load on a shared machine. Warm-up steps are dropped; medians are compared.
Target: quimbot / plain <= 1.3.

Usage:  .venv/bin/python benchmarks/train_step.py [--steps N] [--batch-size B] [--data JSONL]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `quimbot train` runs (see train/fit/commands.py)

TARGET = 1.3


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Learner sentences with a recast reply, in the Stage 1 shape (system prompt, user, assistant)."""
    from core.hashing import content_hash
    from tutor.prompts import system_prompt

    rng = random.Random(seed)
    events = [("go", "went", "to the market"), ("buy", "bought", "a new jacket"), ("see", "saw", "a good film"),
              ("eat", "ate", "at a Thai place"), ("meet", "met", "my cousin"), ("visit", "visited", "my aunt")]
    whens = ["yesterday", "last weekend", "on Saturday", "last night"]
    questions = ["What did you like most?", "Who went with you?", "How was it?", "Would you go again?"]
    rows = []
    for i in range(n):
        base, past, rest = rng.choice(events)
        when = rng.choice(whens)
        reply_rest = rest.replace("my ", "your ")
        row = {"messages": [{"role": "system", "content": system_prompt()},
                            {"role": "user", "content": f"I {base} {rest} {when} (#{i})."},
                            {"role": "assistant", "content": f"Oh, you {past} {reply_rest} {when}? "
                                                             f"{rng.choice(questions)}"}],
               "metadata": {"source": "benchmark", "index": i}}
        row["metadata"]["content_hash"] = content_hash(row)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="measured steps per block (default 6)")
    parser.add_argument("--warmup", type=int, default=2, help="steps dropped at the start of each block")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per step (default 8)")
    parser.add_argument("--data", type=Path, help="JSONL rows to use (default: generated Stage 1-like rows)")
    args = parser.parse_args()

    import torch
    from transformers import TrainerCallback

    from train.fit.config import TrainConfig
    from train.fit.models import load_model, quiet_library_warnings
    from train.fit.prepare import prepare_run, write_run_files
    from train.fit.sft import build_sft_trainer

    quiet_library_warnings()
    tmp = Path(tempfile.mkdtemp(prefix="quimbot-bench-"))
    data = args.data
    n_steps = args.warmup + args.steps
    if data is None:
        data = tmp / "rows.jsonl"
        rows = make_rows(args.batch_size * (2 * n_steps + 2) + 10)
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = TrainConfig(dataset=[str(data)], runs_dir=str(tmp / "runs"), run_name="bench", max_steps=n_steps,
                         per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
                         save_steps=10_000, logging_steps=1, heldout_fraction=0.0, perplexity=False,
                         max_length=512)
    run = prepare_run(config, say=lambda *a, **k: None)
    write_run_files(run)

    torch.manual_seed(run.config.seed)
    plain_model = load_model(run.base, run.device, run.config)
    plain_model.train()
    device = torch.device(run.device.device)
    plain_model.to(device)
    optim = torch.optim.AdamW([p for p in plain_model.parameters() if p.requires_grad], lr=run.config.learning_rate)
    last_batch: dict = {}
    q_times: list[float] = []
    p_times: list[float] = []
    tokens: list[int] = []
    clock = {"resume": None}

    def plain_step(batch) -> float:
        batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
        t = time.perf_counter()
        loss = plain_model(**batch).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    class Interleave(TrainerCallback):
        """After each Quimbot step, one plain step on the very same batch (not counted for Quimbot)."""

        def on_train_begin(self, args_, state, control, **kwargs):
            clock["resume"] = time.perf_counter()

        def on_step_end(self, args_, state, control, **kwargs):
            q_times.append(time.perf_counter() - clock["resume"])
            tokens.append(int(last_batch["attention_mask"].sum()))
            p_times.append(plain_step(last_batch))
            clock["resume"] = time.perf_counter()

    trainer = build_sft_trainer(run, extra_callbacks=[Interleave()])
    quimbot_step = trainer.training_step

    def stash_then_step(model, inputs, num_items_in_batch=None):
        last_batch.clear()
        last_batch.update({k: v.detach().clone() for k, v in inputs.items() if hasattr(v, "detach")})
        return quimbot_step(model, inputs, num_items_in_batch)

    trainer.training_step = stash_then_step
    print(f"device: {run.device.describe()}; torch threads {torch.get_num_threads()}; batch {args.batch_size} rows; "
          f"{n_steps} steps, the first {args.warmup} not counted; quimbot and plain steps alternate on the same batch")
    trainer.train()
    q_times, p_times = q_times[args.warmup:], p_times[args.warmup:]
    q_med, p_med = statistics.median(q_times), statistics.median(p_times)
    ratio = q_med / p_med
    pairs = statistics.median(q / p for q, p in zip(q_times, p_times))
    print(f"tokens per batch: {statistics.mean(tokens[args.warmup:]):.0f} on average")
    print(f"plain    fwd+bwd+AdamW : median {p_med:.3f} s/step  (min {min(p_times):.3f}, max {max(p_times):.3f})")
    print(f"quimbot  SFTTrainer    : median {q_med:.3f} s/step  (min {min(q_times):.3f}, max {max(q_times):.3f})")
    print(f"ratio quimbot/plain    : {ratio:.2f}x (median of per-pair ratios {pairs:.2f}x)  target <= {TARGET}x  "
          f"{'PASS' if ratio <= TARGET else 'MISS'}")
    if max(p_times) > 2 * min(p_times):
        print("warning: plain steps varied more than 2x - other load on the machine; rerun when it is idle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
