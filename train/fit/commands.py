"""``quimbot train ...``: LoRA SFT, DPO, held-out perplexity and config checks from the command line.

``register(subparsers)`` adds the ``train`` command group to the ``quimbot`` parser; ``main(argv)``
runs it on its own (``python -m train.fit.commands sft --config data/train_default.toml``), which is
also the form to use under ``accelerate launch``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from core.errors import QuimbotError
from train.fit.config import TrainConfig, add_arguments, describe, load_config, overrides_from

EPILOG = ("Config files are TOML (or YAML): keys are the option names with underscores, e.g. learning_rate = 2e-4; "
          "flags override them. See data/train_default.toml and `quimbot train config --fields`.")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, metavar="FILE",
                        help="TOML/YAML config file; its values are the defaults, flags override them")
    parser.add_argument("data", nargs="*", metavar="JSONL", help="training file(s); same as --dataset")
    add_arguments(parser)


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``train`` (with sft, dpo, perplexity, config) to a ``quimbot`` subparsers object."""
    p = subparsers.add_parser(
        "train", help="fine-tune a LoRA adapter (SFT or DPO), compute held-out perplexity",
        description="Train LoRA adapters with TRL + PEFT on Quimbot JSONL rows. Every checkpoint is a folder "
        "the app can load (runs/RUN/checkpoint-STEP) with a provenance file; held-out perplexity is computed "
        "for the base model and every checkpoint.")
    tsub = p.add_subparsers(dest="train_command", metavar="ACTION", required=True)

    q = tsub.add_parser(
        "sft", help="supervised fine-tuning on conversations (messages rows)", epilog=EPILOG,
        description="LoRA SFT on {\"messages\": [...]} rows, loss on assistant replies only. All checks "
        "(schema gate, token lengths, base model, adapter, free disk) run before training starts. "
        "--resume continues a stopped run from its last checkpoint with the same steps and data order; "
        "--init-adapter starts from an existing checkpoint (Stage 2).")
    _add_common(q)
    q.add_argument("--dry-run", action="store_true",
                   help="run every check, load the model, print the plan, and stop before training")
    q.set_defaults(func=cmd_train, method="sft")

    q = tsub.add_parser(
        "dpo", help="preference training (DPO) on prompt/chosen/rejected rows", epilog=EPILOG,
        description="LoRA DPO with TRL's DPOTrainer on preference rows (e.g. preference.jsonl from "
        "`quimbot export stage2`). With --init-adapter the chosen checkpoint is both the starting point and "
        "the frozen reference; otherwise the reference is the base model.")
    _add_common(q)
    q.add_argument("--dry-run", action="store_true",
                   help="run every check, load the model, print the plan, and stop before training")
    q.set_defaults(func=cmd_train, method="dpo")

    q = tsub.add_parser(
        "perplexity", help="(re)compute held-out perplexity of a run's checkpoints",
        description="Compute perplexity on the run's held-out rows (heldout.jsonl) for the base model (step 0) "
        "and every checkpoint, and write perplexity.csv, perplexity.json and perplexity.png into the run "
        "folder. Results for unchanged checkpoints are reused unless --force.")
    q.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder, e.g. runs/stage1")
    q.add_argument("--force", action="store_true", help="recompute every checkpoint")
    q.add_argument("--heldout", type=Path, metavar="JSONL", help="score these rows instead of the run's heldout.jsonl "
                   "(results go to the run folder all the same)")
    q.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default 8)")
    q.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    q.set_defaults(func=cmd_perplexity)

    q = tsub.add_parser(
        "config", help="print the resolved config (file + flags), or every option with --fields",
        description="Show what a training run would use: defaults, then the config file, then flags. "
        "Unknown keys and bad values are reported here the same way as by `quimbot train sft`.")
    _add_common(q)
    q.add_argument("--method", choices=("sft", "dpo"), help="check the config for this method")
    q.add_argument("--fields", action="store_true", help="list every option with its default and help text")
    q.set_defaults(func=cmd_config)
    return p


def config_from(args: argparse.Namespace) -> TrainConfig:
    overrides = overrides_from(args)
    if getattr(args, "data", None):
        overrides["dataset"] = [*args.data, *overrides.get("dataset", [])]
    return load_config(args.config, overrides, method=getattr(args, "method", None))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def to_toml(config: TrainConfig) -> str:
    lines, tables = [], []
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            if value:
                tables.append(f"\n[{key}]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in value.items()))
        elif value is None:
            lines.append(f"# {key} = (not set)")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "".join(tables) + "\n"


def cmd_config(args: argparse.Namespace) -> int:
    if args.fields:
        print(describe())
        return 0
    print(to_toml(config_from(args)), end="")
    return 0


def passive_openmp() -> None:
    """OpenMP threads that sleep instead of spin while they wait (unless OMP_WAIT_POLICY is set).

    On a shared 2-core machine, PyTorch's spinning OpenMP threads made a training step up to 40x
    slower whenever another process was busy (54 s instead of 1.4 s for the same step); sleeping
    threads cost about 3% when the machine is idle. Only effective before torch is imported."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cmd_train(args: argparse.Namespace) -> int:
    passive_openmp()
    from train.fit.prepare import prepare_run
    from train.fit.training import train

    config = config_from(args)
    if args.dry_run:
        run = prepare_run(config, kind="sft" if config.method == "sft" else "preference")
        c = run.config
        print(f"dry run OK: {run.run_dir}\n  {len(run.train)} training rows, {len(run.heldout)} held out, "
              f"{run.total_steps} steps of {c.per_device_train_batch_size} x {c.gradient_accumulation_steps} rows\n"
              f"  base {run.base.path}{f' + adapter {run.base.init_adapter}' if run.base.init_adapter else ''}\n"
              f"  {run.info.get('trainable_parameters', 0):,} trainable parameters; {run.device.describe()}\n"
              f"  disk needed about {run.info.get('disk_estimate_bytes', 0) / 2**20:,.0f} MiB"
              + (f"\n  would resume from {run.resume_from}" if run.resume_from else ""))
        return 0
    result = train(config)
    if not result.checkpoints:
        return 0
    print(f"\n{result.steps} steps in {result.seconds / 60:.1f} min"
          + (f" ({result.s_per_step:.2f} s/step)" if result.s_per_step else "") + f"; run folder {result.run_dir}")
    if result.perplexity:
        best = min((r for r in result.perplexity if r["checkpoint"].startswith("checkpoint-")),
                   key=lambda r: r["perplexity"], default=None)
        for r in result.perplexity:
            mark = "  <- lowest" if r is best else ""
            print(f"  step {r['step']:>5}  {r['checkpoint']:<18} perplexity {r['perplexity']:.3f}{mark}")
        print(f"  plot: {result.run_dir / 'perplexity.png'}")
    print(f"Chat with the last checkpoint: quimbot chat -M hf:{result.checkpoints[-1]}")
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    passive_openmp()
    from train.fit.perplexity import evaluate_run

    if not args.run_dir.is_dir():
        raise QuimbotError(f"Run folder not found: {args.run_dir}")
    results = evaluate_run(args.run_dir, force=args.force, batch_size=args.batch_size, device=args.device,
                           heldout=args.heldout)
    print(f"wrote {args.run_dir / 'perplexity.csv'}, perplexity.json and perplexity.png ({len(results)} rows)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quimbot")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """``quimbot train ARGS`` on its own: ``python -m train.fit.commands sft --config FILE``."""
    args = build_parser().parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except QuimbotError as exc:
        print(f"quimbot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopped; continue later with the same command and --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
