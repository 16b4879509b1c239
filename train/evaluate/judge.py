"""An optional LLM judge of a tutor reply: any Quimbot backend rates it from 1 to 5 on a rubric adapted from
MRBench / the BEA 2025 shared task (mistake identification, guidance, explicitness rated for L2 recasts,
coherence, tone, human-likeness); ``parse_judge`` reads its answer and never raises."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

JUDGE_DIMENSIONS = {
    "mistake_identification": "Does the reply notice the learner's mistake? With no mistake: 5 when it invents none.",
    "guidance": "Does the reply show the correct form, or steer the learner towards it, without a lecture?",
    "explicitness": "Rated for second-language conversation: 5 = the correct form modelled naturally inside the "
                    "reply, from the tutor's side (a recast); 3 = a hint or 'do you mean...?'; 1 = red-pen "
                    "correction, a grammar rule, or no correct form at all.",
    "coherence": "Does the reply follow from what the learner said and ask a relevant question that moves on?",
    "tone": "Is it warm and encouraging, never patronising?",
    "human_likeness": "Does it sound like a friendly person talking, short enough for the learner's level?",
}
JUDGE_SYSTEM = (
    "You are an experienced teacher of English as a second language. You rate one reply of a conversation "
    "tutor to a learner. Rate each dimension from 1 (poor) to 5 (excellent):\n"
    + "\n".join(f"- {k}: {v}" for k, v in JUDGE_DIMENSIONS.items())
    + "\nAnswer with one JSON object only, for example: {"
    + ", ".join(f'"{k}": 4' for k in JUDGE_DIMENSIONS) + ', "comment": "one short sentence"}'
)


@dataclass(frozen=True)
class JudgeResult:
    scores: dict[str, float] | None  # dimension -> 1..5; None when the judge's answer was unusable
    overall: float | None            # mean of (score - 1) / 4, in [0, 1]; None unless every dimension was scored
    reason: str | None = None        # why scores is None, or which dimensions were missing
    raw: str = ""


def judge_messages(learner: str, reply: str, corrections: Sequence[str] | None = None,
                   context: Sequence[Mapping[str, str]] | None = None, level: str = "intermediate") -> list[dict]:
    history = "\n".join(f"{'Tutor' if m.get('role') == 'assistant' else 'Learner'}: {m.get('content', '')}"
                        for m in (context or []))
    mistake = " / ".join(corrections) if corrections else "none known"
    user = (f"Learner level: {level}\n" + (f"Earlier conversation:\n{history}\n" if history else "")
            + f"Learner: {learner}\nCorrect form(s) a good reply would model: {mistake}\n"
            f"Tutor reply to rate: {reply}\n\nAnswer with the JSON object only.")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def _key(name: str) -> str:
    return re.sub(r"[^a-z]+", "_", name.lower()).strip("_")


def _number(value: object) -> float | None:
    if isinstance(value, dict):
        value = next((value[k] for k in ("score", "rating", "value") if k in value), None)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = re.match(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*5)?\s*$", str(value))
    return float(m.group(1)) if m else None


def _objects(text: str):
    decoder = json.JSONDecoder()
    for candidate in (text, re.sub(r",\s*([}\]])", r"\1", text.replace("'", '"'))):
        for m in re.finditer(r"\{", candidate):
            try:
                obj, _ = decoder.raw_decode(candidate, m.start())
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj
                for inner in ("scores", "ratings", "rating", "score"):
                    if isinstance(obj.get(inner), dict):
                        yield obj[inner]


def parse_judge(text: object) -> JudgeResult:
    """Scores from a judge's answer: JSON (bare, fenced, in prose, single-quoted, trailing commas) or
    "name: 4" lines. Never raises; unusable output gives ``scores=None`` and a reason."""
    raw = text if isinstance(text, str) else ""
    try:
        if not isinstance(text, str) or not text.strip():
            return JudgeResult(None, None, "the judge returned nothing", raw)
        found: dict[str, float] = {}
        rejected: list[str] = []
        for obj in _objects(text):
            for name, value in obj.items():
                key = _key(str(name))
                if key in JUDGE_DIMENSIONS and key not in found:
                    number = _number(value)
                    if number is not None and 1 <= number <= 5:
                        found[key] = number
                    else:
                        rejected.append(f"{key}={value!r}")
            if found:
                break
        if not found:
            for key in JUDGE_DIMENSIONS:
                pattern = key.replace("_", r"[\s_-]*")
                m = re.search(rf"{pattern}\W{{0,4}}(\d(?:\.\d+)?)\s*(?:/\s*5)?", text, re.IGNORECASE)
                if m and 1 <= float(m.group(1)) <= 5:
                    found[key] = float(m.group(1))
        if not found:
            why = f"scores out of range or not numbers: {', '.join(rejected[:3])}" if rejected else \
                "no scores for any rubric dimension in the judge's answer"
            return JudgeResult(None, None, why, raw)
        missing = [k for k in JUDGE_DIMENSIONS if k not in found]
        if missing:  # comparable only when complete: keep what was given, but no overall figure
            return JudgeResult(found, None, f"missing: {', '.join(missing)}", raw)
        return JudgeResult(found, sum((v - 1) / 4 for v in found.values()) / len(found), None, raw)
    except Exception as exc:  # a judge's answer must never crash an evaluation run
        return JudgeResult(None, None, f"unparseable judge output ({type(exc).__name__})", raw)


def judge_reply(backend, learner: str, reply: str, corrections: Sequence[str] | None = None,
                context: Sequence[Mapping[str, str]] | None = None, level: str = "intermediate",
                options=None) -> JudgeResult:
    """Ask any Quimbot backend (``tutor.backends.load_backend``) to rate one reply on the rubric.
    A backend failure or an unusable answer gives ``scores=None`` with the reason, never an exception."""
    from tutor.backends import GenerationOptions

    options = options or GenerationOptions.greedy(200, seed=None)
    try:
        text = "".join(chunk.text for chunk in backend.stream(
            judge_messages(learner, reply, corrections, context, level), options))
    except Exception as exc:  # BackendError above all, but one bad call must not end a comparison
        return JudgeResult(None, None, f"the judge backend failed: {exc}", "")
    return parse_judge(text)
