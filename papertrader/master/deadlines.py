"""When a forwarded request stops being worth answering, on the master's own clock.

Every request a worker forwards carries, in the header's ``timestamp``, the
time the worker received it from its client (microseconds, the worker's
clock). The master told the worker in LINK_WELCOME how long it waits for an
answer (``request_deadline_seconds``), so the request's deadline is that
stamp plus that budget. Worker and master clocks may differ (the handshake
tolerates 30 s), so the master converts the worker's stamps to its own clock
with :class:`LinkClock`: every stamped frame of the link (LINK_HELLO,
HEARTBEATs) gives a sample ``received - stamp`` = clock offset + transit
time, and the smallest recent sample is the best estimate of the offset.

A request whose deadline has passed is dropped before its work starts (the
worker has already told its client it timed out).
"""

from __future__ import annotations

import contextvars
import time
from collections import deque

from papertrader.master.bcrypt_pool import Job

#: The Job of the request this greenlet is answering (set by the link, read by bcrypt).
_current: contextvars.ContextVar[Job | None] = contextvars.ContextVar("pt_job", default=None)


def current_job() -> Job | None:
    """The deadline and cancellation flag of the request being answered, if any."""
    return _current.get()


def set_current_job(job: Job | None) -> None:
    """Called by the link's request greenlet before it routes the request."""
    _current.set(job)


#: Offset samples kept; the smallest wins (old ones age out after clock corrections).
SAMPLES = 16


class LinkClock:
    """The offset between one worker's clock and ours, learnt from its stamped frames."""

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=SAMPLES)

    def observe(self, stamp_us: int, received: float | None = None) -> None:
        """A frame stamped ``stamp_us`` (worker clock) arrived at ``received`` (ours)."""
        if stamp_us > 0:
            now = time.time() if received is None else received
            self._samples.append(now - stamp_us / 1_000_000)

    @property
    def offset(self) -> float | None:
        """Seconds to add to a worker stamp to get our time; None before any sample."""
        return min(self._samples) if self._samples else None

    def job(self, stamp_us: int, budget: float) -> Job:
        """The Job of a request stamped ``stamp_us``: deadline = stamp + budget, ours."""
        now_wall, now_mono = time.time(), time.monotonic()
        offset = self.offset
        if stamp_us <= 0 or offset is None:
            return Job(deadline=now_mono + budget)
        # Never later than "received now": a sample can only overestimate the offset.
        sent = min(stamp_us / 1_000_000 + offset, now_wall)
        return Job(deadline=now_mono + (sent + budget - now_wall))
