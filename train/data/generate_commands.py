"""`quimbot data generate` and `quimbot data mix` (added to the `data` command group)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import QuimbotError


def add_commands(data_sub) -> None:
    p = data_sub.add_parser(
        "generate", help="generate synthetic tutoring dialogues",
        description="Generate tutoring dialogues from learner-error seeds, rotating the scaffolding style "
        "(recast, elicitation, expansion, metalinguistic) every N entries. Lanes are tried in order for every "
        "entry: 'offline' (programmatic, no model), 'offline-essay' (programmatic: longer real-learner-style "
        "sentences with several errors, one corrected per reply) or a model spec (ollama:NAME local lane; gguf:PATH or "
        "hf:... in-process lane; openrouter:NAME or openai:NAME?base_url=... cloud lane). HTTP 402 pauses a "
        "lane; 429/5xx are retried with backoff a bounded number of times. --concurrency N keeps N requests in flight "
        "per model lane (rows are still written in index order). Rerunning the same command resumes "
        "an interrupted run with no entry lost or written twice. Exit code 3: every lane paused, progress saved.")
    p.add_argument("--out", type=Path, required=True, help="output JSONL (plus OUT.rejects.jsonl, OUT.params.json)")
    p.add_argument("--n", type=int, required=True, help="number of entries (rows + rejected entries)")
    p.add_argument("--lane", action="append", dest="lanes", metavar="LANE",
                   help="'offline', 'offline-essay' or a model spec; repeat for fallbacks in order (default: offline)")
    p.add_argument("--rotate-every", type=int, default=2500, help="entries per scaffolding style (default 2500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the learner seeds and sampling (default 0)")
    p.add_argument("--retries", type=int, default=3, help="retries of a model lane on 429/5xx (default 3)")
    p.add_argument("--backoff", type=float, default=2.0, help="first backoff in seconds, doubling (default 2)")
    p.add_argument("--max-words", type=int, default=60, help="longest tutor reply kept, in words (default 60)")
    p.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="requests in flight per model lane (default 1). Ollama: up to its OLLAMA_NUM_PARALLEL; "
                   "vLLM / llama-server: about the server's batch slots (-np); OpenRouter: 4-16, less on free "
                   "models. A 429 halves it for a while; gguf:/hf: lanes always run one at a time")
    p.add_argument("--max-retry-after", type=float, default=300.0, metavar="SECONDS",
                   help="pause a lane whose server asks (Retry-After) to wait longer than this (default 300)")
    p.set_defaults(func=cmd_generate)

    p = data_sub.add_parser(
        "mix", help="build a training set from sources with explicit ratios",
        description="Build a Stage 1 or Stage 2 training set from a mix config (TOML: sources with ratios, "
        "filters, optional generation), with a fixed seed, and write OUT.manifest.json (inputs with hashes, "
        "target vs actual ratios, filters). `quimbot data mix data/mix_stage1.toml` builds the starter Stage 1 "
        "set offline.")
    p.add_argument("config", type=Path, help="mix config, e.g. data/mix_stage1.toml")
    p.set_defaults(func=cmd_mix)


def cmd_generate(args: argparse.Namespace) -> int:
    from train.data.generate import GenerateConfig, GenerationPaused, run_generation

    if args.n < 1 or args.rotate_every < 1 or args.concurrency < 1:
        raise QuimbotError("--n, --rotate-every and --concurrency must be at least 1.")
    cfg = GenerateConfig(out=args.out, n=args.n, lanes=args.lanes or ["offline"], rotate_every=args.rotate_every,
                         seed=args.seed, retries=args.retries, backoff_s=args.backoff, max_words=args.max_words,
                         concurrency=args.concurrency, max_retry_after_s=args.max_retry_after)
    try:
        report = run_generation(cfg)
    except GenerationPaused as exc:
        print(f"quimbot: paused: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def cmd_mix(args: argparse.Namespace) -> int:
    from train.data.mix import build_mix, load_mix_config

    manifest = build_mix(load_mix_config(args.config))
    for item in manifest["inputs"]:
        print(f"{item['name']}: {item['actual_rows']} rows (target {item['target_rows']}, "
              f"ratio {item['actual_ratio']} vs {item['target_ratio']}), {item['rows_rejected_by_gate']} rejected "
              f"by the gate, {item['duplicates_removed']} duplicates removed")
    print(f"{manifest['rows']} rows -> {manifest['out']} (manifest {manifest['out']}.manifest.json)")
    if manifest["shortfall"]:
        print(f"quimbot: sources short of their target: {', '.join(manifest['shortfall'])}", file=sys.stderr)
    return 0
