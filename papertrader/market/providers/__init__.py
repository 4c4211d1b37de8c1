"""Market data providers behind one small interface, chosen by the `market_provider` setting.

* ``sim``: a seeded random walk, offline (the default).
* ``http``: a public quote API over HTTP (``market_http_api``; see ``http.py``).
* ``csv``: replays a historical OHLCV file (``market_csv_path``, else the bundled
  sample; see ``csv_replay.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from papertrader.market.csvfile import SAMPLE
from papertrader.market.providers.base import MarketProvider, ProviderError
from papertrader.market.providers.sim import SimulatedProvider

if TYPE_CHECKING:
    from papertrader.config import Settings

PROVIDERS = ("sim", "http", "csv")


def make_provider(name: str, seed: int = 42) -> MarketProvider:
    """A provider that needs no settings beyond its name (``sim``, or ``csv`` on the sample)."""
    if name == "sim":
        return SimulatedProvider(seed)
    if name == "csv":
        from papertrader.market.providers.csv_replay import CsvReplayProvider

        return CsvReplayProvider(SAMPLE)
    raise ProviderError(f"market_provider {name!r} is not available; allowed: sim, csv")


def provider_from_settings(settings: Settings) -> MarketProvider:
    """The provider a deployment configured, with its settings; ProviderError if unusable."""
    name = settings.market_provider
    if name == "http":
        from papertrader.market.providers.http import make_http_provider

        return make_http_provider(
            settings.market_http_api,
            url=settings.market_http_url,
            api_key=settings.market_api_key,
            timeout=settings.market_timeout,
        )
    if name == "csv":
        from papertrader.market.providers.csv_replay import CsvReplayProvider

        return CsvReplayProvider(settings.market_csv_path or SAMPLE)
    if name == "sim":
        return SimulatedProvider(settings.market_seed)
    raise ProviderError(f"market_provider {name!r} is not available; allowed: {PROVIDERS}")


__all__ = [
    "PROVIDERS",
    "MarketProvider",
    "ProviderError",
    "SimulatedProvider",
    "make_provider",
    "provider_from_settings",
]
