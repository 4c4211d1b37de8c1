"""Market data: the quote model and the providers the master retrieves it from (spec 3.1.6)."""

from papertrader.market.quote import Quote

__all__ = ["Quote"]
