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

Logins must not slow trading: a flood of them keeps every bcrypt thread busy,
and the kernel would share the cores evenly between the bcrypt threads and the
processes answering quotes and orders (the worker, PostgreSQL, Redis, and this
process's own event loop). The bcrypt threads therefore run under Linux's
SCHED_IDLE policy (``bcrypt_idle_priority``, on by default): they get every
core nothing else wants, so logins per second are what the cores allow when
trading is quiet, and any other thread that wakes up takes the core at once.
Measured with `python -m bench trading` (1,000 traders, a login flood at
bcrypt's capacity), quote p99 under the flood was 1.2-1.5 times its idle value
with SCHED_IDLE, against 1.7-2.6 at the same priority as trading or at nice 10.
bcrypt releases the GIL while it hashes, so an idle-priority thread holds it
only for the few microseconds around a check. No privilege is needed to lower a
thread's own priority; where SCHED_IDLE is missing, nice 19 is used.
"""

from __future__ import annotations

import os
import threading
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


def idle_priority() -> bool:
    """Put the calling thread (only it: Linux schedules threads) under SCHED_IDLE, or
    at nice 19 where that policy is missing; False where neither can be done (the
    thread then runs as it was)."""
    tid = threading.get_native_id()
    try:
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
        return True
    except (AttributeError, OSError):
        return False


def default_threads() -> int:
    """One thread per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class BcryptPool:
    """``run(job, function, *args)`` in a bcrypt thread, within the bounds above."""

    def __init__(self, threads: int = 0, queue: int = 64, idle: bool = True) -> None:
        self.threads = threads or default_threads()
        self.limit = self.threads + queue
        self.idle = idle
        self._pool = gevent.threadpool.ThreadPool(self.threads)
        self._lowered = threading.local()
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
            if self.idle and not getattr(self._lowered, "done", False):  # once per thread
                idle_priority()
                self._lowered.done = True
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
