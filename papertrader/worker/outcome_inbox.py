"""One result list per worker process for its orders' outcomes, read by one greenlet.

Every order a worker queues names the list its outcome goes to (the stream
entry's ``reply``; the master's drain pushes each outcome there, with a TTL,
after the commit: ``OrderQueue.complete``). Before, each order had a list of
its own and its client's greenlet waited on it with a BLPOP of its own: a
Redis connection per waiting order, and at every drain a burst of as many
replies as orders, each through redis-py's pool checkout. With a thousand
clients trading, that cost more of the worker's time than the orders
themselves, and the answers left in a slow trickle after each drain.

Now all the orders of one worker process share its inbox (a random id made
at start, so nobody can guess it and a restarted process never reads what
its predecessor was sent): one greenlet pops outcomes as they arrive, up to
``BATCH`` per round trip, and hands each to the greenlet waiting for that
order (``expect`` before the XADD, ``Expected.get`` after). An outcome nobody
waits for any more (its client gave up, or the same order was also sent
through another worker) is dropped: the order's state is in PostgreSQL and
``ORDER_STATUS`` answers for it.

If Redis fails while orders wait, every waiter gets the error (its client is
told the outcome is unknown, with the order id), as a waiter of its own
would have been; the outcomes stay in the list and the reader starts again
with the next order. Through Redis Sentinel a broken connection is a
failover under way instead: the reader keeps asking (the new primary gets
the outcomes of the master's next drains) and each waiter gives up only at
its own timeout.
"""

from __future__ import annotations

import uuid
from collections import deque
from typing import cast

import gevent
import gevent.event
import redis
from loguru import logger

from papertrader.store import keys
from papertrader.store.order_queue import RECONNECT_PAUSE, WAIT_SLICE_SECONDS, Outcome
from papertrader.store.redis_connect import follows_failover

#: Most outcomes popped in one round trip (LPOP with a count).
BATCH = 512


class Expected:
    """The outcome of one queued order, when the inbox receives it."""

    __slots__ = ("_inbox", "_result", "order_id")

    def __init__(self, inbox: OutcomeInbox, order_id: uuid.UUID) -> None:
        self._inbox = inbox
        self.order_id = order_id
        self._result: gevent.event.AsyncResult = gevent.event.AsyncResult()

    def deliver(self, outcome: Outcome) -> None:
        self._result.set(outcome)

    def fail(self, exc: redis.RedisError) -> None:
        self._result.set_exception(exc)

    def get(self, timeout: float) -> Outcome | None:
        """The outcome, None if none came within ``timeout`` s; raises the RedisError
        that stopped the inbox's reader while waiting."""
        self._inbox.listen()
        try:
            outcome = self._result.get(timeout=timeout)
        except gevent.Timeout:
            return None
        finally:
            self.cancel()
        assert isinstance(outcome, Outcome)
        return outcome

    def cancel(self) -> None:
        """No longer waiting (the order was not queued after all, or the wait ended)."""
        self._inbox.forget(self)


class OutcomeInbox:
    """The outcome list of this worker process and the greenlet that reads it."""

    def __init__(self, client: redis.Redis, reply: str | None = None) -> None:
        self._redis = client
        #: The id every order of this process is queued with (``reply``).
        self.reply = reply or uuid.uuid4().hex
        self._key = keys.order_result(self.reply)
        self._waiting: dict[uuid.UUID, deque[Expected]] = {}
        self._reader: gevent.Greenlet | None = None
        self._batches = True  # False once Redis refused LPOP with a count (an old ACL)

    @property
    def waiting(self) -> int:
        """Orders waiting for their outcome."""
        return sum(len(queue) for queue in self._waiting.values())

    def expect(self, order_id: uuid.UUID) -> Expected:
        """Wait for ``order_id``'s outcome: call before the order is queued, so an
        outcome cannot arrive before anyone listens for it."""
        expected = Expected(self, order_id)
        self._waiting.setdefault(order_id, deque()).append(expected)
        return expected

    def listen(self) -> None:
        """Make sure the reader runs (it stops when nobody waits)."""
        if self._reader is None or self._reader.dead:
            self._reader = gevent.spawn(self._read)

    def forget(self, expected: Expected) -> None:
        queue = self._waiting.get(expected.order_id)
        if queue is None:
            return
        try:
            queue.remove(expected)
        except ValueError:
            return
        if not queue:
            del self._waiting[expected.order_id]

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.kill(block=False)

    # the reader ------------------------------------------------------------------------
    def _read(self) -> None:
        """Pop outcomes while anyone waits for one."""
        while self._waiting:
            try:
                texts = self._pop()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if follows_failover(self._redis):
                    # A Sentinel failover under way: the outcomes will be pushed to the
                    # new primary; each waiter still gives up at its own timeout.
                    gevent.sleep(RECONNECT_PAUSE)
                    continue
                self._fail_all(exc)
                return
            except redis.RedisError as exc:
                self._fail_all(exc)
                return
            for text in texts:
                self._deliver(text)

    def _pop(self) -> list[bytes]:
        got = cast("tuple[bytes, bytes] | None", self._redis.blpop([self._key], WAIT_SLICE_SECONDS))
        if got is None:
            return []
        texts = [got[1]]
        if self._batches:
            try:
                more = cast("list[bytes] | None", self._redis.lpop(self._key, BATCH))
            except redis.exceptions.NoPermissionError:
                logger.warning(
                    "this worker's Redis user may not LPOP its outcomes in batches (a user "
                    "made before it needed to): `pt workers register` again updates it; "
                    "popping one at a time meanwhile"
                )
                self._batches = False
                more = None
            if more:
                texts += more
        return texts

    def _deliver(self, text: bytes) -> None:
        try:
            outcome = Outcome.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning(f"dropping an order outcome that does not parse ({exc}): {text[:200]!r}")
            return
        queue = self._waiting.get(outcome.order_id)
        if not queue:
            logger.debug(f"outcome of order {outcome.order_id} arrived after its wait ended")
            return
        expected = queue.popleft()
        if not queue:
            del self._waiting[outcome.order_id]
        expected.deliver(outcome)

    def _fail_all(self, exc: redis.RedisError) -> None:
        waiting, self._waiting = self._waiting, {}
        for queue in waiting.values():
            for expected in queue:
                expected.fail(exc)
