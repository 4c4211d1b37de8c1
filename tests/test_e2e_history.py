"""Price history end to end: client -> worker (cache) -> master -> PostgreSQL, and back.

Real master and worker processes (test_e2e_support.Servers) with a small
max_data_size, so a day of minute bars crosses the link and the client
connection as over a hundred DATA packets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import redis
from test_e2e_support import PASSWORD, Servers, new_user, running
from tls_support import client_context

from papertrader.client import ClientError
from papertrader.client.connection import BlockingConnection
from papertrader.market.quote import Quote
from papertrader.protocol import (
    HEADER_SIZE,
    ConnectionStateCode,
    ErrorCode,
    Instruction,
    Message,
    encode_message,
    encode_payload,
)
from papertrader.protocol.records import to_record
from papertrader.store import keys
from papertrader.store.history import Bar, insert_history
from papertrader.store.pool import ConnectionPool

DAY = date(2026, 3, 2)
MAX_DATA_SIZE = 2048


def minute_bars() -> list[Quote]:
    """A full day of one-minute bars for AAPL, prices with 2 to 4 decimals."""
    start = datetime(2026, 3, 2, tzinfo=timezone.utc)
    quotes = []
    for minute in range(1440):
        close = Decimal(15000 + (minute * 37) % 900) / 100
        quotes.append(
            Quote("AAPL", close - Decimal("0.0125"), close + 1, close - 1, close,
                  1000 + minute, start + timedelta(minutes=minute))
        )  # fmt: skip
    return quotes


@pytest.fixture(scope="module")
def bars() -> list[Quote]:
    return minute_bars()


@pytest.fixture
def servers(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str, bars: list[Quote]
) -> Iterator[Servers]:
    pool = ConnectionPool(database_url, size=1)
    try:
        insert_history(pool, bars)
    finally:
        pool.close()
    stack = Servers(
        tmp_path_factory.mktemp("history"),
        redis_url,
        database_url,
        workers=2,
        env_extra={"PT_MAX_DATA_SIZE": str(MAX_DATA_SIZE), "PT_UPDATE_INTERVAL": "1.0"},
    )
    with running(stack):
        stack.wait_quotes()
        yield stack


def history_queries(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.get(keys.HISTORY_QUERIES) or 0)
    finally:
        client.close()


def expected_payload(quotes: list[Quote]) -> bytes:
    """What the day view must deliver, computed here from the bars we stored."""
    records = tuple(
        to_record(Bar(q.time, q.open, q.high, q.low, q.close, q.volume).as_record()) for q in quotes
    )
    return encode_payload(records)


def test_a_day_of_minute_bars_arrives_whole_and_in_order_over_100_packets(
    servers: Servers, bars: list[Quote]
) -> None:
    with servers.client() as client:
        new_user(client)
        session = client.session_id
    assert session is not None
    conn = BlockingConnection(
        "127.0.0.1", servers.worker_port(), 30, MAX_DATA_SIZE, ssl_context=client_context()
    )
    try:
        switch = Message(
            Instruction.SWITCH_STATE, (int(ConnectionStateCode.DATA_TRANSFER),), session_id=session
        )
        assert conn.request(switch).instruction is Instruction.STATE_SWITCH_SUCCESS
        conn.send(Message(Instruction.GET_ASSET_VALUE_DAY, ("AAPL", DAY), session_id=session))
        packets = []
        while True:
            packet = conn.receive()
            assert packet.instruction is Instruction.DATA, packet
            packets.append(packet)
            if packet.packet_number == packet.packet_max:
                break
    finally:
        conn.close()
    total = packets[0].packet_max
    assert total >= 100
    assert [p.packet_number for p in packets] == list(range(1, total + 1))
    assert {p.packet_max for p in packets} == {total}
    chunks = [p.args[0] for p in packets]
    assert all(isinstance(c, bytes) and len(c) <= MAX_DATA_SIZE - 5 for c in chunks)
    assert b"".join(chunks) == expected_payload(bars)  # type: ignore[arg-type]


def test_a_repeated_request_is_served_by_the_worker_cache(
    servers: Servers, redis_url: str, bars: list[Quote]
) -> None:
    with servers.client(0) as one, servers.client(1) as two:
        name = new_user(one)
        two.login(name, PASSWORD)
        first = one.price_history("AAPL", "day", DAY)
        assert len(first) == 1440 and first[0].close == bars[0].close
        asked = history_queries(redis_url)
        assert asked >= 1
        for _ in range(3):
            assert one.price_history("AAPL", "day", DAY) == first  # this worker's memory
        assert two.price_history("aapl", "day", DAY) == first  # shared through Redis
        assert history_queries(redis_url) == asked  # PostgreSQL was not asked again

        week = one.price_history("AAPL", "week", DAY + timedelta(days=3))
        assert len(week) == 1 and week[0].open == bars[0].open
        assert week[0].close == bars[-1].close
        assert week[0].volume == sum(q.volume for q in bars)

        # A range that reaches the open period lives only until the interval ends.
        one.price_history("AAPL", "all")
        client = redis.Redis.from_url(redis_url)
        try:
            ttl = client.pttl(keys.history_cache("all", "AAPL", "-"))
            closed = client.pttl(keys.history_cache("day", "AAPL", DAY.isoformat()))
        finally:
            client.close()
        assert 0 < ttl <= 1000  # update_interval 1.0 s
        assert closed > 3600 * 1000


def test_forecasts_and_bad_requests(servers: Servers) -> None:
    with servers.client() as client:
        new_user(client)
        result = client.forecast("AAPL", 5)
        points = result.points
        assert len(points) == 5 and result.method == "holt-linear" and result.horizon == 5
        for point in points:
            assert point.lower <= point.value <= point.upper
            assert point.value.as_tuple().exponent == -2
        today = datetime.now(timezone.utc).date()
        cases: list[tuple[Callable[[], object], ErrorCode]] = [
            (lambda: client.price_history("XYZ", "day", DAY), ErrorCode.UNKNOWN_ASSET),
            (lambda: client.price_history("AAPL", "day", today + timedelta(days=3)),
             ErrorCode.INVALID_DATE),
            (lambda: client.price_history("AAPL", "week", date(2020, 1, 1)),
             ErrorCode.INVALID_DATE),
            (lambda: client.price_history("AAPL", "day", DAY + timedelta(days=1)),
             ErrorCode.NO_DATA),
            (lambda: client.forecast("AAPL", 0), ErrorCode.BAD_ARGUMENT),
        ]  # fmt: skip
        for call, code in cases:
            with pytest.raises(ClientError) as info:
                call()
            assert info.value.code is code, info.value.reason
            assert info.value.reason
        assert client.quote("AAPL").symbol == "AAPL"  # the connection is still fine


def test_a_malformed_date_gets_data_fail_and_the_connection_goes_on(servers: Servers) -> None:
    with servers.client() as client:
        new_user(client)
        session = client.session_id
    assert session is not None
    good = encode_message(
        Message(Instruction.GET_ASSET_VALUE_DAY, ("AAPL", DAY), session_id=session, request_id=4)
    )
    month_at = HEADER_SIZE + len(encode_payload("AAPL")) + 1 + 2  # tag, u16 year, then month
    bad = bytearray(good)
    bad[month_at] = 13  # 2026-13-02
    conn = BlockingConnection(
        "127.0.0.1", servers.worker_port(), 30, MAX_DATA_SIZE, ssl_context=client_context()
    )
    try:
        switch = Message(
            Instruction.SWITCH_STATE, (int(ConnectionStateCode.DATA_TRANSFER),), session_id=session
        )
        assert conn.request(switch).instruction is Instruction.STATE_SWITCH_SUCCESS
        assert conn._sock is not None
        conn._sock.sendall(bytes(bad))
        reply = conn.receive()
        assert reply.instruction is Instruction.DATA_FAIL
        assert reply.args[0] == int(ErrorCode.BAD_ARGUMENT) and reply.request_id == 4
        # same connection, next request: served as usual
        bars = conn.data_request(
            Message(Instruction.GET_ASSET_VALUE_WEEK, ("AAPL", DAY), session_id=session), session
        )
        assert isinstance(bars, tuple) and len(bars) == 1
    finally:
        conn.close()
