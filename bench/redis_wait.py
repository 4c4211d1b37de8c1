"""What ``redis_min_replicas_ack = 1`` costs (docs/OPERATIONS.md, "Redis with Sentinel"):
a worker sends ``WAIT 1`` with every order's ``XADD`` and calls the order queued only
once a replica has it, so a Redis failover loses no order a client was told about.

Measured on one machine: a replica of the benchmark's private Redis
(``services/redis_replica.py``), then, in alternating rounds, order placement as a
worker does it (``OrderQueue.submit`` through the worker's pooled client, from
``CLIENTS`` greenlets at once, each placing orders back to back) without and with the
``WAIT``: orders placed per second and each placement's latency. The client's whole
answer waits for the master's next drain (the update interval, seconds), so what the
``WAIT`` adds to the answer a client sees is this latency difference, once. On one
machine the replica's round trip is a loopback one; between hosts add the network's.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from statistics import median
from typing import Any

import gevent

from papertrader.config.settings import Settings
from papertrader.services import ServiceUrls, redis_replica, redis_server
from papertrader.services.binaries import find_binary
from papertrader.services.state import load_state
from papertrader.store import keys
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.worker.startup import make_redis

ROUNDS = 3
SECONDS = 4.0
#: One client alone (the round trip the WAIT adds), and many at once (a busy worker).
CONCURRENCY = (1, 32)


def _order(worker: str) -> Order:
    return Order(
        order_id=uuid.uuid4(),
        account_id=1,
        side="buy",
        symbol="AAPL",
        quantity=1,
        received_at=datetime.now(timezone.utc),
        client_ip="127.0.0.1",
        worker=worker,
        client_order_id=uuid.uuid4(),
        order_type="limit",
        limit_price=Decimal("1.00"),
        reply=uuid.uuid4().hex,
        session=uuid.uuid4().hex,
    )


def _place(queue: OrderQueue, clients: int, seconds: float) -> tuple[int, list[float], int]:
    """Orders placed by ``clients`` greenlets for ``seconds``: count, latencies, unconfirmed."""
    latencies: list[float] = []
    unconfirmed = 0
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal unconfirmed
        while time.monotonic() < deadline:
            order = _order("bench")
            started = time.perf_counter()
            kept = queue.submit(order)
            latencies.append(time.perf_counter() - started)
            if not kept:
                unconfirmed += 1

    gevent.joinall([gevent.spawn(client) for _ in range(clients)])
    return len(latencies), latencies, unconfirmed


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def bench_redis_wait(urls: ServiceUrls, state: Path) -> dict[str, Any]:
    primary = load_state(state).redis
    assert primary is not None
    redis_replica.ensure_replication_users(primary)
    replica = redis_replica.start_replica(primary, find_binary("redis-server"))
    client = make_redis(urls.master_redis_url or urls.redis_url, Settings())
    modes = (("no_wait", 0), ("wait_1", 1))
    figures: dict[tuple[int, str], dict[str, list[float]]] = {
        (n, mode): {"rate": [], "p50": [], "p99": []} for n in CONCURRENCY for mode, _ in modes
    }
    unconfirmed = 0
    try:
        for _ in range(ROUNDS):
            for clients in CONCURRENCY:
                for mode, replicas in modes:
                    queue = OrderQueue(client, replicas=replicas, replica_timeout=1.0)
                    count, latencies, missed = _place(queue, clients, SECONDS)
                    unconfirmed += missed
                    got = figures[(clients, mode)]
                    got["rate"].append(count / SECONDS)
                    got["p50"].append(_percentile(latencies, 0.5) * 1000)
                    got["p99"].append(_percentile(latencies, 0.99) * 1000)
                    client.delete(keys.ORDERS)
    finally:
        client.close()
        redis_server.stop(replica, 30)
    result: dict[str, Any] = {"rounds": ROUNDS, "unconfirmed_orders": unconfirmed}
    for clients in CONCURRENCY:
        part: dict[str, Any] = {}
        for mode, _ in modes:
            got = figures[(clients, mode)]
            part[mode] = {
                "orders_per_second": round(median(got["rate"])),
                "latency_ms_p50": round(median(got["p50"]), 3),
                "latency_ms_p99": round(median(got["p99"]), 3),
            }
        part["wait_vs_no_wait"] = round(
            part["wait_1"]["orders_per_second"] / part["no_wait"]["orders_per_second"], 2
        )
        result[f"clients_{clients}"] = part
    return result
