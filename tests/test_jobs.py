"""Background jobs (tutor.jobs) with real `quimbot train sft` processes on the bundled model: a job runs to
done with its progress in the run folder, a second is refused naming the first, cancel stops the process
group, resume continues with --resume, and after an app restart (the app is a real process that exits
while its job runs) a job whose process is alive is re-attached and one whose process died is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_train import stage2_rows, tiny, write_jsonl

from core.errors import InputError, NotFoundError
from train.fit.commands import to_toml
from tutor.checkpoints import PROVENANCE_FILE, list_checkpoints
from tutor.config import Settings
from tutor.jobs import JobBusy, Jobs, group_alive
from tutor.store import Store
from tutor.train_plan import progress

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
JOB_WAIT_S = 600  # one tiny training run on this CPU takes well under a minute, with a busy machine minutes


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """The job processes inherit this: one torch thread, as test_train_kill runs them (fast on tiny batches
    and immune to OpenMP spinning on a busy 2-core machine); offline."""
    for name, value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("HF_HUB_OFFLINE", "1"),
                        ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        monkeypatch.setenv(name, value)


@pytest.fixture
def setup(tmp_path):
    settings = Settings(db_path=tmp_path / "var" / "quimbot.db", runs_dir=tmp_path / "runs",
                        exports_dir=tmp_path / "exports")
    data = write_jsonl(tmp_path / "sft.jsonl", stage2_rows(16))
    return settings, data


def train_argv(tmp_path: Path, data: Path, name: str, **kw) -> list[str]:
    config = tmp_path / f"{name}.toml"
    config.write_text(to_toml(tiny(tmp_path, data, run_name=name, **kw)))
    return ["train", "sft", "--config", str(config)]


def wait_for(what: str, condition, jobs: Jobs, job_id: int, timeout: float = JOB_WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"not {what} within {timeout:.0f} s; job #{job_id}'s log ends:\n{jobs.log_tail(job_id, 60)}")


def ended(jobs: Jobs, job_id: int):
    return wait_for("ended", lambda: (lambda j: j if j.state != "running" else None)(jobs.get(job_id)), jobs, job_id)


def test_a_training_job_runs_to_done_and_a_second_job_is_refused_naming_it(tmp_path, setup):
    settings, data = setup
    jobs = Jobs(Store.open(settings.db_path), settings)
    argv = train_argv(tmp_path, data, "first", max_steps=2, save_steps=2)
    job = jobs.start("train", argv, str(settings.runs_dir / "first"), "ana")
    assert job.state == "running" and job.pid and group_alive(job.pid) and jobs.current().id == job.id
    with pytest.raises(JobBusy, match=rf"job #{job.id} \(train sft, started \d\d:\d\d by ana\) is still running"):
        jobs.start("train", train_argv(tmp_path, data, "second"), None, "bob")
    with pytest.raises(InputError, match="only a stopped, failed or cancelled"):
        jobs.resume(job.id, "ana")
    done = ended(jobs, job.id)
    assert (done.state, done.exit_code) == ("done", 0), jobs.log_tail(job.id, 60)
    assert jobs.current() is None and not group_alive(done.pid)
    p = progress(done.argv, done.out_dir)
    assert (p.step, p.max_steps, p.trained) == (2, 2, True) and p.loss is not None
    assert p.complete == ["checkpoint-2"] and not p.incomplete
    assert [c for _, c, _ in p.perplexity] == ["base", "checkpoint-2"]
    assert settings.runs_dir / "first" / "checkpoint-2" in list_checkpoints(settings.runs_dir)
    tail = jobs.log_tail(job.id)
    assert jobs.log_tail(job.id, 10_000).startswith(f"$ quimbot train sft --config {tmp_path}")
    assert "done: 2 steps" in tail and "\r" not in tail
    assert [j.id for j in jobs.recent()] == [job.id] and jobs.recent(kind="compare") == []
    with pytest.raises(InputError, match="is not running"):
        jobs.cancel(job.id, "ana")
    with pytest.raises(NotFoundError):
        jobs.get(999)
    with pytest.raises(InputError, match="Unknown job kind"):
        jobs.start("export", ["export", "stage2"], None, None)


def test_cancel_stops_the_process_group_then_resume_continues_from_the_last_checkpoint(tmp_path, setup):
    settings, data = setup
    jobs = Jobs(Store.open(settings.db_path), settings, grace=5)
    run = settings.runs_dir / "long"
    job = jobs.start("train", train_argv(tmp_path, data, "long", max_steps=6, save_steps=2, perplexity=False),
                     str(run), "ana")
    wait_for("at checkpoint-2", lambda: (run / "checkpoint-2" / PROVENANCE_FILE).is_file(), jobs, job.id)
    started = time.monotonic()
    cancelled = jobs.cancel(job.id, "bob")
    assert time.monotonic() - started < 5 + 5 + 2  # SIGTERM, SIGKILL after the grace, within the bound
    assert (cancelled.state, cancelled.cancelled_by) == ("cancelled", "bob") and not group_alive(job.pid)
    assert jobs.current() is None
    assert run / "checkpoint-2" in list_checkpoints(settings.runs_dir)  # the complete one stays offered
    assert all((c / PROVENANCE_FILE).is_file() for c in list_checkpoints(settings.runs_dir))

    again = jobs.resume(job.id, "ana")
    assert again.argv == job.argv + ["--resume"] and again.resumed_from == job.id and again.out_dir == str(run)
    done = ended(jobs, again.id)
    assert done.state == "done", jobs.log_tail(again.id, 60)
    assert "resuming from" in jobs.log_tail(again.id, 400)
    p = progress(done.argv, done.out_dir)
    assert p.step == 6 and p.complete == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


APP = textwrap.dedent("""
    # An app that starts a job and stops at once, leaving the job running (as when the app is restarted).
    import os, sys, json
    from tutor.config import Settings
    from tutor.jobs import Jobs
    from tutor.store import Store
    settings = Settings(db_path=sys.argv[1], runs_dir=sys.argv[2])
    job = Jobs(Store.open(settings.db_path), settings).start("train", json.loads(sys.argv[3]), sys.argv[4], "ana")
    print(job.id, job.pid, flush=True)
    os._exit(0)
""")


def app_starts_job(settings: Settings, argv: list[str], out_dir: Path) -> tuple[int, int]:
    import json

    done = subprocess.run([sys.executable, "-c", APP, str(settings.db_path), str(settings.runs_dir), json.dumps(argv),
                           str(out_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    job_id, pid = map(int, done.stdout.split())
    return job_id, pid


def test_after_an_app_restart_a_live_job_is_reattached_and_a_dead_one_is_stopped_then_resumed(tmp_path, setup):
    settings, data = setup
    argv = train_argv(tmp_path, data, "restarted", max_steps=2, save_steps=2, perplexity=False)
    run = settings.runs_dir / "restarted"

    # 1. the job's process died with the app (here: killed while the app was down): stopped
    dead_id, dead_pid = app_starts_job(settings, argv, run)
    assert group_alive(dead_pid)
    os.killpg(dead_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while group_alive(dead_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    jobs = Jobs(Store.open(settings.db_path), settings)
    assert [(j.id, j.state) for j in jobs.reattach()] == [(dead_id, "stopped")]
    assert jobs.get(dead_id).exit_code is None and jobs.current() is None

    # 2. the job outlived the app: re-attached, still running, and cancellable from the new app
    other = train_argv(tmp_path, data, "other", max_steps=200, save_steps=100)
    live_id, live_pid = app_starts_job(settings, other, tmp_path / "o")
    jobs = Jobs(Store.open(settings.db_path), settings, grace=5)
    assert [(j.id, j.state) for j in jobs.reattach()] == [(live_id, "running")]
    with pytest.raises(JobBusy, match=f"job #{live_id} "):
        jobs.resume(dead_id, "ana")
    assert jobs.cancel(live_id, "ana").state == "cancelled" and not group_alive(live_pid)

    # 3. one click resumes the stopped job: the same command with --resume, to the end
    again = jobs.resume(dead_id, "ana")
    assert again.argv == argv + ["--resume"]
    done = ended(jobs, again.id)
    assert (done.state, done.exit_code) == ("done", 0), jobs.log_tail(again.id, 60)
    assert list_checkpoints(settings.runs_dir) == [run / "checkpoint-2"]


def test_a_reattached_job_that_ends_while_the_app_is_down_keeps_its_exit_status(tmp_path, setup):
    settings, data = setup
    job_id, pid = app_starts_job(settings, ["train", "config", "--fields"], tmp_path / "none")
    deadline = time.monotonic() + 120
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    jobs = Jobs(Store.open(settings.db_path), settings)
    [job] = jobs.reattach()
    assert (job.state, job.exit_code) == ("done", 0)
    failing, pid = app_starts_job(settings, ["train", "sft", "--dataset", str(tmp_path / "missing.jsonl")],
                                  tmp_path / "none")
    while group_alive(pid) and time.monotonic() < deadline + 120:
        time.sleep(0.1)
    job = jobs.get(failing)  # noticed on read, no restart needed
    assert job.state == "failed" and job.exit_code not in (0, None)
