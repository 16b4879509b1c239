"""Whole conversations: each model holds dialogues of six learner turns or more, and is scored per turn
with the pedagogy metrics (the dialogue so far is the context) and per dialogue with what single-turn
metrics cannot see.

Two kinds of learner:

- **scripted** (``data/dialogues/scripted.jsonl``): fixed turns, repeatable. Each turn lists its
  corrected forms (tutor's side; ``[]``: no error), may be marked ``recurring`` (an error type the
  learner made before in the dialogue) or carry ``remember`` (words the reply must contain: a question
  about something the learner said earlier).
- **simulated**: personas with a level and a recurring error. Offline, each learner turn is a sentence of
  the offline generator (``train.data.synth``; its error and correction known), a recurring error every
  other turn, opened with a short answer to the tutor's last question. With a model spec
  (``--simulator SPEC``) the model plays the persona and answers the tutor's last question; its errors
  are then found by ``tutor.learner_errors.find_errors``.

Per dialogue: good moves per turn; over-correction (turns with no error that get red pen, grammar terms
or praise of the form); follow-up questions and openers (the first two words) used again within the
dialogue; follow-ups on the learner's topic; memory (``remember`` turns answered); words per reply against
the level's limit; recurring errors taken up again; learner questions answered.

Per model: the means, the share of dialogues with no repeated follow-up, and

    dialogue_score = good_move_rate * (1 - over_correction) * no_repeat_share
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import QuimbotError
from tutor.backends import GenerationOptions, load_backend
from tutor.config import Settings
from tutor.fresh import default_tries, fresh_stream, reply_text
from tutor.spelling import Fix, spelled_stream
from tutor.spelling import enabled as spelling_enabled
from tutor.prompts import LEVELS, system_prompt

SCRIPTED_PATH = Path(__file__).resolve().parents[2] / "data" / "dialogues" / "scripted.jsonl"
MIN_TURNS = 6
_WORD = re.compile(r"[a-z']+")


class DialogueError(QuimbotError):
    """A scripted-dialogue file or an option that cannot be used."""


@dataclass
class LearnerTurn:
    learner: str
    corrections: list[str] | None  # None: unknown, find_errors looks for errors
    error_type: str | None = None
    recurring: bool = False
    remember: list[str] = field(default_factory=list)


@dataclass
class Script:
    id: str
    level: str
    topic: str
    turns: list[LearnerTurn]


def load_scripts(path: str | Path = SCRIPTED_PATH) -> list[Script]:
    """Scripted dialogues, each checked: a bad line is a DialogueError with file:line and the reason."""
    scripts = []
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DialogueError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
            turns = [LearnerTurn(t["learner"], list(t["corrections"]), t.get("error_type"), bool(t.get("recurring")),
                                 list(t.get("remember", []))) for t in row["turns"]]
            script = Script(str(row["id"]), row.get("level", "intermediate"), row.get("topic", ""), turns)
        except (ValueError, KeyError, TypeError) as exc:
            raise DialogueError(f"{where}: not a scripted dialogue ({type(exc).__name__}: {exc}); each line is "
                                '{"id", "level", "topic", "turns": [{"learner", "corrections", ...}]}') from None
        if len(turns) < MIN_TURNS:
            raise DialogueError(f"{where}: {len(turns)} learner turns; a dialogue needs at least {MIN_TURNS}.")
        if script.level not in LEVELS:
            raise DialogueError(f"{where}: level {script.level!r} is not one of {', '.join(LEVELS)}.")
        scripts.append(script)
    if not scripts:
        raise DialogueError(f"{path}: no dialogues.")
    return scripts


# ------------------------------------------------------------------------------------------ learners

_ANSWERS = ("Yes! ", "Not really. ", "Hmm, maybe. ", "Yes, a lot. ", "Haha, yes. ", "No, not often. ")


@dataclass
class Persona:
    id: str
    level: str
    error_type: str  # the recurring error


def personas(n: int, seed: int = 0) -> list[Persona]:
    """``n`` offline personas, deterministic in ``seed``: a level and an error type the generator makes."""
    from train.data.synth import make_seed

    rng = random.Random(f"personas:{seed}")
    kinds = sorted({make_seed(random.Random(i)).error_type for i in range(400)} - {None})
    return [Persona(f"persona-{i + 1}", rng.choice(LEVELS), rng.choice(kinds)) for i in range(n)]


def offline_learner(persona: Persona, turns: int, seed: int = 0) -> Callable[[int, str | None], LearnerTurn]:
    """The learner's turn ``i`` after the tutor's last reply: the persona's error on even turns (from the
    second one on it is recurring), a correct sentence on odd ones; deterministic in (persona, seed)."""
    from train.data.synth import make_seed

    rng = random.Random(f"{seed}:{persona.id}")

    def turn(i: int, last_reply: str | None) -> LearnerTurn:
        with_error = i % 2 == 0
        for _ in range(500):  # make_seed draws a frame at random; the persona's error type is one of ~20
            s = make_seed(rng, error_rate=1.0 if with_error else 0.0, lead=False)
            if not with_error or s.error_type == persona.error_type:
                break
        text = s.learner
        if last_reply and last_reply.rstrip().endswith("?"):
            text = rng.choice(_ANSWERS) + text[:1].lower() + text[1:]
        corrections = [telling_form(s.right, s.tutor_form)] if with_error and s.right else []
        return LearnerTurn(text, corrections, s.error_type if with_error else None, with_error and i >= 2)

    return turn


def telling_form(right: str, tutor_form: str) -> str:
    """The corrected words, with a word of the tutor's sentence on each side when they are function words
    only ("has" -> "brother has a"): a lone function word is in any reply and proves nothing."""
    from train.evaluate.corrections import telling

    if telling(right):
        return right
    words, target = tutor_form.split(), right.split()
    for i in range(len(words) - len(target) + 1):
        if [w.strip(".,!?").lower() for w in words[i:i + len(target)]] == [w.lower() for w in target]:
            return " ".join(w.strip(".,!?") for w in words[max(0, i - 1):i + len(target) + 1])
    return tutor_form


def model_learner(spec: str, persona: Persona, settings: Settings,
                  options: GenerationOptions) -> Callable[[int, str | None], LearnerTurn]:
    """A model plays the persona: it answers the tutor's last reply as a learner who makes the persona's
    error. Errors are found with find_errors (corrections unknown)."""
    backend = load_backend(spec, settings)
    brief = (f"You are a {persona.level} learner of English chatting with a tutor. You often make this kind "
             f"of mistake: {persona.error_type.replace('_', ' ')}. Answer the tutor's last message in one or two "
             "short sentences about your own life, with that mistake. Write only your message.")
    history: list[dict[str, str]] = [{"role": "system", "content": brief}]

    def turn(i: int, last_reply: str | None) -> LearnerTurn:
        history.append({"role": "user", "content": last_reply or "Hi! Tell me about your week."})
        text = "".join(c.text for c in backend.stream(history, options)).strip() or "I don't know."
        history.append({"role": "assistant", "content": text})
        return LearnerTurn(text, None)

    return turn


# ------------------------------------------------------------------------------------------ holding

def hold(backend, level: str, learner: Callable[[int, str | None], LearnerTurn], turns: int,
         options: GenerationOptions, fresh_tries: int = 0) -> list[dict[str, Any]]:
    """One dialogue: ``turns`` learner turns, each answered by ``backend`` with the whole dialogue so far,
    through the app's reply path (``tutor.fresh``: a reply that asks again what the tutor asked before is
    generated again, up to ``fresh_tries`` times; ``tutor.spelling``: a misspelling copied from the learner
    is corrected, unless ``QUIMBOT_SPELLING=0``)."""
    messages = [{"role": "system", "content": system_prompt(level)}]
    out, last = [], None
    for i in range(turns):
        t = learner(i, last)
        context = [m for m in messages if m["role"] != "system"]
        messages.append({"role": "user", "content": t.learner})
        asked_again: list[str] = []
        fixed: list[Fix] = []
        last = reply_text(spelled_stream(fresh_stream(backend, messages, options, fresh_tries,
                                                      on_retry=lambda _text, question: asked_again.append(question)),
                                         t.learner, on_fix=fixed.append))
        messages.append({"role": "assistant", "content": last})
        out.append({"learner": t.learner, "reply": last, "corrections": t.corrections, "error_type": t.error_type,
                    "recurring": t.recurring, "remember": t.remember, "context": context,
                    "asked_again": asked_again, "spelling_fixed": [[f.wrong, f.right] for f in fixed]})
    return out


def _opener(reply: str) -> str:
    """The reply's first two words, "your" read as "you" ("Oh, you ..." and "Oh, your ..." open alike)."""
    return " ".join("you" if w == "your" else w for w in _WORD.findall(reply.lower())[:2])


def _mentions(reply: str, words: Sequence[str]) -> bool:
    said = _WORD.findall(reply.lower())
    return any(w2.startswith(w.lower()) for w in words for w2 in said)


def score_dialogue(turns: list[dict[str, Any]], level: str) -> dict[str, Any]:
    """Per-turn pedagogy metrics with the dialogue as context, and the dialogue's own figures."""
    from train.evaluate.pedagogy import learner_asks, score_reply

    metrics = [score_reply(t["reply"], t["learner"], t["corrections"], t["context"], level, t["error_type"])
               for t in turns]
    for t, m in zip(turns, metrics):
        t["metrics"] = m.as_dict()
        t.pop("context", None)
    no_error = [m for m in metrics if m.takes_up_error is None]
    recurring = [m for t, m in zip(turns, metrics) if t["recurring"] and m.takes_up_error is not None]
    probes = [t for t in turns if t["remember"]]
    asked = [m for t, m in zip(turns, metrics) if learner_asks(t["learner"])]
    questions = [m.follow_up_question for m in metrics if m.follow_up_question]
    openers = [_opener(t["reply"]) for t in turns if t["reply"]]
    n = len(metrics)
    return {
        "turns": n,
        "good_move_rate": sum(m.good_move for m in metrics) / n,
        "over_correction": (sum(m.over_correction or m.red_pen for m in no_error) / len(no_error)) if no_error else None,
        "no_error_turns": len(no_error),
        "repeated_follow_ups": len(questions) - len(set(questions)),
        "repeated_openers": len(openers) - len(set(openers)),
        "asked_again_turns": sum(bool(t.get("asked_again")) for t in turns),
        "spelling_fixed_turns": sum(bool(t.get("spelling_fixed")) for t in turns),
        "top_opener": max(set(openers), key=openers.count) if openers else None,
        "on_topic_rate": sum(m.follow_up_on_topic for m in metrics) / n,
        "memory": {"asked": len(probes), "remembered": sum(_mentions(t["reply"], t["remember"]) for t in probes)},
        "words_mean": sum(m.words for m in metrics) / n,
        "too_long_rate": sum(m.too_long for m in metrics) / n,
        "recurring": {"turns": len(recurring), "taken_up": sum(bool(m.takes_up_error) for m in recurring)},
        "questions": {"asked": len(asked), "answered": sum(not m.ignores_question for m in asked)},
    }


def aggregate_dialogues(dialogues: list[dict[str, Any]]) -> dict[str, Any]:
    """A model's figures over its dialogues (over-correction pooled over all turns with no error)."""
    scores = [d["score"] for d in dialogues]
    turns = sum(s["turns"] for s in scores)
    clean = sum(s["no_error_turns"] for s in scores)
    over = sum((s["over_correction"] or 0) * s["no_error_turns"] for s in scores)
    good = sum(s["good_move_rate"] * s["turns"] for s in scores) / turns
    no_repeat = sum(s["repeated_follow_ups"] == 0 for s in scores) / len(scores)
    over_rate = over / clean if clean else 0.0

    def pooled(key: str, a: str, b: str) -> float | None:
        total = sum(s[key][a] for s in scores)
        return sum(s[key][b] for s in scores) / total if total else None

    return {
        "dialogues": len(scores), "turns": turns, "good_move_rate": good, "over_correction": over_rate,
        "no_repeated_follow_up_share": no_repeat,
        "repeated_opener_share": sum(s["repeated_openers"] for s in scores) / turns,
        "asked_again_share": sum(s.get("asked_again_turns", 0) for s in scores) / turns,
        "spelling_fixed_share": sum(s.get("spelling_fixed_turns", 0) for s in scores) / turns,
        "on_topic_rate": sum(s["on_topic_rate"] * s["turns"] for s in scores) / turns,
        "memory_rate": pooled("memory", "asked", "remembered"),
        "recurring_taken_up_rate": pooled("recurring", "turns", "taken_up"),
        "questions_answered_rate": pooled("questions", "asked", "answered"),
        "words_mean": sum(s["words_mean"] * s["turns"] for s in scores) / turns,
        "too_long_rate": sum(s["too_long_rate"] * s["turns"] for s in scores) / turns,
        "dialogue_score": good * (1 - over_rate) * no_repeat,
    }


def evaluate_dialogues(specs: list[str], settings: Settings | None = None, *, scripts: list[Script] | None = None,
                       simulated: int = 0, simulator: str = "offline", turns: int = MIN_TURNS, seed: int = 0,
                       options: GenerationOptions | None = None, progress: bool = True,
                       fresh_tries: int | None = None) -> dict[str, Any]:
    """Every model holds every scripted dialogue and ``simulated`` simulated ones; the report as a dict.
    ``fresh_tries``: as the app (``QUIMBOT_FRESH_TRIES``, default 3); 0 measures the model alone."""
    fresh_tries = default_tries() if fresh_tries is None else fresh_tries
    if fresh_tries < 0:
        raise DialogueError(f"--fresh-tries {fresh_tries}: give 0 (the model alone) or more retries.")
    if turns < MIN_TURNS:
        raise DialogueError(f"--turns {turns}: a dialogue has at least {MIN_TURNS} learner turns.")
    settings = settings or Settings()
    options = options or GenerationOptions.greedy()
    scripts = scripts if scripts is not None else load_scripts()
    people = personas(simulated, seed)
    plan = [(s.id, s.level, "scripted") for s in scripts] + [(p.id, p.level, "simulated") for p in people]
    if not plan:
        raise DialogueError("No dialogues: give scripted dialogues or --simulated N.")
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(plan) * len(specs), desc="dialogues", unit="dialogue")
    models = []
    try:
        for spec in specs:
            backend = load_backend(spec, settings)
            dialogues = []
            try:
                for script in scripts:
                    held = hold(backend, script.level, lambda i, _last, s=script: s.turns[i] if i < len(s.turns)
                                else LearnerTurn("Thanks, that's all for today.", []), max(turns, len(script.turns)),
                                options, fresh_tries)
                    dialogues.append({"id": script.id, "kind": "scripted", "level": script.level,
                                      "topic": script.topic, "turns": held, "score": score_dialogue(held, script.level)})
                    bar and bar.update(1)
                for person in people:
                    learner = (offline_learner(person, turns, seed) if simulator == "offline"
                               else model_learner(simulator, person, settings, GenerationOptions(
                                   temperature=0.7, max_tokens=60, seed=seed)))
                    held = hold(backend, person.level, learner, turns, options, fresh_tries)
                    dialogues.append({"id": person.id, "kind": "simulated", "level": person.level,
                                      "error_type": person.error_type, "turns": held,
                                      "score": score_dialogue(held, person.level)})
                    bar and bar.update(1)
            finally:
                backend.close()
            models.append({"spec": spec, "dialogues": dialogues, "metrics": aggregate_dialogues(dialogues)})
    finally:
        if bar is not None:
            bar.close()
    return {"options": options.model_dump(), "turns": turns, "simulator": simulator if simulated else None,
            "fresh_tries": fresh_tries, "spelling": spelling_enabled(),
            "rule": "dialogue_score = good_move_rate * (1 - over_correction) * no_repeated_follow_up_share",
            "models": models}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def to_markdown(report: dict[str, Any]) -> str:
    """The summary table, then each dialogue's transcripts side by side (one column a model)."""
    models = report["models"]
    tries = report.get("fresh_tries", 0)
    path = (f"a reply that asked again what the tutor asked before was generated again, up to {tries} times "
            "(tutor.fresh, as in the app)" if tries else "each model's first reply, never generated again")
    spelled = ("; a misspelling copied from the learner said correctly (tutor.spelling)" if report.get("spelling")
               else "; the model's own spelling")
    rows = ["# Dialogue evaluation", "", report["rule"], "", f"Replies: {path}{spelled}.", "",
            "| model | dialogues | good moves | over-correction | no repeated follow-up | repeated openers | "
            "on topic | memory | recurring error taken up | questions answered | words | asked again | "
            "spelling fixed | dialogue score |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        x = m["metrics"]
        rows.append(f"| {m['spec']} | {x['dialogues']} | {_pct(x['good_move_rate'])} | {_pct(x['over_correction'])} | "
                    f"{_pct(x['no_repeated_follow_up_share'])} | {_pct(x['repeated_opener_share'])} | "
                    f"{_pct(x['on_topic_rate'])} | {_pct(x['memory_rate'])} | {_pct(x['recurring_taken_up_rate'])} | "
                    f"{_pct(x['questions_answered_rate'])} | {x['words_mean']:.0f} | "
                    f"{_pct(x.get('asked_again_share', 0))} | {_pct(x.get('spelling_fixed_share', 0))} | "
                    f"{x['dialogue_score']:.3f} |")
    for k, first in enumerate(models[0]["dialogues"] if models else []):
        rows += ["", f"## {first['id']} ({first['kind']}, {first['level']})", "",
                 "| learner | " + " | ".join(m["spec"] for m in models) + " |",
                 "|---|" + "---|" * len(models)]
        for i, turn in enumerate(first["turns"]):
            cells = []
            for m in models:
                t = m["dialogues"][k]["turns"][i]
                mark = "good" if t["metrics"]["good_move"] else "weak"
                cells.append(f"{t['reply']} *({mark})*".replace("|", "\\|").replace("\n", " "))
            rows.append(f"| {turn['learner']} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, str]:
    from core.files import output_path

    out = Path(out_dir)
    json_path = output_path(out / "dialogues.json")
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path = out / "dialogues.md"
    md_path.write_text(to_markdown(report), encoding="utf-8")
    return {"json": str(json_path), "markdown": str(md_path)}
