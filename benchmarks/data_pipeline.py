"""How fast is the data pipeline compared with just parsing the JSON?

Generates a file of realistic synthetic rows in Quimbot's row format (a system prompt, one to three
learner/tutor exchanges built from the learner-error tables, rotating scaffolding styles, metadata
with provenance and content_hash, plus the mess real data has: about 3% exact copies, 2% near
copies, 0.3% broken lines, a little markdown, red pen and echoing). Generating it is not timed.

Then, on the same file and in the same run, times

  pipeline  train.data.audit.audit_path(near=False): every line through the schema gate
            (core.schema.check_row, which re-hashes each row to verify metadata.content_hash), exact
            dedup by content hash and all audit statistics - one streaming pass, the work
            `quimbot data validate`, `data dedup` (exact) and `data audit --no-near` do;
  baseline  a bare loop: ``for line in open(file): json.loads(line)`` (skipping lines that fail).

Both are run --repeat times, interleaved; the best time of each is used. Prints rows/s of both, the
ratio pipeline/baseline and PASS/MISS against the target (>= 0.3x). Near-duplicate detection
(MinHash + LSH) is a separate, optional step (`data dedup --near`, `data audit` without --no-near):
it is timed once on its own line, not in the ratio (--near puts it into the timed pipeline).

Since wall-clock ratios swing when other work shares the CPUs, it also prints the CPU seconds each
side used (the pipeline's worker processes included) and their ratio, and the load average. Then,
for reference, the gate alone (parse + check_row in one process). The pipeline reads big files in
chunks in one worker process per CPU (--workers to choose). --separate also times `validate`, exact
`dedup` and `audit --no-near` as three separate passes, for information.

Usage:  .venv/bin/python benchmarks/data_pipeline.py [--rows N] [--repeat N] [--workers N] [--file PATH]
        [--near] [--no-near-line] [--separate] [--strict]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.hashing import content_hash  # noqa: E402
from tutor.learner_errors import IRREGULAR_PAST, NOUN_PLURALS, THIRD_PERSON  # noqa: E402
from tutor.prompts import LEVELS, system_prompt  # noqa: E402

TARGET = 0.3
STYLES = ("recast", "elicitation", "expansion", "metalinguistic")
PLACES = ["park", "store", "beach", "museum", "library", "market", "gym", "cinema", "station", "office",
          "restaurant", "mall", "zoo", "concert", "party", "hospital", "bank", "school", "airport", "lake"]
PEOPLE = ["sister", "brother", "mother", "father", "friend", "cousin", "boss", "neighbor", "teacher", "wife",
          "husband", "son", "daughter", "grandmother", "roommate", "colleague"]
THINGS = ["pizza", "coffee", "football", "music", "movies", "books", "soup", "tea", "chess", "video games",
          "cooking", "painting", "running", "yoga", "jazz", "swimming", "photography", "gardening"]
TIMES = ["yesterday", "last week", "last weekend", "last night", "two days ago", "last summer", "last month"]
OPENERS = ["Oh,", "Nice,", "Really?", "Wow,", "Ah,", "Cool,", "That's great,", "I see,", "Oh really,", "Hmm,",
           "Sounds fun,", "How nice,", "Interesting,", "Great,", "Oh wow,", "Lovely,", ""]
COMMENTS = ["That sounds fun.", "I love that.", "What a nice plan.", "That must be nice.", "Lucky you!",
            "That's a good way to relax.", "It sounds busy.", "I bet that was interesting.", "", "", ""]
QUESTION_STEMS = ["What did you {v} there", "Who did you {v} with", "How long did you stay at the {p}",
                  "Do you often go to the {p}", "What was the best part", "Would you go to the {p} again",
                  "How did your {r} like it", "What do you usually do with your {r}", "Is the {p} far from home",
                  "Did you take any photos at the {p}", "What time did you get home", "Was it crowded",
                  "What else do you enjoy besides {t}", "How often do you have {t}", "Who taught you {t}",
                  "When did you start with {t}", "Does your {r} like {t} too", "Where do you usually have {t}"]


def _exchange(rng: random.Random, style: str) -> tuple[str, str, str]:
    """(learner message, tutor reply, error type) for one exchange."""
    place, person, thing, when = rng.choice(PLACES), rng.choice(PEOPLE), rng.choice(THINGS), rng.choice(TIMES)
    kind = rng.randrange(4)
    if kind == 0:
        verb = rng.choice(["go", "come", "drive", "run", "ride"])
        past = IRREGULAR_PAST[verb]
        learner = f"{when.capitalize()} I {verb} to the {place} with my {person}"
        fixed, error = f"you {past} to the {place} with your {person} {when}", "past_tense"
        hint = "what happened " + when
    elif kind == 1:
        noun = rng.choice(sorted(NOUN_PLURALS))
        n = rng.choice(["two", "three", "four", "five", "many"])
        learner = f"I have {n} {noun} and I like {thing} very much"
        fixed, error = f"you have {n} {NOUN_PLURALS[noun]} and you like {thing}", "plural"
        hint = "how many there are"
    elif kind == 2:
        verb = rng.choice(sorted(THIRD_PERSON))
        learner = f"My {person} {verb} {thing} every weekend"
        fixed, error = f"your {person} {THIRD_PERSON[verb]} {thing} every weekend", "agreement"
        hint = f"who we are talking about: your {person}"
    else:
        learner = f"I am agree that {thing} is more better than {rng.choice(THINGS)}"
        fixed, error = f"you agree that {thing} is better", "verb_form"
        hint = "the word agree"
    learner += rng.choice([".", "", "!", " :)"])
    question = rng.choice(QUESTION_STEMS).format(v=rng.choice(["do", "see", "eat", "buy"]), p=place, r=person,
                                                 t=thing) + "?"
    opener = rng.choice(OPENERS)
    if style == "recast":
        reply = f"{opener} {fixed}? {rng.choice(COMMENTS)} {question}"
    elif style == "elicitation":
        reply = f"{opener} do you mean {fixed}? {question}"
    elif style == "expansion":
        reply = f"{opener} so {fixed}, and it was a good time for both of you. {rng.choice(COMMENTS)} {question}"
    else:
        reply = f"{opener} think about {hint} here. So {fixed}? {question}"
    reply = " ".join(reply.split())
    return learner, reply[0].upper() + reply[1:], error


def make_row(rng: random.Random, index: int) -> dict:
    style = STYLES[index % len(STYLES)]
    level = rng.choice(LEVELS)
    messages = [{"role": "system", "content": system_prompt(level)}]
    errors = []
    for _ in range(rng.choices((1, 2, 3), weights=(6, 3, 1))[0]):
        learner, reply, error = _exchange(rng, style)
        r = rng.random()
        if r < 0.015:
            reply = reply.replace("you ", "**you** ", 1)
        elif r < 0.035:
            reply = "The correct form is: " + reply
        elif r < 0.05 and "I have" in learner:
            reply = reply.replace("you have", "I have", 1)
        messages += [{"role": "user", "content": learner}, {"role": "assistant", "content": reply}]
        errors.append(error)
    row = {"messages": messages,
           "metadata": {"source": rng.choice(["synth-local", "synth-remote", "stage2"]), "style": style,
                        "error_type": errors[0], "generator": "benchmarks/data_pipeline.py",
                        "prompt": f"tutor-{level}-v1", "lane": rng.choice(["local", "openrouter"]),
                        "model": rng.choice(["qwen3-8b", "smollm2-135m", "gpt-4o-mini"]), "level": level,
                        "index": index}}
    row["metadata"]["content_hash"] = content_hash(row)
    return row


BROKEN = ['{"messages": [{"role": "user", "content": "hi"}', '{"messages": [{"role": "bot", "content": "hi"}], '
          '"metadata": {}}', '{"messages": [{"role": "user", "content": "I goed"}], "metadata": {}}',
          '{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "?"}], "metadata": {}}']


def generate(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    written: list[str] = []
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            r = rng.random()
            if written and r < 0.03:
                line = rng.choice(written[-5000:])
            elif written and r < 0.05:
                row = json.loads(rng.choice(written[-5000:]))
                last = row["messages"][-1]
                last["content"] = last["content"].rstrip("?") + " today?"
                row["metadata"]["content_hash"] = content_hash(row)
                line = json.dumps(row, ensure_ascii=False)
            elif r < 0.053:
                line = rng.choice(BROKEN)
            else:
                line = json.dumps(make_row(rng, i), ensure_ascii=False)
                written.append(line)
            fh.write(line + "\n")


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children (the audit's worker processes)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return time.process_time()
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def time_baseline(path: Path) -> float:
    start = time.perf_counter()
    loads = json.loads
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                loads(line)
            except ValueError:  # the broken lines; a bare loop still has to survive them
                pass
    return time.perf_counter() - start


def time_pipeline(path: Path, near: bool, workers: int | None) -> tuple[float, object]:
    from train.data.audit import audit_path

    start = time.perf_counter()
    report = audit_path(path, near=near, workers=workers)
    return time.perf_counter() - start, report


def time_gate_only(path: Path) -> float:
    """Only what no pipeline can skip: parse every line and run core.schema.check_row (which
    re-hashes the row to check metadata.content_hash), in one process."""
    from core.jsonl import iter_json_lines
    from core.schema import GateReport, SchemaError, check_row

    start = time.perf_counter()
    for _, row in iter_json_lines(path, GateReport()):
        try:
            check_row(row)
        except SchemaError:
            pass
    return time.perf_counter() - start


def time_separate(path: Path) -> dict[str, float]:
    from core.jsonl import read_jsonl
    from core.schema import GateReport
    from train.data.audit import audit_path
    from train.data.dedup import dedup_files

    out = {}
    start = time.perf_counter()
    for _ in read_jsonl(path, GateReport()):
        pass
    out["validate"] = time.perf_counter() - start
    start = time.perf_counter()
    dedup_files([path])
    out["dedup (exact)"] = time.perf_counter() - start
    start = time.perf_counter()
    audit_path(path, near=False)
    out["audit (no near)"] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time the data pipeline (schema gate + exact dedup + audit, one streaming pass) against a "
        "bare json.loads loop over the same generated file; target: pipeline throughput >= 0.3x the loop's.")
    parser.add_argument("--rows", type=int, default=100_000, help="rows to generate (default 100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each, interleaved; best is used "
                        "(default 3)")
    parser.add_argument("--file", type=Path, help="keep the generated file here (default: a temporary file)")
    parser.add_argument("--near", action="store_true", help="put near-duplicate detection (MinHash + LSH) into the "
                        "timed pipeline (default: it is a separate step, timed once on its own line)")
    parser.add_argument("--no-near", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    parser.add_argument("--no-near-line", action="store_true", help="skip the extra near-duplicate timing")
    parser.add_argument("--workers", type=int, help="worker processes for the pipeline (default: the audit's own "
                        "choice, one per CPU up to 8 for files of 16 MB or more)")
    parser.add_argument("--separate", action="store_true",
                        help="also time validate, exact dedup and audit as three separate passes")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    near = args.near and not args.no_near

    tmp = None
    if args.file:
        path = args.file
    else:
        tmp = tempfile.TemporaryDirectory(prefix="quimbot-bench-")
        path = Path(tmp.name) / "rows.jsonl"
    start = time.perf_counter()
    generate(path, args.rows)
    size = path.stat().st_size
    print(f"generated {args.rows:,} rows ({size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s: {path}")
    from train.data.audit_scan import default_workers

    workers = args.workers or default_workers(size)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}, load average "
          f"{load:.1f} before timing; pipeline workers: {workers}")

    base, pipe, base_cpu, pipe_cpu, report = [], [], [], [], None
    for _ in range(args.repeat):
        cpu = cpu_seconds()
        base.append(time_baseline(path))
        base_cpu.append(cpu_seconds() - cpu)
        cpu = cpu_seconds()
        seconds, report = time_pipeline(path, near=near, workers=args.workers)
        pipe_cpu.append(cpu_seconds() - cpu)
        pipe.append(seconds)
    t_base, t_pipe = min(base), min(pipe)
    total = report.total
    print(f"audit: {total.rows:,} rows accepted, {total.rejected:,} rejected, {total.exact_duplicates:,} exact and "
          f"{total.near_duplicates if total.near_duplicates is not None else '-'} near duplicates, "
          f"artifact score {total.artifact_score:.3f}")
    lines = total.lines
    what = "gate+dedup+audit" + (" incl. near-dup" if near else ", exact dedup")
    print(f"baseline json.loads loop: {t_base:.2f} s  {lines / t_base:>10,.0f} rows/s  {size / t_base / 1e6:6.1f} MB/s")
    print(f"pipeline ({what}): {t_pipe:.2f} s  {lines / t_pipe:>10,.0f} rows/s  {size / t_pipe / 1e6:6.1f} MB/s")
    ratio = t_base / t_pipe
    verdict = "PASS" if ratio >= TARGET else "MISS"
    print(f"ratio pipeline/baseline throughput: {ratio:.2f}x (target >= {TARGET}x) {verdict}")
    print("all runs (s): baseline " + ", ".join(f"{t:.2f}" for t in base) + "; pipeline "
          + ", ".join(f"{t:.2f}" for t in pipe))
    c_base, c_pipe = min(base_cpu), min(pipe_cpu)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU seconds (all processes): baseline {c_base:.2f}, pipeline {c_pipe:.2f} = {c_base / c_pipe:.2f}x the "
          f"baseline's work per row; load average now {load:.1f}")
    if not near and not args.no_near_line:
        cpu = cpu_seconds()
        seconds, near_report = time_pipeline(path, near=True, workers=args.workers)
        cpu = cpu_seconds() - cpu
        print(f"extra, not in the ratio: with near-duplicate detection (MinHash + LSH, 1 run): {seconds:.2f} s  "
              f"{lines / seconds:>10,.0f} rows/s = {t_base / seconds:.2f}x the baseline ({cpu:.2f} CPU s); "
              f"{near_report.total.near_duplicates:,} near duplicates")
    t_gate = time_gate_only(path)
    print(f"for reference, gate only (json.loads + check_row, 1 process): {t_gate:.2f} s  "
          f"{lines / t_gate:>10,.0f} rows/s  = {t_base / t_gate:.2f}x the baseline")
    if args.separate:
        for name, seconds in time_separate(path).items():
            print(f"  separately: {name:<16} {seconds:.2f} s  {lines / seconds:>10,.0f} rows/s")
    if tmp is not None:
        tmp.cleanup()
    return 1 if args.strict and verdict == "MISS" else 0


if __name__ == "__main__":
    sys.exit(main())
