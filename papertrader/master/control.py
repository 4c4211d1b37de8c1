"""Worker management commands from `pt workers`, received through Redis (spec 3.1.5).

The master subscribes to ``keys.WORKERS_CONTROL`` and serves each request in
a greenlet of its own (see ``store/worker_control.py`` for the format):

* ``boot``: drop that worker's link now (it is told LINK_REFUSED and retries
  with backoff; a disabled worker is then refused at its next handshake);
* ``status``: ask that worker for its live figures over the link
  (LINK_STATUS_REQUEST), with the link's round-trip time;
* ``list``: the same for every connected worker, asked in parallel.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import gevent.event
import redis
from loguru import logger

from papertrader.master.workers import LinkedWorker, WorkerRegistry
from papertrader.store import keys
from papertrader.store import worker_control as control
from papertrader.store.redis_connect import FOLLOW_CHECK_SECONDS, PrimaryMoved, on_primary
from papertrader.store.worker_control import ControlRequest

#: How long the master waits for a worker's live figures.
STATUS_TIMEOUT = 3.0
RETRY_SECONDS = 1.0


def _figures(worker: LinkedWorker) -> dict[str, Any]:
    try:
        figures = worker.status(STATUS_TIMEOUT)
    except gevent.Timeout:
        return {"connected": True, "error": f"no answer within {STATUS_TIMEOUT:g} s"}
    except OSError as exc:
        return {"connected": True, "error": f"the link failed ({exc})"}
    return {"connected": True, **figures}


class ControlListener:
    """Serves `pt workers` requests until the stop event is set."""

    def __init__(self, client: redis.Redis, registry: WorkerRegistry) -> None:
        self._redis = client
        self._registry = registry

    def run(self, stop: gevent.event.Event) -> None:
        failing = False
        while not stop.is_set():
            try:
                self._listen(stop)
            except redis.RedisError as exc:
                if not failing:
                    logger.warning("worker commands: Redis unavailable ({}); retrying", exc)
                failing = True
                stop.wait(RETRY_SECONDS)

    def _listen(self, stop: gevent.event.Event) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(keys.WORKERS_CONTROL)
            checked = time.monotonic()
            while not stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if time.monotonic() - checked >= FOLLOW_CHECK_SECONDS:
                    checked = time.monotonic()
                    if not on_primary(self._redis, pubsub.connection):  # a failover
                        raise PrimaryMoved("the Redis primary moved")
                if message is None or message.get("type") != "message":
                    continue
                request = control.parse_request(message["data"])
                if request is None:
                    logger.warning("ignored a malformed worker command")
                    continue
                gevent.spawn(self._serve, request)
        finally:
            pubsub.close()

    def _serve(self, request: ControlRequest) -> None:
        try:
            document = self._answer(request)
        except Exception:
            logger.exception("worker command {} failed", request.action)
            document = {"error": "internal error on the master; see its log"}
        try:
            control.answer(self._redis, request, document)
        except redis.RedisError as exc:
            logger.warning("could not answer worker command {} ({})", request.action, exc)

    def _answer(self, request: ControlRequest) -> dict[str, Any]:
        registry = self._registry
        if request.action == "list":
            workers = registry.connected()
            jobs = [gevent.spawn(_figures, w) for w in workers]
            gevent.joinall(jobs, timeout=STATUS_TIMEOUT + 1)
            return {
                "workers": {
                    str(w.uuid): (job.value if job.successful() else {"connected": True})
                    for w, job in zip(workers, jobs, strict=True)
                }
            }
        if request.worker is None:
            return {"error": f"{request.action} needs a worker UUID"}
        if request.action == "boot":
            booted = registry.boot(request.worker, "booted off by an operator (pt workers)")
            return {"booted": booted}
        worker = registry.find(request.worker)
        if worker is None:
            return {"connected": False}
        figures = _figures(worker)
        figures.update(
            {
                "peer": worker.peer,
                "address": worker.client_address,
                "connected_at": worker.connected_at.isoformat(),
            }
        )
        return figures
