"""The ``http`` provider against a local HTTP server replaying Stooq's CSV quote answers.

The server (http.server in a thread, on 127.0.0.1) plays a script of answers
in the real API's documented shape: good quotes, N/D rows, 429 with
Retry-After, 500s, a hang past the timeout, garbage. Each test checks what an
operator would see: quotes that keep flowing, last good prices kept, a clear
ProviderError, and the number of requests the API was sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import redis

from papertrader.market.providers import ProviderError
from papertrader.market.providers.http import StooqProvider, retry_after_seconds, stooq_symbol
from papertrader.market.quote import Quote
from papertrader.master.asset_retrieval import AssetRetrieval, QuoteBook
from papertrader.store.market_status import MarketStatusStore
from papertrader.store.pool import ConnectionPool
from papertrader.store.quotes import QuoteStore

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
HEADER = "Symbol,Date,Time,Open,High,Low,Close,Volume\r\n"
GOOD = (
    HEADER + "AAPL.US,2026-11-24,16:00:05,271.49,275.43,270.55,274.96,46382112\r\n"
    "MSFT.US,2026-11-24,16:00:05,472.10,478.00,470.02,476.55,18230411\r\n"
)
LATER = (
    HEADER + "AAPL.US,2026-11-24,16:05:05,271.49,275.43,270.55,275.10,46482112\r\n"
    "MSFT.US,2026-11-24,16:05:05,472.10,478.00,470.02,476.00,18240411\r\n"
)
ONE_MISSING = HEADER + (
    "AAPL.US,2026-11-24,16:00:05,271.49,275.43,270.55,274.96,46382112\r\n"
    "MSFT.US,N/D,N/D,N/D,N/D,N/D,N/D,N/D\r\n"
)


@dataclass
class Reply:
    status: int = 200
    body: str = GOOD
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class ReplayServer:
    """Answers each GET with the next scripted reply (the last one repeats)."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[dict[str, list[str]]] = []
        self.lock = threading.Lock()
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:

                with replay.lock:
                    replay.requests.append(parse_qs(urlsplit(self.path).query, True))
                    reply = replay.script.pop(0) if len(replay.script) > 1 else replay.script[0]
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/csv")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/q/l/"

    def play(self, *replies: Reply) -> None:
        with self.lock:
            self.script = list(replies)


@pytest.fixture
def api() -> Iterator[ReplayServer]:
    server = ReplayServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def provider(api: ReplayServer, **kwargs: object) -> StooqProvider:
    options: dict[str, object] = {"timeout": 1.0, "backoff": 0.01}
    options.update(kwargs)
    return StooqProvider(url=api.url, **options)  # type: ignore[arg-type]


def test_all_assets_come_in_one_request_in_the_documented_shape(api: ReplayServer) -> None:
    api.play(Reply(body=GOOD))
    source = provider(api, api_key="s3cret")
    quotes = source.fetch(["AAPL", "MSFT"], T0, {})
    assert len(api.requests) == 1 and source.api_calls == 1
    query = api.requests[0]
    assert query["s"] == ["aapl.us,msft.us"] and query["f"] == ["sd2t2ohlcv"]
    assert query["e"] == ["csv"] and "h" in query and query["apikey"] == ["s3cret"]
    aapl = quotes["AAPL"]
    assert aapl.close == Decimal("274.96") and aapl.time == T0
    assert isinstance(aapl.close, Decimal)
    assert "s3cret" not in repr(source)


def test_consecutive_snapshots_become_interval_bars(api: ReplayServer) -> None:
    api.play(Reply(body=GOOD), Reply(body=LATER))
    source = provider(api)
    first = source.fetch(["AAPL", "MSFT"], T0, {})
    second = source.fetch(["AAPL", "MSFT"], T0 + timedelta(minutes=5), first)
    aapl = second["AAPL"]
    assert aapl.open == Decimal("274.96") and aapl.close == Decimal("275.10")
    assert aapl.high == Decimal("275.10") and aapl.low == Decimal("274.96")
    assert aapl.volume == 100_000  # the day's volume grew by that much
    assert second["MSFT"].high == Decimal("476.55") and second["MSFT"].low == Decimal("476.00")


def test_a_symbol_without_data_is_left_out_and_the_others_flow(api: ReplayServer) -> None:
    api.play(Reply(body=ONE_MISSING))
    quotes = provider(api).fetch(["AAPL", "MSFT"], T0, {})
    assert set(quotes) == {"AAPL"}


def test_server_errors_are_retried_with_backoff_and_counted(api: ReplayServer) -> None:
    api.play(Reply(status=500, body="oops"), Reply(status=503, body="busy"), Reply(body=GOOD))
    source = provider(api)
    quotes = source.fetch(["AAPL", "MSFT"], T0, {})
    assert set(quotes) == {"AAPL", "MSFT"}
    assert len(api.requests) == 3 and source.api_calls == 3


def test_a_persistent_500_is_a_provider_error_after_the_retries(api: ReplayServer) -> None:
    api.play(Reply(status=500, body="<html>Internal Server Error</html>"))
    source = provider(api)
    with pytest.raises(ProviderError, match="HTTP 500"):
        source.fetch(["AAPL"], T0, {})
    assert source.api_calls == len(api.requests) == 3  # the first request and 2 retries


def test_429_stops_requests_until_retry_after(api: ReplayServer) -> None:
    api.play(Reply(status=429, body="Too many requests", headers={"Retry-After": "30"}))
    now = [1000.0]
    source = provider(api, clock=lambda: now[0])
    with pytest.raises(ProviderError, match="429"):
        source.fetch(["AAPL"], T0, {})
    assert len(api.requests) == 1  # a 429 is not retried at once
    now[0] += 10
    with pytest.raises(ProviderError, match="not asking again"):
        source.fetch(["AAPL"], T0, {})
    assert len(api.requests) == 1 and source.api_calls == 1
    api.play(Reply(body=GOOD))
    now[0] += 21
    assert set(source.fetch(["AAPL", "MSFT"], T0, {})) == {"AAPL", "MSFT"}
    assert len(api.requests) == 2


def test_retry_after_as_an_http_date() -> None:
    assert retry_after_seconds("Wed, 25 Nov 2026 12:00:30 GMT", now=1795608000.0) == 30.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_a_hanging_api_times_out(api: ReplayServer) -> None:
    api.play(Reply(body=GOOD, delay=1.5))
    source = provider(api, timeout=0.3, retries=0)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="did not answer|broke off|cannot reach"):
        source.fetch(["AAPL"], T0, {})
    assert time.monotonic() - started < 1.4


@pytest.mark.parametrize(
    "body",
    [
        "",
        "<html><body>Exceeded the daily hits limit</body></html>",
        "Symbol,Date\r\nAAPL.US,2026-11-24\r\n",
        HEADER + "AAPL.US,2026-11-24,16:00:05,abc,1e5,NaN,-3,xx\r\n",
        "\x00\x01\x02 garbage",
    ],
)
def test_garbage_is_a_clear_provider_error(api: ReplayServer, body: str) -> None:
    api.play(Reply(body=body))
    with pytest.raises(ProviderError, match="malformed answer|no usable quote"):
        provider(api).fetch(["AAPL"], T0, {})


def test_nothing_listening_is_a_provider_error() -> None:
    source = StooqProvider(url="http://127.0.0.1:9/q/l/", timeout=0.5, retries=0)
    with pytest.raises(ProviderError, match="cannot reach"):
        source.fetch(["AAPL"], T0, {})


def test_symbols_are_mapped_to_stooq_names() -> None:
    assert stooq_symbol("AAPL") == "aapl.us"
    assert stooq_symbol("BRK.B") == "brk-b.us"
    assert stooq_symbol("VOD.UK") == "vod.uk"
    assert stooq_symbol("^SPX") == "^spx"


def test_the_master_keeps_the_last_quotes_marks_them_stale_and_counts_calls(
    api: ReplayServer, database_url: str, redis_client: redis.Redis
) -> None:
    """One interval costs one call; an outage keeps the last good prices, marked stale."""
    pool = ConnectionPool(database_url, size=2)
    book = QuoteBook()
    status = MarketStatusStore(redis_client)
    loop = AssetRetrieval(
        ("AAPL", "MSFT"), 5.0, provider(api), book, QuoteStore(redis_client), pool, status=status
    )
    try:
        api.play(Reply(body=GOOD))
        loop.tick(now=T0)
        loop.tick(now=T0 + timedelta(seconds=5))
        assert status.read().api_calls == 2  # two intervals, two calls
        good: dict[str, Quote] = dict(book.snapshot().quotes)
        assert status.read().ok is True and not status.read().stale(T0 + timedelta(seconds=6))

        api.play(Reply(body="<html>down for maintenance</html>"))
        loop.tick(now=T0 + timedelta(seconds=10))
        after = status.read()
        assert after.ok is False and "malformed" in (after.last_error or "")
        assert after.stale() and after.api_calls == 3
        assert book.snapshot().quotes == good  # the last good quotes are still served
        assert QuoteStore(redis_client).load()[0]["AAPL"].close == Decimal("274.96")
    finally:
        pool.close()
