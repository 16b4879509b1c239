"""The tester view's Train tab: pick Stage 2 data and a checkpoint to start from, see the row counts and
the schema gate's verdict, start `quimbot train sft|dpo` as a background job, follow it (step, loss,
ETA, the perplexity curve, the log), cancel it, resume a stopped one. Layout and wiring only: the
work is done by tutor.train_plan and tutor.jobs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import gradio as gr
import pandas as pd

from core.errors import QuimbotError
from tutor.config import Settings
from tutor.jobs import RESUMABLE, Job, Jobs, describe
from tutor.train_plan import (
    ROOT,
    STAGE2,
    TRAIN_CONFIG,
    check_source,
    checkpoint_choices,
    default_run_name,
    find_source,
    progress,
    sources,
    train_argv,
    verdict,
)
from webui.chat import display

POLL_S = 2.0
CHECK_TIMEOUT_S = 600  # training's own data check (a dry run): seconds on this CPU, minutes for a large mix
# How `quimbot train` words its refusal of over-long rows (train.fit.examples.apply_length_limit): read back,
# so the tab can say it in a tester's words; any other refusal is shown as training wrote it.
TOO_LONG = re.compile(r"(\d[\d,]*) row\(s\) are longer than max_length = ([\d,]+) tokens")
LONG_ROW = re.compile(r"^\s+(.+):(\d+): ([\d,]+) tokens$", re.MULTILINE)
MORE_ROWS = re.compile(r"^\s+\.\.\. and (\d+) more$", re.MULTILINE)
INTRO = ("Train a **Stage 2** checkpoint on what testers flagged. 1. Pick the training data (a folder the "
         "Export tab wrote) and the checkpoint to start from. 2. Check the row counts, the schema gate's "
         "verdict and training's own check (every row within its token limit). 3. Start: the run is "
         "`quimbot train sft|dpo` in its own process, one job at a time; it keeps running if you close this page. "
         "Finished checkpoints appear in every model picker.")
STATE_TEXT = {"running": "🔄 running", "done": "✅ done", "failed": "⛔ failed", "cancelled": "✖️ cancelled",
              "stopped": "⏸️ stopped (its process is gone: the app or the machine was restarted)"}


def _clock(stamp: str | None) -> str:
    return datetime.fromisoformat(stamp).astimezone().strftime("%H:%M:%S") if stamp else ""


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _stamp(path: str | Path) -> tuple[int, int] | None:
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def training_check(settings: Settings, checked, method: str, init: str | None) -> tuple[bool, str]:
    """Run the checks ``quimbot train sft|dpo`` makes before it trains, on the picked data and checkpoint, as
    the Start button would run it (``--dry-run``: the schema gate, every row's token length with the run's
    tokenizer and chat template against its ``max_length``, the base model and adapter, free disk). The web UI
    does not import the training side: it asks the command, as the job does. (passed, what to say)."""
    argv, _ = train_argv(settings, checked, method, init or None, max_steps=STAGE2["max_steps"],
                         learning_rate=STAGE2["learning_rate"], save_steps=STAGE2["save_steps"],
                         run_name=f"check-{uuid.uuid4().hex[:12]}")  # a dry run writes no run folder
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    try:
        done = subprocess.run([sys.executable, "-m", "quimbot.cli", *argv, "--dry-run"], cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, (f"⛔ Training's data check did not finish within {CHECK_TIMEOUT_S // 60} minutes. Try again "
                       "when the machine is less busy.")
    if done.returncode == 0:
        counts = re.search(r"(\d+) training rows, (\d+) held out", done.stdout)
        return True, ("training's own check passed" + (f" ({counts[1]} rows to train on, {counts[2]} held out for "
                                                       "perplexity)" if counts else ""))
    return False, refusal(done.stderr)


def refusal(stderr: str) -> str:
    """Training's refusal (its ``quimbot: error:`` message) as the tab shows it; over-long rows by file and line."""
    marker = "quimbot: error: "
    text = (stderr.split(marker, 1)[1] if marker in stderr else "\n".join(stderr.strip().splitlines()[-8:])).strip()
    long = TOO_LONG.search(text)
    if long is None:
        return f"⛔ `quimbot train` refuses to start on this data: {display(text) or 'it failed without a message'}"
    rows = [f"- `{display(path)}:{line}` ({tokens} tokens)" for path, line, tokens in LONG_ROW.findall(text)]
    more = MORE_ROWS.search(text)
    if more:
        rows.append(f"- … and {more[1]} more")
    return (f"⛔ **{long[1]} row(s) too long to train on**: longer than training's limit of {long[2]} tokens "
            "(`max_length` in `data/train_default.toml`, counted with the model's tokenizer and chat template), so "
            "training would refuse to start.\n\n" + "\n".join(rows)
            + "\n\nShorten or remove these rows (file:line above), or export again without them; then check again.")


def job_view(job: Job | None, others: Job | None = None) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """(Markdown, perplexity points, loss points) for a training job."""
    empty_ppl = pd.DataFrame({"step": [], "perplexity": []})
    empty_loss = pd.DataFrame({"step": [], "loss": []})
    busy = f"\n\n{describe(others)} is running; training can start when it ends." if others else ""
    if job is None:
        return "No training job yet." + busy, empty_ppl, empty_loss
    p = progress(job.argv, job.out_dir)
    command = display(" ".join(job.argv[:2]))
    lines = [f"**Job #{job.id}** · `quimbot {command}` · {STATE_TEXT.get(job.state, job.state)}"
             f" · started {_clock(job.started_at)}" + (f" by {display(job.by)}" if job.by else "")
             + (f" · ended {_clock(job.ended_at)}" if job.ended_at else "")]
    if job.resumed_from:
        lines.append(f"Resumes job #{job.resumed_from} (`--resume`).")
    step = f"Step **{p.step} / {p.max_steps or '?'}**"
    if p.loss is not None:
        step += f" · loss **{p.loss:.4f}**"
    if p.eta_s is not None and job.state == "running":
        step += f" · ETA **{_duration(p.eta_s)}**"
    lines.append(step)
    if job.state == "running":
        lines.append("Measuring held-out perplexity of each checkpoint…" if p.trained else
                     ("Loading the model and checking the data…" if p.step == 0 else "Training…"))
    elif job.state == "failed":
        lines.append(f"The run ended with exit code {job.exit_code}: the log below says why.")
    elif job.state == "cancelled":
        lines.append("Cancelled" + (f" by {display(job.cancelled_by)}" if job.cancelled_by else "") + ".")
    if job.state in RESUMABLE:
        lines.append("**Resume** starts the same command with `--resume`: it continues from the last complete "
                     "checkpoint (or from step 0 when there is none).")
    if p.complete:
        finished = job.state == "done"
        lines.append(("Checkpoints (in the model pickers): " if finished else
                      "Complete checkpoints of this unfinished run: ") + ", ".join(f"`{c}`" for c in p.complete))
    if p.incomplete:
        lines.append("Cut off while being written, **not offered** anywhere: "
                     + ", ".join(f"`{c}`" for c in p.incomplete))
    if job.out_dir:
        lines.append(f"Run folder: `{display(job.out_dir)}`")
    start = [pt for pt in p.perplexity if pt[1] == "init-adapter"] or [pt for pt in p.perplexity if pt[1] == "base"]
    points = start[:1] + [pt for pt in p.perplexity if pt[1].startswith("checkpoint-")]
    ppl = pd.DataFrame({"step": [s for s, _, _ in points], "perplexity": [v for _, _, v in points]}) if points \
        else empty_ppl
    loss = pd.DataFrame({"step": [s for s, _ in p.losses], "loss": [v for _, v in p.losses]}) if p.losses \
        else empty_loss
    return "\n\n".join(lines) + busy, ppl, loss


def train_tab(jobs: Jobs, settings: Settings, who, tester_name: gr.Textbox, demo: gr.Blocks) -> None:
    """The Train tab, inside the tester view's Blocks (``demo``). ``who(name, request)`` is the tester (the
    login, or the name typed on localhost); ``tester_name`` the textbox holding that name."""

    verdicts: dict[tuple, tuple[bool, str]] = {}  # training's check of a file as it is now (Start checks afresh)

    def source_choices():
        return [(s.label, s.value) for s in sources(settings)]

    def check(value, method, init=""):
        """The verdict on the picked data (the schema gate here, then training's own check: token lengths and
        the rest), a run name to go with it, and Start only when it can start. The lists are read now: an
        export or checkpoint made after the page was built is found, anything not listed is refused."""
        if not value:
            return "Pick the training data first.", gr.update(), gr.update(interactive=False)
        text = ""
        try:
            source = find_source(settings, value)
            checked = check_source(source)
            text = verdict(checked) + "\n\n"
            data = checked.usable(method)
            key = (str(data.path), _stamp(data.path), method, init or "", _stamp(init) if init else None,
                   _stamp(TRAIN_CONFIG))
            if key not in verdicts:  # the same file, method and checkpoint as before: the same verdict
                verdicts[key] = training_check(settings, checked, method, init)
                while len(verdicts) > 64:
                    verdicts.pop(next(iter(verdicts)))
            passed, said = verdicts[key]
        except QuimbotError as exc:
            return f"{text}⛔ {display(str(exc))}", gr.update(), gr.update(interactive=False)
        if not passed:
            return text + said, gr.update(), gr.update(interactive=False)
        return (text + f"Ready: {method.upper()} on `{data.path.name}`; {said}.",
                default_run_name(source, method), gr.update(interactive=True))

    def refresh(value, picked=None, init=""):
        """The lists as they are now (a page load, the tab opened, Refresh): the data the tester picked while it
        is still there, else the newest export, as a tab built now would offer (``value``, the data shown, is
        kept only as the tester's pick: the page's first value was the newest when the app started)."""
        choices = source_choices()
        values = [v for _, v in choices]
        keep = picked if picked in values else (values[0] if values else None)
        inits = checkpoint_choices(settings)
        return (gr.update(choices=choices, value=keep),
                gr.update(choices=inits, value=init if init in {v for _, v in inits} else ""))

    def shown_job() -> tuple[Job | None, Job | None]:
        """The training job to show (the running one, else the last) and another kind's running job."""
        current = jobs.current()
        if current is not None and current.kind == "train":
            return current, None
        last = jobs.recent(1, kind="train")
        return (last[0] if last else None), current

    def poll():
        job, others = shown_job()
        text, ppl, loss = job_view(job, others)
        tail = jobs.log_tail(job.id) if job else ""
        running = job is not None and job.state == "running"
        resumable = job is not None and job.state in RESUMABLE
        return (job.id if job else None, text, ppl, loss, tail, gr.update(interactive=running),
                gr.update(interactive=resumable))

    def start(value, init, method, max_steps, learning_rate, save_steps, run_name, name, request: gr.Request):
        try:
            by = who(name, request) or None
            checked = check_source(find_source(settings, value))
            argv, run_dir = train_argv(settings, checked, method, init or None, max_steps=max_steps,
                                       learning_rate=learning_rate, save_steps=save_steps, run_name=run_name)
            if jobs.current() is None:  # (one running: jobs.start refuses, naming it)
                passed, said = training_check(settings, checked, method, init or None)
                if not passed:
                    return f"{said}\n\nNothing was started.", *poll()
            job = jobs.start("train", argv, str(run_dir), by)
        except QuimbotError as exc:
            return f"⛔ {display(str(exc))}", *poll()
        return f"Started job #{job.id}: `quimbot {display(' '.join(argv[:2]))}` into `{display(str(run_dir))}`.", \
            *poll()

    def act(action: str, job_id, name, request: gr.Request):
        """Cancel or resume the job shown."""
        try:
            if not job_id:
                raise QuimbotError(f"No training job to {action}.")
            job = getattr(jobs, action)(int(job_id), who(name, request) or None)
        except QuimbotError as exc:
            return f"⛔ {display(str(exc))}", *poll()
        if action == "cancel":
            return f"Job #{job.id} is {job.state}.", *poll()
        return f"Started job #{job.id}: job #{job.resumed_from} again with `--resume`.", *poll()

    def cancel(job_id, name, request: gr.Request):
        return act("cancel", job_id, name, request)

    def resume(job_id, name, request: gr.Request):
        return act("resume", job_id, name, request)

    with gr.Tab("Train") as tab:
        gr.Markdown(INTRO)
        choices = source_choices()
        with gr.Row():
            # allow_custom_value: a value is checked against the lists as they are when it comes (find_source,
            # train_argv), not against the choices this page was built with.
            source = gr.Dropdown(choices=choices, value=choices[0][1] if choices else None, scale=3,
                                 allow_custom_value=True, elem_id="train-source",
                                 label="Training data (exports/stage2/FOLDER or a mix config)")
            init = gr.Dropdown(choices=checkpoint_choices(settings), value="", scale=3, allow_custom_value=True,
                               label="Start from checkpoint", elem_id="train-init")
            picked = gr.State(None)  # the data the tester picked: kept when the lists are read again
            refresh_btn = gr.Button("Refresh lists", size="sm", scale=1, elem_id="train-refresh")
        check_md = gr.Markdown(elem_id="train-check")
        with gr.Row():
            method = gr.Radio([("SFT on the rewrites (sft.jsonl)", "sft"),
                               ("DPO: rewrite preferred to the reply (preference.jsonl)", "dpo")],
                              value="sft", label="Method", elem_id="train-method")
            max_steps = gr.Number(STAGE2["max_steps"], label="Max steps", precision=0, minimum=1,
                                  elem_id="train-max-steps")
            learning_rate = gr.Number(STAGE2["learning_rate"], label="Learning rate", elem_id="train-lr")
            save_steps = gr.Number(STAGE2["save_steps"], precision=0, minimum=1, elem_id="train-save-steps",
                                   label="Save a checkpoint (and measure its perplexity) every N steps")
            run_name = gr.Textbox(label="Run name (folder under runs/)", elem_id="train-run-name")
        gr.Markdown("Other settings come from `data/train_default.toml` (LoRA r16, batch 16, cosine schedule).")
        start_btn = gr.Button("Start training", variant="primary", interactive=False, elem_id="train-start")
        status = gr.Markdown(elem_id="train-status")
        gr.Markdown("### Training job")
        job_id = gr.State(None)
        job_md = gr.Markdown("No training job yet.", elem_id="train-job")
        with gr.Row():
            ppl_plot = gr.LinePlot(x="step", y="perplexity", title="Held-out perplexity (lower is better)",
                                   height=260, elem_id="train-perplexity")
            loss_plot = gr.LinePlot(x="step", y="loss", title="Training loss", height=260, elem_id="train-loss")
        log = gr.Textbox(label="Log (last 40 lines)", lines=12, max_lines=12, interactive=False, autoscroll=True,
                         elem_id="train-log")
        with gr.Row():
            cancel_btn = gr.Button("Cancel the run", variant="stop", interactive=False, elem_id="train-cancel")
            resume_btn = gr.Button("Resume (--resume)", interactive=False, elem_id="train-resume")
        timer = gr.Timer(POLL_S)

    shown = [job_id, job_md, ppl_plot, loss_plot, log, cancel_btn, resume_btn]
    checked = [check_md, run_name, start_btn]
    # One training check at a time (a dry run of `quimbot train`, once per file version: see ``verdicts``).
    checking = dict(concurrency_id="train-check", concurrency_limit=1)

    def pick(data: gr.SelectData):
        return data.value

    source.select(pick, None, [picked], api_visibility="private")  # an option the tester chose
    gr.on([source.change, method.change], check, [source, method, init], checked, api_name="train_check",
          **checking)  # (not on a checkpoint picked: that would reset the run name; Start checks with it)
    gr.on([tab.select, refresh_btn.click], refresh, [source, picked, init], [source, init],
          api_name="train_refresh").then(check, [source, method, init], checked, **checking)
    demo.load(refresh, [source, picked, init], [source, init], api_visibility="private")
    timer.tick(poll, None, shown, show_progress="hidden", api_name="train_poll")
    start_btn.click(start, [source, init, method, max_steps, learning_rate, save_steps, run_name, tester_name],
                    [status, *shown], api_name="train_start")
    cancel_btn.click(cancel, [job_id, tester_name], [status, *shown], api_name="train_cancel")
    resume_btn.click(resume, [job_id, tester_name], [status, *shown], api_name="train_resume")
