"""Orders of every client of one worker process, queued a batch per Redis round trip.

Each client's greenlet used to queue its own order: a pooled connection taken
(redis-py checks each one it hands out with a zero-timeout ``poll``, which
gevent turns into hub watchers and a switch), the pending-order cap's
``FCALL``, then the ``XADD`` (with ``WAIT`` when replicas must confirm), each a
round trip. Under load orders come in clumps (a drain answers a thousand
clients at once, and they trade again at once), so that was a thousand
checkouts and two thousand round trips, each costing the worker's one core
more than Redis's answer.

Here one greenlet sends every order waiting at that moment in one pipeline:
one ``pt_queue_order`` per order (the cap and the ``XADD``, atomic, in one
FUNCTION call: ``limits/pending_orders.py``), then one ``WAIT`` for them all
when replicas must confirm (the same promise as before: an order counts as
kept once the replicas hold everything up to it). A lone order goes out at
once, as before; orders arriving while a batch is on its way make the next
one. Each order's own answer (kept, unconfirmed, refused by the cap, or the
error it met) goes back to its client's greenlet.

After each batch the sender rests ``SEND_PAUSE`` (5 ms) before the next. A
thousand clients each trading at its own moment send about one order a
millisecond, and Redis answers a batch sooner than that: without the rest
nearly every order went in a pipeline of its own, and the pipelines (pool
checkout, the send, the answer) took a fifth of the worker's CPU. With it an
order waits at most 5 ms more, and only behind an earlier batch; the worker's
CPU per order fell by 15 % in the trading benchmark.

A master older than this worker has no ``pt_queue_order`` in its library:
then the worker reserves and queues each order in two steps, as older workers
do, says so once in its log, and tries the combined call again a minute later
(the master may have been upgraded meanwhile).
"""

from __future__ import annotations

import time
from collections import deque

import gevent
import gevent.event
import redis
from loguru import logger

from papertrader.limits.pending_orders import PendingOrders
from papertrader.store.order_queue import Order, OrderQueue, Placed

#: Most orders in one pipeline (a burst larger than this goes out in several).
MAX_BATCH = 1000
#: Seconds the sender rests after a batch before it sends the next (see ``OrderSender``).
SEND_PAUSE = 0.005
#: Seconds before a worker that met an old function library tries the new call again.
RETRY_COMBINED_SECONDS = 60.0


def _missing_function(answer: Placed) -> bool:
    return isinstance(answer, redis.ResponseError) and "function not found" in str(answer).lower()


class OrderSender:
    """``send(order)`` from any greenlet: the order queued in the next batch."""

    def __init__(
        self, queue: OrderQueue, pending: PendingOrders | None, pause: float = SEND_PAUSE
    ) -> None:
        self._queue = queue
        self._pause = pause
        self._pending = pending
        self._waiting: deque[tuple[Order, gevent.event.AsyncResult]] = deque()
        self._wake = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        #: Until when orders are queued in two steps (the master's library is older).
        self._two_steps_until = 0.0

    @property
    def replicas(self) -> int:
        return self._queue.replicas

    def send(self, order: Order) -> bool | None:
        """Queue ``order``: True kept, False queued but not confirmed by the replicas,
        None refused by the pending cap (nothing queued); RedisError: it may or may
        not have been queued."""
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        result = gevent.event.AsyncResult()
        self._waiting.append((order, result))
        self._wake.set()
        placed = result.get()
        if isinstance(placed, Exception):
            raise placed
        return placed  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Stop sending; orders still waiting are told the store is gone (outcome unknown)."""
        if self._greenlet is not None:
            self._greenlet.kill()
        while self._waiting:
            self._waiting.popleft()[1].set(redis.ConnectionError("the worker is stopping"))

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._waiting:
                count = min(MAX_BATCH, len(self._waiting))
                batch = [self._waiting.popleft() for _ in range(count)]
                answers: list[Placed] = []
                try:
                    answers = self._place([order for order, _ in batch])
                except Exception as exc:  # a broken connection: every order of the batch
                    answers = [exc] * len(batch)
                finally:  # killed on the way (stopping): nobody may wait for ever
                    answers += [redis.ConnectionError("the worker is stopping")] * (
                        len(batch) - len(answers)
                    )
                    for (_, result), answer in zip(batch, answers, strict=True):
                        result.set(answer)
                gevent.sleep(self._pause)

    def _place(self, orders: list[Order]) -> list[Placed]:
        pending = self._pending
        if pending is None:
            return self._queue.submit_many(orders)
        if time.monotonic() >= self._two_steps_until:
            answers = self._queue.submit_many(orders, pending.queue)
            if not any(_missing_function(answer) for answer in answers):
                return answers
            # Nothing was queued by a call to a missing function: queue those the old way.
            logger.warning(
                "the master's Redis functions have no pt_queue_order (the master is older "
                "than this worker): queuing orders in two steps, cap then XADD, until it "
                "is upgraded"
            )
            self._two_steps_until = time.monotonic() + RETRY_COMBINED_SECONDS
            again = [i for i, answer in enumerate(answers) if _missing_function(answer)]
            for i, placed in zip(again, self._two_steps([orders[i] for i in again]), strict=True):
                answers[i] = placed
            return answers
        return self._two_steps(orders)

    def _two_steps(self, orders: list[Order]) -> list[Placed]:
        """Reserve each order under the cap (``pt_reserve_pending``), then queue those
        reserved in one pipeline: what workers did before ``pt_queue_order``."""
        assert self._pending is not None
        answers: list[Placed] = [None] * len(orders)
        reserved: list[int] = []
        for i, order in enumerate(orders):
            try:
                if self._pending.reserve(order.account_id, order.order_id):
                    reserved.append(i)
            except redis.RedisError as exc:
                answers[i] = exc
        if reserved:
            queued = self._queue.submit_many([orders[i] for i in reserved])
            for i, placed in zip(reserved, queued, strict=True):
                answers[i] = placed
        return answers
