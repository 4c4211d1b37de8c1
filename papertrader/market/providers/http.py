"""Quotes from a real public API over HTTP (``market_provider = "http"``).

The API: **Stooq's CSV quote endpoint** (``market_http_api = "stooq"``),
``GET https://stooq.com/q/l/?s=aapl.us,msft.us&f=sd2t2ohlcv&h&e=csv``. Why
this one: it answers **every configured asset in one request** (the spec
worries about API limits: one update interval costs one call, whatever the
number of assets), it is plain CSV with decimal text (no float ever touches a
price), and it has needed no key. The answer, one line per symbol asked::

    Symbol,Date,Time,Open,High,Low,Close,Volume
    AAPL.US,2026-11-24,22:00:09,271.49,275.43,270.55,274.96,46382112
    XYZ.US,N/D,N/D,N/D,N/D,N/D,N/D,N/D

(``N/D``: no data for that symbol; it keeps its last quote.) Where Stooq asks
for a key (it has started to gate some endpoints behind one), set
``market_api_key``: it is sent as the ``apikey`` parameter, and never logged.

No keyed second API is built in: the keyed alternatives we looked at either
cost one request per symbol (Alpha Vantage, Finnhub) or charge per symbol
in a batch, so they bring nothing the interval needs that Stooq lacks, and
cost the limits the spec warns about. ``market_http_url`` points the provider
at a mirror or at a recorded replay (the tests run one on localhost).

Symbols: ``AAPL`` is asked as ``aapl.us`` (US listing by default); a symbol
that already names its market (``VOD.UK``, ``BTC.V``) or an index (``^SPX``)
is passed through lower-cased; a class share ``BRK.B`` becomes ``brk-b.us``.

The API gives the day's running open/high/low/close/volume; an interval bar is
made from two consecutive snapshots: open = the previous interval's close,
close = the last price, high/low = the larger/smaller of the two (the API does
not say what happened in between), volume = how much the day's volume grew.

Transport: one ``requests.Session`` (connections reused), a timeout on every
request (``market_timeout``), urllib3 ``Retry`` with backoff for connection
errors and 5xx answers (a ``Retry-After`` there is obeyed up to a few
seconds), and **429**: no retry now, no request at all until its
``Retry-After`` has passed (the interval keeps the last quotes meanwhile).
Every request sent, retries included, is counted in ``api_calls``.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from papertrader.market.providers.base import ProviderError
from papertrader.market.quote import Quote

STOOQ_URL = "https://stooq.com/q/l/"
STOOQ_HEADER = ("symbol", "date", "time", "open", "high", "low", "close", "volume")
#: Market suffixes Stooq knows; a symbol ending in one is passed through as it is.
STOOQ_MARKETS = frozenset({"US", "UK", "DE", "JP", "HK", "HU", "PL", "V"})
USER_AGENT = "PaperTrader/0.1 (paper trading practice)"
#: Retries after the first request (connection errors, 500, 502, 503, 504).
RETRIES = 2
BACKOFF = 0.25
#: A Retry-After on a 5xx is obeyed up to this many seconds; longer waits are left
#: to the next interval rather than holding the update loop.
MAX_RETRY_SLEEP = 3.0
#: How long to stay away after a 429 that did not say (Retry-After missing).
DEFAULT_RATE_LIMIT_WAIT = 60.0
#: Longest body we read: 8 assets are ~500 bytes; anything huge is not a quote list.
MAX_BODY = 1024 * 1024
_SIX_PLACES = Decimal("0.000001")
_DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class _CountingRetry(Retry):
    """urllib3's Retry that reports every retry it grants (each one is another request)."""

    on_retry: Callable[[], None] | None = None
    #: A 429 is never retried here (the provider waits out its Retry-After instead);
    #: a 503's Retry-After is obeyed, capped by get_retry_after.
    RETRY_AFTER_STATUS_CODES = frozenset({503})

    def new(self, **kw: Any) -> _CountingRetry:
        fresh: _CountingRetry = super().new(**kw)
        fresh.on_retry = self.on_retry
        return fresh

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> _CountingRetry:
        # MaxRetryError when exhausted: no further request, nothing to count.
        granted = super().increment(method, url, response, error, _pool, _stacktrace)
        if self.on_retry is not None:
            self.on_retry()
        return granted

    def get_retry_after(self, response: Any) -> float | None:
        wait = super().get_retry_after(response)
        return None if wait is None else min(wait, MAX_RETRY_SLEEP)


def stooq_symbol(symbol: str) -> str:
    """Our symbol as Stooq spells it (see the module docstring)."""
    if symbol.startswith("^"):
        return symbol.lower()
    base, dot, market = symbol.rpartition(".")
    if dot and market in STOOQ_MARKETS:
        return symbol.lower()
    return symbol.replace(".", "-").lower() + ".us"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now; None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _decimal(text: str, what: str) -> Decimal:
    text = text.strip()
    if not _DECIMAL_RE.fullmatch(text):
        raise ValueError(f"{what} {text[:20]!r} is not a decimal")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{what} {text[:20]!r} is not a decimal") from None
    if value <= 0:
        raise ValueError(f"{what} {text} is not positive")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        value = value.quantize(_SIX_PLACES)
    return value


class StooqProvider:
    """The ``http`` provider speaking Stooq's CSV quote endpoint."""

    name = "http"
    api = "stooq"

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = RETRIES,
        backoff: float = BACKOFF,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url or STOOQ_URL
        self._api_key = api_key
        self.timeout = timeout
        self._clock = clock
        self.api_calls = 0
        self._blocked_until = 0.0
        #: symbol -> (the API's date of the day, the day's volume at the last snapshot)
        self._day_volume: dict[str, tuple[str, int]] = {}
        retry = _CountingRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            backoff_factor=backoff,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=frozenset({"GET"}),
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        retry.on_retry = self._count_call
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "text/csv, text/plain"})
        adapter = HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=2)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def __repr__(self) -> str:  # never the key
        return f"StooqProvider(url={self.url!r}, api_key={'***' if self._api_key else None})"

    def _count_call(self) -> None:
        self.api_calls += 1

    def close(self) -> None:
        self.session.close()

    # the request --------------------------------------------------------------------
    def _query(self, symbols: Sequence[str]) -> str:
        # Built by hand: Stooq wants the bare flags `h` and `e=csv`, and commas unescaped.
        # Symbols are validated settings ([A-Z0-9.-^]), so they need no escaping.
        query = f"s={','.join(stooq_symbol(s) for s in symbols)}&f=sd2t2ohlcv&h&e=csv"
        if self._api_key:
            query += "&apikey=" + quote(self._api_key, safe="")
        return query

    def _get(self, symbols: Sequence[str]) -> str:
        now = self._clock()
        if now < self._blocked_until:
            raise ProviderError(
                f"rate limited by the API (429): not asking again for "
                f"{self._blocked_until - now:.0f} s more, as its Retry-After said"
            )
        self.api_calls += 1
        try:
            response = self.session.get(
                f"{self.url}?{self._query(symbols)}",
                timeout=(self.timeout, self.timeout),
                stream=True,
            )
        except requests.Timeout:
            raise ProviderError(f"the API did not answer within {self.timeout:g} s") from None
        except requests.RequestException as exc:
            raise ProviderError(f"cannot reach the API: {_short(exc)}") from None
        with response:
            if response.status_code == 429:
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                wait = DEFAULT_RATE_LIMIT_WAIT if wait is None else wait
                self._blocked_until = self._clock() + wait
                raise ProviderError(f"rate limited by the API (429); Retry-After {wait:.0f} s")
            if response.status_code != 200:
                raise ProviderError(f"the API answered HTTP {response.status_code}")
            try:
                body = response.raw.read(MAX_BODY + 1, decode_content=True)
            except requests.RequestException as exc:
                raise ProviderError(f"the answer broke off: {_short(exc)}") from None
            except Exception as exc:  # urllib3 read errors (timeouts, resets)
                raise ProviderError(f"the answer broke off: {_short(exc)}") from None
        if len(body) > MAX_BODY:
            raise ProviderError(f"the answer is larger than {MAX_BODY} bytes: not a quote list")
        try:
            return str(body.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ProviderError("the answer is not UTF-8 text") from None

    # the answer ---------------------------------------------------------------------
    def parse(self, text: str, symbols: Sequence[str]) -> dict[str, dict[str, Any]]:
        """symbol -> {date, open, high, low, close, volume} of the rows that have data."""
        wanted = {stooq_symbol(s).upper(): s for s in symbols}
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None or tuple(h.strip().lower() for h in header) != STOOQ_HEADER:
            shown = text.strip().splitlines()[0][:80] if text.strip() else "an empty body"
            raise ProviderError(f"malformed answer: expected the CSV quote header, got {shown!r}")
        rows: dict[str, dict[str, Any]] = {}
        for fields in reader:
            if len(fields) != len(STOOQ_HEADER):
                continue
            symbol = wanted.get(fields[0].strip().upper())
            if symbol is None or "N/D" in (f.strip() for f in fields[3:7]):
                continue
            try:
                open_, high, low, close = (
                    _decimal(fields[i], name)
                    for i, name in ((3, "open"), (4, "high"), (5, "low"), (6, "close"))
                )
                volume_text = fields[7].strip()
                volume = int(volume_text) if volume_text.isdigit() else 0
            except ValueError:
                continue
            rows[symbol] = {
                "date": fields[1].strip(),
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": volume,
            }
        return rows

    def fetch(
        self, symbols: Sequence[str], period_start: datetime, previous: Mapping[str, Quote]
    ) -> dict[str, Quote]:
        rows = self.parse(self._get(symbols), symbols)
        if not rows:
            raise ProviderError(f"the answer had no usable quote for {', '.join(symbols)}")
        bars: dict[str, Quote] = {}
        for symbol, row in rows.items():
            close: Decimal = row["close"]
            last = previous.get(symbol)
            open_ = last.close if last is not None else row["open"]
            bars[symbol] = Quote(
                symbol=symbol,
                open=open_,
                high=max(open_, close),
                low=min(open_, close),
                close=close,
                volume=self._volume_growth(symbol, row["date"], row["volume"]),
                time=period_start,
            )
        return bars

    def _volume_growth(self, symbol: str, day: str, volume: int) -> int:
        seen = self._day_volume.get(symbol)
        self._day_volume[symbol] = (day, volume)
        if seen is None:
            return 0  # the first snapshot: what happened before it is not this interval's
        if seen[0] != day:
            return volume  # a new trading day: all of its volume so far
        return max(0, volume - seen[1])


_KEY_RE = re.compile(r"(apikey=)[^&\s'\")]+", re.IGNORECASE)


def _short(exc: BaseException) -> str:
    """A one-line reason for the log; an API key inside a URL is masked."""
    text = _KEY_RE.sub(r"\1***", str(exc) or type(exc).__name__)
    return text if len(text) <= 160 else text[:157] + "..."


def make_http_provider(
    api: str, *, url: str | None, api_key: str | None, timeout: float
) -> StooqProvider:
    """The provider for ``market_http_api``."""
    if api == "stooq":
        return StooqProvider(url=url, api_key=api_key, timeout=timeout)
    raise ProviderError(f"market_http_api {api!r} is not known; allowed: stooq")
