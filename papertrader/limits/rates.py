"""``Rate``: how many requests per period a limit allows, as settings spell it.

A rate is written ``N/UNIT`` or ``N/Ks`` (``30/minute``, ``10/hour``,
``5/90s``); units are second, minute, hour and day (s, min, h, d too). It
allows a burst of N, then one request every period/N.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {
    "s": 1, "sec": 1, "second": 1,
    "m": 60, "min": 60, "minute": 60,
    "h": 3600, "hour": 3600,
    "d": 86400, "day": 86400,
}  # fmt: skip
_RATE_RE = re.compile(r"\s*(\d{1,9})\s*/\s*(\d{1,9})?\s*([a-z]+)\s*")


@dataclass(frozen=True)
class Rate:
    """``limit`` requests per ``period`` seconds."""

    limit: int
    period: int

    def __str__(self) -> str:
        for name in ("day", "hour", "minute", "second"):
            if self.period == _UNITS[name]:
                return f"{self.limit}/{name}"
        return f"{self.limit}/{self.period}s"


def parse_rate(text: str) -> Rate:
    """``"30/minute"`` -> Rate(30, 60); ValueError with the accepted forms otherwise."""
    match = _RATE_RE.fullmatch(text.lower())
    if match is None or match[3].rstrip("s") not in _UNITS and match[3] not in _UNITS:
        raise ValueError(f"{text!r} is not N/unit (e.g. 30/minute, 10/hour, 5/90s)")
    unit = match[3] if match[3] in _UNITS else match[3].rstrip("s")
    count, multiple = int(match[1]), int(match[2] or 1)
    period = multiple * _UNITS[unit]
    if count < 1 or period < 1:
        raise ValueError(f"{text!r}: both the count and the period must be at least 1")
    return Rate(count, period)
