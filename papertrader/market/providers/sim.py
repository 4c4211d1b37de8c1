"""A simulated market: a random walk per asset, the same for the same seed.

Offline and free of API limits, so it is the default for development, tests and
classes. All arithmetic on prices is Decimal; the randomness is integers
(basis points), so no binary float ever touches a price.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from papertrader.market.quote import PRICE_QUANTUM, Quote

_BP = Decimal("0.0001")


class SimulatedProvider:
    name = "sim"

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed

    def _rng(self, symbol: str, period_start: datetime) -> random.Random:
        """Deterministic per (seed, symbol, interval): replays give the same bars."""
        key = f"{self.seed}:{symbol}:{int(period_start.timestamp() * 1000)}"
        return random.Random(zlib.crc32(key.encode()))

    def start_price(self, symbol: str) -> Decimal:
        """A stable opening price per symbol and seed, between 20.00 and 520.00."""
        cents = 2000 + zlib.crc32(f"{self.seed}:{symbol}".encode()) % 50000
        return Decimal(cents) / 100

    def fetch(
        self, symbols: Sequence[str], period_start: datetime, previous: Mapping[str, Quote]
    ) -> dict[str, Quote]:
        bars: dict[str, Quote] = {}
        for symbol in symbols:
            rng = self._rng(symbol, period_start)
            last = previous.get(symbol)
            open_ = last.close if last else self.start_price(symbol)
            move_bp = sum(rng.randint(-25, 25) for _ in range(4))  # roughly normal, +-1%
            close = _price(open_ * (1 + move_bp * _BP))
            high = _price(max(open_, close) * (1 + rng.randint(0, 15) * _BP))
            low = _price(min(open_, close) * (1 - rng.randint(0, 15) * _BP))
            bars[symbol] = Quote(
                symbol=symbol,
                open=open_,
                high=max(high, open_, close),
                low=min(low, open_, close),
                close=close,
                volume=rng.randint(1_000, 500_000),
                time=period_start,
            )
        return bars


def _price(value: Decimal) -> Decimal:
    return max(value.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN), PRICE_QUANTUM)
