"""Which bars each history request covers (spec 4.2.2), shared by the master and the worker.

All days are UTC calendar days, and a range always ends at the end of the
requested day (a range never reaches past the request's date):

| request | bars | covering |
| --- | --- | --- |
| getAssetValueDay(asset, date) | one per minute (the stored bars merged per minute) | that day |
| getAssetValueWeek(asset, date) | daily | the seven days ending on the date |
| getAssetValueMonth(asset, date) | daily | the 1st of the date's month to the date |
| getAssetValueYear(asset, date) | monthly | January 1st of the date's year to the date |
| getAssetValueAllTime(asset) | monthly | everything stored |

The day view merges per minute so that a day is at most 1440 bars whatever
the update interval (with an interval of a minute or more, each stored bar
is its own minute).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

from papertrader.protocol import Instruction

#: The bar size of a history view: what the store aggregates price bars into.
Unit = Literal["minute", "day", "month"]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: The first date a history request may name: nothing is stored before the epoch, and
#: every range built from a date inside [FIRST_DATE, today] stays far from datetime's limits.
FIRST_DATE = EPOCH.date()

#: The short name of each history instruction (Redis keys, logs, the CLI's --range).
KINDS: dict[Instruction, str] = {
    Instruction.GET_ASSET_VALUE_DAY: "day",
    Instruction.GET_ASSET_VALUE_WEEK: "week",
    Instruction.GET_ASSET_VALUE_MONTH: "month",
    Instruction.GET_ASSET_VALUE_YEAR: "year",
    Instruction.GET_ASSET_VALUE_ALL_TIME: "all",
    Instruction.GET_ASSET_VALUE_PREDICTED: "predicted",
}
INSTRUCTIONS: dict[str, Instruction] = {kind: ins for ins, kind in KINDS.items()}
RANGE_NAMES = ("day", "week", "month", "year", "all")


@dataclass(frozen=True)
class Window:
    start: datetime  # inclusive
    end: datetime  # exclusive
    unit: Unit

    def is_open(self, period_start: datetime) -> bool:
        """True while the current update period still falls inside the range (its
        answer can change until the interval ends)."""
        return self.end > period_start


def date_problem(day: date, today: date) -> str | None:
    """Why ``day`` cannot be asked for (an INVALID_DATE reason naming the allowed
    range), or None. Checked before any range is built from it."""
    if FIRST_DATE <= day <= today:
        return None
    where = "in the future" if day > today else "before any history"
    return (
        f"{day.isoformat()} is {where}: dates from {FIRST_DATE.isoformat()} "
        f"to {today.isoformat()} (today, UTC) are allowed"
    )


def midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, timezone.utc)


def window(kind: str, day: date | None, now: datetime) -> Window:
    """The bars a request of ``kind`` for ``day`` covers (``day`` unused for ``all``)."""
    if kind == "all":
        return Window(EPOCH, midnight(now.date()) + timedelta(days=1), "month")
    if day is None:
        raise ValueError(f"a {kind} range needs a date")
    end = midnight(day) + timedelta(days=1)
    if kind == "day":
        return Window(midnight(day), end, "minute")
    if kind == "week":
        return Window(midnight(day - timedelta(days=6)), end, "day")
    if kind == "month":
        return Window(midnight(day.replace(day=1)), end, "day")
    if kind == "year":
        return Window(midnight(day.replace(month=1, day=1)), end, "month")
    raise ValueError(f"unknown range {kind!r}")
