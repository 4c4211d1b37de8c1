"""A bound on how much one line of code may log: repeated entries are summarised.

A client can make a server log (a refused login, a bad frame, a closed
connection); thousands of clients, or one fast one, could make it log
megabytes a second and fill the disk. :class:`LogThrottle` is a loguru
filter on every sink: each call site (file, line, level) may log ``burst``
entries per ``window`` seconds; further entries from it in that window are
counted, not written. The first entry of the next window carries the count
("[1234 more like this in the previous 10 s were not logged]"), and a site
that went quiet is summarised by :meth:`LogThrottle.summaries`, which the
log flusher calls. So the volume is bounded by call sites x burst x entry
size per window, whatever the clients do.

Messages longer than MAX_MESSAGE characters are cut (a traceback is not
part of the message and is bounded by the same per-site budget).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loguru import Record

#: Key in a record's ``extra``: the decision, so every sink agrees on one entry.
DECISION = "pt_throttled"
MAX_MESSAGE = 4000
WINDOW_SECONDS = 10.0


@dataclass
class _Site:
    started: float
    count: int = 0
    suppressed: int = 0


class LogThrottle:
    """Loguru filter: True = write the entry; see the module docstring."""

    def __init__(
        self,
        burst: int,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.window = window
        self._clock = clock
        self._sites: dict[tuple[str, int, int], _Site] = {}
        self._lock = threading.Lock()
        #: Entries not written since start (tests and status read it).
        self.suppressed_total = 0

    def __call__(self, record: Record) -> bool:
        decided = record["extra"].get(DECISION)
        if decided is not None:
            return bool(decided)
        key = (record["file"].path, record["line"], record["level"].no)
        now = self._clock()
        note = ""
        with self._lock:
            site = self._sites.get(key)
            if site is None or now - site.started >= self.window:
                if site is not None and site.suppressed:
                    note = (
                        f" [{site.suppressed} more like this in the previous "
                        f"{self.window:g} s were not logged]"
                    )
                site = self._sites[key] = _Site(now)
            site.count += 1
            allowed = site.count <= self.burst
            if not allowed:
                site.suppressed += 1
                self.suppressed_total += 1
        if allowed:
            message = record["message"]
            if len(message) > MAX_MESSAGE:
                message = message[:MAX_MESSAGE] + f"... ({len(message)} characters)"
            record["message"] = message + note
        record["extra"][DECISION] = allowed
        return allowed

    def summaries(self) -> list[str]:
        """One line per call site whose window ended with entries suppressed (each
        reported once); the flusher logs them."""
        now = self._clock()
        lines = []
        with self._lock:
            for (path, line, _level), site in list(self._sites.items()):
                if site.suppressed and now - site.started >= self.window:
                    lines.append(
                        f"{site.suppressed} log entries from {path}:{line} were not written "
                        f"in {self.window:g} s (more than {self.burst} alike)"
                    )
                    del self._sites[(path, line, _level)]
        return lines
