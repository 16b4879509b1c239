"""``quimbot data ...``: validate, deduplicate, audit and import training data from the command line.

``register(subparsers)`` adds the ``data`` command group to the ``quimbot`` parser. Each command
function takes the argparse namespace and returns an exit code; user errors raise QuimbotError
subclasses, which the CLI prints.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.files import output_path, write_json
from core.jsonl import jsonl_files, no_rows
from train.data.importers import FORMATS, FieldOptions

EPILOG = ("Rows are TRL conversational rows with metadata: {\"messages\": [system?, user, assistant, ...], "
          "\"metadata\": {\"source\": ..., \"content_hash\": \"qh1:...\"}} (also preference and unpaired rows). "
          "Every bad line is reported as FILE:LINE: reason.")


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``data`` (validate, dedup, audit, import) to a ``quimbot`` subparsers object."""
    p = subparsers.add_parser(
        "data", help="validate, deduplicate, audit and import training data",
        description="Check training data before it goes into a mix: the schema gate (validate), exact and "
        "near-duplicate removal (dedup), an inventory with style artifacts and an artifact score (audit), and "
        "converters from other chat formats (import).")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    from train.data.generate_commands import add_commands

    add_commands(dsub)  # data generate, data mix

    q = dsub.add_parser(
        "validate", help="run the schema gate over JSONL files", epilog=EPILOG,
        description="Check every line of the given JSONL files (or folders of *.jsonl) against the row format: "
        "valid UTF-8 and JSON, roles, alternation, non-empty turns, a final assistant turn, metadata and its "
        "content_hash, and with --max-tokens the length in tokens of the target model's chat template. Prints "
        "every rejected line with its file, line and reason. Exit status 1 when any line is rejected or a file holds "
        "no rows (0 bytes, or blank lines only).")
    q.add_argument("files", nargs="+", type=Path, metavar="FILE", help="JSONL file(s) or folder(s)")
    _add_tokens(q)
    q.add_argument("--json", type=Path, metavar="OUT", help="also write the result as JSON")
    q.add_argument("--limit", type=int, default=200, help="rejected lines to print (default 200; all go to --json)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_validate)

    q = dsub.add_parser(
        "dedup", help="remove exact (and near) duplicate rows", epilog=EPILOG,
        description="Read the inputs through the schema gate, drop rows with the same content hash and, with "
        "--near, rows whose user+assistant text is a near duplicate (MinHash estimate of the Jaccard similarity "
        "of word 3-grams >= --threshold), keeping the first row of each group in input order. --scope within "
        "compares rows only inside their own source (metadata.source, else the file name); --scope across "
        "compares the rows of --sources (default: all) with each other, which changes the mix ratios: the "
        "report says how many rows each source lost, and how many of those to a copy from another source.")
    q.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="JSONL file(s) or folder(s) to read")
    q.add_argument("out", type=Path, metavar="OUT", help="JSONL file for the kept rows")
    q.add_argument("--scope", choices=("within", "across"), default="within",
                   help="compare rows within each source (default) or across sources")
    q.add_argument("--sources", metavar="A,B", help="with --scope across: the sources to compare with each other "
                   "(comma-separated; default all); other sources are still deduplicated within themselves")
    q.add_argument("--near", action="store_true", help="also find near duplicates (MinHash + LSH)")
    q.add_argument("--threshold", type=float, default=0.8,
                   help="near-duplicate threshold, estimated Jaccard similarity of word 3-grams (default 0.8)")
    q.add_argument("--keep-near", action="store_true", help="with --near: report near duplicates but keep them")
    q.add_argument("--report", type=Path, metavar="JSON", help="write the full report (every group) as JSON")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_dedup)

    q = dsub.add_parser(
        "audit", help="inventory and style-artifact report of a file or folder", epilog=EPILOG,
        description="Per file and for the whole folder: rows, exact and near duplicates, rejected lines with "
        "reasons counted, messages per row, reply length, the most repeated tutor openers and 3-grams, share of "
        "tutor turns ending in '?', stock follow-up questions, distinct learner utterances, markdown, red-pen "
        "phrasing and tutor turns that echo the learner's first person, and a style-artifact score in [0, 1] "
        "(formula in the report). Prints Markdown unless --json/--markdown name files.")
    q.add_argument("path", type=Path, metavar="PATH", help="a JSONL file or a folder of *.jsonl")
    q.add_argument("--json", type=Path, metavar="OUT", help="write the report as JSON")
    q.add_argument("--markdown", type=Path, metavar="OUT", help="write the report as Markdown")
    q.add_argument("--no-near", action="store_true", help="skip near-duplicate detection")
    q.add_argument("--threshold", type=float, default=0.8, help="near-duplicate threshold (default 0.8)")
    q.add_argument("--workers", type=int, help="worker processes (default: one per CPU, up to 8, for 16 MB of "
                   "data or more; 1 otherwise)")
    _add_tokens(q)
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_audit)

    q = dsub.add_parser(
        "import", help="convert ShareGPT, messages or prompt/response data into rows", epilog=EPILOG,
        description="Convert a JSONL file or a dataset saved with datasets' save_to_disk (a folder; read with "
        "load_from_disk, never from the network) into Quimbot rows. Formats: sharegpt ({\"conversations\": "
        "[{\"from\": \"human\"|\"gpt\"|\"system\", \"value\": ...}]}), messages ({\"messages\": [{\"role\", "
        "\"content\"}]}), pairs (one prompt and one response field, e.g. prompt/response, instruction/output, "
        "input/output). Every converted row passes the schema gate; rejected records are listed with FILE:LINE "
        "or DIR[split][index]. Rows get metadata.source, original_index, format and content_hash. Prints a gate "
        "report for the candidate corpus: pass rate, rejection reasons and the style-artifact score.")
    q.add_argument("format", choices=FORMATS, help="input format")
    q.add_argument("input", type=Path, metavar="IN", help="JSONL file, or a folder saved with save_to_disk")
    q.add_argument("out", type=Path, metavar="OUT", help="JSONL file for the converted rows")
    q.add_argument("--source", help="metadata.source of the rows (default: the input's name)")
    q.add_argument("--split", help="split of a saved DatasetDict (default train, or the only split)")
    q.add_argument("--prompt-field", default="prompt", help="pairs: field with the learner's message (default "
                   "prompt; e.g. instruction, input, question)")
    q.add_argument("--response-field", default="response", help="pairs: field with the tutor's reply (default "
                   "response; e.g. output, answer)")
    q.add_argument("--input-field", help="pairs: optional field appended to the prompt after a blank line "
                   "(Alpaca's input)")
    q.add_argument("--system-field", help="pairs/sharegpt: field with a system prompt (sharegpt default: system)")
    q.add_argument("--conversations-field", default="conversations",
                   help="sharegpt: field with the turns (default conversations)")
    q.add_argument("--role-key", default="from", help="sharegpt: speaker key of a turn (default from)")
    q.add_argument("--content-key", default="value", help="sharegpt: text key of a turn (default value)")
    q.add_argument("--messages-field", default="messages", help="messages: field with the turns (default messages)")
    q.add_argument("--report", type=Path, metavar="JSON", help="write the gate report as JSON")
    _add_tokens(q)
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_import)
    return p


def _add_tokens(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-tokens", type=int, metavar="N",
                        help="reject rows longer than N tokens in the target model's chat template")
    parser.add_argument("--tokenizer", type=Path, metavar="DIR",
                        help="with --max-tokens: tokenizer folder of the target model (default: the bundled "
                        "SmolLM2 model, converted once into the cache folder)")


def token_counter(tokenizer_dir: Path | None = None) -> Callable[[dict[str, Any]], int]:
    """Count a row's tokens as the target model sees it: the chat template applied to its messages
    (preference rows: the longer of prompt+chosen and prompt+rejected)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DataError("--max-tokens needs the 'transformers' package.") from exc
    if tokenizer_dir is None:
        from tutor.config import Settings
        from tutor.models import default_hf_dir

        tokenizer_dir = default_hf_dir(Settings().cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot load a tokenizer from {tokenizer_dir}: {exc}") from exc

    def length(messages: list[dict]) -> int:
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        return len(out["input_ids"])

    def count(row: dict[str, Any]) -> int:
        if "messages" in row:
            return length(row["messages"])
        prompt = list(row.get("prompt") or [])
        answers = [row[k] for k in ("chosen", "rejected", "completion") if k in row]
        return max(length(prompt + a) for a in answers) if answers else length(prompt)

    return count


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    if args.max_tokens is None:
        if getattr(args, "tokenizer", None) is not None:
            raise DataError("--tokenizer only applies with --max-tokens N.")
        return {}
    if args.max_tokens < 1:
        raise DataError("--max-tokens must be a positive number of tokens.")
    return {"count_tokens": token_counter(args.tokenizer), "max_tokens": args.max_tokens}


def _files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        files += jsonl_files(path)
    return files


def _threshold(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise DataError(f"--threshold must be between 0 and 1 (exclusive), not {value}.")
    return value


def cmd_validate(args: argparse.Namespace) -> int:
    from core.jsonl import count_lines, read_jsonl, reason_key
    from core.schema import GateReport

    files = _files(args.files)
    limits = _limits(args)
    if args.json:
        output_path(args.json)
    per_file = {}
    report = GateReport()
    empty = []
    for file in files:
        gate = GateReport()
        rows = read_jsonl(file, gate, **limits)
        if not args.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            rows = tqdm(rows, total=count_lines(file), unit="rows", desc=f"validate {file.name}")
        for _ in rows:
            pass
        if not gate.accepted and not gate.rejected:
            empty.append(str(no_rows(file)))
        per_file[str(file)] = {"accepted": gate.accepted, "rejected": len(gate.rejected)}
        report.accepted += gate.accepted
        report.rejected += gate.rejected
    for error in report.rejected[:args.limit]:
        print(error)
    if len(report.rejected) > args.limit:
        print(f"... and {len(report.rejected) - args.limit} more rejected lines (see --json)")
    for name, counts in per_file.items():
        print(f"{name}: {counts['accepted']} rows accepted, {counts['rejected']} rejected")
    reasons: dict[str, int] = {}
    for error in report.rejected:
        key = reason_key(error.reason)
        reasons[key] = reasons.get(key, 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {n:>6} x {reason}")
    for message in empty:
        print(message)
    total = report.accepted + len(report.rejected)
    verdict = "REJECTED LINES" if report.rejected else "NO ROWS" if empty else "OK"
    print(f"{verdict}: {report.accepted} of {total} rows passed the gate in {len(files)} file(s)"
          + (f"; {len(empty)} file(s) hold no rows" if empty else ""))
    if args.json:
        result = {"files": per_file, "accepted": report.accepted, "rejected": len(report.rejected),
                  "rejection_reasons": reasons, "rejections": [str(e) for e in report.rejected]}
        if empty:
            result["files_without_rows"] = empty
        write_json(args.json, result)
    return 1 if report.rejected or empty else 0


def cmd_dedup(args: argparse.Namespace) -> int:
    from train.data.dedup import dedup_files, write_rows

    files = _files(args.inputs)
    output_path(args.out)
    if args.report:
        output_path(args.report)
    if any(_same_file(f, args.out) for f in files):
        raise DataError(f"{args.out} is also an input; write the kept rows to another file.")
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    if args.keep_near and not args.near:
        raise DataError("--keep-near only applies with --near.")
    result = dedup_files(files, scope=args.scope, sources=sources, near=args.near,
                         threshold=_threshold(args.threshold), remove_near=not args.keep_near,
                         progress=not args.quiet and sys.stderr.isatty())
    n = write_rows(result.kept, args.out)
    print(result.report.summary())
    print(f"wrote {n} rows to {args.out}")
    if args.report:
        write_json(args.report, result.report.to_dict())
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from train.data.audit import audit_path, write_report

    if args.workers is not None and args.workers < 1:
        raise DataError("--workers must be at least 1.")
    for out in (args.json, args.markdown):
        if out:
            output_path(out)
    report = audit_path(args.path, near=not args.no_near, threshold=_threshold(args.threshold),
                        workers=args.workers, progress=not args.quiet and sys.stderr.isatty(), **_limits(args))
    write_report(report, args.json, args.markdown)
    if args.json or args.markdown:
        t = report.total
        print(f"{args.path}: {t.rows} rows, {t.rejected} rejected, {t.exact_duplicates} exact duplicates, "
              f"{'-' if t.near_duplicates is None else t.near_duplicates} near duplicates, "
              f"style-artifact score {t.artifact_score:.3f}")
        for path in (args.json, args.markdown):
            if path:
                print(f"wrote {path}")
    else:
        print(report.to_markdown())
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from train.data.importers import import_corpus

    output_path(args.out)
    if args.report:
        output_path(args.report)
    if _same_file(args.out, args.input):
        raise DataError(f"{args.out} is the input; write the converted rows to another file.")
    fields = FieldOptions(prompt=args.prompt_field, response=args.response_field, input=args.input_field,
                          system=args.system_field, conversations=args.conversations_field,
                          role_key=args.role_key, content_key=args.content_key, messages=args.messages_field)
    report = import_corpus(args.format, args.input, args.out, source=args.source, fields=fields, split=args.split,
                           progress=not args.quiet and sys.stderr.isatty(), **_limits(args))
    print(report.summary())
    if args.report:
        write_json(args.report, report.to_dict())
    return 0


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False

