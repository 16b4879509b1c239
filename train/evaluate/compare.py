"""`quimbot eval compare`: every model answers the same tutoring prompts; the replies are
scored with the pedagogy metrics and laid side by side, with the perplexity from training
where known and a recommendation by an explicit rule.

Generation is batched where the engine allows it (transformers: padded batches; other engines
one reply at a time), greedy by default, so a comparison is repeatable."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train.evaluate import pedagogy, references
from tutor.backends import GenerationOptions, load_backend
from tutor.checkpoints import checkpoint_perplexity
from tutor.config import Settings
from tutor.prompts import system_prompt
from tutor.specs import parse_spec
from tutor.spelling import enabled as spelling_enabled
from tutor.spelling import fix_copied


@dataclass
class Rule:
    """Recommend the best pedagogy score; among models within ``margin`` of it, the one with
    the lowest known perplexity (a checkpoint that teaches as well but fits the data better)."""

    metric: str = "pedagogy_score"
    margin: float = 0.02

    def describe(self) -> str:
        return (f"highest {self.metric}; among models within {self.margin:g} of the best, "
                "the lowest held-out perplexity where known")


def prompt_messages(prompt: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt(prompt.get("level") or "intermediate")},
            *prompt.get("context", []), {"role": "user", "content": prompt["learner"]}]


def generate_replies(spec: str, prompts: list[dict], settings: Settings, options: GenerationOptions,
                     batch_size: int = 8, progress: bool = True) -> list[str]:
    backend = load_backend(spec, settings)
    conversations = [prompt_messages(p) for p in prompts]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(prompts), desc=f"replies {spec}"[:60], unit="reply")
    replies: list[str] = []
    try:
        if hasattr(backend, "generate_batch") and batch_size > 1:
            for start in range(0, len(conversations), batch_size):
                chunk = conversations[start:start + batch_size]
                replies += backend.generate_batch(chunk, options)
                if bar is not None:
                    bar.update(len(chunk))
        else:
            for messages in conversations:
                replies.append("".join(c.text for c in backend.stream(messages, options)).strip())
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        backend.close()
    return replies


def known_perplexity(spec: str) -> tuple[int | None, float | None]:
    """(step, held-out perplexity) recorded by training for a checkpoint spec, when there is one."""
    parsed = parse_spec(spec)
    folder = parsed.get("adapter") or (parsed.target if parsed.engine == "hf" else None)
    if not folder:
        return None, None
    return checkpoint_perplexity(folder)


def recommend(models: list[dict[str, Any]], rule: Rule) -> dict[str, Any]:
    scored = [m for m in models if m["metrics"].get(rule.metric) is not None]
    if not scored:
        return {"model": None, "why": "no model could be scored"}
    best = max(m["metrics"][rule.metric] for m in scored)
    close = [m for m in scored if m["metrics"][rule.metric] >= best - rule.margin]
    with_ppl = [m for m in close if m.get("perplexity") is not None]
    pick = min(with_ppl, key=lambda m: m["perplexity"]) if with_ppl else max(close, key=lambda m: m["metrics"][rule.metric])
    why = (f"{rule.metric} {pick['metrics'][rule.metric]:.3f} (best {best:.3f}, margin {rule.margin:g})"
           + (f", perplexity {pick['perplexity']:.2f} the lowest of {len(with_ppl)} close models" if with_ppl else ""))
    return {"model": pick["spec"], "why": why, "rule": rule.describe()}


def recommend_calibrated(models: list[dict[str, Any]], rule: Rule, calibration: dict[str, Any] | None) -> dict[str, Any]:
    """``recommend``, but only a metric that agrees with people decides (``calibrate.decision_metric``: held-out
    kappa at least the threshold). With no such metric the lowest known perplexity decides, or nothing does."""
    from train.evaluate.calibrate import decision_metric

    metric, note = decision_metric(rule.metric, calibration)
    if metric:
        rec = recommend(models, Rule(metric, rule.margin))
    else:
        with_ppl = [m for m in models if m.get("perplexity") is not None]
        pick = min(with_ppl, key=lambda m: m["perplexity"]) if with_ppl else None
        rec = {"model": pick["spec"] if pick else None, "rule": "lowest held-out perplexity (no calibrated metric)",
               "why": f"perplexity {pick['perplexity']:.2f}, the lowest of {len(with_ppl)}" if pick else
               "no calibrated pedagogy metric and no known perplexity to decide by"}
    rec["calibration"] = note
    return rec


# Whole conversations (``eval compare --dialogues``): a model over either limit is passed over, unless all are.
DIALOGUE_GATE = {"over_correction": 0.05, "no_repeated_follow_up_share": 0.90}


def dialogue_gate(models: list[dict[str, Any]], dialogues: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Attach each model's dialogue figures (``metrics["dialogue"]``) and return the models the recommendation
    may choose from, with the rule in words: over-correction at most 5% of the turns with no error, and no
    follow-up repeated within a dialogue in at least 90% of the dialogues."""
    by_spec = {m["spec"]: m["metrics"] for m in dialogues["models"]}
    for m in models:
        m["metrics"]["dialogue"] = by_spec.get(m["spec"])
    passing = [m for m in models if m["metrics"]["dialogue"] is not None
               and m["metrics"]["dialogue"]["over_correction"] <= DIALOGUE_GATE["over_correction"]
               and m["metrics"]["dialogue"]["no_repeated_follow_up_share"] >= DIALOGUE_GATE["no_repeated_follow_up_share"]]
    rule = (f"dialogue gate: only models with over-correction <= {DIALOGUE_GATE['over_correction']:.0%} and no "
            f"repeated follow-up in >= {DIALOGUE_GATE['no_repeated_follow_up_share']:.0%} of their dialogues")
    if not passing:
        return models, rule + " (none passed, so all were considered)"
    return passing, rule + f" ({len(passing)} of {len(models)} passed)"


def _calibration(settings: Settings) -> dict[str, Any]:
    from train.evaluate.calibrate import CalibrationError, calibrate

    try:
        return calibrate(db=settings.db_path)
    except CalibrationError as exc:
        return {"error": str(exc)}


def compare(specs: list[str], prompts: list[dict], out_dir: str | Path, settings: Settings | None = None,
            options: GenerationOptions | None = None, rule: Rule | None = None, batch_size: int = 8,
            progress: bool = True, generate=None, dialogues: dict[str, Any] | None = None,
            spelling: bool | None = None) -> dict[str, Any]:
    """``generate`` (default ``generate_replies``) makes one model's replies: ``generate(spec, prompts,
    settings, options, batch_size, progress)``; train.evaluate.compare_vllm passes one that asks a vLLM server.
    ``dialogues``: a report of train.evaluate.dialogue for the same models; it adds a section and the
    dialogue gate to the recommendation (``dialogue_gate``). ``spelling`` (default ``QUIMBOT_SPELLING``, on):
    the replies are scored as the app shows them, with the learner's misspellings they copied corrected
    (``tutor.spelling``); ``metrics_model_alone`` keeps the scores of the model's own replies."""
    spelling = spelling_enabled() if spelling is None else spelling
    generate = generate or generate_replies
    settings = settings or Settings()
    options = options or GenerationOptions.greedy()
    rule = rule or Rule()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = []
    for spec in specs:
        model_replies = generate(spec, prompts, settings, options, batch_size, progress)
        replies, fixes = list(model_replies), []
        if spelling:
            for i, (p, r) in enumerate(zip(prompts, model_replies)):
                replies[i], fixed = fix_copied(p["learner"], r)
                fixes += [{"item": i, "model_wrote": f.wrong, "shown": f.right} for f in fixed]
        per_reply = [pedagogy.score_prompt(p, r) for p, r in zip(prompts, replies)]
        alone = ([pedagogy.score_prompt(p, r) for p, r in zip(prompts, model_replies)] if fixes else per_reply)
        step, ppl = known_perplexity(spec)
        models.append({"spec": spec, "step": step, "perplexity": ppl, "replies": replies,
                       "per_reply": [m.as_dict() for m in per_reply], "metrics": pedagogy.aggregate(per_reply),
                       "by_error_type": pedagogy.by_error_type(prompts, per_reply),
                       "spelling": {"on": spelling, "fixes": fixes, "replies_fixed": len({f["item"] for f in fixes}),
                                    "model_replies": model_replies if fixes else None,
                                    "metrics_model_alone": pedagogy.aggregate(alone)}})
    calibration = _calibration(settings)
    candidates, gate = dialogue_gate(models, dialogues) if dialogues else (models, None)
    recommendation = recommend_calibrated(candidates, rule, calibration)
    report = {"prompts": len(prompts), "options": options.model_dump(),
              "rule": f"{recommendation.get('rule', rule.describe())} ({recommendation['calibration']})"
                      + (f"; {gate}" if gate else ""), "dialogues": dialogues,
              "recommendation": recommendation, "calibration": calibration, "models": models,
              "prompt_items": [{"id": p.get("id"), "learner": p["learner"], "error_type": p.get("error_type")}
                               for p in prompts]}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    plot = plot_checkpoints(models, out_dir / "checkpoints.png")
    (out_dir / "report.md").write_text(to_markdown(report, plot))
    (out_dir / "report.html").write_text(to_html(report, plot))
    report["files"] = {k: str(out_dir / f) for k, f in (("json", "report.json"), ("markdown", "report.md"),
                                                        ("html", "report.html"))}
    if plot:
        report["files"]["plot"] = str(plot)
    return report


SUMMARY = [("pedagogy_score", "pedagogy score"), ("good_move", "good move"), ("takes_up_error", "takes up error"),
           ("red_pen", "red pen"), ("echo", "echo"), ("follow_up_on_topic", "follow-up on topic"),
           ("words", "words")]


DIALOGUE_SUMMARY = [("good_move_rate", "good moves"), ("over_correction", "over-correction"),
                    ("no_repeated_follow_up_share", "no repeated follow-up"), ("memory_rate", "memory"),
                    ("dialogue_score", "dialogue score")]


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for m in report["models"]:
        rows.append([m["spec"], _fmt(m["perplexity"]), *(_fmt(m["metrics"].get(k)) for k, _ in SUMMARY),
                     _fmt(m["metrics"]["diversity"]["diversity"])])
    return rows


def error_type_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per kind of error: how many turns have one, then per model the share of those turns whose
    reply takes up a correction of that kind and the share of good moves ("takes up / good")."""
    kinds: dict[str, int] = {}
    for m in report["models"]:
        for kind, row in (m.get("by_error_type") or {}).items():
            kinds[kind] = max(kinds.get(kind, 0), row["n"])
    rows = []
    for kind in sorted(kinds, key=lambda k: (-kinds[k], k)):
        cells = []
        for m in report["models"]:
            row = (m.get("by_error_type") or {}).get(kind)
            cells.append(f"{row['takes_up']:.0%} / {row['good_move']:.0%}" if row else "–")
        rows.append([kind, str(kinds[kind]), *cells])
    return rows


def spelling_lines(report: dict[str, Any]) -> list[str]:
    """What the reply path's spelling check (``tutor.spelling``) changed: per model, the replies it fixed and
    the good moves of the model's own replies against those shown."""
    fixed = [m for m in report["models"] if (m.get("spelling") or {}).get("fixes")]
    if not fixed:
        return []
    lines = ["", "## The learner's misspellings copied by a reply, corrected (tutor.spelling)", "",
             "The scores above are of the replies as the app shows them. The model alone:", "",
             "| model | replies fixed | good move, model alone | good move, as shown | takes up error, model alone |"
             " takes up error, as shown |", "|---|---|---|---|---|---|"]
    for m in fixed:
        alone, shown = m["spelling"]["metrics_model_alone"], m["metrics"]
        lines.append(f"| {m['spec']} | {m['spelling']['replies_fixed']} | {_fmt(alone.get('good_move'))} | "
                     f"{_fmt(shown.get('good_move'))} | {_fmt(alone.get('takes_up_error'))} | "
                     f"{_fmt(shown.get('takes_up_error'))} |")
    return lines


def to_markdown(report: dict[str, Any], plot: Path | None) -> str:
    head = ["model", "perplexity", *(label for _, label in SUMMARY), "follow-up diversity"]
    lines = [f"# Checkpoint comparison ({report['prompts']} prompts)", "",
             f"**Recommendation:** `{report['recommendation']['model']}` — {report['recommendation']['why']}.",
             f"Rule: {report['rule']}.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(report)]
    if plot:
        lines += ["", f"![perplexity and pedagogy per checkpoint]({plot.name})"]
    lines += spelling_lines(report)
    types = error_type_rows(report)
    if types:
        head = ["error type", "turns", *(m["spec"] for m in report["models"])]
        lines += ["", "## By error type (takes up a correction of that kind / good move)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in types]
    from train.evaluate.calibrate import markdown_section

    lines += [""] + markdown_section(report.get("calibration"), report["recommendation"].get("calibration"))
    if report.get("dialogues"):
        from train.evaluate.dialogue import to_markdown as dialogue_markdown

        lines += ["## Whole conversations", ""] + [
            "#" + line if line.startswith("#") else line for line in dialogue_markdown(report["dialogues"]).splitlines()[2:]
        ] + [""]
    lines += ["## Replies side by side", ""]
    for i, item in enumerate(report["prompt_items"]):
        lines.append(f"### {item['id'] or i}: “{item['learner']}” ({item['error_type'] or 'no error'})")
        for m in report["models"]:
            flags = m["per_reply"][i]
            lines.append(f"- `{m['spec']}` ({'good' if flags['good_move'] else 'weak'}, {flags['style']}): "
                         f"{' '.join(m['replies'][i].split())}")
        lines.append("")
    return "\n".join(lines)


def to_html(report: dict[str, Any], plot: Path | None) -> str:
    e = html.escape
    head = ["model", "perplexity", *(label for _, label in SUMMARY), "follow-up diversity"]
    table = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in summary_rows(report))
    cells = []
    for i, item in enumerate(report["prompt_items"]):
        replies = "".join(
            f"<td class='{'good' if m['per_reply'][i]['good_move'] else 'weak'}'>{e(m['replies'][i])}"
            f"<br><small>{e(m['per_reply'][i]['style'])}</small></td>" for m in report["models"])
        cells.append(f"<tr><td>{e(item['learner'])}<br><small>{e(item['error_type'] or 'no error')}</small></td>"
                     f"{replies}</tr>")
    model_heads = "".join(f"<th>{e(m['spec'])}</th>" for m in report["models"])
    rec = report["recommendation"]
    image = f"<img src='{e(plot.name)}' alt='perplexity and pedagogy per checkpoint'>" if plot else ""
    from train.evaluate.calibrate import html_section

    types = error_type_rows(report)
    if types:
        image += ("<h2>By error type (takes up a correction of that kind / good move)</h2><table><tr>"
                  "<th>error type</th><th>turns</th>" + "".join(f"<th>{e(m['spec'])}</th>" for m in report["models"])
                  + "</tr>" + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in types)
                  + "</table>")
    image += html_section(report.get("calibration"), rec.get("calibration"))
    if report.get("dialogues"):
        image += "<h2>Whole conversations</h2><table><tr><th>model</th>" + "".join(
            f"<th>{e(label)}</th>" for _, label in DIALOGUE_SUMMARY) + "</tr>" + "".join(
            f"<tr><td>{e(m['spec'])}</td>" + "".join(f"<td>{e(_fmt(m['metrics'].get(k)))}</td>"
                                                     for k, _ in DIALOGUE_SUMMARY) + "</tr>"
            for m in report["dialogues"]["models"]) + "</table><p>Transcripts: dialogues.md</p>"
    return ("<!doctype html><meta charset='utf-8'><title>Quimbot checkpoint comparison</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px;vertical-align:top}td.good{background:#eefbe9}td.weak{background:#fdf0ee}</style>"
            f"<h1>Checkpoint comparison ({report['prompts']} prompts)</h1>"
            f"<p><b>Recommendation:</b> {e(str(rec['model']))} — {e(rec['why'])}.<br>Rule: {e(report['rule'])}.</p>"
            f"<table><tr>{table}</tr>{body}</table>{image}<h2>Replies side by side</h2>"
            f"<table><tr><th>learner</th>{model_heads}</tr>{''.join(cells)}</table>")


def plot_checkpoints(models: list[dict[str, Any]], path: Path) -> Path | None:
    """Perplexity and pedagogy score per checkpoint step on one figure (two y axes)."""
    points = sorted(((m["step"] or 0, m) for m in models), key=lambda point: point[0])
    if len({step for step, _ in points}) < 2:  # nothing to draw across training steps
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for s, _ in points]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(steps, [m["metrics"]["pedagogy_score"] for _, m in points], "o-", color="tab:green", label="pedagogy")
    ax1.set_xlabel("training step (0 = base)")
    ax1.set_ylabel("pedagogy score", color="tab:green")
    ax1.set_ylim(0, 1)
    ppl = [(s, m["perplexity"]) for s, m in points if m["perplexity"] is not None]
    if ppl:
        ax2 = ax1.twinx()
        ax2.plot([s for s, _ in ppl], [p for _, p in ppl], "s--", color="tab:blue", label="perplexity")
        ax2.set_ylabel("held-out perplexity", color="tab:blue")
    ax1.set_title("Is the best-perplexity checkpoint the best teacher?")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load_jfleg(folder: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Real learner sentences (JFLEG dev: dev.src and four human corrections dev.ref0-3) as a
    prompt set, read where the data is present; never copied into the project. The sentences are
    detokenized ("do n't" -> "don't"); the corrections are the corrected forms the references put
    where the learner's words differ, each with its context (never a lone function word) and the kind of
    error it corrects (``references.typed_reference_corrections``). A sentence no reference changed is a
    turn without an error."""
    folder = Path(folder)
    src = (folder / "dev.src").read_text(encoding="utf-8").splitlines()
    refs = [(folder / f"dev.ref{i}").read_text(encoding="utf-8").splitlines() for i in range(4)
            if (folder / f"dev.ref{i}").exists()]
    prompts = []
    for i, sentence in enumerate(src[:limit] if limit else src):
        kinds = references.typed_reference_corrections(sentence, [ref[i] for ref in refs if i < len(ref)])
        prompts.append({"id": f"jfleg-{i}", "learner": references.detokenize(sentence), "level": "intermediate",
                        "error_type": "jfleg" if kinds else None, "corrections": list(kinds),
                        "correction_types": kinds})
    return prompts
