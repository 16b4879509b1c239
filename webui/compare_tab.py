"""The tester view's Compare tab: compare checkpoints as teachers (``quimbot eval compare`` as a background
job), read its report in the page, and promote the model learners get by default (or roll back).

The report is read from the report.json that ``eval compare`` writes (the web UI does not import the
training side); report.html is linked through Gradio's file route, which serves only the compare reports
folder (``allowed_paths`` of the tester view) and sits behind the tester login like the rest of /tester."""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr

from core.errors import InputError, QuimbotError
from tutor.catalog import check_ui_spec
from tutor.checkpoints import list_checkpoints
from tutor.config import Settings, is_local
from tutor.promotion import learners_default, promote, rollback
from tutor.session import ChatService
from webui.chat import display, model_choices

BASE_SPEC = "hf:default"  # the base model, served like the checkpoints (transformers), so only the adapter differs
MAX_PROMPTS = 200
SUMMARY_COLUMNS = [("pedagogy_score", "pedagogy score"), ("good_move", "good move"),
                   ("takes_up_error", "takes up the error"), ("red_pen", "red pen"), ("echo", "echo"),
                   ("follow_up_on_topic", "follow-up on topic"), ("words", "words")]
NO_ERROR = "no error"
ALL = "all error types"
HISTORY_HEADERS = ["#", "when (UTC)", "action", "model", "before", "by", "note"]


def reports_folder(settings: Settings) -> Path:
    """Where the Compare tab writes its reports, and the one folder its report links may serve."""
    return Path(settings.exports_dir) / "compare"


def finished_reports(settings: Settings, skip: str | None = None) -> list[tuple[str, str]]:
    """(label, folder) of every finished report (report.json and report.html written), newest first; ``skip``
    is the folder of a comparison still running. A link to a folder elsewhere is no report of the tab."""
    root = reports_folder(settings)
    found = []
    if root.is_dir():
        for folder in root.iterdir():
            if (folder.is_dir() and not folder.is_symlink() and not folder.name.startswith(".")
                    and (folder / "report.json").is_file()
                    and (folder / "report.html").is_file() and str(folder) != skip):
                found.append((folder.stat().st_mtime, folder))
    return [(f"{f.name} · {datetime.fromtimestamp(t).strftime('%Y-%m-%d %H:%M')}", str(f))
            for t, f in sorted(found, reverse=True)]


def report_dir(settings: Settings, folder: str) -> Path:
    """The finished report a request names, checked when the request comes (a report made after the page was
    built is found): a folder directly inside the compare reports folder, named without "..", that is one of
    ``finished_reports`` now; its resolved path (a link out of the reports folder is refused)."""
    if not folder:
        raise InputError("Pick a report first (or run a comparison).")
    root = reports_folder(settings)
    refused = InputError(f"{folder} is not a report of the Compare tab (reports live in {root}).")
    try:
        given = Path(str(folder))
        path = given.resolve()
    except (OSError, ValueError):  # a NUL byte, a loop of links
        raise refused from None
    if ".." in given.parts or path.parent != root.resolve():
        raise refused
    if str(path) not in {str(Path(f).resolve()) for _, f in finished_reports(settings)}:
        raise InputError(f"{folder} holds no finished report (report.json and report.html): the comparison may "
                         "still be running, or it failed. Refresh the list of reports.")
    return path


def read_report(settings: Settings, folder: str) -> dict[str, Any]:
    """A report folder's report.json; only finished reports of the compare reports folder are read."""
    path = report_dir(settings, folder)
    try:
        report = json.loads((path / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"No readable report in {folder}: {exc}") from exc
    if not isinstance(report, dict) or not isinstance(report.get("models"), list):
        raise InputError(f"{folder}/report.json is not a comparison report.")
    return report


def preselected(service: ChatService, settings: Settings) -> list[str]:
    """The newest run's checkpoints, the base model and the learners' current default."""
    runs: dict[Path, list[Path]] = {}
    for folder in list_checkpoints(settings.runs_dir):
        runs.setdefault(folder.parent, []).append(folder)
    newest = max(runs, key=lambda run: run.stat().st_mtime, default=None)
    picked = [BASE_SPEC] + [f"hf:{folder}" for folder in runs.get(newest, [])]
    current = service.learners_default()
    return picked + ([current] if current not in picked else [])


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    return "–" if value is None else value


def summary_table(report: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for m in report["models"]:
        metrics = m.get("metrics") or {}
        diversity = (metrics.get("diversity") or {}).get("diversity") if isinstance(metrics.get("diversity"), dict) \
            else None
        rows.append([m.get("spec"), _fmt(m.get("step")), _fmt(m.get("perplexity")),
                     *(_fmt(metrics.get(key)) for key, _ in SUMMARY_COLUMNS), _fmt(diversity)])
    return rows


def error_types(report: dict[str, Any]) -> list[str]:
    return [ALL] + sorted({item.get("error_type") or NO_ERROR for item in report.get("prompt_items", [])})


def replies_html(report: dict[str, Any], error_type: str = ALL, only_weak: bool = False) -> str:
    """The replies side by side (one row a prompt, one column a model), each marked good or weak."""
    e = html.escape
    models = report["models"]
    rows = []
    for i, item in enumerate(report.get("prompt_items", [])):
        kind = item.get("error_type") or NO_ERROR
        if error_type not in (None, "", ALL) and kind != error_type:
            continue
        marks = [bool((m["per_reply"][i] if i < len(m.get("per_reply", [])) else {}).get("good_move")) for m in models]
        if only_weak and all(marks):
            continue
        cells = []
        for m, good in zip(models, marks):
            reply = m["replies"][i] if i < len(m.get("replies", [])) else ""
            style = (m["per_reply"][i] if i < len(m.get("per_reply", [])) else {}).get("style") or ""
            cells.append(f"<td class='{'good' if good else 'weak'}'><b>{'✅ good' if good else '⚠️ weak'}</b> "
                         f"<small>{e(str(style))}</small><br>{e(str(reply))}</td>")
        rows.append(f"<tr><td><small>{e(kind)}</small><br>“{e(str(item.get('learner', '')))}”</td>{''.join(cells)}</tr>")
    if not rows:
        return "<p>No prompt of this error type" + (" with a weak reply" if only_weak else "") + ".</p>"
    heads = "".join(f"<th>{e(str(m.get('spec')))}</th>" for m in models)
    return ("<style>#compare-replies table{border-collapse:collapse;width:100%}#compare-replies td,#compare-replies th"
            "{border:1px solid #ccc;padding:6px;vertical-align:top;text-align:left}#compare-replies td.good"
            "{background:#eefbe9}#compare-replies td.weak{background:#fdf0ee}</style>"
            f"<table><tr><th>learner</th>{heads}</tr>{''.join(rows)}</table>")


def report_link(folder: str) -> str:
    path = Path(folder).resolve() / "report.html"
    return (f"<a href='gradio_api/file={quote(str(path))}' target='_blank' rel='noopener' id='report-html-link'>"
            f"Open report.html</a> <small>({html.escape(str(path))})</small>")


def clean_log(text: str) -> str:
    """A job's log tail as a person reads it: a progress bar's carriage-return redraws reduced to the last."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in (text or "").splitlines() if line.strip())


def compare_tab(service: ChatService, settings: Settings, who, login: bool, demo: gr.Blocks, runner=None) -> None:
    """Build the Compare tab inside the tester view's Blocks (``demo``) and wire its events. ``who(name,
    request)`` is the tester (the login, or the name typed on localhost), as for the other tabs; ``runner``: the
    app's one tutor.jobs.Jobs (the Train tab's too); made here when the view is built without one."""
    store = service.store
    local = is_local(settings.host)
    jobs_cache: list = [runner] if runner is not None else []

    def jobs():
        if not jobs_cache:
            from tutor.jobs import Jobs  # the background jobs (one at a time, kept in SQLite)

            jobs_cache.append(Jobs(store, settings))
        return jobs_cache[0]

    def named(name: str, request: gr.Request | None) -> str:
        """The tester, who must be named here: comparisons and promotions are recorded with who did them."""
        by = who(name, request)
        if not by:
            raise InputError("Say who you are (your name is recorded with the promotion).")
        return by

    def current_md() -> str:
        now = learners_default(store, service.default_model)
        previous = now.promotion.previous if now.promotion is not None else None
        before = (f" Before it: `{display(previous)}`." if previous else "") if now.promotion else ""
        return f"**Learners' default now:** `{display(now.describe())}`.{before}"

    def history_rows() -> list[list[Any]]:
        return [[p.id, p.created_at[:16].replace("T", " "), p.action, p.spec or f"(app default: {service.default_model})",
                 p.previous or "(app default)", p.by or "", p.note or ""] for p in store.promotions.history()]

    def choices_with(extra: list[str]) -> list[tuple[str, str]]:
        listed = model_choices(settings)
        specs = {spec for _, spec in listed}
        return listed + [(spec, spec) for spec in extra if spec and spec not in specs]

    def show_report(folder: str, error_type: str = ALL, only_weak: bool = False):
        """The report's parts: status, recommendation, summary, plot, filter, replies, link, promote choice."""
        try:
            path = report_dir(settings, folder)
            report = read_report(settings, str(path))
        except QuimbotError as exc:
            return (f"⚠️ {display(str(exc))}", "", [], gr.update(value=None, visible=False), gr.update(), "", "",
                    gr.update())
        rec = report.get("recommendation") or {}
        suggested = rec.get("model")
        rec_md = (f"**Recommended:** `{display(str(suggested))}` — {display(str(rec.get('why', '')))}.  \n"
                  f"<small>Rule: {display(str(report.get('rule', '')))}</small>" if suggested else
                  f"**No recommendation:** {display(str(rec.get('why', 'no model could be scored')))}.")
        plot = path / "checkpoints.png"
        types = error_types(report)
        error_type = error_type if error_type in types else ALL
        specs = [m.get("spec") for m in report["models"]]
        return (f"Report `{display(path.name)}`: {report.get('prompts', '?')} prompts, {len(specs)} models.",
                rec_md, summary_table(report),
                gr.update(value=str(plot), visible=True) if plot.is_file() else gr.update(value=None, visible=False),
                gr.update(choices=types, value=error_type), replies_html(report, error_type, bool(only_weak)),
                report_link(str(path)), gr.update(choices=choices_with(specs + [service.learners_default()]),
                                               value=suggested or service.learners_default()))

    def filter_replies(folder: str, error_type: str, only_weak: bool):
        try:
            return replies_html(read_report(settings, folder), error_type, bool(only_weak))
        except QuimbotError as exc:
            return f"<p>⚠️ {display(str(exc))}</p>"

    def run(specs: list[str] | None, limit, name: str, request: gr.Request):
        try:
            by = named(name, request)
            if not specs:
                raise InputError("Tick at least one model to compare.")
            checked = [check_ui_spec(spec, settings, local) for spec in specs]
            try:
                n = int(limit)
            except (TypeError, ValueError):
                raise InputError("Prompts: a whole number.") from None
            if not 1 <= n <= MAX_PROMPTS:
                raise InputError(f"Prompts: between 1 and {MAX_PROMPTS}.")
            out = reports_folder(settings) / datetime.now().strftime("%Y%m%d-%H%M%S")
            job = jobs().start("compare", ["eval", "compare", *checked, "--out", str(out), "--limit", str(n)],
                               str(out), by)
        except QuimbotError as exc:
            return None, f"⚠️ {display(str(exc))}", gr.update(), gr.Timer(active=False)
        return job.id, f"Started job #{job.id}: {len(checked)} models on {n} prompts…", "", gr.Timer(active=True)

    def job_md(job) -> str:
        when = job.started_at[:16].replace("T", " ")
        state = {"running": "⏳ running", "done": "✅ done", "failed": "❌ failed", "cancelled": "⏹ cancelled",
                 "stopped": "⏹ stopped (the app restarted)"}.get(job.state, job.state)
        tail = "" if job.state in ("running", "done") else " No report: the comparison did not finish."
        return f"Job #{job.id} · compare · {state} · started {when} by {display(job.by or '?')}.{tail}"

    def poll(job_id, error_type, only_weak):
        """Progress of the comparison job; when it is done, its report in the page."""
        keep = (gr.update(),) * 8
        if not job_id:
            return "", gr.update(), gr.Timer(active=False), gr.update(), *keep
        try:
            job = jobs().get(int(job_id))
            log = clean_log(jobs().log_tail(job.id, 12))
        except (QuimbotError, ImportError) as exc:
            return f"⚠️ {display(str(exc))}", gr.update(), gr.Timer(active=False), gr.update(), *keep
        if job.state == "running":
            return job_md(job), log, gr.Timer(active=True), gr.update(), *keep
        reports = gr.update(choices=finished_reports(settings), value=job.out_dir if job.state == "done" else None)
        parts = show_report(job.out_dir, error_type, only_weak) if job.state == "done" else keep
        return job_md(job), log, gr.Timer(active=False), reports, *parts

    def cancel(job_id, name, request: gr.Request):
        try:
            running = jobs().current() if not job_id else jobs().get(int(job_id))
            if running is None or running.kind != "compare" or running.state != "running":
                raise InputError("No comparison is running.")
            job = jobs().cancel(running.id, named(name, request))
        except (QuimbotError, ImportError) as exc:
            return f"⚠️ {display(str(exc))}"
        return job_md(job)

    def on_load():
        """A page (re)load: the current comparison job, if one runs, and the lists as they are now."""
        try:
            job = jobs().current()
        except (QuimbotError, ImportError):
            job = None
        running = job is not None and job.kind == "compare"
        return (job.id if running else None, job_md(job) if running else "", gr.Timer(active=running),
                gr.update(choices=finished_reports(settings, job.out_dir if job else None)),
                gr.update(choices=choices_with([service.learners_default()]), value=preselected(service, settings)),
                current_md(), history_rows())

    def report_note(folder: str) -> str | None:
        """The promotion's note: the report it follows, when one (still there) is picked."""
        try:
            return f"compare report {report_dir(settings, folder).name}" if folder else None
        except QuimbotError:
            return None

    def do_promote(spec: str, name: str, folder: str, request: gr.Request):
        try:
            by = named(name, request)
            note = report_note(folder)
            done = promote(store, spec, settings, by, note=note, app_default=service.default_model)
            message = f"✅ Promoted `{display(done.spec)}`: new learner conversations use it from now on."
        except QuimbotError as exc:
            message = f"⚠️ {display(str(exc))}"
        return message, current_md(), history_rows()

    def do_rollback(name: str, request: gr.Request):
        try:
            now = rollback(store, settings, named(name, request), app_default=service.default_model)
            message = f"↩️ Rolled back: new learner conversations use `{display(now.spec)}`."
        except QuimbotError as exc:
            message = f"⚠️ {display(str(exc))}"
        return message, current_md(), history_rows()

    with gr.Tab("Compare"):
        gr.Markdown("Compare models **as teachers**: each answers the same tutoring prompts; the replies are scored "
                    "(does it take up the learner's error, avoid the red pen, ask a follow-up?) and shown side by "
                    "side. Then promote the best one: learners get it from their next conversation on.")
        with gr.Row():
            models = gr.CheckboxGroup(label="Models to compare (pre-ticked: the newest run's checkpoints, the base "
                                      "model and the learners' default)", choices=model_choices(settings),
                                      elem_id="compare-models", scale=4)
            with gr.Column(scale=1, min_width=200):
                limit = gr.Number(label=f"Prompts per model (1-{MAX_PROMPTS})", value=12, precision=0,
                                  elem_id="compare-limit")
                name = gr.Textbox(label="Your name", value="tester", visible=not login, elem_id="compare-name")
                start = gr.Button("Run comparison", variant="primary", elem_id="compare-run")
                stop = gr.Button("Cancel", size="sm", elem_id="compare-cancel")
        job_id = gr.State(None)
        job_status = gr.Markdown(elem_id="compare-job")
        log = gr.Textbox(label="Progress (log)", lines=4, max_lines=8, interactive=False, elem_id="compare-log")
        timer = gr.Timer(2.0, active=False)
        gr.Markdown("### Report")
        with gr.Row():
            # allow_custom_value: a report is checked when the request comes (report_dir), so one made after the
            # page was built (or after its last list) is read; anything else is refused there.
            report = gr.Dropdown(label="Report", choices=[], value=None, allow_custom_value=True,
                                 elem_id="compare-report", scale=4)
            refresh = gr.Button("Refresh", size="sm", scale=1)
        report_status = gr.Markdown(elem_id="compare-report-status")
        recommendation = gr.Markdown(elem_id="compare-recommendation")
        summary = gr.Dataframe(headers=["model", "step", "perplexity", *(label for _, label in SUMMARY_COLUMNS),
                                        "follow-up diversity"], label="Summary (one row a model)", interactive=False,
                               elem_id="compare-summary")
        plot = gr.Image(label="Perplexity and pedagogy per training step", type="filepath", visible=False,
                        interactive=False, elem_id="compare-plot", height=320)
        with gr.Row():
            error_type = gr.Dropdown(label="Error type", choices=[ALL], value=ALL, allow_custom_value=True,
                                     elem_id="compare-error-type")
            only_weak = gr.Checkbox(label="Only prompts with a weak reply", value=False, elem_id="compare-only-weak")
        replies = gr.HTML(elem_id="compare-replies")
        link = gr.HTML(elem_id="compare-link")
        gr.Markdown("### Promote")
        current = gr.Markdown(elem_id="promote-current")
        with gr.Row():
            candidate = gr.Dropdown(label="Model for learners (the report's recommendation is suggested)",
                                    choices=[], allow_custom_value=True, elem_id="promote-model", scale=4)
            promote_btn = gr.Button("Promote", variant="primary", elem_id="promote", scale=1)
            rollback_btn = gr.Button("Roll back", elem_id="rollback", scale=1)
        promote_status = gr.Markdown(elem_id="promote-status")
        history = gr.Dataframe(headers=HISTORY_HEADERS, label="Promotions (newest first)", interactive=False,
                               elem_id="promote-history")

    parts = [report_status, recommendation, summary, plot, error_type, replies, link, candidate]
    start.click(run, [models, limit, name], [job_id, job_status, log, timer], api_name="compare_run")
    stop.click(cancel, [job_id, name], [job_status], api_name="compare_cancel")
    timer.tick(poll, [job_id, error_type, only_weak], [job_status, log, timer, report, *parts],
               api_visibility="private")
    report.input(show_report, [report, error_type, only_weak], parts, api_name="compare_report")
    refresh.click(lambda: gr.update(choices=finished_reports(settings)), None, [report], api_name="compare_reports")
    for control in (error_type, only_weak):
        control.input(filter_replies, [report, error_type, only_weak], [replies], api_visibility="private")
    promote_btn.click(do_promote, [candidate, name, report], [promote_status, current, history], api_name="promote")
    rollback_btn.click(do_rollback, [name], [promote_status, current, history], api_name="rollback")
    demo.load(on_load, None, [job_id, job_status, timer, report, models, current, history], api_name="compare_load")
