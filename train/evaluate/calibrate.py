"""How far the automatic pedagogy metrics agree with people, and which of them may decide anything.

Two kinds of human judgement:

1. **Hand-labelled replies** (``data/calibration/tune.jsonl`` and ``heldout.jsonl``): tutor replies to
   learner turns (beginner and intermediate chat, essay-register sentences with several errors and
   misspellings), each labelled by a person. The rules in ``train/evaluate/pedagogy.py`` were adjusted while
   looking at the *tune* part only; the *held-out* part was written at the same time and never used to
   change a rule, so its figures are the ones to believe. Labels, per reply:

   - ``takes_up_error``: the reply contains a correct form of (one of) the learner's errors, in any
     way (recast, elicitation, or an explicit correction); null when the learner made no error.
   - ``red_pen``: the reply corrects overtly: says something was wrong or gives a form *as a
     correction* ("you should say", "not X but Y", "a corrected version", a rule about the learner's
     mistake). A hint that asks the learner to self-correct, and praise of their grammar, are not.
   - ``follow_up_on_topic``: the reply asks (or invites) something the learner can answer about what
     they said: not a stock question ("What do you do for fun?"), not a bare confirmation of the recast.
   - ``good_move``: the issue's target. Error turn: the correct form modelled, not overtly, from the
     tutor's side (no echo of the learner's "I"), meaning kept, the learner's own question answered,
     and an on-topic follow-up. Turn without error: no correction or grammar comment, the question
     answered if there was one, an on-topic follow-up.

   A row has either ``corrections`` (short corrected forms, as in the prompt set) or ``references``
   (whole corrected sentences, as JFLEG has; the corrected forms then come from
   ``references.reference_corrections``, so the JFLEG path is calibrated too).

2. **Tester verdicts in the conversation log** (``tester_agreement``): a flagged reply is a "bad"
   verdict, a tester's rewrite of it a "good" one; an arena vote says which of two replies was the
   better teacher (``both_bad``: neither was good).

Agreement is accuracy and Cohen's kappa (agreement beyond chance: 0 = chance, 1 = perfect). A metric
whose held-out kappa is below ``KAPPA_THRESHOLD`` does not decide which checkpoint ``eval compare``
recommends (``decision_metric``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.errors import QuimbotError
from train.evaluate import pedagogy, prompt_sets, references

CALIBRATION_DIR = Path(__file__).resolve().parents[2] / "data" / "calibration"
TUNE_PATH = CALIBRATION_DIR / "tune.jsonl"
HELDOUT_PATH = CALIBRATION_DIR / "heldout.jsonl"
LABELS = ("good_move", "takes_up_error", "red_pen", "follow_up_on_topic")
KAPPA_THRESHOLD = 0.6  # "substantial" agreement (Landis & Koch); below it a metric informs, never decides
# what each figure a recommendation could maximise rests on; the other figures are not calibrated per reply
DEPENDS_ON = {"pedagogy_score": ("good_move",), "good_move": ("good_move",),
              "good_move_error_turns": ("good_move",), "good_move_clean_turns": ("good_move",),
              "takes_up_error": ("takes_up_error",), "follow_up_on_topic": ("follow_up_on_topic",)}
FALLBACK_ORDER = ("pedagogy_score", "good_move", "takes_up_error", "follow_up_on_topic")


class CalibrationError(QuimbotError):
    """A labelled calibration file that is missing or does not follow the schema."""


# ---------------------------------------------------------------- labelled replies
def load_labelled(path: str | Path) -> list[dict[str, Any]]:
    """A labelled calibration file, checked row by row; raises CalibrationError naming the line."""
    rows = prompt_sets.read_checked_jsonl(
        path, _row_problem, CalibrationError,
        f"labelled replies; pass the path of a calibration JSONL file (the project's are in {CALIBRATION_DIR})")
    if not rows:
        raise CalibrationError(f"{path} has no labelled replies.")
    return rows


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def _row_problem(row: object) -> str | None:
    if not isinstance(row, dict):
        return "a row must be a JSON object"
    for key in ("id", "learner", "reply"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            return f"'{key}' must be a non-empty string"
    if row.get("level") not in prompt_sets.LEVELS:
        return f"'level' must be one of {', '.join(prompt_sets.LEVELS)}"
    if ("corrections" in row) == ("references" in row):
        return "give either 'corrections' (corrected forms) or 'references' (corrected sentences), not both"
    if "corrections" in row and not (isinstance(row["corrections"], list) and _strings(row["corrections"])
                                     or row["corrections"] == []):
        return "'corrections' must be a list of non-empty strings ([] when the learner made no error)"
    if "references" in row and not (_strings(row["references"]) and row["references"]):
        return "'references' must be a non-empty list of corrected sentences"
    labels = row.get("labels")
    if not isinstance(labels, dict):
        return "'labels' must be an object with " + ", ".join(LABELS)
    for key in ("good_move", "red_pen", "follow_up_on_topic"):
        if not isinstance(labels.get(key), bool):
            return f"labels.{key} must be true or false"
    error_turn = bool(row.get("corrections")) or "references" in row
    taken = labels.get("takes_up_error", "missing")
    if error_turn and not isinstance(taken, bool):
        return "labels.takes_up_error must be true or false on a turn with an error"
    if not error_turn and taken is not None:
        return "labels.takes_up_error must be null on a turn without an error (corrections: [])"
    return None


def row_prompt(row: Mapping[str, Any]) -> dict[str, Any]:
    """A labelled row as a prompt-set row (``pedagogy.score_prompt``); references become corrections."""
    if "references" in row:
        corrections = references.reference_corrections(row["learner"], row["references"])
        learner = references.detokenize(row["learner"])
    else:
        corrections, learner = list(row["corrections"]), row["learner"]
    return {"id": row["id"], "learner": learner, "level": row["level"], "context": row.get("context", []),
            "error_type": "labelled" if corrections else None, "corrections": corrections}


def score_row(row: Mapping[str, Any]) -> pedagogy.ReplyMetrics:
    return pedagogy.score_prompt(row_prompt(row), row["reply"])


# ---------------------------------------------------------------- agreement
def cohen_kappa(predicted: Sequence[bool], gold: Sequence[bool]) -> float | None:
    """Cohen's kappa of two binary raters; None when it is undefined (both say one thing only)."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} labels")
    n = len(gold)
    if not n:
        return None
    observed = sum(p == g for p, g in zip(predicted, gold)) / n
    p_yes, g_yes = sum(map(bool, predicted)) / n, sum(map(bool, gold)) / n
    expected = p_yes * g_yes + (1 - p_yes) * (1 - g_yes)
    if expected == 1:
        return None
    return (observed - expected) / (1 - expected)


def agreement(predicted: Sequence[bool], gold: Sequence[bool]) -> dict[str, Any]:
    n = len(gold)
    return {"n": n, "accuracy": sum(p == g for p, g in zip(predicted, gold)) / n if n else None,
            "kappa": cohen_kappa(predicted, gold), "positives": sum(map(bool, gold))}


def split_agreement(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per label: the metric's agreement with the people's labels, and the rows where they differ."""
    scored = [score_row(row) for row in rows]
    out: dict[str, Any] = {"n": len(rows), "metrics": {}, "disagreements": {}}
    for label in LABELS:
        pairs = [(bool(getattr(m, label)), row["labels"][label], row["id"]) for m, row in zip(scored, rows)
                 if row["labels"][label] is not None]
        out["metrics"][label] = agreement([p for p, _, _ in pairs], [g for _, g, _ in pairs])
        out["disagreements"][label] = [i for p, g, i in pairs if p != g]
    return out


# ---------------------------------------------------------------- tester verdicts in the log
def _store(source: Any):
    """A Store from a Store or a path; None when the file does not exist (nothing is created)."""
    from tutor.store import Store

    if isinstance(source, Store):
        return source
    path = Path(source)
    return Store.open(path) if path.exists() else None


def tester_agreement(source: Any) -> dict[str, Any]:
    """good_move against the testers' verdicts in a conversation log (a Store or a path).

    Per reply: a flagged reply should not be a good move, a tester's rewrite should be one. Per arena
    vote: the winner should be the good move when the metric tells the two apart; ``both_bad``: neither
    is. Errors are found with ``find_errors`` (the log has no correction lists)."""
    store = _store(source)
    if store is None:
        return {"empty": True, "note": f"no conversation log at {source}"}
    predicted, gold = [], []
    flagged = rewrites = 0
    for row in store.flags.queue(limit=10**9):
        if not row["learner"]:
            continue
        level = row["level"] if row["level"] in prompt_sets.LEVELS else "intermediate"
        flagged += 1
        predicted.append(pedagogy.score_reply(row["reply"], row["learner"], level=level).good_move)
        gold.append(False)
        if row["rewrite"]:
            rewrites += 1
            predicted.append(pedagogy.score_reply(row["rewrite"], row["learner"], level=level).good_move)
            gold.append(True)
    votes = decisive = separated = agreed = 0
    for r in store.arena.voted_rounds():
        first = store.last_reply(r["conversation_first"]) if r["conversation_first"] is not None else None
        second = store.last_reply(r["conversation_second"]) if r["conversation_second"] is not None else None
        if not first or not second:
            continue
        votes += 1
        level = r["level"] if r["level"] in prompt_sets.LEVELS else "intermediate"
        good = [pedagogy.score_reply(reply, r["learner"], level=level).good_move for reply in (first, second)]
        if r["vote"] == "both_bad":
            predicted += good
            gold += [False, False]
        elif r["vote"] in ("first", "second"):
            decisive += 1
            if good[0] != good[1]:
                separated += 1
                agreed += good[0 if r["vote"] == "first" else 1]
    per_reply = agreement(predicted, gold)
    return {"empty": not (flagged or votes), "flagged_replies": flagged, "rewrites": rewrites,
            "per_reply": per_reply, "arena": {"votes": votes, "decisive": decisive, "metric_separates": separated,
                                              "winner_is_good_move": agreed,
                                              "share": agreed / separated if separated else None}}


# ---------------------------------------------------------------- the whole picture
def calibrate(tune: str | Path = TUNE_PATH, heldout: str | Path = HELDOUT_PATH,
              threshold: float = KAPPA_THRESHOLD, db: Any = None) -> dict[str, Any]:
    """Agreement of every metric on both labelled parts, the metrics whose held-out kappa passes
    ``threshold`` ("trusted"), and, with ``db``, the agreement with tester verdicts in the log."""
    result: dict[str, Any] = {"version": pedagogy.METRICS_VERSION, "threshold": threshold,
                              "files": {"tune": str(tune), "heldout": str(heldout)}}
    result["tune"] = split_agreement(load_labelled(tune))
    result["heldout"] = split_agreement(load_labelled(heldout))
    result["trusted"] = [label for label in LABELS
                         if (result["heldout"]["metrics"][label]["kappa"] or 0.0) >= threshold]
    if db is not None:
        result["testers"] = tester_agreement(db)
    return result


def decision_metric(metric: str, calibration: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """The figure a recommendation may maximise: ``metric`` when every per-reply metric it rests on passed
    calibration, else the first one in FALLBACK_ORDER that did, else None; with a sentence saying why."""
    if not calibration or "trusted" not in calibration:
        why = (calibration or {}).get("error", "no calibration was run")
        return None, f"no metric is calibrated ({why}), so no pedagogy figure decides"
    trusted = set(calibration["trusted"])
    threshold = calibration["threshold"]

    def ok(name: str) -> bool:
        return name in DEPENDS_ON and set(DEPENDS_ON[name]) <= trusted

    if ok(metric):
        return metric, f"{metric} rests on metrics whose held-out kappa is at least {threshold:g}"
    failed = ", ".join(DEPENDS_ON.get(metric, (metric,)))
    for other in FALLBACK_ORDER:
        if ok(other):
            return other, (f"{metric} is not used: {failed} has a held-out kappa below {threshold:g} or is not "
                           f"calibrated; {other} decides instead")
    return None, f"no metric reached a held-out kappa of {threshold:g}, so no pedagogy figure decides"


def _f(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}"


def table_rows(calibration: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for label in LABELS:
        tune, held = calibration["tune"]["metrics"][label], calibration["heldout"]["metrics"][label]
        rows.append([label, str(tune["n"]), _f(tune["accuracy"]), _f(tune["kappa"]), str(held["n"]),
                     _f(held["accuracy"]), _f(held["kappa"]), "yes" if label in calibration["trusted"] else "no"])
    return rows


TABLE_HEAD = ["metric", "tune n", "tune accuracy", "tune kappa", "held-out n", "held-out accuracy",
              "held-out kappa", "may decide"]


def testers_sentence(testers: Mapping[str, Any] | None) -> str:
    if not testers:
        return "Tester verdicts: not read."
    if testers.get("empty"):
        return f"Tester verdicts: none in the conversation log ({testers.get('note', 'no flags or arena votes')})."
    pr, arena = testers["per_reply"], testers["arena"]
    parts = [f"Tester verdicts: {testers['flagged_replies']} flagged replies and {testers['rewrites']} rewrites"
             f" ({pr['n']} per-reply verdicts with arena 'both bad'): good_move agrees on {_f(pr['accuracy'])}"
             f" (kappa {_f(pr['kappa'])})"]
    parts.append(f"{arena['votes']} arena votes, {arena['decisive']} with a winner; the metric tells the two "
                 f"replies apart in {arena['metric_separates']}, and the winner is the good move in "
                 f"{arena['winner_is_good_move']} of them ({_f(arena['share'])})")
    return "; ".join(parts) + "."


def markdown_section(calibration: Mapping[str, Any] | None, decision: str | None = None) -> list[str]:
    """The report's "Metric calibration" section, as markdown lines."""
    lines = ["## Metric calibration", ""]
    if not calibration or "trusted" not in calibration:
        why = (calibration or {}).get("error", "not run")
        return lines + [f"Calibration could not be computed: {why}. No pedagogy metric decides the "
                        "recommendation.", ""]
    lines += [f"Agreement of each automatic metric with hand labels ({calibration['tune']['n']} tune and "
              f"{calibration['heldout']['n']} held-out replies in `data/calibration/`; the rules were adjusted on the "
              "tune part only). Kappa is Cohen's (0 = chance, 1 = perfect). Only metrics with a held-out kappa of at "
              f"least {calibration['threshold']:g} may decide the recommendation.", "",
              "| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(calibration)]
    lines += ["", testers_sentence(calibration.get("testers"))]
    if decision:
        lines += ["", f"Decision: {decision}."]
    return lines + [""]


def html_section(calibration: Mapping[str, Any] | None, decision: str | None = None) -> str:
    import html

    e = html.escape
    if not calibration or "trusted" not in calibration:
        why = (calibration or {}).get("error", "not run")
        return f"<h2>Metric calibration</h2><p>Calibration could not be computed: {e(str(why))}.</p>"
    head = "".join(f"<th>{e(h)}</th>" for h in TABLE_HEAD)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table_rows(calibration))
    return (f"<h2>Metric calibration</h2><p>Hand labels: {calibration['tune']['n']} tune and "
            f"{calibration['heldout']['n']} held-out replies. Only metrics with a held-out kappa of at least "
            f"{calibration['threshold']:g} may decide the recommendation.</p><table><tr>{head}</tr>{body}</table>"
            f"<p>{e(testers_sentence(calibration.get('testers')))}</p>"
            + (f"<p>Decision: {e(decision)}.</p>" if decision else ""))
