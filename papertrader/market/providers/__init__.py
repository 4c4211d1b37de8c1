"""Market data providers behind one small interface, chosen by the `market_provider` setting."""

from __future__ import annotations

from papertrader.market.providers.base import MarketProvider, ProviderError
from papertrader.market.providers.sim import SimulatedProvider


def make_provider(name: str, seed: int = 42) -> MarketProvider:
    """The provider a deployment configured (`market_provider`)."""
    if name == "sim":
        return SimulatedProvider(seed)
    raise ProviderError(f"market_provider {name!r} is not available; allowed: sim")


__all__ = ["MarketProvider", "ProviderError", "SimulatedProvider", "make_provider"]
