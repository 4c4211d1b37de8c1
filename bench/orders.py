"""Orders per second the master drains and applies (drain_once against real Redis + PostgreSQL).

Three figures, each from orders queued on the ``pt:orders`` stream the way workers
queue them, drained by ``papertrader.master.transactions.drain_once`` (read,
parse, sort, apply set-based in PostgreSQL, publish every outcome, acknowledge):

* **market**: 20,000 market buys and sells over 200 accounts, every entry read
  from the stream and checked by the drain itself (a master restarted with a full
  queue); **market_read_ahead**: the same after the master's intake has read them,
  as it does while orders arrive during an interval;
* **mix**: the same volume as a trader's day looks: market orders, limit
  orders (some marketable at once, most waiting), stop and stop-limit orders,
  with a book of 5,000 orders already waiting from earlier intervals (a fifth
  of them fill this interval), and 2% of the new orders canceled while queued
  (through the master's cancel path, before the drain), read by the intake
  before the drain (the cancels need it).

Baselines in the same run: pgbench's built-in TPC-B-like transaction on the same
PostgreSQL, and redis-benchmark XADD on the same Redis.

The drain runs in this process with the garbage collector tuned as the master
tunes its own (``master/gc_tuning.py``; ``PT_BENCH_GC=default`` leaves CPython's
settings). Each figure also carries the CPU time per order of the drain's process (this
one: it is the master's code), of PostgreSQL (the postmaster and its backends)
and of Redis, from /proc: on a shared machine the throughput says as much about
the scheduler as about the drain, the CPU per order much less.
"""

from __future__ import annotations

import gc
import os
import random
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from bench.quotes import cpu_seconds, with_children
from papertrader.master import gc_tuning
from papertrader.master.order_intake import OrderIntake
from papertrader.master.order_sessions import SessionCheck
from papertrader.master.transactions import DRAIN_LANES, Check, drain_once
from papertrader.protocol.errors import ErrorCode
from papertrader.services import ServiceUrls, services_status
from papertrader.services.binaries import find_binary
from papertrader.store import keys, order_book
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.order_state import order_id_for
from papertrader.store.pool import ConnectionPool
from papertrader.store.session_signing import SessionSigner
from papertrader.store.sessions import SessionStore

ORDERS = 20_000
ACCOUNTS = 200
PRICE = Decimal("123.45")
BOOK = 5_000
CANCELED = 0.02
#: Lanes the drain applies accounts in (the master's setting drain_lanes);
#: PT_BENCH_DRAIN_LANES=1 measures the drain of one lane.
LANES = int(os.environ.get("PT_BENCH_DRAIN_LANES", DRAIN_LANES))
#: Target of issue 15: orders a second, and times pgbench's TPC-B rate.
TARGET = 20_000
TARGET_RATIO = 8


def _accounts(pool: ConnectionPool, count: int, prefix: str) -> list[int]:
    ids = []
    with pool.transaction() as cur:
        for i in range(count):
            cur.execute(
                "INSERT INTO accounts (username, email, password_hash, cash)"
                " VALUES (%s, %s, 'x', %s) RETURNING id",
                (f"{prefix}{i}", f"{prefix}{i}@example.com", Decimal("1000000000.00")),
            )
            ids.append(cur.fetchone()[0])  # type: ignore[index]
    return ids


#: The outcome inboxes the orders name: as in production, one per worker process
#: (worker/outcome_inbox.py), not one per order, which would have Redis create and
#: expire a list for every order.
INBOXES = [uuid.uuid4().hex for _ in range(4)]


def _order(account: int, side: str, quantity: int, at: datetime, **terms: Any) -> Order:
    cid = uuid.uuid4()
    return Order(
        order_id_for(account, cid), account, side, "AAPL", quantity, at,  # type: ignore[arg-type]
        "127.0.0.1", "bench", client_order_id=cid, reply=INBOXES[account % len(INBOXES)],
        **terms,
    )  # fmt: skip


def market_orders(ids: list[int], count: int, at: datetime) -> list[Order]:
    return [
        _order(ids[i % len(ids)], "buy" if i % 3 else "sell", 1 + i % 5, at) for i in range(count)
    ]


def mixed_orders(ids: list[int], count: int, at: datetime, rng: random.Random) -> list[Order]:
    """60% market, 20% limit (a quarter marketable), 12% stop, 8% stop-limit."""
    out = []
    for i in range(count):
        account, r = ids[i % len(ids)], rng.random()
        side = "buy" if i % 3 else "sell"
        up = Decimal("1.05") if side == "buy" else Decimal("0.95")
        down = Decimal("0.95") if side == "buy" else Decimal("1.05")
        quantity = 1 + i % 5
        if r < 0.60:
            out.append(_order(account, side, quantity, at))
        elif r < 0.80:
            limit = (PRICE * (up if rng.random() < 0.25 else down)).quantize(Decimal("0.01"))
            out.append(_order(account, side, quantity, at, order_type="limit", limit_price=limit))
        elif r < 0.92:
            stop = (PRICE * up).quantize(Decimal("0.01"))
            out.append(_order(account, side, quantity, at, order_type="stop", stop_price=stop,
                              time_in_force="gtc"))  # fmt: skip
        else:
            stop = (PRICE * up).quantize(Decimal("0.01"))
            out.append(_order(account, side, quantity, at, order_type="stop_limit",
                              stop_price=stop, limit_price=stop))  # fmt: skip
    return out


def _signed_in(client: redis.Redis, ids: list[int]) -> tuple[Check, dict[int, str]]:
    """A live, master-signed session per account and the drain's check over them: the
    master checks every order's session when it drains it, so the figure pays for it too."""
    store = SessionStore(client, 3600, 3600, signer=SessionSigner.generate(),
                         require_signature=True)  # fmt: skip
    sessions = {a: store.create(a, f"bench{a}", "127.0.0.1", False).session_id.hex for a in ids}
    return SessionCheck(client, store), sessions


def _assert_no_session_refusals(pool: ConnectionPool, ids: list[int]) -> None:
    """A figure of orders refused at the session check would measure the wrong work."""
    with pool.transaction() as cur:
        cur.execute("SELECT count(*) FROM rejected_orders WHERE account_id = ANY(%s)"
                    " AND code IN (%s, %s)", (ids, int(ErrorCode.SESSION_MISMATCH),
                                              int(ErrorCode.INVALID_SESSION)))  # fmt: skip
        refused = cur.fetchone()[0]  # type: ignore[index]
    if refused:
        raise RuntimeError(f"{refused} bench orders were refused for their session")


def _queue(client: redis.Redis, orders: list[Order], sessions: dict[int, str]) -> None:
    """XADD as a worker does: each order names its account's session."""
    pipe = client.pipeline(transaction=False)
    for order in orders:
        signed = replace(order, session=sessions[order.account_id])
        pipe.xadd(keys.ORDERS, signed.fields())  # type: ignore[arg-type]
    pipe.execute()


#: The servers' pids, for their CPU time (set by ``bench_orders``; empty: not measured).
_SERVERS: dict[str, int] = {}


def _server_cpu() -> dict[str, float]:
    """CPU seconds used so far: this process (the drain), PostgreSQL, Redis."""
    used = {"drain": time.process_time()}
    if "postgres" in _SERVERS:
        used["postgres"] = cpu_seconds(with_children(_SERVERS["postgres"]))
    if "redis" in _SERVERS:
        used["redis"] = cpu_seconds([_SERVERS["redis"]])
    return used


def _drain(queue: OrderQueue, pool: ConnectionPool, price: Decimal, now: datetime,
           check: Check, intake: OrderIntake | None = None,
           cpu: dict[str, float] | None = None) -> tuple[int, float]:  # fmt: skip
    """Drain once; ``cpu`` gets each process's CPU microseconds per order decided."""
    before = _server_cpu()
    started = time.perf_counter()
    decided = drain_once(queue, pool, {"AAPL": price}, now=now, intake=intake,
                         day_end=now + timedelta(hours=8), max_open=1_000_000,
                         check=check, lanes=LANES)  # fmt: skip
    elapsed = time.perf_counter() - started
    if cpu is not None and decided:
        after = _server_cpu()
        cpu.update({name: round((after[name] - before[name]) / decided * 1e6, 1)
                    for name in after})  # fmt: skip
    return decided, elapsed


def bench_market(
    urls: ServiceUrls, orders: int = ORDERS, prefix: str = "m", read_ahead: bool = False
) -> dict[str, Any]:
    """Market orders of ACCOUNTS fresh accounts (usernames ``prefix``N) through the drain.

    ``read_ahead``: the master's intake has read (and checked) the entries before the
    drain starts, as it does in production while orders arrive during the interval
    (and as the mix figure always has); otherwise the drain reads all of them itself,
    as after a restart with a full queue."""
    pool = ConnectionPool(urls.database_url, size=4)
    client = redis.Redis.from_url(urls.redis_url)
    queue = OrderQueue(client)
    queue.ensure_group()
    ids = _accounts(pool, ACCOUNTS, prefix)
    check, sessions = _signed_in(client, ids)
    now = datetime.now(timezone.utc)
    _queue(client, market_orders(ids, orders, now), sessions)
    intake = None
    if read_ahead:
        intake = OrderIntake(queue)
        intake.catch_up()
    cpu: dict[str, float] = {}
    decided, elapsed = _drain(queue, pool, PRICE, now, check, intake, cpu)
    _assert_no_session_refusals(pool, ids)
    pool.close()
    client.close()
    return {"orders": decided, "seconds": round(elapsed, 3),
            "orders_per_second": round(decided / elapsed), "cpu_us_per_order": cpu}  # fmt: skip


def bench_mix(urls: ServiceUrls, orders: int = ORDERS) -> dict[str, Any]:
    pool = ConnectionPool(urls.database_url, size=4)
    client = redis.Redis.from_url(urls.redis_url)
    queue = OrderQueue(client)
    queue.ensure_group()
    rng = random.Random(13)
    ids = _accounts(pool, ACCOUNTS, "x")
    check, sessions = _signed_in(client, ids)
    before = datetime.now(timezone.utc) - timedelta(minutes=1)
    # Earlier intervals left a book: limit buys 1-5% under the price, a fifth within 1%.
    book = []
    for i in range(BOOK):
        gap = Decimal("0.995") if i % 5 == 0 else Decimal("0.96")
        book.append(_order(ids[i % ACCOUNTS], "buy", 1 + i % 5, before, order_type="limit",
                           limit_price=(PRICE * gap).quantize(Decimal("0.01"))))  # fmt: skip
    _queue(client, book, sessions)
    _drain(queue, pool, PRICE, before, check)
    # This interval: new orders, some canceled while queued, the price 1% lower.
    now = datetime.now(timezone.utc)
    fresh = mixed_orders(ids, orders, now, rng)
    _queue(client, fresh, sessions)
    intake = OrderIntake(queue)
    intake.catch_up()
    started = time.perf_counter()
    canceled = 0
    for order in rng.sample(fresh, int(orders * CANCELED)):
        found = intake.find(order.order_id)
        if found is not None:
            state = order_book.cancel_queued(pool, found, now)
            canceled += state is not None and state.status == "canceled"
    cancel_seconds = time.perf_counter() - started
    cpu: dict[str, float] = {}
    decided, elapsed = _drain(queue, pool, (PRICE * Decimal("0.99")).quantize(Decimal("0.01")),
                              now, check, intake, cpu)  # fmt: skip
    with pool.transaction() as cur:
        cur.execute("SELECT status, count(*) FROM orders WHERE account_id = ANY(%s)"
                    " GROUP BY status", (ids,))  # fmt: skip
        statuses = {str(s): int(n) for s, n in cur.fetchall()}
    pool.close()
    client.close()
    return {
        "orders": decided,
        "book_before": BOOK,
        "canceled_while_queued": canceled,
        "cancels_per_second": round(canceled / cancel_seconds) if cancel_seconds else None,
        "seconds": round(elapsed, 3),
        "orders_per_second": round(decided / elapsed),
        "cpu_us_per_order": cpu,
        "statuses_after": statuses,
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
    """Every figure, with this process's collector tuned as the master's, then restored
    (other benchmarks may run in this process after it)."""
    thresholds = gc.get_threshold()
    if os.environ.get("PT_BENCH_GC") != "default":
        gc_tuning.tune()
    try:
        return _bench_orders(urls, state)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def _bench_orders(urls: ServiceUrls, state: Path) -> dict[str, Any]:
    status = services_status(state)
    for name in ("postgres", "redis"):
        if status[name].get("pid"):
            _SERVERS[name] = int(status[name]["pid"])
    market = bench_market(urls)
    read_ahead = bench_market(urls, prefix="r", read_ahead=True)
    mix = bench_mix(urls)
    tps = pgbench_tps(urls.owner_url)  # pgbench -i creates its tables: the owner may
    result: dict[str, Any] = {
        # the figures bench/README.md has always shown, market orders:
        "orders": market["orders"],
        "seconds": market["seconds"],
        "orders_per_second": market["orders_per_second"],
        "target": TARGET,
        "drain_lanes": LANES,
        "market": market,
        "market_read_ahead": read_ahead,
        "mix": mix,
        "pgbench_tpcb_tps": tps,
        "redis_benchmark_xadd_rps": redis_xadd_rps(urls.redis_url),
    }
    if tps:
        result["market_vs_tpcb"] = round(market["orders_per_second"] / tps, 2)
        result["market_read_ahead_vs_tpcb"] = round(read_ahead["orders_per_second"] / tps, 2)
        result["mix_vs_tpcb"] = round(mix["orders_per_second"] / tps, 2)
        result["target_vs_tpcb"] = TARGET_RATIO
    return result
