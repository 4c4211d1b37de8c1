"""Run every benchmark and print one JSON document: `python -m bench` (or `make bench`).

`python -m bench orders` (or `quotes`, `scaling`, `hostile`, `trading`) runs only that part;
`python -m bench replica` (not in the default run) measures a synchronous PostgreSQL replica,
`python -m bench redis-wait` what waiting for a Redis replica costs order placement.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402

from papertrader.store.pool import make_cooperative  # noqa: E402


def machine() -> dict[str, object]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def main() -> None:
    from bench.hostile import bench_hostile
    from bench.orders import bench_orders
    from bench.quotes import bench_quotes
    from bench.redis_wait import bench_redis_wait
    from bench.replica import bench_replica
    from bench.scaling import bench_scaling
    from bench.stack import services
    from bench.trading import bench_trading

    make_cooperative()
    seconds = float(os.environ.get("PT_BENCH_SECONDS", "10"))
    wanted = set(sys.argv[1:]) or {"quotes", "scaling", "orders", "hostile", "trading"}
    with services() as (urls, state):
        results: dict[str, object] = {"machine": machine()}
        if "quotes" in wanted:
            results["quotes"] = bench_quotes(urls, state, seconds=seconds)
        if "scaling" in wanted:
            results["scaling"] = bench_scaling(urls, state, seconds=seconds)
        if "orders" in wanted:
            results["orders"] = bench_orders(urls, state)
        if "hostile" in wanted:
            results["hostile_memory"] = bench_hostile(urls, state)
        if "replica" in wanted:
            results["replica"] = bench_replica(urls, state)
        if "redis-wait" in wanted:
            results["redis_wait"] = bench_redis_wait(urls, state)
    if "trading" in wanted:  # a whole stack of its own (`pt up`)
        # p99 over 30 intervals, not 10: with 1 s intervals a 10 s phase has ten drains,
        # and its p99 (quotes' as much as orders') moved by 2x between runs of one code.
        results["trading"] = bench_trading(float(os.environ.get("PT_BENCH_TRADING_SECONDS", "30")))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
