"""bcrypt's own bounded executor on the master: a flood of logins cannot starve anything.

bcrypt is deliberately slow CPU work. It runs here, in a thread pool sized to
the machine's cores (``bcrypt_threads``, 0 = one per core) and separate from
gevent's default pool (history, forecasts, password-strength checks), so a
login flood neither blocks the event loop nor delays a forecast.

Bounds, so that waiting work never piles up:

* at most ``threads + queue`` jobs are accepted at once (``bcrypt_queue``);
  one more gets :class:`Busy` at once, which the master answers UNAVAILABLE
  ("busy, try again") instead of making the client wait 30 s;
* every job carries its request's deadline and cancellation flag
  (:class:`Job`); a job whose deadline passed or whose request was cancelled
  (the worker gave up, its client left, the link dropped) while it waited is
  dropped with :class:`Expired` when a thread picks it up, never computed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import gevent.threadpool

T = TypeVar("T")


class Busy(Exception):
    """The bcrypt queue is full: answer UNAVAILABLE now."""


class Expired(Exception):
    """The request was given up (deadline passed, or cancelled) before its bcrypt ran."""


@dataclass(eq=False)
class Job:
    """What a forwarded request's work must respect: its deadline (time.monotonic) and
    whether it was cancelled. ``Job()`` never expires (tools, tests)."""

    deadline: float | None = None
    cancelled: bool = field(default=False)

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def expired(self) -> bool:
        return self.cancelled or (self.deadline is not None and time.monotonic() > self.deadline)


def default_threads() -> int:
    """One thread per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class BcryptPool:
    """``run(job, function, *args)`` in a bcrypt thread, within the bounds above."""

    def __init__(self, threads: int = 0, queue: int = 64) -> None:
        self.threads = threads or default_threads()
        self.limit = self.threads + queue
        self._pool = gevent.threadpool.ThreadPool(self.threads)
        self._accepted = 0
        #: Counters for logs and tests.
        self.refused = 0
        self.dropped = 0
        self.completed = 0

    @property
    def accepted(self) -> int:
        """Jobs queued or running now."""
        return self._accepted

    def run(self, job: Job, function: Callable[..., T], *args: Any) -> T:
        if self._accepted >= self.limit:
            self.refused += 1
            raise Busy(f"{self._accepted} password checks are waiting")
        if job.expired:
            self.dropped += 1
            raise Expired("given up before it was queued")
        self._accepted += 1

        def task() -> T:
            if job.expired:  # checked in the thread, when the job's turn has come
                raise Expired("given up while it waited")
            result = function(*args)
            self.completed += 1
            return result

        try:
            result: T = self._pool.apply(task)
            return result
        except Expired:
            self.dropped += 1
            raise
        finally:
            self._accepted -= 1

    def close(self) -> None:
        self._pool.kill()
