"""The master's order intake (spec 3.1.7): every order read from the stream and not yet
drained, in memory, read as orders arrive so the drain at the tick only applies them,
and so the master can tell that an order is queued and cancel it before its drain."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import gevent.event
import redis
from loguru import logger

from papertrader.store.order_queue import Entry, Order, OrderQueue

#: Entries one read of the stream returns.
READ_COUNT = 5000
#: Most orders the intake holds in memory; beyond it they wait in the stream.
MAX_BUFFERED = 500_000
#: Most orders one drain applies; the rest wait for the next interval.
MAX_PER_DRAIN = 500_000
#: Seconds the reader rests after a read that did not fill ``READ_COUNT``, so orders
#: that trickle in are read a batch at a time (see ``OrderIntake.run``).
READ_PAUSE = 0.05


class OrderIntake:
    """Every order read from the stream and not yet drained, in memory.

    Entries are read through the master's consumer group: once read they stay
    in its pending list until the drain acknowledges them, so a restarted
    master reads them again (its first reads ask for its own pending entries).
    ``find`` answers "is this order queued?" for order status and cancel.

    ``prepare`` (the drain check's, e.g. ``SessionCheck.prepare``) is given every
    batch as it is read, so work that does not depend on the interval's outcome
    (reading and verifying sessions) is done while orders arrive rather than at
    the tick; a failure there is left for the drain's own check.
    """

    def __init__(
        self,
        queue: OrderQueue,
        limit: int = MAX_BUFFERED,
        prepare: Callable[[Sequence[Entry]], None] | None = None,
    ) -> None:
        self._queue = queue
        self._limit = limit
        self.prepare = prepare
        self._entries: dict[bytes, Entry] = {}
        self._by_order: dict[str, Entry] = {}  # order id (hex) -> its first entry
        #: Where reading our own pending entries has got to; None once they are all read.
        self._pending_from: str | None = "0"

    def __len__(self) -> int:
        return len(self._entries)

    def poll(self, block_ms: int | None = None) -> int:
        """Read what arrived (waiting up to ``block_ms`` for something); returns how many."""
        room = self._limit - len(self._entries)
        if room <= 0:
            return 0
        count = min(READ_COUNT, room)
        got: list[Entry] = []
        if self._pending_from is not None:
            got = self._queue.read_pending(self._pending_from, count)
            if got:
                self._pending_from = got[-1].stream_id.decode()
            else:
                self._pending_from = None
        if not got:
            got = self._queue.read_new(count, block_ms)
        for entry in got:
            if entry.stream_id in self._entries:
                continue
            self._entries[entry.stream_id] = entry
            if entry.staged is not None:
                self._by_order.setdefault(entry.staged.order_id, entry)
        if got and self.prepare is not None:
            try:
                self.prepare(got)
            except redis.RedisError as exc:  # the drain's check reads them itself
                logger.debug("order intake: preparing the drain's check failed ({})", exc)
        return len(got)

    def catch_up(self) -> None:
        """Read everything queued by now (without waiting)."""
        while self.poll() and len(self._entries) < self._limit:
            pass

    def take(self, limit: int = MAX_PER_DRAIN) -> list[Entry]:
        """Up to ``limit`` entries for the drain, the oldest first (still held until
        ``forget``)."""
        self.recover()
        self.catch_up()
        taken: list[Entry] = []
        for entry in self._entries.values():
            if len(taken) >= limit:
                break
            taken.append(entry)
        return taken

    def recover(self) -> None:
        """Read our pending entries again if the group holds more than we do. A master
        deposed while frozen may read entries into the group's pending list when it
        wakes up, before it learns it is deposed (reading is not fenced; deciding
        is): they are ours to decide, and only a new reading of the list finds them."""
        if self._pending_from is None and self._queue.pending_entries() > len(self._entries):
            self._pending_from = "0"

    def forget(self, entries: Sequence[Entry]) -> None:
        """The drain acknowledged these: they are no longer queued."""
        for entry in entries:
            self._entries.pop(entry.stream_id, None)
            if entry.staged is not None and self._by_order.get(entry.staged.order_id) is entry:
                del self._by_order[entry.staged.order_id]

    def find(self, order_id: uuid.UUID) -> Order | None:
        """The queued order with this id, if it is in the stream (read up to now)."""
        entry = self._by_order.get(order_id.hex)
        if entry is None:
            self.catch_up()
            entry = self._by_order.get(order_id.hex)
        return None if entry is None else entry.order

    def queued_for(self, account_id: int, competition: str = "") -> list[Order]:
        """The queued orders of one user's account: the practice account's, or those for
        the competition named (lower case) (for its order list)."""
        self.catch_up()
        account = str(account_id)
        return [
            entry.order
            for entry in self._entries.values()
            if entry.staged is not None
            and entry.staged.account_id == account
            and entry.staged.competition.lower() == competition
            and entry.order is not None
        ]

    def run(
        self, stop: gevent.event.Event, block_ms: int = 1000, pause: float = READ_PAUSE
    ) -> None:
        """Keep reading until ``stop``; a Redis outage is waited out.

        After a read that did not fill ``READ_COUNT`` it rests ``pause`` seconds
        before the next. Without the rest, orders that arrive one at a time (a
        thousand clients each at its own moment) were read one round trip each:
        half the master's CPU went on the reads and the session lookups of
        ``prepare``, on a machine whose cores the workers and the drain need. The
        rest costs no order anything: the drain's ``take`` reads what is left,
        as ``find`` does for status and cancel."""
        failures = 0
        while not stop.is_set():
            try:
                if len(self._entries) >= self._limit:
                    stop.wait(0.1)
                    continue
                got = self.poll(block_ms)
                failures = 0
                if 0 < got < READ_COUNT:
                    stop.wait(pause)
            except redis.RedisError as exc:
                failures += 1
                if failures == 1:
                    logger.warning("order intake: Redis is unavailable ({}); retrying", exc)
                stop.wait(min(5.0, 0.2 * 2**failures))


__all__ = ["MAX_BUFFERED", "MAX_PER_DRAIN", "READ_COUNT", "READ_PAUSE", "OrderIntake"]
