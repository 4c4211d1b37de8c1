"""Portfolio value over time (issue 13): the master records every account's equity.

After the interval's drain, once every ``equity_snapshot_seconds`` (0: every
interval), one statement records cash + positions at that interval's prices
for every account holding a position (``store/equity.py``); once an hour old
points are thinned. getEquityHistory answers an account's points over a
range, ending with its equity now; getAccountEquityHistory the same for a
competition account of the user's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal

import psycopg2
from loguru import logger

from papertrader.master.context import MasterContext
from papertrader.master.orders import OrderRequestError, acting_account
from papertrader.protocol import (
    ErrorCode,
    Instruction,
    Message,
    max_chunk_size,
    packets_for,
    reply_to,
)
from papertrader.protocol.records import to_record
from papertrader.store import accounts as account_store
from papertrader.store import equity
from papertrader.store import portfolio as portfolio_store
from papertrader.store.pool import ConnectionPool, PoolTimeout

THIN_EVERY_SECONDS = 3600.0


class EquityRecorder:
    """Called after every drain; records when the period has passed, never raises."""

    def __init__(
        self,
        pool: ConnectionPool,
        prices: Callable[[], Mapping[str, Decimal]],
        period: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._prices = prices
        self._period = period
        self._clock = clock
        self._last: float | None = None
        self._thinned: float | None = None

    def run(self) -> int:
        now = self._clock()
        if self._last is not None and now - self._last < self._period:
            return 0
        prices = self._prices()
        if not prices:
            return 0
        at = datetime.now(timezone.utc)
        try:
            recorded = equity.record(self._pool, prices, at)
            if self._thinned is None or now - self._thinned >= THIN_EVERY_SECONDS:
                equity.thin(self._pool, at)
                self._thinned = now
        except (psycopg2.Error, PoolTimeout) as exc:
            logger.warning("could not record equity ({}); next interval", exc)
            return 0
        self._last = now
        return recorded


def handle_equity_history(ctx: MasterContext, request: Message) -> list[Message]:
    """GET_EQUITY_HISTORY(range): the session's account's points, then its equity now."""
    return _history(ctx, request, "")


def handle_account_equity_history(ctx: MasterContext, request: Message) -> list[Message]:
    """GET_ACCOUNT_EQUITY_HISTORY(account, range): the same for one of the user's accounts,
    as getOrders names it: empty for the practice account, else a competition's name."""
    return _history(ctx, request, str(request.arg("account")))


def _history(ctx: MasterContext, request: Message, account: str) -> list[Message]:
    range_ = str(request.arg("range"))
    if range_ not in equity.RANGES:
        reason = f"range must be one of {', '.join(equity.RANGES)}, not {range_[:12]!r}"
        return [reply_to(request, Instruction.DATA_FAIL, int(ErrorCode.BAD_ARGUMENT), reason)]
    try:
        _, account_id, _ = acting_account(ctx, request, account)
    except OrderRequestError as exc:
        return [reply_to(request, Instruction.DATA_FAIL, int(exc.code), exc.reason)]
    now = datetime.now(timezone.utc)
    points = [
        {"time": p.at, "equity": p.equity, "cash": p.cash}
        for p in equity.series(ctx.pool, account_id, range_, now)
    ]
    live = current_equity(ctx, account_id)
    if live is not None:
        points.append({"time": now, "equity": live[0], "cash": live[1]})
    return packets_for(
        tuple(to_record(p) for p in points),
        max_chunk_size(ctx.settings.max_data_size),
        request_id=request.request_id,
    )


def current_equity(ctx: MasterContext, account_id: int) -> tuple[Decimal, Decimal] | None:
    """(equity, cash) at the master's current prices."""
    account = account_store.get_account(ctx.pool, account_id)
    if account is None:
        return None
    snapshot = ctx.quotes.snapshot()
    total = account.cash
    for position in portfolio_store.positions(ctx.pool, account_id):
        price = snapshot.price(position.symbol)
        if price is not None:
            total += (position.quantity * price).quantize(Decimal("0.01"))
    return total, account.cash
