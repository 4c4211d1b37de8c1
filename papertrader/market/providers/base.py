"""The interface every market data provider implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from papertrader.market.quote import Quote


class ProviderError(RuntimeError):
    """The provider could not deliver; the master keeps serving the last good quotes."""


class MarketProvider(Protocol):
    """``fetch`` is all the master needs. Optional extras, looked up with getattr so
    test doubles and the simulator need not define them:

    * ``api_calls: int``: requests sent to a remote API so far (retries included);
      the master adds the growth per interval to a Redis counter.
    * ``api: str``: which remote API (shown by `pt market status`).
    * ``history() -> list[Quote]``: bars to backfill into ``asset_bars`` at start,
      each at its own time (the csv provider's file).
    """

    name: str

    def fetch(
        self, symbols: Sequence[str], period_start: datetime, previous: Mapping[str, Quote]
    ) -> dict[str, Quote]:
        """One bar per symbol for the interval starting at ``period_start``.

        ``previous`` holds the last bar of each symbol (after a restart, the one
        in Redis), so prices continue where they left off. One call per
        interval for all symbols: the spec worries about API limits. A symbol
        the provider has nothing for is left out of the result (its last quote
        stays in place); ProviderError when nothing usable came back.
        """
        ...
