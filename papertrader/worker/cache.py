"""Cache management (spec 3.2.6): the current quotes in process memory.

The master publishes quotes to Redis once per update interval; they cannot
change in between, so the worker loads them once per interval and answers
every quote request from a dict. Quote reads touch neither Redis nor the
master, however many clients ask. Each refresh swaps in a new dict in one
assignment, so a reader sees the old quotes or the new ones, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

import gevent
import redis
from loguru import logger

from papertrader.market.quote import Quote
from papertrader.protocol.lean import Encoded
from papertrader.protocol.message import DEFAULT_MAX_DATA_SIZE
from papertrader.protocol.records import to_record
from papertrader.protocol.transfer import max_chunk_size, split_payload
from papertrader.protocol.values import encode_payload
from papertrader.store.quotes import QuoteStore


class QuoteCache:
    """Quotes of the configured assets, refreshed in the background."""

    def __init__(
        self,
        store: QuoteStore,
        assets: Iterable[str],
        interval: float,
        max_data_size: int = DEFAULT_MAX_DATA_SIZE,
    ) -> None:
        self._store = store
        self._max_data_size = max_data_size
        self._configured = tuple(assets)
        self._interval = interval
        self._quotes: dict[str, Quote] = {}
        # The data-transfer payload of each quote, encoded once per refresh: a
        # quote read then costs a dict lookup and a header, not an encoding.
        self._payloads: dict[str, bytes] = {}
        # And its whole answer (the DATA packets), for the lean path (protocol/lean.py).
        self._answers: dict[str, Encoded] = {}
        self._known: frozenset[str] = frozenset(self._configured)
        self.updated_at: datetime | None = None
        self.loaded = False
        self._runner: gevent.Greenlet | None = None
        self._failing = False

    # reads: plain dict lookups ---------------------------------------------------
    def get(self, symbol: str) -> Quote | None:
        return self._quotes.get(symbol)

    def payload(self, symbol: str) -> bytes | None:
        """The encoded quote record (protocol.records) ready to cut into packets."""
        return self._payloads.get(symbol)

    def answer(self, symbol: str) -> Encoded | None:
        """The quote's DATA packets, encoded, with the request id to patch in."""
        return self._answers.get(symbol)

    def is_known(self, symbol: str) -> bool:
        """Configured for this deployment, or quoted by the master."""
        return symbol in self._known

    def is_stale(self, now: datetime | None = None) -> bool:
        """True when the master has not updated prices for two intervals (its provider
        is failing, or it is down): the quotes served are the last good ones."""
        if self.updated_at is None:
            return True
        age = ((now or datetime.now(timezone.utc)) - self.updated_at).total_seconds()
        return age > 2 * self._interval + 1

    @property
    def known_symbols(self) -> tuple[str, ...]:
        """The configured assets first, in their order, then any others the master quotes."""
        extra = sorted(self._known.difference(self._configured))
        return self._configured + tuple(extra)

    # refresh ---------------------------------------------------------------------
    def refresh(self) -> bool:
        """Load the quotes from Redis now; on failure keep the last good ones."""
        try:
            quotes, updated_at = self._store.load()
        except (redis.RedisError, ValueError, KeyError, ArithmeticError) as exc:
            if not self._failing:
                serving = "serving the last ones" if self.loaded else "no quotes until it answers"
                logger.warning(f"cannot load quotes from Redis ({exc}); {serving}")
            self._failing = True
            return False
        if self._failing:
            logger.info("quotes refresh from Redis works again")
        self._failing = False
        payloads = {
            symbol: encode_payload(to_record(quote.as_record())) for symbol, quote in quotes.items()
        }
        chunk = max_chunk_size(self._max_data_size)
        self._answers = {
            symbol: Encoded(split_payload(payload, chunk), self._max_data_size)
            for symbol, payload in payloads.items()
        }
        self._payloads = payloads
        self._quotes = quotes
        self._known = frozenset(self._configured).union(quotes)
        self.updated_at = updated_at
        self.loaded = True
        return True

    def start(self) -> None:
        """Refresh now and then once per update interval, in a greenlet."""
        if self._runner is None:
            self.refresh()
            self._runner = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.kill(block=True, timeout=5)
            self._runner = None

    def _run(self) -> None:
        while True:
            gevent.sleep(self._interval)
            self.refresh()
