"""Replays a historical OHLCV file as the live market (classes, back-tests, offline demos).

Each update interval serves the next row of every symbol in the file as that
interval's bar: the prices are the row's, the time is the interval's (the
rest of the system sees a market that moves once per interval, as with any
provider). At the end of a symbol's rows the replay **loops** back to its
first row: a class keeps a moving market however long it runs (a back-test
reads the whole file once through `history()` instead). The replay starts at
the first row whenever the master starts.

``history()`` hands the file's bars, at their own times, to the master, which
backfills them into ``asset_bars`` at start, so the day/week/month/year views
and charts have data at once, offline. The file format is described in
``papertrader/market/csvfile.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from papertrader.market.csvfile import CsvFormatError, read_series
from papertrader.market.providers.base import ProviderError
from papertrader.market.quote import Quote


class CsvReplayProvider:
    name = "csv"
    api = None

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._series = read_series(path)
        except CsvFormatError as exc:
            raise ProviderError(str(exc)) from None
        if not self._series:
            raise ProviderError(f"{path}: no bars to replay")
        self._next: dict[str, int] = dict.fromkeys(self._series, 0)
        self.api_calls = 0
        #: symbol -> how many times its replay went back to the first row
        self.loops: dict[str, int] = dict.fromkeys(self._series, 0)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted(self._series))

    def history(self) -> list[Quote]:
        """Every bar of the file at its own time, for the backfill."""
        return [quote for bars in self._series.values() for quote in bars]

    def fetch(
        self, symbols: Sequence[str], period_start: datetime, previous: Mapping[str, Quote]
    ) -> dict[str, Quote]:
        bars: dict[str, Quote] = {}
        for symbol in symbols:
            rows = self._series.get(symbol)
            if not rows:
                continue  # not in the file: the master logs it as missing
            index = self._next[symbol]
            if index >= len(rows):
                index = 0
                self.loops[symbol] += 1
            self._next[symbol] = index + 1
            bars[symbol] = dataclasses.replace(rows[index], time=period_start)
        return bars
