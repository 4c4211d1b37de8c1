#!/usr/bin/env python3
"""Generate papertrader/market/data/sample.csv, the bundled history of the ``csv`` provider.

Deterministic: the same seed and dates give the same bytes, so the file can be
re-made and checked (tests/test_market_csv.py does) instead of hand-edited.
Daily bars on weekdays for the eight default assets, from a seeded random walk
with a slight drift; prices are Decimal, the randomness integers (basis
points), so no float touches a price. Invented numbers for practice, not the
assets' real prices.

    python scripts/make_sample_csv.py                 # rewrite the bundled file
    python scripts/make_sample_csv.py --output F.csv  # write elsewhere
"""

from __future__ import annotations

import argparse
import random
import zlib
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

SEED = 20260101
FIRST_DAY = date(2025, 10, 1)
LAST_DAY = date(2026, 10, 30)
#: symbol -> starting close (roughly the order of magnitude of the real asset).
ASSETS: dict[str, Decimal] = {
    "AAPL": Decimal("226.40"),
    "MSFT": Decimal("428.15"),
    "GOOG": Decimal("163.20"),
    "AMZN": Decimal("186.75"),
    "TSLA": Decimal("248.90"),
    "NVDA": Decimal("121.40"),
    "META": Decimal("572.30"),
    "SPY": Decimal("571.05"),
}
OUTPUT = Path(__file__).resolve().parent.parent / "papertrader" / "market" / "data" / "sample.csv"
CENT = Decimal("0.01")
BP = Decimal("0.0001")


def cents(value: Decimal) -> Decimal:
    return max(CENT, value.quantize(CENT, rounding=ROUND_HALF_EVEN))


def trading_days(first: date, last: date) -> list[date]:
    days, day = [], first
    while day <= last:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def rows() -> list[str]:
    lines = ["symbol,time,open,high,low,close,volume"]
    days = trading_days(FIRST_DAY, LAST_DAY)
    for symbol, start in ASSETS.items():
        rng = random.Random(SEED ^ zlib.crc32(symbol.encode()))
        close = start
        for day in days:
            open_ = cents(close * (1 + rng.randint(-60, 60) * BP))  # overnight gap
            move = sum(rng.randint(-90, 92) for _ in range(4))  # ~ +-1.5 %, tiny drift
            close = cents(open_ * (1 + move * BP))
            high = cents(max(open_, close) * (1 + rng.randint(0, 80) * BP))
            low = cents(min(open_, close) * (1 - rng.randint(0, 80) * BP))
            volume = rng.randint(5_000_000, 90_000_000)
            lines.append(f"{symbol},{day.isoformat()},{open_},{high},{low},{close},{volume}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(rows()) + "\n", encoding="utf-8", newline="\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
