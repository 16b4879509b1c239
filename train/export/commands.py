"""`quimbot export gguf|lora|ollama|parity`: checkpoints out of the workbench (see train/export/gguf_export.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train.export.gguf_export import FOUR_BIT, TYPES
from tutor.config import settings_from_args

TYPE_HELP = f"GGUF types: {', '.join(TYPES)} (4-bit: {', '.join(FOUR_BIT)}); several allowed, comma-separated"


def _parity_args(q: argparse.ArgumentParser, export: bool = True) -> None:
    if export:
        q.add_argument("--out", type=Path, help="output folder (default EXPORTS/<run>-<checkpoint>)")
        q.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    q.add_argument("--prompts", type=Path, help="prompt set for the parity check (default: the tutoring prompts)")
    q.add_argument("--parity-prompts", type=int, default=24, help="prompts in the parity check (default 24)")
    q.add_argument("--parity-tokens", type=int, default=48, help="greedy tokens per reply in the check (default 48)")
    q.add_argument("--min-agreement", type=float,
                   help="fail below this mean greedy token agreement (default per type: f16 0.8, q8_0 0.6, 4-bit 0.3)")
    q.add_argument("--max-drift", type=float, default=0.15,
                   help="fail when the good-move rate differs by more than this (default 0.15)")


def register(esub, add_paths) -> None:
    q = esub.add_parser(
        "gguf", help="merge a LoRA checkpoint into its base and write GGUF files",
        description="Merge the checkpoint's LoRA adapter into its base model, convert it with llama.cpp's own "
        "converter (fetched once from the llama-cpp-python source distribution) and quantize it. Each file "
        "is checked for parity against the checkpoint (same prompts, greedy, transformers vs llama-cpp) and "
        "only offered in the app's picker when the check passes. Output: EXPORTS/<run>-<checkpoint>/.")
    q.add_argument("checkpoint", type=Path, help="checkpoint folder, e.g. runs/stage1-default/checkpoint-80")
    q.add_argument("--type", default="q8_0", help=f"{TYPE_HELP} (default q8_0)")
    q.add_argument("--lora", action="store_true", help="also write the adapter alone as a GGUF LoRA")
    _parity_args(q)
    add_paths(q)
    q.set_defaults(func=cmd_gguf)

    q = esub.add_parser(
        "lora", help="the LoRA adapter alone as a GGUF LoRA",
        description="Convert the checkpoint's adapter with llama.cpp's convert_lora_to_gguf.py. Serve it on the "
        "base GGUF with the spec gguf:default?lora=FILE (the picker lists it that way).")
    q.add_argument("checkpoint", type=Path, help="checkpoint folder")
    q.add_argument("--type", default="f16", choices=["f32", "f16", "q8_0"], help="adapter GGUF type (default f16)")
    q.add_argument("--out", type=Path, help="output folder (default EXPORTS/<run>-<checkpoint>)")
    add_paths(q)
    q.set_defaults(func=cmd_lora)

    q = esub.add_parser(
        "ollama", help="GGUF plus an Ollama Modelfile, ready for `ollama create`",
        description="Export the checkpoint as GGUF (unless a passing export of it exists) and write a Modelfile "
        "beside it with the chat template (checked against the checkpoint's own), stop tokens, the tutor's "
        "default system prompt and generation parameters.")
    q.add_argument("checkpoint", type=Path, help="checkpoint folder")
    q.add_argument("--type", default="q8_0", help="GGUF type the Modelfile uses (default q8_0)")
    q.add_argument("--level", default="intermediate", help="learner level of the system prompt (default intermediate)")
    q.add_argument("--template", type=Path, help="an Ollama (Go) template file, for chat templates Quimbot cannot map")
    _parity_args(q)
    add_paths(q)
    q.set_defaults(func=cmd_ollama)

    q = esub.add_parser(
        "parity", help="check a GGUF against the checkpoint it was exported from",
        description="Same prompts through the checkpoint (transformers + PEFT) and the GGUF (llama-cpp), greedy: "
        "prompt-token equality (chat template, BOS), token agreement, exact matches and pedagogy metrics side by "
        "side. Exit status 1 when the check fails.")
    q.add_argument("checkpoint", type=Path, help="checkpoint folder")
    q.add_argument("gguf", type=Path, help="GGUF file")
    q.add_argument("--json", type=Path, help="also write the full report (every reply) here")
    _parity_args(q, export=False)
    add_paths(q)
    q.set_defaults(func=cmd_parity)


def _types(text: str) -> list[str]:
    return [t.strip().lower() for t in text.split(",") if t.strip()]


def _parity_options(args: argparse.Namespace) -> dict:
    from train.evaluate.prompt_sets import load_prompts

    options = {"n_prompts": args.parity_prompts, "max_tokens": args.parity_tokens,
               "max_good_move_drift": args.max_drift}
    if args.min_agreement is not None:
        options["min_agreement"] = args.min_agreement
    if args.prompts:
        options["prompts"] = load_prompts(args.prompts)
    return options


def _settings(args):
    return settings_from_args(args)


def _print_results(results) -> int:
    failed = 0
    for r in results:
        parity = r.parity or {}
        print(f"{r.type:7} {r.bytes / 1e6:8.1f} MB {r.seconds:7.1f} s  agreement {parity.get('mean_agreement', '-')}"
              f"  {'ok' if r.accepted else 'PARITY FAILED'}  {r.path}")
        failed += not r.accepted
    return 1 if failed else 0


def cmd_gguf(args: argparse.Namespace) -> int:
    from train.export.gguf_export import export_gguf, export_lora

    settings = _settings(args)
    results = export_gguf(args.checkpoint, _types(args.type), settings, out_dir=args.out, parity=not args.no_parity,
                          parity_options=_parity_options(args))
    if args.lora:
        results.append(export_lora(args.checkpoint, settings, out_dir=args.out))
    return _print_results(results)


def cmd_lora(args: argparse.Namespace) -> int:
    from train.export.gguf_export import export_lora

    return _print_results([export_lora(args.checkpoint, _settings(args), out_dir=args.out, outtype=args.type)])


def cmd_ollama(args: argparse.Namespace) -> int:
    from train.export.gguf_export import export_ollama

    gtype = args.type.strip().lower()
    template = args.template.read_text(encoding="utf-8") if args.template else None
    result, modelfile = export_ollama(args.checkpoint, gtype, _settings(args), out_dir=args.out,
                                      parity=not args.no_parity, parity_options=_parity_options(args),
                                      level=args.level, template=template)
    status = _print_results([result]) if result is not None else 0
    if modelfile is None:
        print("no Modelfile written: the GGUF failed its parity check", file=sys.stderr)
        return 1
    print(f"Modelfile: {modelfile}\nnext: ollama create quimbot-tutor -f {modelfile}")
    return status


def cmd_parity(args: argparse.Namespace) -> int:
    import json

    from train.export.gguf_export import default_min_agreement
    from train.export.parity import parity_check

    options = _parity_options(args)
    gtype = next((t for t in TYPES if t in args.gguf.name.lower()), "q4_0")
    options.setdefault("min_agreement", default_min_agreement(gtype))
    report = parity_check(args.checkpoint, args.gguf, _settings(args), **options)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0 if report["passed"] else 1
