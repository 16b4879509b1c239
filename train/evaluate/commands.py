"""`quimbot eval ...`: compare checkpoints on tutoring prompts, replay flagged replies."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.errors import QuimbotError

NO_SPELLING_HELP = ("score the model's own replies: without the app's correction of the learner's misspellings a "
                    "reply copied (tutor.spelling; the same as QUIMBOT_SPELLING=0)")
JFLEG = Path(__file__).resolve().parents[3] / "shared" / "data" / "jfleg-dev"


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="compare checkpoints as teachers; replay flagged replies",
                              description="Evaluate models as tutors, beyond perplexity.")
    esub = p.add_subparsers(dest="eval_command", metavar="ACTION", required=True)
    q = esub.add_parser(
        "compare", help="side-by-side report of several models on tutoring prompts",
        description="Every model answers the same learner turns (greedy); replies are scored with the pedagogy "
        "metrics (error taken up, red pen, grammar terms, follow-up, echo, style, follow-up diversity) and shown "
        "side by side in report.md / report.html / report.json, with the held-out perplexity from training where "
        "known, a plot per checkpoint, and a recommendation by an explicit rule.")
    q.add_argument("specs", nargs="+", help="model specs, e.g. hf:default hf:runs/r/checkpoint-50 gguf:exports/x.gguf")
    q.add_argument("--prompts", type=Path, help="prompt set JSONL (default data/prompts/tutoring_prompts.jsonl)")
    q.add_argument("--jfleg", nargs="?", const=str(JFLEG), metavar="DIR",
                   help="use the real learner sentences of JFLEG dev instead (default ../shared/data/jfleg-dev)")
    q.add_argument("--limit", type=int, help="only the first N prompts")
    q.add_argument("--out", type=Path, default=Path("exports/compare"), help="report folder (default exports/compare)")
    q.add_argument("--batch-size", type=int, default=8, help="replies generated together where the engine can (8)")
    q.add_argument("--max-tokens", type=int, default=80, help="longest reply in tokens (default 80)")
    q.add_argument("--metric", default="pedagogy_score", help="what the recommendation maximises")
    q.add_argument("--margin", type=float, default=0.02,
                   help="models within this of the best count as tied; the lowest perplexity wins (0.02)")
    q.add_argument("--vllm", action="store_true",
                   help="serve the base and every checkpoint (hf: specs of one base) from one vLLM server started "
                   "with --enable-lora and the checkpoints as LoRA modules, instead of loading each in turn (GPU; "
                   "QUIMBOT_VLLM names the vllm command)")
    q.add_argument("--vllm-url", metavar="URL",
                   help="like --vllm, but use the vLLM server already running at URL (e.g. http://gpu:8000/v1); "
                   "it must serve the base as 'base' and each checkpoint as '<run>-<checkpoint>'")
    q.add_argument("--vllm-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for vllm serve, repeatable (e.g. --vllm-arg=--max-model-len=4096)")
    q.add_argument("--dialogues", type=int, nargs="?", const=8, metavar="N",
                   help="also hold whole conversations (the scripted dialogues and N simulated ones, default 8), "
                   "add them to the report and let the dialogue gate narrow the recommendation")
    q.add_argument("--concurrency", type=int, default=64,
                   help="with --vllm: requests in flight at once, over all models (default 64)")
    q.add_argument("--no-spelling", action="store_true", help=NO_SPELLING_HELP)
    q.set_defaults(func=cmd_compare)

    q = esub.add_parser(
        "calibrate", help="how far each pedagogy metric agrees with people (hand labels, tester verdicts)",
        description="Score the hand-labelled tutor replies in data/calibration/ (tune: the rules were adjusted on it; "
        "held-out: never used to adjust them) and print, per metric, accuracy and Cohen's kappa against the labels; "
        "then the agreement of good_move with the testers' flags, rewrites and arena votes in the conversation log. "
        "Only metrics whose held-out kappa reaches the threshold may decide eval compare's recommendation.")
    q.add_argument("--tune", type=Path, help="labelled tune set (default data/calibration/tune.jsonl)")
    q.add_argument("--heldout", type=Path, help="labelled held-out set (default data/calibration/heldout.jsonl)")
    q.add_argument("--db", type=Path, help="conversation log (env QUIMBOT_DB, default ./var/quimbot.db)")
    q.add_argument("--threshold", type=float, help="held-out kappa a metric needs to decide (default 0.6)")
    q.add_argument("--show", action="store_true", help="also list the tune replies where a metric and the label differ")
    q.add_argument("--json", action="store_true", help="print the whole result as JSON")
    q.set_defaults(func=cmd_calibrate)

    q = esub.add_parser(
        "dialogue", help="whole conversations: each model holds dialogues of 6+ learner turns",
        description="Each model holds the scripted dialogues (data/dialogues/scripted.jsonl: fixed learner turns, "
        "repeatable) and --simulated N dialogues with simulated learners (personas with a level and a recurring "
        "error, from the offline generator or --simulator SPEC). Reported per dialogue and per model: good moves per "
        "turn, over-correction on turns with no error, follow-ups and openers repeated within a dialogue, follow-ups "
        "on topic, memory of what was said, reply length, recurring errors taken up again, learner questions "
        "answered; dialogues.md shows the transcripts side by side.")
    q.add_argument("--model", action="append", dest="specs", metavar="SPEC",
                   help="model spec, repeatable (default: the bundled default model)")
    q.add_argument("--scripted", type=Path, help="scripted dialogues JSONL (default data/dialogues/scripted.jsonl)")
    q.add_argument("--limit", type=int, help="only the first N scripted dialogues (0: none)")
    q.add_argument("--simulated", type=int, default=0, metavar="N", help="simulated learners' dialogues (default 0)")
    q.add_argument("--simulator", default="offline", metavar="offline|SPEC",
                   help="who plays the simulated learners: the offline generator (default) or a model spec")
    q.add_argument("--turns", type=int, default=6, help="learner turns per simulated dialogue (at least 6)")
    q.add_argument("--seed", type=int, default=0, help="seed of the simulated learners (default 0)")
    q.add_argument("--max-tokens", type=int, default=80, help="longest tutor reply in tokens (default 80)")
    q.add_argument("--fresh-tries", type=int, metavar="N",
                   help="as in the app, a reply that asks again what the tutor asked earlier in the dialogue is "
                   "generated again, sampled, up to N times (default: QUIMBOT_FRESH_TRIES, else 3); 0 measures "
                   "the model's own first replies")
    q.add_argument("--no-spelling", action="store_true", help=NO_SPELLING_HELP)
    q.add_argument("--out", type=Path, default=Path("exports/dialogue"), help="report folder (default exports/dialogue)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_dialogue)

    q = esub.add_parser(
        "replay", help="answer flagged learner turns with an old and a new checkpoint",
        description="Re-run the learner turns behind flagged replies against OLD and NEW and label each flag "
        "fixed, still broken, regressed or fine (by the detector, on the flagged reasons).")
    q.add_argument("old", help="model spec before Stage 2")
    q.add_argument("new", help="model spec after Stage 2")
    q.add_argument("--db", type=Path, help="conversation log (env QUIMBOT_DB, default ./var/quimbot.db)")
    q.add_argument("--out", type=Path, default=Path("exports/replay"), help="report folder (default exports/replay)")
    q.add_argument("--reason", help="only flags with this reason")
    q.set_defaults(func=cmd_replay)


def _spelling_flag(args: argparse.Namespace) -> None:
    """``--no-spelling``: this command measures the model's own replies (``tutor.spelling`` reads the variable)."""
    if args.no_spelling:
        os.environ["QUIMBOT_SPELLING"] = "0"


def cmd_compare(args: argparse.Namespace) -> int:
    from train.evaluate.compare import Rule, compare, load_jfleg
    from train.evaluate.prompt_sets import load_prompts
    from tutor.backends import GenerationOptions

    _spelling_flag(args)

    if args.jfleg:
        if not Path(args.jfleg, "dev.src").exists():
            raise QuimbotError(f"No JFLEG data in {args.jfleg} (dev.src missing).")
        prompts = load_jfleg(args.jfleg, args.limit)
    else:
        prompts = load_prompts(args.prompts) if args.prompts else load_prompts()
        prompts = prompts[:args.limit] if args.limit else prompts
    options = GenerationOptions.greedy(args.max_tokens)
    if (args.vllm or args.vllm_url) and args.dialogues is not None:
        raise QuimbotError("--dialogues holds conversations with each model in turn; it does not combine with --vllm.")
    if args.vllm or args.vllm_url:
        from train.evaluate.compare_vllm import compare_with_vllm

        report = compare_with_vllm(args.specs, prompts, args.out, base_url=args.vllm_url, options=options,
                                   rule=Rule(args.metric, args.margin), concurrency=args.concurrency,
                                   vllm_args=args.vllm_arg)
    else:
        dialogues = None
        if args.dialogues is not None:
            from train.evaluate.dialogue import evaluate_dialogues, write_report

            dialogues = evaluate_dialogues(args.specs, simulated=args.dialogues, options=options)
            write_report(dialogues, args.out)
        report = compare(args.specs, prompts, args.out, options=options, rule=Rule(args.metric, args.margin),
                         batch_size=args.batch_size, dialogues=dialogues)
    from train.evaluate.compare import summary_rows

    for row in summary_rows(report):
        print("  ".join(row))
    for m in report["models"]:
        spelling = m.get("spelling") or {}
        if spelling.get("fixes"):
            print(f"{m['spec']}: the learner's misspellings corrected in {spelling['replies_fixed']} replies "
                  f"(tutor.spelling); good move {spelling['metrics_model_alone']['good_move']:.1%} for the model "
                  f"alone, {m['metrics']['good_move']:.1%} as shown")
    rec = report["recommendation"]
    print(f"recommended: {rec['model']} ({rec['why']})")
    print(f"report: {report['files']['markdown']} / {report['files']['html']}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import json

    from train.evaluate import calibrate as cal
    from tutor.config import Settings

    threshold = cal.KAPPA_THRESHOLD if args.threshold is None else args.threshold
    if not 0 < threshold <= 1:
        raise QuimbotError(f"--threshold {threshold:g} is not a kappa to require; give a number in (0, 1].")
    db = args.db or Settings().db_path
    result = cal.calibrate(args.tune or cal.TUNE_PATH, args.heldout or cal.HELDOUT_PATH, threshold, db=db)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    rows = [cal.TABLE_HEAD, *cal.table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cal.TABLE_HEAD))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print(f"held-out kappa needed to decide a recommendation: {threshold:g}; "
          f"trusted: {', '.join(result['trusted']) or 'none'}")
    print(cal.testers_sentence(result.get("testers")))
    if args.show:
        labelled = {r["id"]: r for r in cal.load_labelled(args.tune or cal.TUNE_PATH)}
        for label, ids in result["tune"]["disagreements"].items():
            for i in ids:
                row = labelled[i]
                print(f"{label} {i}: label {row['labels'][label]}; learner: {row['learner']} | reply: {row['reply']}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from train.evaluate.replay import replay
    from tutor.config import Settings
    from tutor.feedback import FlagFilters
    from tutor.store import Store

    settings = Settings()
    if args.db:
        settings.db_path = args.db
    result = replay(Store.open(settings.db_path), args.old, args.new, args.out, FlagFilters(reason=args.reason),
                    settings)
    print(f"{result['flagged_replies']} flagged replies: {result['counts']}")
    print(f"report: {args.out / 'replay.md'}", file=sys.stderr)
    return 0


def cmd_dialogue(args: argparse.Namespace) -> int:
    from train.evaluate.dialogue import evaluate_dialogues, load_scripts, write_report
    from tutor.backends import GenerationOptions
    from tutor.config import settings_from_args

    _spelling_flag(args)

    scripts = load_scripts(args.scripted) if args.scripted else load_scripts()
    if args.limit is not None:
        scripts = scripts[:max(0, args.limit)]
    report = evaluate_dialogues(args.specs or ["default"], settings_from_args(args), scripts=scripts,
                                simulated=args.simulated, simulator=args.simulator, turns=args.turns,
                                seed=args.seed, options=GenerationOptions.greedy(args.max_tokens),
                                progress=not args.no_progress, fresh_tries=args.fresh_tries)
    files = write_report(report, args.out)
    for m in report["models"]:
        x = m["metrics"]
        print(f"{m['spec']}: {x['dialogues']} dialogues, good moves {x['good_move_rate']:.1%}, over-correction "
              f"{x['over_correction']:.1%}, no repeated follow-up in {x['no_repeated_follow_up_share']:.0%} of "
              f"dialogues, dialogue score {x['dialogue_score']:.3f}, generated again on "
              f"{x['asked_again_share']:.0%} of turns")
    print(f"report: {files['markdown']} and {files['json']}")
    return 0

