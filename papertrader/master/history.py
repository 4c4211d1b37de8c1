"""Price history and forecasts for forwarded getAssetValue* requests (spec 4.2.2).

The worker forwards getAssetValueDay/Week/Month/Year/AllTime/Predicted with
the same instruction codes; the master reads ``asset_bars`` (aggregated in
SQL, ``store/history.py``) and answers DATA packets 1..max, or DATA_FAIL:

* UNKNOWN_ASSET: not a configured asset;
* INVALID_DATE: a date after today (UTC), before 1970-01-01, or before the
  asset's first bar (checked before any range is computed from it);
* NO_DATA: no bar yet, or none inside the range (a weekend in daily data);
* BAD_ARGUMENT: a forecast horizon outside 1..MAX_HORIZON.

Every PostgreSQL read is counted in Redis (``pt:history:queries``): the
worker's cache exists to keep that counter still, and the tests check it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import gevent
import redis
from loguru import logger

from papertrader.market import forecast as model
from papertrader.market.ranges import KINDS, date_problem, window
from papertrader.master.context import MasterContext
from papertrader.protocol import ErrorCode, Instruction, Message, max_chunk_size, packets_for
from papertrader.protocol.records import to_record
from papertrader.store import history as history_store
from papertrader.store.market_status import MarketStatusStore


class HistoryError(Exception):
    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _fail(request: Message, error: HistoryError) -> list[Message]:
    return [
        Message(
            Instruction.DATA_FAIL,
            (int(error.code), error.reason),
            request_id=request.request_id,
        )
    ]


def _count(ctx: MasterContext, queries: int) -> None:
    """Add to the history read counter; a Redis hiccup must not fail the answer."""
    try:
        MarketStatusStore(ctx.redis).count_history_query(queries)
    except redis.RedisError as exc:
        logger.debug("could not count history reads ({})", exc)


def known_symbol(ctx: MasterContext, raw: object) -> str:
    symbol = str(raw).strip().upper()
    if symbol in ctx.settings.assets or symbol in ctx.quotes.snapshot().quotes:
        return symbol
    shown = symbol[:16] or "(empty)"
    raise HistoryError(
        ErrorCode.UNKNOWN_ASSET, f"unknown asset {shown}; known: {', '.join(ctx.settings.assets)}"
    )


def _history(ctx: MasterContext, request: Message, now: datetime) -> list[Message]:
    kind = KINDS[request.instruction]
    symbol = known_symbol(ctx, request.arg("asset"))
    day: date | None = None
    if kind != "all":
        value = request.arg("date")
        assert isinstance(value, date)
        day = value
        problem = date_problem(day, now.date())
        if problem is not None:
            raise HistoryError(ErrorCode.INVALID_DATE, problem)
    span = history_store.bar_span(ctx.history_pool, symbol)
    if span is None:
        _count(ctx, 1)
        raise HistoryError(ErrorCode.NO_DATA, f"no price history for {symbol} yet")
    first = span[0].date()
    if day is not None and day < first:
        _count(ctx, 1)
        raise HistoryError(
            ErrorCode.INVALID_DATE,
            f"{day.isoformat()} is before {symbol}'s history starts ({first.isoformat()})",
        )
    span_of = window(kind, day, now)
    pool = ctx.history_pool
    bars = history_store.aggregate_bars(pool, symbol, span_of.start, span_of.end, span_of.unit)
    _count(ctx, 2)
    if not bars:
        what = "" if day is None else f" in the {kind} of {day.isoformat()}"
        raise HistoryError(ErrorCode.NO_DATA, f"no bars for {symbol}{what}")
    logger.debug("{} {} {}: {} bars", symbol, kind, day or "", len(bars))
    return packets_for(
        tuple(to_record(bar.as_record()) for bar in bars),
        max_chunk_size(ctx.settings.max_data_size),
        request_id=request.request_id,
    )


def _forecast(ctx: MasterContext, request: Message) -> list[Message]:
    symbol = known_symbol(ctx, request.arg("asset"))
    horizon = request.arg("horizon")
    assert isinstance(horizon, int)
    if not 1 <= horizon <= model.MAX_HORIZON:
        raise HistoryError(
            ErrorCode.BAD_ARGUMENT,
            f"horizon {horizon} is out of range: 1 to {model.MAX_HORIZON} update intervals",
        )
    bars = history_store.latest_bars(ctx.history_pool, symbol, model.WINDOW)
    _count(ctx, 1)
    if len(bars) < model.MIN_BARS:
        raise HistoryError(
            ErrorCode.NO_DATA,
            f"not enough history for {symbol} to forecast: {len(bars)} bars, "
            f"{model.MIN_BARS} needed",
        )
    step = timedelta(seconds=ctx.settings.update_interval)
    closes = [bar.close for bar in bars]
    # Pure Decimal arithmetic over up to 81 parameter pairs: off the event loop.
    result: model.Forecast = gevent.get_hub().threadpool.apply(
        model.holt_forecast, (closes, bars[-1].period_start, step, horizon)
    )
    record = result.as_record(symbol, ctx.settings.update_interval)
    record["last_close"] = history_store.tidy_price(result.last_close)
    return packets_for(
        to_record(record),
        max_chunk_size(ctx.settings.max_data_size),
        request_id=request.request_id,
    )


def handle_history(ctx: MasterContext, request: Message) -> list[Message]:
    """getAssetValueDay/Week/Month/Year/AllTime: a list of bar records."""
    try:
        return _history(ctx, request, datetime.now(timezone.utc))
    except HistoryError as exc:
        return _fail(request, exc)


def handle_forecast(ctx: MasterContext, request: Message) -> list[Message]:
    """getAssetValuePredicted: one forecast record (see papertrader/market/forecast.py)."""
    try:
        return _forecast(ctx, request)
    except HistoryError as exc:
        return _fail(request, exc)
