"""Synthetic generation of tutoring dialogues, with lanes, style rotation and resume.

Entry ``i`` always gets the style ``synth.style_for(i, rotate_every)`` and the same learner
seed, whichever lane writes it, so a resumed run keeps the same boundaries. Every entry ends in
exactly one place: a row in OUT or a rejection (with reasons) in OUT.rejects.jsonl. Resuming
reads both files and continues after the last entry, so no row is lost or written twice, even
after a kill in the middle of a write (a torn last line is cut off and that entry redone).

Lanes, tried in the order given for every entry:
  offline        the programmatic lane (train/data/synth.py), no model
  offline-essay  longer real-learner-style sentences, several errors (train/data/synth_essay.py), no model
  <model spec>   any Quimbot backend: ollama:NAME (local lane), gguf:PATH / hf:... (in-process
                 lane), openrouter:NAME or openai:NAME?base_url=... (cloud lane)
A model lane that answers HTTP 402 (no credits) is paused for the rest of the run at once; 429,
5xx, time-outs and dropped connections are retried with exponential backoff a bounded number of
times, then the lane is paused too. When every lane is paused the run stops with its progress
saved (GenerationPaused); running the same command again resumes it. Concurrency (``--concurrency N``)
and each model lane's throttle: see train.data.lane_throttle.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core.errors import BackendError, QuimbotError
from core.files import check_input, output_path
from core.hashing import content_hash
from core.schema import SchemaError, check_row
from train.data import synth, synth_essay
from train.data.lane_throttle import RETRYABLE, SLOW_DOWN, LaneThrottle, lane_concurrency, retry_after
from train.data.synth_seed import Seed
from tutor.backends import GenerationOptions
from tutor.config import Settings
from tutor.detector import suggest_flags
from tutor.prompts import LEVELS, system_prompt
from tutor.teaching.replies import echoes_tutor_form, has_markup

TIMING_FIELDS = ("elapsed_s", "rows_per_s", "entries_per_s")
STYLE_GUIDES = {
    "recast": "repeat what they meant with the correct form, naturally, as part of your reply",
    "elicitation": "check what they meant with a short question that contains the correct form (\"Do you mean ...?\")",
    "expansion": "say what they meant with the correct form and add one friendly comment of your own",
    "metalinguistic": "give a tiny hint (a few words, no grammar terms), then say the correct form",
}


class GenerationPaused(QuimbotError):
    """Every lane is unavailable; progress is saved and the same command resumes."""


@dataclass
class GenerateConfig:
    out: Path
    n: int
    lanes: list[str] = field(default_factory=lambda: ["offline"])
    rotate_every: int = 2500
    seed: int = 0
    retries: int = 3
    backoff_s: float = 2.0
    max_words: int = 60
    temperature: float = 0.8
    concurrency: int = 1          # requests in flight per model lane (not part of params: resumable either way)
    max_retry_after_s: float = 300.0  # a Retry-After longer than this pauses the lane instead of waiting

    def params(self) -> dict[str, Any]:
        """What must not change between a run and its resumption (a larger n just extends the run)."""
        generator = synth_essay.GENERATOR if "offline-essay" in self.lanes else synth.GENERATOR
        return {"rotate_every": self.rotate_every, "seed": self.seed, "generator": generator}


@dataclass
class GenerationReport:
    out: str
    written: int = 0
    rejected: int = 0
    resumed_from: int = 0
    next_index: int = 0
    by_lane: Counter = field(default_factory=Counter)
    by_style: Counter = field(default_factory=Counter)
    reject_reasons: Counter = field(default_factory=Counter)
    paused_lanes: dict[str, str] = field(default_factory=dict)
    finished: bool = False
    concurrency: int = 1
    slowdowns: dict[str, int] = field(default_factory=dict)  # 429/503 answers per lane
    elapsed_s: float = 0.0
    rows_per_s: float = 0.0
    entries_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}


class LaneUnavailable(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


THINKING = re.compile(r"^\s*<think>.*?(?:</think>\s*|$)", re.DOTALL)


def strip_thinking(text: str) -> str:
    """A reply without the reasoning block thinking models (Qwen3, DeepSeek-R1 ...) put first:
    ``<think>...</think>`` (empty when only thinking came back before the token limit)."""
    return THINKING.sub("", text, count=1) if text.lstrip().startswith("<think>") else text


def quality_problems(learner: str, reply: str, seed: Seed, style: str, level: str,
                     max_words: int) -> list[str]:
    """Why a generated reply is not good training data (empty list: keep it)."""
    problems = []
    text = (reply or "").strip()
    if not text:
        return ["empty reply"]
    if has_markup(text):
        problems.append("markdown")
    if len(text.split()) > max_words:
        problems.append(f"longer than {max_words} words")
    for s in suggest_flags(text, learner, level):
        if s.reason == "red_pen" or (s.reason == "rule_dump" and style != "metalinguistic"):
            problems.append(f"{s.reason}: {s.evidence}")
        elif s.reason == "no_follow_up":
            problems.append("no follow-up question")
    lowered = " ".join(re.findall(r"[\w']+", text.lower()))
    if seed.right and " ".join(re.findall(r"[\w']+", seed.right.lower())) not in lowered:
        problems.append(f"the correct form '{seed.right}' is not in the reply")
    # The learner's first person said back as the tutor's own ("Oh, I have two brothers?").
    echo_words = echoes_tutor_form(seed.tutor_form, lowered)
    if echo_words:
        problems.append(f"echoes the learner's first person ('{echo_words}')")
    return problems


class OfflineLane:  # offline (short frames, synth.py) or offline-essay (synth_essay.py)
    def __init__(self, name: str = "offline"):
        self.name, self.module = name, synth_essay if name == "offline-essay" else synth

    def make(self, index: int, cfg: GenerateConfig) -> tuple[dict, list[str]]:
        row = self.module.make_row(index, cfg.seed, cfg.rotate_every)
        return row, _row_problems(row, cfg)


def _row_problems(row: dict, cfg: GenerateConfig) -> list[str]:
    problems = []
    messages = row["messages"]
    for user, reply in zip(messages[1::2], messages[2::2]):
        for s in suggest_flags(reply["content"], user["content"], row["metadata"]["level"]):
            if s.reason in ("red_pen", "no_follow_up", "missed_error") or (
                    s.reason == "rule_dump" and row["metadata"]["style"] != "metalinguistic"):
                problems.append(f"{s.reason}: {s.evidence}")
        if len(reply["content"].split()) > cfg.max_words:
            problems.append(f"longer than {cfg.max_words} words")
    return problems


class ModelLane:
    """A lane served by any Quimbot backend (Ollama, llama-cpp, transformers, OpenAI-compatible)."""

    def __init__(self, spec: str, settings: Settings, sleep: Callable[[float], None] = time.sleep,
                 concurrency: int = 1, clock: Callable[[], float] = time.monotonic):
        from tutor.backends import load_backend

        self.name = spec
        self.backend = load_backend(spec, settings)
        self.sleep = sleep
        self.limit = lane_concurrency(spec, concurrency)
        self.throttle = LaneThrottle(self.limit, clock, sleep)

    def prompt(self, seed: Seed, style: str) -> list[dict[str, str]]:
        if seed.error_type:
            error = f'They made a mistake: "{seed.wrong}" should be "{seed.right}".'
            how = STYLE_GUIDES[style]
        else:
            error = "They made no mistake."
            how = "react naturally"
        instruction = (
            f'The learner said: "{seed.learner}"\n{error}\n'
            f"Write the tutor's reply in one or two short sentences: {how}. Speak to the learner (\"you\"); "
            "never repeat their mistake, never explain grammar, no lists, no markdown. End with one question "
            "about what they said. Reply with the tutor's words only.")
        return [{"role": "system", "content": "You write replies for a friendly English conversation tutor."},
                {"role": "user", "content": instruction}]

    def make(self, index: int, cfg: GenerateConfig) -> tuple[dict, list[str]]:
        rng = random.Random(f"{cfg.seed}:{index}")
        style = synth.style_for(index, cfg.rotate_every)
        level = rng.choice(LEVELS)
        seed = synth.make_seed(rng)
        prompt = self.prompt(seed, style)
        reply = self._ask(prompt, GenerationOptions(temperature=cfg.temperature, max_tokens=120,
                                                     seed=cfg.seed * 1_000_003 + index), cfg)
        reply = strip_thinking(reply).strip().strip('"').strip()
        row = {"messages": [{"role": "system", "content": system_prompt(level)},
                            {"role": "user", "content": seed.learner},
                            {"role": "assistant", "content": reply}],
               "metadata": {"source": "synthetic-model", "lane": _lane_kind(self.name), "model": self.name,
                            "generator": synth.GENERATOR, "prompt": prompt[-1]["content"], "style": style,
                            "level": level, "index": index, "seed": cfg.seed, "error_type": seed.error_type,
                            "error": {"wrong": seed.wrong, "right": seed.right},
                            "turn_errors": [seed.error_type]}}
        return row, quality_problems(seed.learner, reply, seed, style, level, cfg.max_words)

    def _ask(self, messages: list[dict], options: GenerationOptions, cfg: GenerateConfig) -> str:
        """One reply, through the lane's throttle; at most ``cfg.retries`` retries. Raises
        LaneUnavailable (and pauses the lane for every worker) when the lane cannot go on."""
        delay = cfg.backoff_s
        for attempt in range(cfg.retries + 1):
            if not self.throttle.acquire():
                raise LaneUnavailable(self.throttle.paused or "paused")
            ok, backoff = False, 0.0
            try:
                text = "".join(chunk.text for chunk in self.backend.stream(messages, options))
                ok = True
                return text
            except BackendError as exc:
                if exc.status == 402:
                    self._give_up(f"out of credits (HTTP 402): {exc}", exc)
                retryable = exc.status in RETRYABLE or exc.status is None
                if not retryable or attempt == cfg.retries:
                    self._give_up(f"{exc} (after {attempt + 1} attempt(s))", exc)
                asked = retry_after(exc)
                if asked is not None and asked > cfg.max_retry_after_s:
                    self._give_up(f"{exc} (the server asks to wait {asked:.0f} s, longer than "
                                  f"max_retry_after_s = {cfg.max_retry_after_s:g})", exc)
                wait = max(delay, asked or 0.0)
                if exc.status in SLOW_DOWN:
                    self.throttle.slow_down(wait)  # every worker of the lane waits, fewer at once
                else:
                    backoff = wait  # this request alone backs off, after giving its slot back
                delay *= 2
            finally:
                self.throttle.release(ok)
            if backoff:
                self.sleep(backoff)
        raise AssertionError("unreachable")

    def _give_up(self, reason: str, exc: BaseException):
        self.throttle.pause(reason)
        raise LaneUnavailable(reason) from exc


def _lane_kind(spec: str) -> str:
    engine = spec.split(":", 1)[0]
    return {"ollama": "local", "openrouter": "cloud", "openai": "cloud", "gguf": "in-process",
            "hf": "in-process"}.get(engine, engine)


def _entry_index(line: bytes) -> int:
    record = json.loads(line)
    return int(record["metadata"]["index"] if "metadata" in record else record["index"])


def _scan(path: Path) -> set[int]:
    """Entry indices already in a JSONL file; a torn last line (killed mid-write) is cut off."""
    if not path.exists() and not path.is_symlink():
        return set()
    check_input(path)  # a named pipe, a folder, a symbolic link loop: a clear error, never a hang
    done: set[int] = set()
    with open(path, "rb+") as fh:
        good_end = 0
        for line in iter(fh.readline, b""):
            try:
                done.add(_entry_index(line))
            except (ValueError, KeyError, TypeError, RecursionError):
                if line.endswith(b"\n"):
                    raise QuimbotError(f"{path}: the line at byte {good_end} is not a generated entry; this file "
                                       "was not written by `quimbot data generate`.") from None
                break  # a torn last line: the entry is generated again
            good_end = fh.tell()
        fh.truncate(good_end)
    return done


@dataclass
class _Outcome:
    index: int
    lane: str
    row: dict
    problems: list[str]


class _Inline:
    """A stand-in for the thread pool when one request at a time is all the lanes can use."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by .result()
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def run_generation(cfg: GenerateConfig, settings: Settings | None = None, progress: bool = True,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> GenerationReport:
    if cfg.concurrency < 1:
        raise QuimbotError(f"concurrency must be at least 1 (it is {cfg.concurrency}).")
    out = output_path(cfg.out)  # not a folder, not a link loop; missing folders are created
    rejects_path = out.with_name(out.name + ".rejects.jsonl")
    params_path = out.with_name(out.name + ".params.json")
    if params_path.exists():
        recorded = json.loads(params_path.read_text())
        if recorded != cfg.params():
            raise QuimbotError(f"{out} was generated with {recorded}, not {cfg.params()}: write to a new file, "
                               "or delete the old one and its .params.json / .rejects.jsonl to start over.")
    elif out.exists() and out.stat().st_size:
        raise QuimbotError(f"{out} exists and was not written by `quimbot data generate`; choose another --out.")
    params_path.write_text(json.dumps(cfg.params(), indent=2))
    done = _scan(out) | _scan(rejects_path)
    start = max(done) + 1 if done else 0
    report = GenerationReport(out=str(out), resumed_from=start, next_index=start)
    lanes: list[Any] = []
    for spec in cfg.lanes:
        lanes.append(OfflineLane(spec) if spec in ("offline", "offline-essay") else
                     ModelLane(spec, settings or Settings(), sleep, cfg.concurrency, clock))
    workers = max([lane.limit for lane in lanes if isinstance(lane, ModelLane)], default=1)
    report.concurrency = workers
    stopping = threading.Event()
    pause_lock = threading.Lock()

    def attempt(index: int) -> _Outcome | None:
        """Entry ``index`` from the first lane that can make it; None when no lane is left."""
        for lane in lanes:
            throttle = getattr(lane, "throttle", None)
            if stopping.is_set() or (throttle is not None and throttle.paused is not None):
                continue
            try:
                row, problems = lane.make(index, cfg)
            except LaneUnavailable as exc:
                if not stopping.is_set():
                    with pause_lock:
                        report.paused_lanes.setdefault(lane.name, exc.reason)
                continue
            row["metadata"]["content_hash"] = content_hash(row)
            if not problems:
                try:
                    check_row(row)
                except SchemaError as exc:
                    problems = [f"schema: {exc}"]
            return _Outcome(index, lane.name, row, problems)
        return None

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.n, initial=start, desc="generate", unit="entry")
    t0 = clock()
    shown = t0
    pool: Any = ThreadPoolExecutor(workers, thread_name_prefix="generate") if workers > 1 else _Inline()
    window: deque[Future] = deque()
    next_submit = start
    ahead = 4 * workers if workers > 1 else 1  # entries submitted beyond the next one to write
    with open(out, "a", encoding="utf-8") as rows_fh, open(rejects_path, "a", encoding="utf-8") as rejects_fh:
        try:
            for index in range(start, cfg.n):
                while next_submit < cfg.n and next_submit - index < ahead:
                    window.append(pool.submit(attempt, next_submit))
                    next_submit += 1
                outcome = window.popleft().result()
                if outcome is None:
                    report.next_index = index
                    raise GenerationPaused(
                        f"every lane is unavailable at entry {index} of {cfg.n} "
                        f"({'; '.join(f'{k}: {v}' for k, v in report.paused_lanes.items())}). Progress is saved "
                        f"in {out}; run the same command again to resume.")
                _write(outcome, rows_fh, rejects_fh, report)
                if index % 200 == 0:
                    os.fsync(rows_fh.fileno())
                    os.fsync(rejects_fh.fileno())
                report.next_index = index + 1
                if bar is not None:
                    bar.update(1)
                    now = clock()
                    if now - shown >= 0.5 or index + 1 == cfg.n:
                        shown = now
                        bar.set_postfix_str(_progress_text(report, now - t0, lanes), refresh=False)
            report.finished = True
        finally:
            stopping.set()
            for lane in lanes:  # nothing new is sent; what is in flight finishes (and is redone on resume)
                if isinstance(lane, ModelLane):
                    lane.throttle.pause("the run stopped")
            for future in window:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            rows_fh.flush()
            os.fsync(rows_fh.fileno())
            rejects_fh.flush()
            os.fsync(rejects_fh.fileno())
            if bar is not None:
                bar.close()
            _timing(report, clock() - t0, lanes)
    return report


def _write(outcome: _Outcome, rows_fh, rejects_fh, report: GenerationReport) -> None:
    row, problems = outcome.row, outcome.problems
    if problems:
        rejects_fh.write(json.dumps({"index": outcome.index, "lane": outcome.lane, "style": row["metadata"]["style"],
                                     "problems": problems, "row": row}, ensure_ascii=False) + "\n")
        rejects_fh.flush()
        report.rejected += 1
        report.reject_reasons.update(p.split(":")[0] for p in problems)
    else:
        rows_fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        rows_fh.flush()
        report.written += 1
        report.by_lane[outcome.lane] += 1
        report.by_style[row["metadata"]["style"]] += 1


def _progress_text(report: GenerationReport, elapsed: float, lanes: list[Any]) -> str:
    """What the bar shows beside entries/s: rows/s, the reject rate, and a lane held back by 429s."""
    made = report.written + report.rejected
    parts = [f"{report.written / elapsed if elapsed > 0 else 0.0:.1f} rows/s",
             f"rejected {100 * report.rejected / made if made else 0.0:.1f}%"]
    for lane in lanes:
        throttle = getattr(lane, "throttle", None)
        if throttle is not None and throttle.paused is None and throttle.allowed < throttle.limit:
            parts.append(f"{lane.name.split('?')[0]} {throttle.allowed}/{throttle.limit} in flight (429)")
    paused = len(report.paused_lanes)
    if paused:
        parts.append(f"{paused} lane(s) paused")
    return ", ".join(parts)


def _timing(report: GenerationReport, elapsed: float, lanes: list[Any]) -> None:
    made = report.written + report.rejected
    report.elapsed_s = round(elapsed, 3)
    report.rows_per_s = round(report.written / elapsed, 3) if elapsed > 0 else 0.0
    report.entries_per_s = round(made / elapsed, 3) if elapsed > 0 else 0.0
    report.slowdowns = {lane.name: lane.throttle.slowdowns for lane in lanes
                        if isinstance(lane, ModelLane) and lane.throttle.slowdowns}
