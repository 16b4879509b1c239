"""How a model lane sends requests: retries, Retry-After, and a throttle shared by the lane's workers.

Concurrency (``GenerateConfig.concurrency``, ``--concurrency N``): up to N entries are in flight at
once, each in a worker thread that asks the first lane still active, through the same backend
object (the Ollama and OpenAI clients are thread-safe; in-process engines, gguf: and hf:, hold a
lock around their model, so they get one request at a time). The main thread writes the results
strictly in index order, so the two files always hold a contiguous run of entries 0..k and the
resume rule above stays exact: after a kill -9, entries that were in flight (or finished but not
yet written) are simply generated again. Each model lane has a throttle: a 402 pauses it for every
worker at once (no new request is sent; requests already in flight finish, or fail and are redone
on the next lane or on resume); a 429 (or 503) halves the lane's concurrency and makes every worker
of the lane wait for the server's Retry-After (or the backoff, whichever is longer) before the next
request, and the concurrency grows back by one after as many successes in a row; each request is
retried at most ``retries`` times.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
SLOW_DOWN = {429, 503}  # the server asks the whole lane to send less
IN_PROCESS_ENGINES = {"gguf", "hf"}  # one model in this process, behind a lock: one request at a time


class LaneThrottle:
    """How many requests one model lane may have in flight, and when it may send the next one.

    Shared by every worker thread of the run. ``pause`` stops the lane for all of them at once;
    ``slow_down`` halves the allowed concurrency and holds every next request back until the
    server's wait is over; each success in a row beyond ``allowed`` of them raises it by one again."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.limit = max(1, limit)
        self.allowed = self.limit
        self.in_flight = 0
        self.peak_in_flight = 0
        self.not_before = 0.0
        self.paused: str | None = None
        self.slowdowns = 0
        self._streak = 0
        self._clock, self._sleep = clock, sleep
        self._cond = threading.Condition()

    def acquire(self) -> bool:
        """Take a slot (waiting for one, and for the lane's hold-back time); False when paused."""
        with self._cond:
            while self.paused is None and self.in_flight >= self.allowed:
                self._cond.wait(0.25)
            if self.paused is not None:
                return False
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            wait = self.not_before - self._clock()
        if wait > 0:
            self._sleep(wait)
        if self.paused is not None:  # paused (402 elsewhere, or the run stopped) while this one waited
            self.release()
            return False
        return True

    def release(self, ok: bool = False) -> None:
        with self._cond:
            self.in_flight -= 1
            if ok:
                self._streak += 1
                if self.allowed < self.limit and self._streak >= self.allowed:
                    self.allowed += 1
                    self._streak = 0
            self._cond.notify_all()

    def slow_down(self, wait: float) -> None:
        with self._cond:
            self.slowdowns += 1
            self.allowed = max(1, self.allowed // 2)
            self._streak = 0
            self.not_before = max(self.not_before, self._clock() + wait)

    def pause(self, reason: str) -> None:
        with self._cond:
            if self.paused is None:
                self.paused = reason
            self._cond.notify_all()


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (Retry-After / retry-after-ms), from a BackendError or the
    HTTP error it was raised from; None when it said nothing."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        value = getattr(exc, "retry_after", None)
        if isinstance(value, (int, float)):
            return float(value)
        headers = getattr(getattr(exc, "response", None), "headers", None)
        if headers is not None:
            ms = headers.get("retry-after-ms")
            if ms:
                try:
                    return float(ms) / 1000
                except ValueError:
                    pass
            text = headers.get("retry-after")
            if text:
                try:
                    return max(0.0, float(text))
                except ValueError:
                    try:
                        return max(0.0, parsedate_to_datetime(text).timestamp() - time.time())
                    except (TypeError, ValueError):
                        return None
        exc = exc.__cause__ or exc.__context__
    return None


def lane_concurrency(spec: str, requested: int) -> int:
    """Requests a model lane may have in flight: ``requested``, except for in-process engines
    (gguf:, hf:), whose backend holds one model behind a lock and answers one request at a time."""
    return 1 if spec.split(":", 1)[0] in IN_PROCESS_ENGINES else max(1, requested)
