"""One asset's bar for one update interval (spec 2.4.3, the Asset structure).

Prices are Decimal end to end; in Redis they are JSON with decimals as strings,
so `redis-cli HGET pt:quotes AAPL` is readable and exact.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

PRICE_QUANTUM = Decimal("0.01")
#: What a symbol may be: the settings' asset list and a market data file hold only these.
SYMBOL_RE = re.compile(r"[A-Z0-9.\-^]{1,12}")


@dataclass(frozen=True)
class Quote:
    symbol: str
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    time: datetime  # start of the update interval this bar covers (UTC)

    @property
    def price(self) -> Decimal:
        """The price orders fill at during this interval: the bar's close."""
        return self.close

    def to_json(self) -> str:
        return json.dumps(
            {
                "symbol": self.symbol,
                "open": str(self.open),
                "high": str(self.high),
                "low": str(self.low),
                "close": str(self.close),
                "volume": self.volume,
                "time": self.time.isoformat(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Quote:
        data: dict[str, Any] = json.loads(text)
        return cls(
            symbol=data["symbol"],
            open=Decimal(data["open"]),
            high=Decimal(data["high"]),
            low=Decimal(data["low"]),
            close=Decimal(data["close"]),
            volume=int(data["volume"]),
            time=datetime.fromisoformat(data["time"]),
        )

    def as_record(self) -> dict[str, Any]:
        """The fields sent to clients in a data transfer (see protocol.records)."""
        return {
            "symbol": self.symbol,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "time": self.time,
        }
