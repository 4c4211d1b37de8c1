"""The interface every market data provider implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from papertrader.market.quote import Quote


class ProviderError(RuntimeError):
    """The provider could not deliver; the master keeps serving the last good quotes."""


class MarketProvider(Protocol):
    name: str

    def fetch(
        self, symbols: Sequence[str], period_start: datetime, previous: Mapping[str, Quote]
    ) -> dict[str, Quote]:
        """One bar per symbol for the interval starting at ``period_start``.

        ``previous`` holds the last bar of each symbol (after a restart, the one
        in Redis), so prices continue where they left off. One call per
        interval for all symbols: the spec worries about API limits.
        """
        ...
