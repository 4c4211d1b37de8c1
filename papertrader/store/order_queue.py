"""The pending order queue (spec 3.1.7): a Redis stream with the master's consumer group.

Workers XADD orders; the master reads them through a consumer group, so an
order read but not yet acknowledged stays in the group's pending list and is
read again after a crash. Each outcome is pushed to a per-order list the
submitting worker waits on. Acknowledging comes last, after PostgreSQL has
committed: together with the idempotent apply, every acknowledged order is
applied exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal, cast

import redis
from loguru import logger
from redis.client import Pipeline

from papertrader.store import keys
from papertrader.store.master_epoch import RedisFenced
from papertrader.store.order_state import OrderState
from papertrader.store.stream_order import StagedOrder, parse_fields

Side = Literal["buy", "sell"]
#: What became of one order handed to ``submit_many``: True kept, False queued but not
#: confirmed by the replicas, None refused (nothing queued), or the error it met.
Placed = bool | None | Exception
RESULT_TTL_SECONDS = 3600

# Publishes a chunk's outcomes and acknowledges its entries in one atomic call:
# one command instead of three per order keeps the drain's Redis cost flat.
# Outcomes come grouped by result list (a worker process waits on one list for all
# of its orders): one RPUSH and one EXPIRE per list. The orders' places in the
# accounts' pending-order sets (limits/pending_orders.py) are released in the same
# call, so an order stops counting against its account's cap exactly when it is
# acknowledged.
# KEYS[1] = the stream, KEYS[2] = the active master's epoch;
# ARGV = group, ttl, lists, epoch ('' = unchecked), releases,
#        lists x (result key, count, count x outcome), releases x (set key, member), ids...
# Returns -1, writing nothing, when KEYS[2] holds a later epoch (we are a deposed master);
# otherwise raises KEYS[2] to ours (the fencing rule of store/master_epoch.py).
_COMPLETE_LUA = """
local group, ttl, lists, epoch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local releases = tonumber(ARGV[5])
if epoch ~= '' then
  local seen = redis.call('GET', KEYS[2])
  if seen and tonumber(seen) > tonumber(epoch) then return -1 end
  if seen ~= epoch then redis.call('SET', KEYS[2], epoch) end
end
local at = 6
for _ = 1, lists do
  local key, count = ARGV[at], tonumber(ARGV[at + 1])
  redis.call('RPUSH', key, unpack(ARGV, at + 2, at + 1 + count))
  redis.call('EXPIRE', key, ttl)
  at = at + 2 + count
end
for _ = 1, releases do
  redis.call('ZREM', ARGV[at], ARGV[at + 1])
  at = at + 2
end
if at <= #ARGV then
  redis.call('XACK', KEYS[1], group, unpack(ARGV, at))
  redis.call('XDEL', KEYS[1], unpack(ARGV, at))
  return #ARGV - at + 1
end
return 0
"""
#: Pause before asking again after the Redis connection broke (a failover under way).
RECONNECT_PAUSE = 0.2
#: Longest single BLPOP while waiting for an outcome; under redis-py's socket timeout.
WAIT_SLICE_SECONDS = 2.0
#: Most stream ids one XACK/XDEL may name (Lua's unpack() limit is about 8000).
MAX_COMPLETE = 5000


@dataclass(frozen=True)
class Order:
    """One queued order, as a worker writes it to the stream.

    The first eight fields are the original market order's; an entry without
    the others (written before client order ids existed) is a market day order
    whose client order id is its order id.
    """

    order_id: uuid.UUID
    account_id: int
    side: Side
    symbol: str
    quantity: int
    received_at: datetime  # the worker's stamp: the queue is drained in this order
    client_ip: str | None
    worker: str
    client_order_id: uuid.UUID | None = None  # None: the order id itself
    order_type: str = "market"
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str = "day"
    #: Hex id of the result list the submitting worker waits on (None: the order id).
    reply: str | None = None
    #: The competition it trades in, as the user named it ("": the practice account).
    competition: str = ""
    #: Hex id of the session that placed the order (checked by the master at the drain).
    session: str | None = None

    @property
    def client_id(self) -> uuid.UUID:
        return self.client_order_id or self.order_id

    @property
    def result_key(self) -> str:
        return keys.order_result(self.reply or self.order_id.hex)

    def fields(self) -> dict[str, str]:
        out = {
            "order_id": self.order_id.hex,
            "account_id": str(self.account_id),
            "side": self.side,
            "symbol": self.symbol,
            "quantity": str(self.quantity),
            "received_at": self.received_at.isoformat(),
            "client_ip": self.client_ip or "",
            "worker": self.worker,
        }
        if self.client_order_id is not None:
            out["client_order_id"] = self.client_order_id.hex
        if self.order_type != "market":
            out["type"] = self.order_type
        if self.limit_price is not None:
            out["limit_price"] = str(self.limit_price)
        if self.stop_price is not None:
            out["stop_price"] = str(self.stop_price)
        if self.time_in_force != "day":
            out["time_in_force"] = self.time_in_force
        if self.reply is not None:
            out["reply"] = self.reply
        if self.competition:
            out["competition"] = self.competition
        if self.session is not None:
            out["session"] = self.session
        return out

    @classmethod
    def from_fields(cls, raw: dict[bytes, bytes]) -> Order:
        """Parse a stream entry; raises ValueError/KeyError on a malformed one
        (``stream_order.parse_fields`` says what is well-formed)."""
        try:
            return cls.from_staged(parse_fields(raw))
        except UnicodeDecodeError as exc:
            raise ValueError(str(exc)) from None

    def staged(self) -> StagedOrder:
        """The order as the drain takes it (what the master reads from the stream)."""
        return parse_fields({k.encode(): v.encode() for k, v in self.fields().items()})

    @classmethod
    def from_staged(cls, staged: StagedOrder) -> Order:
        return cls(
            order_id=uuid.UUID(hex=staged.order_id),
            account_id=int(staged.account_id),
            side=staged.side,  # type: ignore[arg-type]
            symbol=staged.symbol,
            quantity=int(staged.quantity),
            received_at=staged.received_at,
            client_ip=staged.client_ip,
            worker=staged.worker,
            client_order_id=(
                uuid.UUID(hex=staged.client_order_id) if staged.has_client_order_id else None
            ),
            order_type=staged.order_type,
            limit_price=None if staged.limit_price is None else Decimal(staged.limit_price),
            stop_price=None if staged.stop_price is None else Decimal(staged.stop_price),
            time_in_force=staged.time_in_force,
            reply=staged.reply,
            competition=staged.competition,
            session=staged.session,
        )


#: Adds to a pipeline the command that queues one order (``OrderQueue.submit_many``).
QueueOne = Callable[[Pipeline, Order], None]

#: What the worker waiting on an order is told: the order's state after the drain.
Outcome = OrderState


class Entry:
    """A stream entry read by the master: checked once (``staged``, None if malformed);
    ``order`` builds the Order objects only when something asks for them."""

    __slots__ = ("_order", "raw", "staged", "stream_id")

    def __init__(self, stream_id: bytes, raw: dict[bytes, bytes]) -> None:
        self.stream_id = stream_id
        self.raw = raw
        try:
            self.staged: StagedOrder | None = parse_fields(raw, stream_id)
        except (KeyError, ValueError, UnicodeDecodeError):
            self.staged = None
        self._order: Order | None = None

    @property
    def order(self) -> Order | None:
        if self._order is None and self.staged is not None:
            self._order = Order.from_staged(self.staged)
        return self._order

    @property
    def result_key(self) -> str:
        assert self.staged is not None
        return keys.order_result(self.staged.reply or self.staged.order_id)


def _result_key(entry: Entry, outcome: Outcome | str) -> str:
    if entry.staged is not None:
        return entry.result_key
    assert isinstance(outcome, OrderState)
    return keys.order_result(outcome.order_id.hex)


class OrderQueue:
    """``epoch`` (the master's): outcomes are published only while Redis names that epoch
    as the active master's (store/master_epoch.py); None publishes unchecked."""

    def __init__(
        self,
        client: redis.Redis,
        epoch: Callable[[], int | None] | None = None,
        replicas: int = 0,
        replica_timeout: float = 1.0,
    ) -> None:
        self._redis = client
        self._epoch = epoch
        self._complete = client.register_script(_COMPLETE_LUA)
        #: Replicas that must hold a submitted order (WAIT) before it counts as kept.
        self.replicas = replicas
        self._replica_timeout_ms = max(1, round(replica_timeout * 1000))

    # worker side -------------------------------------------------------
    def submit(self, order: Order) -> bool:
        """Queue an order: once the primary has it, it will be applied exactly once.

        True when the order is kept even if the Redis primary is lost now: no
        replicas are asked for, or ``replicas`` of them acknowledged everything up to
        it within the timeout (``WAIT``, sent in one round trip with the ``XADD`` on
        the same connection). False: the primary has it, but a failover could lose
        it (docs/OPERATIONS.md, "Redis with Sentinel"). RedisError: it may or may
        not have been queued.
        """
        (placed,) = self.submit_many([order])
        if isinstance(placed, Exception):
            raise placed
        assert placed is not None  # no cap was asked for
        return placed

    def submit_many(
        self, orders: Sequence[Order], queue_one: QueueOne | None = None
    ) -> list[Placed]:
        """Queue ``orders`` in one round trip (one pipeline, then ``WAIT`` once for all).

        ``queue_one(pipe, order)`` adds the command that queues one order (default:
        its ``XADD``; the workers' ``pt_queue_order`` checks the pending cap in the
        same step and answers 0 for an order it refused). For each order, as in
        ``submit``: True kept, False queued but unconfirmed by the replicas, None
        refused (nothing queued), or the RedisError it met (it may or may not have
        been queued). A broken connection raises for them all.
        """
        pipe = self._redis.pipeline(transaction=False)
        for order in orders:
            if queue_one is None:
                pipe.xadd(keys.ORDERS, order.fields())  # type: ignore[arg-type]
            else:
                queue_one(pipe, order)
        if self.replicas > 0:
            pipe.wait(self.replicas, self._replica_timeout_ms)
        answers = pipe.execute(raise_on_error=False)
        kept = True
        if self.replicas > 0:
            acked = answers.pop()
            if isinstance(acked, Exception):
                logger.warning(
                    f"cannot wait for the Redis replicas ({acked}): orders not confirmed"
                )
                kept = False
            else:
                kept = int(acked) >= self.replicas
        placed: list[Placed] = []
        for answer in answers:
            if isinstance(answer, Exception):
                placed.append(answer)
            elif answer == 0:  # pt_queue_order's refusal (an XADD answers the entry's id)
                placed.append(None)
            else:
                placed.append(kept)
        return placed

    def wait_outcome(
        self, order_id: uuid.UUID, timeout: float, reply: str | None = None
    ) -> Outcome | None:
        """Block (cooperatively under gevent) until the master decided the order.

        ``reply`` is the result id the order was queued with (default: the order
        id). BLPOP runs in slices of at most WAIT_SLICE_SECONDS: the connections'
        socket timeout (redis_connect.NODE_TIMEOUT) would otherwise end a longer
        BLPOP with an error.
        """
        key = keys.order_result(reply or order_id.hex)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                got = self._redis.blpop(
                    [key], timeout=max(min(remaining, WAIT_SLICE_SECONDS), 0.01)
                )
            except (redis.ConnectionError, redis.TimeoutError):
                # The primary is gone or was demoted (a Sentinel failover): the outcome
                # will be published on the new one, so wait there while time remains.
                if deadline - time.monotonic() <= RECONNECT_PAUSE:
                    raise
                time.sleep(RECONNECT_PAUSE)
                continue
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
        entries = self.read_pending("0", count)
        if len(entries) < count:
            entries += self.read_new(count - len(entries))
        return entries

    def read_pending(self, after: str, count: int) -> list[Entry]:
        """Entries read before but not acknowledged (a crash left them), after ``after``."""
        return self._read(after, count, None)

    def read_new(self, count: int, block_ms: int | None = None) -> list[Entry]:
        """Entries never read by the group, waiting up to ``block_ms`` for one."""
        return self._read(">", count, block_ms)

    def _read(self, start: str, count: int, block_ms: int | None) -> list[Entry]:
        reply = cast(
            "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None",
            self._redis.xreadgroup(
                keys.ORDERS_GROUP,
                keys.ORDERS_CONSUMER,
                {keys.ORDERS: start},
                count=count,
                block=block_ms,
            ),
        )
        entries: list[Entry] = []
        for _stream, items in reply or []:
            for stream_id, raw in items:
                if not raw:  # deleted while pending
                    continue
                entries.append(Entry(stream_id, raw))
        return entries

    def complete(
        self,
        results: Sequence[tuple[Entry, Outcome | str | None]],
        release: Callable[[Entry], tuple[str, str] | None] | None = None,
    ) -> None:
        """Publish outcomes and acknowledge their entries, atomically (one Lua call).

        An outcome is an ``Outcome`` or its JSON text already; None acknowledges
        without publishing (a malformed entry). Each goes to the result list the
        entry's worker waits on. ``release`` names, for an entry, the (sorted set,
        member) to remove in the same call (its place against its account's cap of
        pending orders). Larger sequences are sent MAX_COMPLETE at a time.
        """
        epoch = self._epoch() if self._epoch is not None else None
        for start in range(0, len(results), MAX_COMPLETE):
            part = results[start : start + MAX_COMPLETE]
            lists: dict[str, list[str]] = {}
            releases: list[str] = []
            for entry, outcome in part:
                if release is not None:
                    place = release(entry)
                    if place is not None:
                        releases += place
                if outcome is None:
                    continue
                text = outcome if isinstance(outcome, str) else outcome.to_json()
                key = _result_key(entry, outcome)
                texts = lists.get(key)
                if texts is None:
                    lists[key] = [text]
                else:
                    texts.append(text)
            args: list[str | bytes | int] = [
                keys.ORDERS_GROUP,
                RESULT_TTL_SECONDS,
                len(lists),
                "" if epoch is None else str(epoch),
                len(releases) // 2,
            ]
            for key, texts in lists.items():
                args += (key, len(texts))
                args += texts
            args += releases
            args += [entry.stream_id for entry, _ in part]
            if self._complete(keys=[keys.ORDERS, keys.MASTER_EPOCH], args=args) == -1:
                raise RedisFenced(
                    f"not published: Redis names a later active master than epoch {epoch}"
                )

    def pending_entries(self) -> int:
        """Entries the master's group read and has not acknowledged (XPENDING summary)."""
        summary = self._redis.xpending(keys.ORDERS, keys.ORDERS_GROUP)
        return int(summary["pending"]) if summary else 0

    def pending_count(self) -> int:
        """Orders queued or read but not yet acknowledged (for status and tests)."""
        return int(self._redis.xlen(keys.ORDERS))
