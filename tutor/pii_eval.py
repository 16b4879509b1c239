"""Measure the PII scrubber on a labelled set: recall and precision per kind.

    python -m tutor.pii_eval data/pii/heldout.jsonl [--engine auto|presidio|regex] [--show]

Each line of the set is {"id", "lang", "text", "spans": [{"kind", "start", "end", "value"}]}; a line
without spans is a negative (no personal data). The measures are those of a scrubber, where a leak is
what counts:
  - recall of a kind: the share of its labelled spans whose every letter and digit ends up inside a
    replaced span (of any kind: a card number replaced as [PHONE] has not leaked);
  - precision of a kind: the share of spans replaced as that kind that overlap a labelled span (a
    replaced span that touches no personal data destroyed good training text)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from core.errors import QuimbotError
from tutor.pii_regex import KINDS, Span
from tutor.privacy import ENGINES, Scrubber


def read_set(path: str | Path) -> list[dict[str, Any]]:
    """The labelled snippets, checked: every span's value is the text it points at."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                for s in row["spans"]:
                    if row["text"][s["start"]:s["end"]] != s["value"] or s["kind"] not in KINDS:
                        raise ValueError(f"span {s} does not match the text or has an unknown kind")
            except (ValueError, KeyError, TypeError) as exc:
                raise QuimbotError(f"{path}:{n}: not a labelled PII snippet: {exc}") from exc
            rows.append(row)
    return rows


def _covered(text: str, gold: dict, predicted: list[Span]) -> bool:
    return all(any(p.start <= i < p.end for p in predicted)
               for i in range(gold["start"], gold["end"]) if text[i].isalnum())


def evaluate(rows: list[dict[str, Any]], scrubber: Scrubber) -> dict[str, Any]:
    """Per kind: labelled, found (recall), replaced, correct (precision); and the misses for --show."""
    per: dict[str, dict[str, int]] = defaultdict(lambda: {"labelled": 0, "found": 0, "replaced": 0, "correct": 0})
    missed, spurious = [], []
    started = time.perf_counter()
    for row in rows:
        text, gold = row["text"], row["spans"]
        predicted = scrubber.spans(text)
        for g in gold:
            per[g["kind"]]["labelled"] += 1
            if _covered(text, g, predicted):
                per[g["kind"]]["found"] += 1
            else:
                missed.append((row["id"], g["kind"], g["value"], text))
        for p in predicted:
            per[p.kind]["replaced"] += 1
            if any(p.start < g["end"] and g["start"] < p.end for g in gold):
                per[p.kind]["correct"] += 1
            else:
                spurious.append((row["id"], p.kind, text[p.start:p.end], text))
    return {"per_kind": dict(per), "missed": missed, "spurious": spurious, "snippets": len(rows),
            "negatives": sum(1 for r in rows if not r["spans"]), "seconds": time.perf_counter() - started}


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "  -  "


def format_report(result: dict[str, Any]) -> str:
    lines = [f"{'kind':<8} {'labelled':>8} {'recall':>7} {'replaced':>8} {'precision':>9}"]
    per = result["per_kind"]
    for kind in [k for k in KINDS if k in per]:
        c = per[kind]
        lines.append(f"{kind:<8} {c['labelled']:>8} {_ratio(c['found'], c['labelled']):>7} {c['replaced']:>8} "
                     f"{_ratio(c['correct'], c['replaced']):>9}")
    total = {k: sum(c[k] for c in per.values()) for k in ("labelled", "found", "replaced", "correct")}
    lines.append(f"{'all':<8} {total['labelled']:>8} {_ratio(total['found'], total['labelled']):>7} "
                 f"{total['replaced']:>8} {_ratio(total['correct'], total['replaced']):>9}")
    lines.append(f"{result['snippets']} snippets ({result['negatives']} without personal data), "
                 f"{result['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutor.pii_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="labelled JSONL sets, e.g. data/pii/heldout.jsonl")
    parser.add_argument("--engine", choices=ENGINES, default=None, help="default: QUIMBOT_PII_ENGINE or auto")
    parser.add_argument("--show", action="store_true", help="list every missed and every spurious span")
    args = parser.parse_args(argv)
    try:
        scrubber = Scrubber(args.engine)
        started = time.perf_counter()
        info = scrubber.describe()
        print(f"engine: {info['engine']} ({info['detail']}); loaded in {time.perf_counter() - started:.1f} s")
        for path in args.paths:
            result = evaluate(read_set(path), scrubber)
            print(f"\n{path}\n{format_report(result)}")
            if args.show:
                for label, items in (("missed", result["missed"]), ("spurious", result["spurious"])):
                    for sid, kind, value, text in items:
                        print(f"  {label} {kind:<7} {value!r:<32} {sid}: {text}")
    except QuimbotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
