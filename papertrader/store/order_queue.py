"""The pending order queue (spec 3.1.7): a Redis stream with the master's consumer group.

Workers XADD orders; the master reads them through a consumer group, so an
order read but not yet acknowledged stays in the group's pending list and is
read again after a crash. Each outcome is pushed to a per-order list the
submitting worker waits on. Acknowledging comes last, after PostgreSQL has
committed: together with the idempotent apply, every acknowledged order is
applied exactly once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, cast

import redis

from papertrader.store import keys

Side = Literal["buy", "sell"]
RESULT_TTL_SECONDS = 3600

# Publishes a chunk's outcomes and acknowledges its entries in one atomic call:
# one command instead of three per order keeps the drain's Redis cost flat.
# KEYS[1] = the stream; ARGV = group, ttl, n, n x (result key, outcome), ids...
_COMPLETE_LUA = """
local group, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 0, n - 1 do
  local key = ARGV[4 + 2 * i]
  redis.call('RPUSH', key, ARGV[5 + 2 * i])
  redis.call('EXPIRE', key, ttl)
end
local ids = {}
for i = 4 + 2 * n, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids > 0 then
  redis.call('XACK', KEYS[1], group, unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
end
return #ids
"""
#: Longest single BLPOP while waiting for an outcome; under redis-py's socket timeout.
WAIT_SLICE_SECONDS = 2.0


@dataclass(frozen=True)
class Order:
    order_id: uuid.UUID
    account_id: int
    side: Side
    symbol: str
    quantity: int
    received_at: datetime  # the worker's stamp: the queue is drained in this order
    client_ip: str | None
    worker: str

    def fields(self) -> dict[str, str]:
        return {
            "order_id": self.order_id.hex,
            "account_id": str(self.account_id),
            "side": self.side,
            "symbol": self.symbol,
            "quantity": str(self.quantity),
            "received_at": self.received_at.isoformat(),
            "client_ip": self.client_ip or "",
            "worker": self.worker,
        }

    @classmethod
    def from_fields(cls, raw: dict[bytes, bytes]) -> Order:
        """Parse a stream entry; raises ValueError/KeyError on a malformed one."""
        f = {k.decode(): v.decode() for k, v in raw.items()}
        side = f["side"]
        if side not in ("buy", "sell"):
            raise ValueError(f"side {side!r}")
        return cls(
            order_id=uuid.UUID(hex=f["order_id"]),
            account_id=int(f["account_id"]),
            side=side,  # type: ignore[arg-type]
            symbol=f["symbol"],
            quantity=int(f["quantity"]),
            received_at=datetime.fromisoformat(f["received_at"]),
            client_ip=f["client_ip"] or None,
            worker=f.get("worker", ""),
        )


@dataclass(frozen=True)
class Outcome:
    """What happened to an order, as the worker reports it to the client."""

    order_id: uuid.UUID
    status: Literal["filled", "rejected"]
    code: int
    reason: str
    side: str
    symbol: str
    quantity: int
    price: Decimal | None
    executed_at: datetime | None

    def to_json(self) -> str:
        return json.dumps(
            {
                "order_id": self.order_id.hex,
                "status": self.status,
                "code": self.code,
                "reason": self.reason,
                "side": self.side,
                "symbol": self.symbol,
                "quantity": self.quantity,
                "price": None if self.price is None else str(self.price),
                "executed_at": None if self.executed_at is None else self.executed_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Outcome:
        d: dict[str, Any] = json.loads(text)
        return cls(
            order_id=uuid.UUID(hex=d["order_id"]),
            status=d["status"],
            code=int(d["code"]),
            reason=d["reason"],
            side=d["side"],
            symbol=d["symbol"],
            quantity=int(d["quantity"]),
            price=None if d["price"] is None else Decimal(d["price"]),
            executed_at=None
            if d["executed_at"] is None
            else datetime.fromisoformat(d["executed_at"]),
        )


@dataclass(frozen=True)
class Entry:
    """A stream entry read by the master: the order, or None if it could not be parsed."""

    stream_id: bytes
    order: Order | None
    raw: dict[bytes, bytes]


class OrderQueue:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._complete = client.register_script(_COMPLETE_LUA)

    # worker side -------------------------------------------------------
    def submit(self, order: Order) -> None:
        """Queue an order. Once this returns the order will be applied exactly once."""
        self._redis.xadd(keys.ORDERS, order.fields())  # type: ignore[arg-type]

    def wait_outcome(self, order_id: uuid.UUID, timeout: float) -> Outcome | None:
        """Block (cooperatively under gevent) until the master decided the order.

        BLPOP runs in slices of at most WAIT_SLICE_SECONDS: redis-py's default
        socket timeout (5 s) would otherwise end a longer BLPOP with an error.
        """
        key = keys.order_result(order_id.hex)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            got = self._redis.blpop([key], timeout=max(min(remaining, WAIT_SLICE_SECONDS), 0.01))
            if got is not None:
                return Outcome.from_json(got[1])
            if remaining <= WAIT_SLICE_SECONDS:
                return None

    # master side -------------------------------------------------------
    def ensure_group(self) -> None:
        try:
            self._redis.xgroup_create(keys.ORDERS, keys.ORDERS_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_batch(self, count: int) -> list[Entry]:
        """Our unacknowledged entries first (left by a crash), then new ones."""
        entries: list[Entry] = []
        for start in ("0", ">"):
            want = count - len(entries)
            if want <= 0:
                break
            reply = cast(
                "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None",
                self._redis.xreadgroup(
                    keys.ORDERS_GROUP, keys.ORDERS_CONSUMER, {keys.ORDERS: start}, count=want
                ),
            )
            for _stream, items in reply or []:
                for stream_id, raw in items:
                    if not raw:  # deleted while pending
                        continue
                    try:
                        order: Order | None = Order.from_fields(raw)
                    except (KeyError, ValueError):
                        order = None
                    entries.append(Entry(stream_id, order, raw))
        return entries

    def complete(self, results: Sequence[tuple[Entry, Outcome | None]]) -> None:
        """Publish outcomes and acknowledge their entries, atomically (one Lua call).

        Callers pass at most a few thousand results at a time (Lua's argument limit).
        """
        if not results:
            return
        published = [outcome for _entry, outcome in results if outcome is not None]
        args: list[str | bytes | int] = [keys.ORDERS_GROUP, RESULT_TTL_SECONDS, len(published)]
        for outcome in published:
            args += [keys.order_result(outcome.order_id.hex), outcome.to_json()]
        args += [entry.stream_id for entry, _ in results]
        self._complete(keys=[keys.ORDERS], args=args)

    def pending_count(self) -> int:
        """Orders queued or read but not yet acknowledged (for status and tests)."""
        return int(self._redis.xlen(keys.ORDERS))
