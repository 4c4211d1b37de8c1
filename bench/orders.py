"""Orders per second the master drains and applies (drain_once against real Redis + PostgreSQL).

Baselines in the same run: pgbench's built-in TPC-B-like transaction and
redis-benchmark XADD on the same servers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from papertrader.master.transactions import drain_once
from papertrader.services import ServiceUrls
from papertrader.services.binaries import find_binary
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.pool import ConnectionPool


def _accounts(pool: ConnectionPool, count: int) -> list[int]:
    ids = []
    with pool.transaction() as cur:
        for i in range(count):
            cur.execute(
                "INSERT INTO accounts (username, email, password_hash, cash)"
                " VALUES (%s, %s, 'x', %s) RETURNING id",
                (f"bench{i}", f"bench{i}@example.com", Decimal("1000000000.00")),
            )
            ids.append(cur.fetchone()[0])  # type: ignore[index]
    return ids


def bench_drain(urls: ServiceUrls, orders: int = 20_000, accounts: int = 200) -> dict[str, Any]:
    pool = ConnectionPool(urls.database_url, size=4)
    client = redis.Redis.from_url(urls.redis_url)
    queue = OrderQueue(client)
    queue.ensure_group()
    ids = _accounts(pool, accounts)
    now = datetime.now(timezone.utc)
    pipe = client.pipeline(transaction=False)
    for i in range(orders):
        order = Order(uuid.uuid4(), ids[i % accounts], "buy" if i % 3 else "sell",
                      "AAPL", 1 + i % 5, now, "127.0.0.1", "bench")  # fmt: skip
        pipe.xadd("pt:orders", order.fields())  # type: ignore[arg-type]
    pipe.execute()
    started = time.perf_counter()
    decided = drain_once(queue, pool, {"AAPL": Decimal("123.45")})
    elapsed = time.perf_counter() - started
    pool.close()
    return {
        "orders": decided,
        "seconds": round(elapsed, 3),
        "orders_per_second": round(decided / elapsed),
        "target": 5_000,
    }


def pgbench_tps(database_url: str, seconds: int = 10) -> float | None:
    """TPC-B-like transactions per second, 4 clients, on the same PostgreSQL."""
    try:
        binary = str(find_binary("pgbench"))
    except Exception:
        binary = shutil.which("pgbench") or ""
    if not binary:
        return None
    parts = urlsplit(database_url)
    env = {**os.environ, "PGPASSWORD": parts.password or ""}
    common = [
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port),
        "-U",
        parts.username or "",
    ]
    db = parts.path.lstrip("/")
    subprocess.run([binary, "-i", "-q", *common, db], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [binary, "-c", "4", "-j", "2", "-T", str(seconds), *common, db],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    match = re.search(r"tps = ([0-9.]+)", out)
    return float(match.group(1)) if match else None


def redis_xadd_rps(redis_url: str, requests: int = 200_000) -> float | None:
    binary = shutil.which("redis-benchmark")
    if not binary:
        return None
    parts = urlsplit(redis_url)
    out = subprocess.run(
        [binary, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port),
         "--user", parts.username or "default", "-a", parts.password or "",
         "-n", str(requests), "-c", "50", "-q", "XADD", "bench:stream", "*", "f", "v"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    match = re.search(r"([0-9.]+) requests per second", out)
    return float(match.group(1)) if match else None


def bench_orders(urls: ServiceUrls, state: Path) -> dict[str, Any]:
    result = bench_drain(urls)
    result["pgbench_tpcb_tps"] = pgbench_tps(urls.database_url)
    result["redis_benchmark_xadd_rps"] = redis_xadd_rps(urls.redis_url)
    return result
