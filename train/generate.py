"""Synthetic generation of tutoring dialogues, with lanes, style rotation and resume.

Entry ``i`` always gets the style ``synth.style_for(i, rotate_every)`` and the same learner
seed, whichever lane writes it, so a resumed run keeps the same boundaries. Every entry ends in
exactly one place: a row in OUT or a rejection (with reasons) in OUT.rejects.jsonl. Resuming
reads both files and continues after the last entry, so no row is lost or written twice, even
after a kill in the middle of a write (a torn last line is cut off and that entry redone).

Lanes, tried in the order given for every entry:
  offline        the programmatic lane (train/synth.py), no model
  <model spec>   any Quimbot backend: ollama:NAME (local lane), gguf:PATH / hf:... (in-process
                 lane), openrouter:NAME or openai:NAME?base_url=... (cloud lane)
A model lane that answers HTTP 402 (no credits) is paused for the rest of the run at once; 429,
5xx, time-outs and dropped connections are retried with exponential backoff a bounded number of
times, then the lane is paused too. When every lane is paused the run stops with its progress
saved (GenerationPaused); running the same command again resumes it.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tutor.backends import GenerationOptions
from tutor.config import Settings
from tutor.detector import suggest_flags
from tutor.errors import BackendError, QuimbotError
from tutor.prompts import LEVELS, system_prompt

from . import synth
from .hashing import content_hash
from .schema import SchemaError, check_row

RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
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

    def params(self) -> dict[str, Any]:
        """What must not change between a run and its resumption (a larger n just extends the run)."""
        return {"rotate_every": self.rotate_every, "seed": self.seed, "generator": synth.GENERATOR}


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

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}


class LaneUnavailable(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def quality_problems(learner: str, reply: str, seed: synth.Seed, style: str, level: str,
                     max_words: int) -> list[str]:
    """Why a generated reply is not good training data (empty list: keep it)."""
    problems = []
    text = (reply or "").strip()
    if not text:
        return ["empty reply"]
    if re.search(r"[*#`]|^\s*[-•]\s", text, re.MULTILINE):
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
    echo = re.sub(r"\byou're\b", "I'm", seed.tutor_form)
    echo = re.sub(r"\byour\b", "my", re.sub(r"\byou\b", "I", echo))
    echo_words = " ".join(re.findall(r"[\w']+", echo.lower())[:3])
    if echo != seed.tutor_form and echo_words.split()[:1] in (["i"], ["my"], ["i'm"]) and echo_words in lowered:
        problems.append(f"echoes the learner's first person ('{echo_words}')")
    return problems


class OfflineLane:
    name = "offline"

    def make(self, index: int, cfg: GenerateConfig) -> tuple[dict, list[str]]:
        row = synth.make_row(index, cfg.seed, cfg.rotate_every)
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

    def __init__(self, spec: str, settings: Settings, sleep: Callable[[float], None] = time.sleep):
        from tutor.backends import load_backend

        self.name = spec
        self.backend = load_backend(spec, settings)
        self.sleep = sleep

    def prompt(self, seed: synth.Seed, style: str) -> list[dict[str, str]]:
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
        reply = reply.strip().strip('"').strip()
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
        delay = cfg.backoff_s
        for attempt in range(cfg.retries + 1):
            try:
                return "".join(chunk.text for chunk in self.backend.stream(messages, options))
            except BackendError as exc:
                if exc.status == 402:
                    raise LaneUnavailable(f"out of credits (HTTP 402): {exc}") from exc
                retryable = exc.status in RETRYABLE or exc.status is None
                if not retryable or attempt == cfg.retries:
                    raise LaneUnavailable(f"{exc} (after {attempt + 1} attempt(s))") from exc
                self.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")


def _lane_kind(spec: str) -> str:
    engine = spec.split(":", 1)[0]
    return {"ollama": "local", "openrouter": "cloud", "openai": "cloud", "gguf": "in-process",
            "hf": "in-process"}.get(engine, engine)


def _entry_index(line: bytes) -> int:
    record = json.loads(line)
    return int(record["metadata"]["index"] if "metadata" in record else record["index"])


def _scan(path: Path) -> set[int]:
    """Entry indices already in a JSONL file; a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return set()
    done: set[int] = set()
    with open(path, "rb+") as fh:
        good_end = 0
        for line in iter(fh.readline, b""):
            try:
                done.add(_entry_index(line))
            except (ValueError, KeyError, TypeError):
                if line.endswith(b"\n"):
                    raise QuimbotError(f"{path}: the line at byte {good_end} is not a generated entry; this file "
                                       "was not written by `quimbot data generate`.") from None
                break  # a torn last line: the entry is generated again
            good_end = fh.tell()
        fh.truncate(good_end)
    return done


def run_generation(cfg: GenerateConfig, settings: Settings | None = None, progress: bool = True,
                   sleep: Callable[[float], None] = time.sleep) -> GenerationReport:
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
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
        lanes.append(OfflineLane() if spec == "offline" else ModelLane(spec, settings or Settings(), sleep))
    active = list(lanes)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.n, initial=start, desc="generate", unit="entry")
    with open(out, "a", encoding="utf-8") as rows_fh, open(rejects_path, "a", encoding="utf-8") as rejects_fh:
        try:
            for index in range(start, cfg.n):
                while True:
                    if not active:
                        report.next_index = index
                        raise GenerationPaused(
                            f"every lane is unavailable at entry {index} of {cfg.n} "
                            f"({'; '.join(f'{k}: {v}' for k, v in report.paused_lanes.items())}). Progress is saved "
                            f"in {out}; run the same command again to resume.")
                    lane = active[0]
                    try:
                        row, problems = lane.make(index, cfg)
                        break
                    except LaneUnavailable as exc:
                        report.paused_lanes[lane.name] = exc.reason
                        active.pop(0)
                row["metadata"]["content_hash"] = content_hash(row)
                if not problems:
                    try:
                        check_row(row)
                    except SchemaError as exc:
                        problems = [f"schema: {exc}"]
                if problems:
                    rejects_fh.write(json.dumps({"index": index, "lane": lane.name, "style": row["metadata"]["style"],
                                                 "problems": problems, "row": row}, ensure_ascii=False) + "\n")
                    rejects_fh.flush()
                    report.rejected += 1
                    report.reject_reasons.update(p.split(":")[0] for p in problems)
                else:
                    rows_fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    rows_fh.flush()
                    report.written += 1
                    report.by_lane[lane.name] += 1
                    report.by_style[row["metadata"]["style"]] += 1
                if index % 200 == 0:
                    os.fsync(rows_fh.fileno())
                    os.fsync(rejects_fh.fileno())
                report.next_index = index + 1
                if bar is not None:
                    bar.update(1)
            report.finished = True
        finally:
            rows_fh.flush()
            os.fsync(rows_fh.fileno())
            rejects_fh.flush()
            os.fsync(rejects_fh.fileno())
            if bar is not None:
                bar.close()
    return report
