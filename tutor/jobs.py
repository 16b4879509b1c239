"""Background jobs: a `quimbot train ...` or `quimbot eval compare ...` run started from the app.

A job is the same command a tester would type, ``sys.executable -m quimbot.cli ARGV``, run in its own
process group (its own session: stopping the app does not stop it), its output in a log file under
``<db folder>/jobs/``, its state in SQLite (``store.jobs``), so it survives a page reload and an app
restart. One job runs at a time; a second is refused with JobBusy naming the one running.

The command runs under a one-line ``/bin/sh`` wrapper that writes its exit status next to the log
(``job-....log.exit``): a job re-attached after an app restart is no longer the app's child, and that
file is how its end is told apart from a crash. States:

    running    the process group is alive
    done       exit status 0                 failed     any other exit status
    cancelled  ended after Cancel            stopped    gone without an exit status (killed with the
                                                        app, the machine restarted): resumable

A finished child is noticed by a watcher thread; a re-attached one when it is read (``get``,
``current``, ``recent``), so nothing here blocks the UI thread but ``cancel``, which waits for the
process group to go (SIGTERM, then SIGKILL after ``grace`` seconds)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from core.errors import InputError, NotFoundError, QuimbotError
from tutor.config import Settings
from tutor.store.jobs import Job

__all__ = ["KINDS", "Job", "JobBusy", "Jobs", "describe"]

KINDS = ("train", "compare")
RESUMABLE = ("stopped", "failed", "cancelled")
CANCEL_GRACE_S = 10.0
ROOT = Path(__file__).resolve().parent.parent  # where `-m quimbot.cli` is found
WRAPPER = '"$@"; code=$?; echo "$code" > "$QUIMBOT_JOB_EXIT"; exit "$code"'


class JobBusy(QuimbotError):
    """A job was asked to start while another one runs; the message names the running one."""


def describe(job: Job) -> str:
    """'job #3 (train sft, started 10:42 by ana)'."""
    started = datetime.fromisoformat(job.started_at).astimezone().strftime("%H:%M")
    by = f" by {job.by}" if job.by else ""
    return f"job #{job.id} ({' '.join(job.argv[:2])}, started {started}{by})"


def _exit_path(job: Job) -> Path:
    return Path(job.log_path + ".exit")


def _read_exit(job: Job) -> int | None:
    try:
        return int(_exit_path(job).read_text().strip())
    except (OSError, ValueError):
        return None


def group_alive(pgid: int | None) -> bool:
    """Whether a process of group ``pgid`` still runs quimbot (zombies do not count: in a container whose
    first process never reaps, a dead job's processes stay zombies). A group whose processes are all
    something else is a reused number, not the job."""
    if not pgid:
        return False
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            if b"quimbot" in (entry / "cmdline").read_bytes():
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


class Jobs:
    """Starts, watches, cancels and resumes the app's background jobs (see the module's doc)."""

    def __init__(self, store, settings: Settings, *, grace: float = CANCEL_GRACE_S):
        self.store = store
        self.settings = settings
        self.grace = grace
        self.folder = Path(settings.db_path).resolve().parent / "jobs"
        self._children: dict[int, subprocess.Popen] = {}
        self._lock = threading.RLock()

    # -- starting ---------------------------------------------------------------------------------
    def start(self, kind: str, argv: list[str], out_dir: str | None, by: str | None) -> Job:
        """Start ``quimbot ARGV`` as a job; JobBusy when one is running."""
        return self._launch(kind, argv, out_dir, by, None)

    def resume(self, job_id: int, by: str | None) -> Job:
        """Start a stopped, failed or cancelled training job again with the same command and ``--resume``
        (training continues from the run's last complete checkpoint)."""
        job = self.get(job_id)
        if job.kind != "train":
            raise InputError(f"Job #{job.id} is a {job.kind} job; only training jobs resume.")
        if job.state not in RESUMABLE:
            raise InputError(f"Job #{job.id} is {job.state}; only a stopped, failed or cancelled training job "
                             "can be resumed.")
        argv = [a for a in job.argv if a not in ("--resume", "--no-resume", "--overwrite")] + ["--resume"]
        return self._launch("train", argv, job.out_dir, by, job.id)

    def _launch(self, kind: str, argv: list[str], out_dir: str | None, by: str | None,
                resumed_from: int | None) -> Job:
        if kind not in KINDS:
            raise InputError(f"Unknown job kind {kind!r}; expected one of {', '.join(KINDS)}.")
        if not argv or not all(isinstance(a, str) for a in argv):
            raise InputError("A job needs a quimbot command line (a list of words after 'quimbot').")
        with self._lock:
            self._refresh()  # a re-attached job that ended meanwhile does not block the next one
            self.folder.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
            log_path = self.folder / f"job-{stamp}-{kind}.log"
            job_id = self.store.jobs.add_if_idle(kind=kind, argv=list(argv), out_dir=out_dir, log_path=str(log_path),
                                                 by=by, resumed_from=resumed_from)
            if job_id is None:
                running = self.store.jobs.running()[0]
                raise JobBusy(f"{describe(running)} is still running; wait for it to end or cancel it first.")
            command = [sys.executable, "-m", "quimbot.cli", *argv]
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "QUIMBOT_JOB_EXIT": str(log_path) + ".exit",
                   "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
            try:
                with open(log_path, "w", encoding="utf-8") as log:
                    log.write(f"$ quimbot {' '.join(argv)}\n")
                    log.flush()
                    proc = subprocess.Popen(["/bin/sh", "-c", WRAPPER, "quimbot-job", *command], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True)
            except OSError as exc:
                self.store.jobs.finish(job_id, "failed", None)
                raise QuimbotError(f"Could not start {' '.join(argv[:2])}: {exc}") from exc
            self.store.jobs.set_pid(job_id, proc.pid)
            self._children[job_id] = proc
            threading.Thread(target=self._watch, args=(job_id, proc), daemon=True,
                             name=f"quimbot-job-{job_id}").start()
        return self.get(job_id)

    def _watch(self, job_id: int, proc: subprocess.Popen) -> None:
        code = proc.wait()
        job = self.store.jobs.get(job_id)
        if job is not None:
            written = _read_exit(job)
            self._end(job, written if written is not None else code)
        with self._lock:
            self._children.pop(job_id, None)

    def _end(self, job: Job, code: int | None) -> None:
        """Record how a running job ended: cancelled (asked to), done (0), failed (another status; a child
        of this app killed by a signal too), or stopped (gone without a status)."""
        if job.cancel_requested_at:
            state = "cancelled"
        elif code == 0:
            state = "done"
        elif code is not None:
            state = "failed"
        else:
            state = "stopped"
        self.store.jobs.finish(job.id, state, code)

    # -- reading ----------------------------------------------------------------------------------
    def _refresh(self) -> None:
        """End the running jobs whose process is gone and that no watcher of this app waits for."""
        with self._lock:
            for job in self.store.jobs.running():
                if job.id in self._children or group_alive(job.pid):
                    continue
                self._end(job, _read_exit(job))

    def get(self, job_id: int) -> Job:
        self._refresh()
        job = self.store.jobs.get(int(job_id))
        if job is None:
            raise NotFoundError(f"There is no job #{job_id}.")
        return job

    def current(self) -> Job | None:
        self._refresh()
        running = self.store.jobs.running()
        return running[0] if running else None

    def recent(self, limit: int = 20, kind: str | None = None) -> list[Job]:
        self._refresh()
        return self.store.jobs.recent(limit, kind)

    def log_tail(self, job_id: int, lines: int = 40) -> str:
        """The last ``lines`` lines of a job's log, a progress bar's redrawn line ("\\r") as its last state."""
        job = self.store.jobs.get(int(job_id))
        if job is None:
            raise NotFoundError(f"There is no job #{job_id}.")
        try:
            with open(job.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 256 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        shown = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
        return "\n".join([line for line in shown if line.strip()][-lines:])

    # -- stopping and restarting ------------------------------------------------------------------
    def cancel(self, job_id: int, by: str | None) -> Job:
        """Stop a running job: SIGTERM to its process group, SIGKILL after ``grace`` seconds; it ends as
        cancelled. Cancelling a job that has already ended is refused, naming its state."""
        job = self.get(job_id)
        if job.state != "running":
            raise InputError(f"Job #{job.id} is not running (it is {job.state}).")
        self.store.jobs.request_cancel(job.id, by)
        for sig, bound in ((signal.SIGTERM, self.grace), (signal.SIGKILL, 5.0)):
            self._signal(job.pid, sig)
            if self._wait_gone(job, bound):
                break
        child = self._children.get(job.id)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
                pass
        ended = self.store.jobs.get(job.id)
        if ended.state == "running":
            self._end(ended, _read_exit(ended))
        return self.store.jobs.get(job.id)

    @staticmethod
    def _signal(pgid: int | None, sig: int) -> None:
        if not pgid:
            return
        try:
            os.killpg(pgid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _wait_gone(self, job: Job, bound: float) -> bool:
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            child = self._children.get(job.id)
            if not group_alive(job.pid) and (child is None or child.poll() is not None):
                return True
            time.sleep(0.1)
        return False

    def reattach(self) -> list[Job]:
        """At app start: each job left running by an earlier app stays running when its process is alive
        (it is watched from here on) and ends otherwise: done or failed when its exit status was written,
        else stopped (resumable). Returns those jobs as they are now."""
        touched = []
        with self._lock:
            for job in self.store.jobs.running():
                if job.id not in self._children and not group_alive(job.pid):
                    self._end(job, _read_exit(job))
                touched.append(self.store.jobs.get(job.id))
        return touched
