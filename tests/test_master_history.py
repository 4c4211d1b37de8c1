"""The master's answers to forwarded history and forecast requests (route(), real databases)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import cast

import pytest
import redis

from papertrader.config import Settings
from papertrader.market.quote import Quote
from papertrader.master.asset_retrieval import QuoteBook
from papertrader.master.context import MasterContext
from papertrader.master.router import route
from papertrader.master.workers import WorkerRegistry
from papertrader.protocol import (
    ErrorCode,
    Instruction,
    Message,
    Reassembler,
    Value,
    decode_payload,
)
from papertrader.protocol.records import from_record, from_records
from papertrader.store import history
from papertrader.store.market_status import MarketStatusStore
from papertrader.store.pool import ConnectionPool
from papertrader.store.sessions import SessionStore

MONDAY = date(2026, 3, 16)


@pytest.fixture
def ctx(database_url: str, redis_client: redis.Redis) -> Iterator[MasterContext]:
    pool = ConnectionPool(database_url, size=2)
    settings = Settings(assets=("AAPL", "MSFT"), update_interval=60.0, max_data_size=1024)
    try:
        yield MasterContext(
            settings=settings,
            pool=pool,
            redis=redis_client,
            sessions=SessionStore(redis_client, 60, 60, True),
            quotes=QuoteBook(),
            workers=WorkerRegistry(pool, redis_client, 1.0),
        )
    finally:
        pool.close()


def daily(start: date, closes: list[str]) -> list[Quote]:
    return [
        Quote("AAPL", Decimal(c), Decimal(c) + 1, Decimal(c) - 1, Decimal(c), 1000 + i,
              datetime.combine(start + timedelta(days=i), datetime.min.time(), timezone.utc))
        for i, c in enumerate(closes)
    ]  # fmt: skip


def ask(ctx: MasterContext, instruction: Instruction, *args: Value) -> Value:
    """The decoded answer: records, or (code, reason) for a DATA_FAIL."""
    answer = route(ctx, Message(instruction, tuple(args), request_id=9))
    assert all(m.request_id == 9 for m in answer)
    if answer[0].instruction is Instruction.DATA_FAIL:
        code, reason = answer[0].args
        assert isinstance(code, int)
        return ErrorCode(code), reason
    reassembler = Reassembler()
    for packet in answer[:-1]:
        assert reassembler.feed(packet) is None
    payload = reassembler.feed(answer[-1])
    assert payload is not None
    return decode_payload(payload)


def test_week_and_month_views_with_many_packets(ctx: MasterContext) -> None:
    history.insert_history(ctx.pool, daily(date(2026, 3, 1), [f"{100 + i}.25" for i in range(20)]))
    week = from_records(ask(ctx, Instruction.GET_ASSET_VALUE_WEEK, "aapl", MONDAY))
    assert [b["period_start"].date() for b in week] == [date(2026, 3, d) for d in range(10, 17)]
    assert week[-1]["close"] == Decimal("115.25") and week[-1]["volume"] == 1015
    answer = route(ctx, Message(Instruction.GET_ASSET_VALUE_MONTH, ("AAPL", MONDAY)))
    assert len(answer) > 1  # max_data_size 1024: the month needs several packets
    month = from_records(ask(ctx, Instruction.GET_ASSET_VALUE_MONTH, "AAPL", MONDAY))
    assert len(month) == 16
    year = from_records(ask(ctx, Instruction.GET_ASSET_VALUE_YEAR, "AAPL", MONDAY))
    assert len(year) == 1 and year[0]["open"] == Decimal("100.25")
    assert year[0]["high"] == Decimal("116.25") and year[0]["close"] == Decimal("115.25")


def test_bad_requests_get_a_clear_data_fail(ctx: MasterContext) -> None:
    history.insert_history(ctx.pool, daily(date(2026, 3, 2), ["10", "11", "12", "13", "14"]))
    future = datetime.now(timezone.utc).date() + timedelta(days=2)
    cases = [
        ((Instruction.GET_ASSET_VALUE_DAY, "XYZ", MONDAY), ErrorCode.UNKNOWN_ASSET, "unknown"),
        ((Instruction.GET_ASSET_VALUE_DAY, "AAPL", future), ErrorCode.INVALID_DATE, "future"),
        ((Instruction.GET_ASSET_VALUE_WEEK, "AAPL", date(2026, 3, 1)), ErrorCode.INVALID_DATE,
         "before AAPL's history starts (2026-03-02)"),
        ((Instruction.GET_ASSET_VALUE_DAY, "AAPL", date(2026, 3, 7)), ErrorCode.NO_DATA,
         "no bars for AAPL"),
        ((Instruction.GET_ASSET_VALUE_ALL_TIME, "MSFT"), ErrorCode.NO_DATA, "no price history"),
        ((Instruction.GET_ASSET_VALUE_PREDICTED, "AAPL", 0), ErrorCode.BAD_ARGUMENT, "horizon"),
        ((Instruction.GET_ASSET_VALUE_PREDICTED, "MSFT", 3), ErrorCode.NO_DATA, "not enough"),
    ]  # fmt: skip
    for (instruction, *args), code, words in cases:
        assert isinstance(instruction, Instruction)
        got = ask(ctx, instruction, *args)
        assert isinstance(got, tuple) and got[0] is code and words in cast(str, got[1]), (
            instruction,
            got,
        )


def test_forecast_record_and_query_counter(ctx: MasterContext) -> None:
    history.insert_history(ctx.pool, daily(date(2026, 3, 2), [str(10 + 2 * i) for i in range(6)]))
    before = MarketStatusStore(ctx.redis).history_queries()
    result = from_record(ask(ctx, Instruction.GET_ASSET_VALUE_PREDICTED, "AAPL", 3))
    assert result["method"] == "holt-linear" and result["based_on"] == 6
    points = from_records(result["points"])
    assert [p["value"] for p in points] == [Decimal("22.00"), Decimal("24.00"), Decimal("26.00")]
    assert points[0]["time"] == datetime(2026, 3, 7, 0, 1, tzinfo=timezone.utc)  # + 1 interval
    assert "not investment advice" in result["note"]
    assert MarketStatusStore(ctx.redis).history_queries() == before + 1
