"""What a synchronous PostgreSQL replica costs (docs/OPERATIONS.md, "PostgreSQL with a
streaming replica"): with ``synchronous_standby_names`` every commit waits until the
replica has it on disk, so an order reported filled survives the primary's loss.

Measured on one machine: a streaming replica of the benchmark's private cluster
(``services/postgres_replica.py``), then, in alternating rounds, asynchronous and
synchronous replication: the order drain (market orders, as ``bench orders``) and
pgbench's TPC-B-like transactions (small transactions: the case where the extra round
trip per commit shows most). On one machine the replica's round trip is a loopback
one; between hosts add the network's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from statistics import median
from typing import Any

from bench.orders import bench_market, pgbench_tps
from papertrader.services import ServiceUrls, postgres_replica
from papertrader.services.state import load_state

ROUNDS = 2
ORDERS = 10_000
PGBENCH_SECONDS = 5


def bench_replica(urls: ServiceUrls, state: Path) -> dict[str, Any]:
    primary = load_state(state).postgres
    assert primary is not None
    replica = postgres_replica.create(primary)
    drains: dict[str, list[float]] = {"async": [], "sync": []}
    tps: dict[str, list[float]] = {"async": [], "sync": []}
    try:
        for round_ in range(ROUNDS):
            for mode in ("async", "sync"):
                name = postgres_replica.REPLICA_NAME if mode == "sync" else None
                postgres_replica.make_synchronous(primary, name)
                drain = bench_market(urls, ORDERS, prefix=f"r{round_}{mode}")
                drains[mode].append(drain["orders_per_second"])
                got = pgbench_tps(urls.owner_url, PGBENCH_SECONDS)
                if got is not None:
                    tps[mode].append(got)
    finally:
        postgres_replica.make_synchronous(primary, None)
        postgres_replica.stop(replica)
        shutil.rmtree(replica.root, ignore_errors=True)
    result: dict[str, Any] = {
        "rounds": ROUNDS,
        "drain_orders_per_second": {mode: round(median(v)) for mode, v in drains.items()},
        "drain_sync_vs_async": round(median(drains["sync"]) / median(drains["async"]), 2),
    }
    if tps["async"] and tps["sync"]:
        result["pgbench_tps"] = {mode: round(median(v)) for mode, v in tps.items()}
        result["pgbench_sync_vs_async"] = round(median(tps["sync"]) / median(tps["async"]), 2)
    return result
