"""Worker management (spec 3.1.5): the workers linked to this master right now.

The registry is the master's memory of its links (name, UUID, region, the
address clients should use, when it connected, when it last sent a frame),
mirrored to Redis for ``pt`` commands. Its watchdog drops a link that stayed
silent for ``link_silence_window`` (several missed heartbeats, never under
10 s: a worker stalled for a few seconds keeps its link), and one whose
worker was disabled or unregistered meanwhile: that is how an operator boots
a worker off. The heartbeat period is the master's, sent to each worker in
LINK_WELCOME: both sides use the same one, whatever their own settings say.

One live link per worker: a second link for a UUID whose link is alive is
refused (``claim``), not swapped in, so whoever holds a worker's key cannot
knock the running worker off by linking again; ``pt workers boot`` is how an
operator replaces a link. A link that stopped talking (the silence window)
is not alive and gives way at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

import gevent.event
import psycopg2
import redis
from loguru import logger

from papertrader.limits.deadlines import link_silence_window
from papertrader.protocol import Message, max_chunk_size, packets_for
from papertrader.protocol.records import to_record
from papertrader.store import workers as store
from papertrader.store.pool import ConnectionPool, PoolTimeout

if TYPE_CHECKING:
    from papertrader.master.context import MasterContext


def heartbeat_seconds(update_interval: float) -> float:
    """How often each side of a link sends a HEARTBEAT (the link contract)."""
    return max(1.0, update_interval)


@dataclass(eq=False)
class LinkedWorker:
    """One live link. ``close`` shuts its socket (the link's greenlet then cleans up);
    ``refuse`` first tells the worker why (LINK_REFUSED), for a worker booted off."""

    uuid: uuid.UUID
    name: str
    region: str | None
    client_address: str  # "host:port" that clients should use
    peer: str  # where the link comes from
    close: Callable[[str], None] = field(repr=False)
    refuse: Callable[[str], None] = field(repr=False)
    #: Asks the worker for its live figures over the link (timeout in seconds).
    status: Callable[[float], dict[str, Any]] = field(repr=False, default=lambda _timeout: {})
    #: The origin of the worker's web page (LINK_WEB_ORIGIN, checked by ``web_origin_refusal``).
    web_origin: str = ""
    connected_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    last_frame: float = field(default_factory=time.monotonic)

    def live_fields(self) -> dict[str, str]:
        return {
            "name": self.name,
            "region": self.region or "",
            "address": self.client_address,
            "web_url": self.web_origin,
            "peer": self.peer,
            "connected_at": self.connected_at.isoformat(),
            "last_seen": datetime.now(timezone.utc).isoformat(),
        }


class WorkerRegistry:
    def __init__(self, pool: ConnectionPool, client: redis.Redis, heartbeat: float) -> None:
        self._pool = pool
        self._redis = client
        self.heartbeat = heartbeat
        self.silence_limit = link_silence_window(heartbeat)
        self._links: dict[uuid.UUID, LinkedWorker] = {}
        #: Links being welcomed: claimed, not yet listed (so never listed before welcome).
        self._claims: dict[uuid.UUID, LinkedWorker] = {}

    # links come and go --------------------------------------------------
    def alive(self, worker: LinkedWorker) -> bool:
        """Whether the link spoke within the silence limit (the watchdog's rule)."""
        return time.monotonic() - worker.last_frame <= self.silence_limit

    def claim(self, worker: LinkedWorker) -> LinkedWorker | None:
        """Reserve the worker's UUID for this new link; returns the live link (or the
        claim in progress) that holds it instead, in which case the new link is refused.

        A held link that is no longer alive is closed and gives way.
        """
        pending = self._claims.get(worker.uuid)
        if pending is not None:
            return pending
        old = self._links.get(worker.uuid)
        if old is not None and self.alive(old):
            return old
        self._claims[worker.uuid] = worker  # before anything that may yield
        if old is not None:
            logger.info(
                "worker {} links again from {}; its old link from {} was silent: closing it",
                worker.name, worker.peer, old.peer,
            )  # fmt: skip
            old.close("replaced: silent for longer than the heartbeat limit")
            self.remove(old)
        return None

    def add(self, worker: LinkedWorker) -> None:
        """List a claimed link once it is welcomed."""
        if self._claims.get(worker.uuid) is worker:
            del self._claims[worker.uuid]
        self._links[worker.uuid] = worker
        self._mirror(lambda: store.publish_live(self._redis, worker.uuid, worker.live_fields()))
        logger.info(
            "worker {} ({}) linked from {}; clients use {}",
            worker.name, worker.region or "no region", worker.peer, worker.client_address,
        )  # fmt: skip

    def remove(self, worker: LinkedWorker) -> None:
        """Forget a closed link (unless a newer link of the same worker replaced it)."""
        if self._claims.get(worker.uuid) is worker:
            del self._claims[worker.uuid]
            return
        if self._links.get(worker.uuid) is not worker:
            return
        del self._links[worker.uuid]
        self._mirror(lambda: store.remove_live(self._redis, worker.uuid))
        self._mark_seen(worker)
        logger.info("worker {} disconnected", worker.name)

    def refresh(self, worker: LinkedWorker) -> None:
        """Mirror a listed link's fields to Redis again (its web origin arrived)."""
        if self._links.get(worker.uuid) is worker:
            fields = worker.live_fields()
            self._mirror(partial(store.publish_live, self._redis, worker.uuid, fields))

    def touch(self, worker: LinkedWorker) -> None:
        worker.last_frame = time.monotonic()

    # reads ----------------------------------------------------------------
    def connected(self) -> list[LinkedWorker]:
        return sorted(self._links.values(), key=lambda w: w.name)

    def find(self, worker_uuid: uuid.UUID) -> LinkedWorker | None:
        return self._links.get(worker_uuid)

    def boot(self, worker_uuid: uuid.UUID, reason: str) -> bool:
        """Drop that worker's link now (it is told LINK_REFUSED); False if not linked."""
        worker = self._links.get(worker_uuid)
        if worker is None:
            return False
        logger.warning("booting worker {} off: {}", worker.name, reason)
        worker.refuse(reason)
        return True

    def worker_list(self) -> list[dict[str, Any]]:
        """What a client gets for getWorkerList: the workers it can connect to now."""
        return [
            {
                "name": w.name,
                "region": w.region,
                "address": w.client_address,
                "web_url": w.web_origin or None,
            }
            for w in self.connected()
        ]

    def mirrored_list(self) -> list[dict[str, Any]]:
        """The active master's worker list as it mirrors it to Redis: what a standby
        answers, so every master gives clients the same list."""
        return [
            {
                "name": w.get("name", ""),
                "region": w.get("region") or None,
                "address": w.get("address", ""),
                "web_url": w.get("web_url") or None,
            }
            for w in store.read_live(self._redis)
        ]

    # the watchdog -----------------------------------------------------------
    def check(self) -> None:
        """Drop silent or no-longer-allowed links; refresh last-seen times."""
        now = time.monotonic()
        for worker in list(self._links.values()):
            silent = now - worker.last_frame
            if silent > self.silence_limit:
                logger.warning(
                    "worker {} silent for {:.1f}s (limit {:g}s); dropping its link",
                    worker.name, silent, self.silence_limit,
                )  # fmt: skip
                worker.close(f"silent for more than {self.silence_limit:g}s")
                continue
            if self._mark_seen(worker) is False:
                reason = f"worker {worker.name} is disabled or no longer registered"
                logger.warning("{}; dropping its link", reason)
                worker.refuse(reason)
                continue
            self._mirror(
                partial(store.publish_live, self._redis, worker.uuid, worker.live_fields())
            )

    def run_watchdog(self, stop: gevent.event.Event) -> None:
        while not stop.wait(timeout=self.heartbeat):
            try:
                self.check()
            except Exception:
                logger.exception("worker watchdog round failed")

    def clear_stale(self) -> None:
        """At start: whatever a previous master left in Redis is not connected to us."""
        self._mirror(lambda: store.clear_live(self._redis))

    def close_all(self) -> None:
        for worker in list(self._links.values()):
            worker.close("the master is stopping")

    # helpers ------------------------------------------------------------------
    def _mark_seen(self, worker: LinkedWorker) -> bool | None:
        """True/False from the database; None if it could not be asked (keep the link)."""
        try:
            return store.mark_seen(self._pool, worker.uuid)
        except (psycopg2.Error, PoolTimeout) as exc:
            logger.warning("could not record that worker {} is alive ({})", worker.name, exc)
            return None

    @staticmethod
    def _mirror(action: Callable[[], object]) -> None:
        try:
            action()
        except redis.RedisError as exc:
            logger.warning("could not update the connected workers in Redis ({})", exc)


def handle_worker_list(ctx: MasterContext, request: Message) -> list[Message]:
    """GET_WORKER_LIST, from a client on the master's port or forwarded by a worker (a
    browser cannot reach the master's port): the same list either way."""
    leadership = ctx.leadership
    if leadership is None or leadership.active:
        workers = ctx.workers.worker_list()
    else:
        try:
            workers = ctx.workers.mirrored_list()
        except redis.RedisError as exc:
            logger.warning("standby: cannot read the worker list from Redis ({})", exc)
            workers = []
    listed = tuple(to_record(w) for w in workers)
    return packets_for(
        listed, max_chunk_size(ctx.settings.max_data_size), request_id=request.request_id
    )
