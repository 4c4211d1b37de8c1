"""Historical OHLCV files: the format the ``csv`` provider replays and `pt market backfill` loads.

Format (UTF-8 text, comma-separated, one header line, then one bar per line)::

    symbol,time,open,high,low,close,volume
    AAPL,2026-01-02,187.15,188.44,183.89,185.64,82488700

* ``symbol``: as configured (``assets``), upper case.
* ``time``: the start of the bar: a date ``YYYY-MM-DD`` (a daily bar, starting at
  00:00 UTC) or an ISO 8601 time (``2026-01-02T14:30:00Z``; no offset means UTC).
* ``open``, ``high``, ``low``, ``close``: plain decimals (``185.64``), no
  exponent; ``low <= open, close <= high``.
* ``volume``: a whole number >= 0.

Rows may come in any order; each symbol's bars are sorted by time, and a
(symbol, time) pair may appear once. Blank lines are skipped. A malformed row
stops the load with the file name, line number and what is wrong: history
that is silently half-loaded is worse than none.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

from papertrader.market.quote import SYMBOL_RE, Quote

HEADER = ("symbol", "time", "open", "high", "low", "close", "volume")
SAMPLE = Path(__file__).resolve().parent / "data" / "sample.csv"
_DECIMAL_RE = re.compile(r"[0-9]+(\.[0-9]{1,6})?")


class CsvFormatError(ValueError):
    """The file is not in the documented format; the message names the line."""


def parse_time(text: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or ISO 8601 (UTC when no offset is given)."""
    text = text.strip()
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), timezone.utc)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _price(text: str, what: str) -> Decimal:
    text = text.strip()
    if not _DECIMAL_RE.fullmatch(text):
        raise ValueError(f"{what} {text!r} is not a plain decimal with at most 6 places")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{what} {text!r} is not a decimal") from None
    if value <= 0:
        raise ValueError(f"{what} must be greater than 0")
    return value


def parse_row(fields: list[str]) -> Quote:
    """One data row as a Quote at the row's own time; ValueError says what is wrong."""
    if len(fields) != len(HEADER):
        raise ValueError(f"expected {len(HEADER)} fields, found {len(fields)}")
    symbol = fields[0].strip().upper()
    if not SYMBOL_RE.fullmatch(symbol):
        raise ValueError(f"symbol {fields[0]!r} is not valid")
    try:
        moment = parse_time(fields[1])
    except ValueError:
        raise ValueError(f"time {fields[1]!r} is not YYYY-MM-DD or ISO 8601") from None
    open_, high, low, close = (
        _price(fields[i], name) for i, name in ((2, "open"), (3, "high"), (4, "low"), (5, "close"))
    )
    volume_text = fields[6].strip()
    if not volume_text.isdigit():
        raise ValueError(f"volume {fields[6]!r} is not a whole number >= 0")
    if not (low <= min(open_, close) and max(open_, close) <= high):
        raise ValueError("prices are inconsistent: need low <= open, close <= high")
    return Quote(symbol, open_, high, low, close, int(volume_text), moment)


def iter_rows(path: Path) -> Iterator[Quote]:
    """The file's bars in file order (header checked); CsvFormatError on the first bad row."""
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise CsvFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None or tuple(h.strip().lower() for h in header) != HEADER:
                raise CsvFormatError(f"{path}, line 1: the header must be {','.join(HEADER)}")
            for fields in reader:
                if not fields or all(not f.strip() for f in fields):
                    continue
                try:
                    yield parse_row(fields)
                except ValueError as exc:
                    raise CsvFormatError(f"{path}, line {reader.line_num}: {exc}") from None
        except UnicodeDecodeError:
            raise CsvFormatError(f"{path}: not UTF-8 text") from None
        except csv.Error as exc:
            raise CsvFormatError(f"{path}, line {reader.line_num}: {exc}") from None


def read_series(path: Path) -> dict[str, list[Quote]]:
    """Every symbol's bars, oldest first; a repeated (symbol, time) is an error."""
    series: dict[str, dict[datetime, Quote]] = {}
    for quote in iter_rows(path):
        bars = series.setdefault(quote.symbol, {})
        if quote.time in bars:
            raise CsvFormatError(f"{path}: {quote.symbol} has two bars at {quote.time.isoformat()}")
        bars[quote.time] = quote
    return {symbol: [bars[t] for t in sorted(bars)] for symbol, bars in series.items()}


def count_rows(path: Path) -> int:
    """Data lines in the file (for a progress bar); cheap, no parsing."""
    try:
        with path.open("rb") as handle:
            return max(0, sum(1 for line in handle if line.strip()) - 1)
    except OSError as exc:
        raise CsvFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
