"""Applying a chunk of queued orders in PostgreSQL, set-based (migration 0005).

``apply_chunk`` puts the chunk into the temporary table ``pt_order_stage``
(one array per column, unnested by one INSERT) and calls ``pt_drain_orders``,
which validates, fills, books and records the whole chunk in a few statements
and returns one row per order. All of it is one transaction: every outcome of the chunk is recorded,
or none is. An order id the master has seen before changes nothing and comes
back with its current state (``replayed``), so a master that re-reads orders
after a crash applies nothing twice.

``drain_book`` is the book's turn, once per interval: the open orders of
competitions that have ended expire, day orders past their end expire, and
open orders whose price condition holds fill (``pt_book_turn``, migration
0012: one transaction, nothing planned when no open order can move).

Nothing here parses more than it must: the rows come back as text and the
outcome JSON for the waiting worker is written once, here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from papertrader.store.order_state import OrderState
from papertrader.store.pool import ConnectionPool
from papertrader.store.stream_order import StagedOrder

# The chunk travels as one array literal per column ("{a,b,...}"), unnested into
# the staging table by one INSERT: COPY would be the classic way, but psycopg2
# refuses COPY on a cooperative (gevent) connection.
_STAGE = (
    "INSERT INTO pt_order_stage (idx, order_id, account_id, client_order_id, side, symbol,"
    " quantity, order_type, limit_price, stop_price, time_in_force, received_at, client_ip,"
    " worker)"
    " SELECT * FROM unnest(%s::integer[], %s::uuid[], %s::bigint[], %s::uuid[], %s::text[],"
    " %s::text[], %s::bigint[], %s::text[], %s::numeric[], %s::numeric[], %s::text[],"
    " %s::timestamptz[], %s::inet[], %s::text[])"
)
#: Orders refused before the drain (a check of the master's own, e.g. of their session):
#: recorded as rejected with that code and reason, never filled.
_REFUSE = (
    "UPDATE pt_order_stage s SET refused_code = r.code, refused_reason = r.reason"
    " FROM unnest(%s::integer[], %s::integer[], %s::text[]) AS r(idx, code, reason)"
    " WHERE s.idx = r.idx"
)

#: A refusal: (ErrorCode value, reason), or None to apply the order.
Refusal = tuple[int, str]


_PLAIN = re.compile(r"[A-Za-z0-9._\-^:+]+")


def _utc(moment: datetime) -> datetime:
    """A time without a zone is UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _array(items: Sequence[str]) -> str:
    """An array literal of elements that need no quoting (numbers, ids, times, NULL)."""
    return "{" + ",".join(items) + "}"


def _quoted(text: str) -> str:
    """One text element of an array literal (quoted unless it is plainly safe)."""
    if _PLAIN.fullmatch(text) and text.upper() != "NULL":
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\x00", "") + '"'


def _stage_args(orders: Sequence[StagedOrder]) -> tuple[str, ...]:
    """The staging INSERT's arguments, one array literal per column."""
    return (
        _array([str(idx) for idx in range(len(orders))]),
        _array([o.order_id for o in orders]),
        _array([o.account_id for o in orders]),
        _array([o.client_order_id for o in orders]),
        _array([o.side for o in orders]),
        _array([_quoted(o.symbol) for o in orders]),
        _array([o.quantity for o in orders]),
        _array([o.order_type for o in orders]),
        _array(["NULL" if o.limit_price is None else o.limit_price for o in orders]),
        _array(["NULL" if o.stop_price is None else o.stop_price for o in orders]),
        _array([o.time_in_force for o in orders]),
        _array([o.received_text for o in orders]),  # isoformat(): nothing to quote
        _array(["NULL" if o.client_ip is None else o.client_ip for o in orders]),  # checked
        _array([_quoted(o.worker) for o in orders]),
    )


@dataclass(frozen=True)
class ChunkOutcome:
    """What ``pt_drain_orders`` decided for one order, and the JSON the worker reads."""

    status: str
    code: int
    reason: str
    json: str  # OrderState.to_json's form (or the master's record of a known order)

    def state(self) -> OrderState:
        return OrderState.from_json(self.json)


def _js(text: str | None) -> str:
    """A JSON string (or null) for text that may need escaping."""
    if text is None:
        return "null"
    if not text or _PLAIN.fullmatch(text):
        return f'"{text}"'
    return json.dumps(text)


def _num(text: str | None) -> str:
    """A JSON string (or null) for a number's text (nothing to escape)."""
    return "null" if text is None else f'"{text}"'


def _fresh_json(
    order: StagedOrder,
    row: Sequence[Any],
    price: str | None,
    now: str,
    day_end: str,
) -> str:
    """The outcome of an order decided in this chunk, as ``OrderState.from_json`` reads
    it: its terms (the worker's), the drain's columns, and the times, which are the
    chunk's own. Written as text directly (this runs for every order of every drain),
    compact, and without the keys whose value is the one ``OrderState`` defaults to
    (null, "0", 0, false, market, day): the worker reads the same state from a third
    less text, and Redis copies a third less for every outcome it keeps."""
    _idx, status, code, reason, amount, realized, reserved_cash, reserved_quantity, _ = row
    filled = status == "filled"
    rejected = status == "rejected"
    parts = [
        f'{{"order_id":"{order.order_id}","status":"{status}","code":{code},'
        f'"reason":{_js(reason)},"side":"{order.side}","symbol":{_js(order.symbol)},'
        f'"quantity":{order.quantity},"client_order_id":"{order.client_order_id}",'
        f'"received_at":"{order.received_text}"'
    ]
    add = parts.append
    if filled:
        add(f',"price":{_num(price)},"executed_at":"{now}"')
    if order.order_type != "market":
        add(f',"order_type":"{order.order_type}"')
    if order.limit_price is not None:
        add(f',"limit_price":"{order.limit_price}"')
    if order.stop_price is not None:
        add(f',"stop_price":"{order.stop_price}"')
    if order.time_in_force != "day":
        add(f',"time_in_force":"{order.time_in_force}"')
    if amount is not None:
        add(f',"amount":"{amount}"')
    if realized is not None:
        add(f',"realized_pnl":"{realized}"')
    if reserved_cash is not None and reserved_cash != "0":
        add(f',"reserved_cash":"{reserved_cash}"')
    if reserved_quantity:
        add(f',"reserved_quantity":{reserved_quantity}')
    if not rejected:
        add(f',"accepted_at":"{now}"')
    if order.stop_price is not None and not rejected and price is not None:
        stop, mark = Decimal(order.stop_price), Decimal(price)
        if (mark >= stop) if order.side == "buy" else (mark <= stop):
            add(f',"triggered_at":"{now}"')
    if status != "open":
        add(f',"decided_at":"{now}"')
    elif order.time_in_force == "day":
        add(f',"expires_at":"{day_end}"')
    add("}")
    return "".join(parts)


@dataclass(frozen=True)
class AppliedChunk:
    """A committed chunk: the drain's rows, turned into outcomes when asked (the
    master does that while PostgreSQL applies the next chunk)."""

    orders: Sequence[StagedOrder]
    rows: Sequence[Sequence[Any]]
    marks: Mapping[str, str]
    now: str
    day_end: str

    def jsons(self) -> list[str]:
        """The outcome JSON of every order, in order."""
        texts = []
        for order, row in zip(self.orders, self.rows, strict=True):
            record = row[8]
            if record is None:
                record = _fresh_json(order, row, self.marks.get(order.symbol), self.now,
                                     self.day_end)  # fmt: skip
            texts.append(record)
        return texts

    def outcomes(self) -> list[ChunkOutcome]:
        out = []
        for text in self.jsons():
            data = json.loads(text)
            out.append(ChunkOutcome(data["status"], int(data["code"]), data["reason"], text))
        return out


def apply_chunk(
    pool: ConnectionPool,
    orders: Sequence[StagedOrder],
    prices: Mapping[str, Decimal],
    now: datetime,
    day_end: datetime,
    max_open: int,
    refusals: Sequence[Refusal | None] | None = None,
) -> AppliedChunk:
    """Apply ``orders`` (in stamp order) at ``prices``; one outcome per order, in order.

    One transaction for the chunk. ``day_end`` is when day orders that wait in
    the book from now on expire; ``max_open`` the most open orders an account
    may have; ``refusals`` (one per order, None for most) the orders to record
    as rejected instead of applying them.
    """
    rows: list[Any] = []
    if orders:
        staged = _stage_args(orders)
        symbols = sorted(prices)
        refused = [(i, r) for i, r in enumerate(refusals or ()) if r is not None]
        with pool.transaction() as cur:
            cur.execute("SELECT pt_order_tables()")
            cur.execute(_STAGE, staged)
            if refused:
                cur.execute(
                    _REFUSE,
                    (
                        [i for i, _ in refused],
                        [code for _, (code, _reason) in refused],
                        [reason for _, (_code, reason) in refused],
                    ),
                )
            cur.execute(
                "SELECT * FROM pt_drain_orders(%s, %s, %s::text[], %s::numeric[], %s)",
                (now, day_end, symbols, [prices[s] for s in symbols], max_open),
            )
            rows = cur.fetchall()
    if len(rows) != len(orders):
        raise RuntimeError(
            f"pt_drain_orders returned {len(rows)} outcomes for {len(orders)} orders"
        )
    marks = {symbol: str(price) for symbol, price in prices.items()}
    return AppliedChunk(orders, rows, marks, _utc(now).isoformat(), _utc(day_end).isoformat())


@dataclass(frozen=True)
class BookTurn:
    """What the book's turn did in one interval."""

    ended: int  # open orders of ended competitions, expired
    filled: int
    rejected: int
    expired: int
    triggered: int

    @property
    def changed(self) -> int:
        return self.filled + self.rejected + self.expired + self.triggered


def drain_book(pool: ConnectionPool, prices: Mapping[str, Decimal], now: datetime) -> BookTurn:
    """Expire the open orders of ended competitions and day orders past their end, then
    fill the open orders whose condition holds (one transaction)."""
    symbols = sorted(prices)
    with pool.transaction() as cur:
        cur.execute(
            "SELECT * FROM pt_book_turn(%s, %s::text[], %s::numeric[])",
            (now, symbols, [prices[s] for s in symbols]),
        )
        row = cur.fetchone()
    assert row is not None
    return BookTurn(*(int(value) for value in row))
