"""When a day order ends: the first market close after it was accepted.

The simulator trades around the clock, so "day" cannot mean a session that
opens and closes; it means what a broker's day order means to its owner: good
until the market's next close (by default 16:00 in New York, daylight saving
included), after which the master expires it and releases what it reserved.
An order accepted after the close is good until the next day's close.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

DEFAULT_CLOSE = time(16, 0)
DEFAULT_TIMEZONE = "America/New_York"


def day_order_end(
    now: datetime, close: time = DEFAULT_CLOSE, zone: str = DEFAULT_TIMEZONE
) -> datetime:
    """The first ``close`` (wall-clock time in ``zone``) strictly after ``now``, in UTC."""
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    end = datetime.combine(local.date(), close, tzinfo=tz)
    if end <= local:
        end = datetime.combine(local.date() + timedelta(days=1), close, tzinfo=tz)
    return end.astimezone(timezone.utc)


def parse_clock(text: str) -> time:
    """``"16:00"`` as a time of day (the settings check the form)."""
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))
