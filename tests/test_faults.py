"""One short round of `make faults` (scripts/faults.py): every process killed with
SIGKILL in turn under trading load, then every order checked against PostgreSQL
and each trader's own record. The full run is `make faults`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "faults.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("faults", SCRIPT)
    assert spec is not None and spec.loader is not None
    faults = importlib.util.module_from_spec(spec)
    sys.modules["faults"] = faults  # dataclasses look their module up while it loads
    spec.loader.exec_module(faults)
    return faults


def test_one_round_of_kill_9_loses_no_promised_order_and_no_cent() -> None:
    faults = _load()
    report = faults.run(rounds=1, phase_seconds=3.0, traders=3)
    assert [kill["killed"] for kill in report["kills"]] == ["master", "worker", "redis", "postgres"]
    assert report["orders_filled"] > 0, report
    assert report["problems"] == [], report["problems"]


def test_the_standby_master_takes_over_from_a_killed_and_a_frozen_one() -> None:
    """`make faults --standby` in short: two masters under trading load; the active one
    killed with SIGKILL (the standby takes over within two update intervals plus 5 s),
    then the new active one frozen past its lease and woken (it must write nothing and
    stop); every order checked as above."""
    faults = _load()
    report = faults.run(rounds=1, phase_seconds=3.0, traders=3, standby=True)
    kinds = [kill["killed"] for kill in report["kills"]]
    assert kinds == ["active master (kill)", "active master (freeze)"], report
    assert report["orders_filled"] > 0, report
    assert report["problems"] == [], report["problems"]


def test_a_redis_failover_under_load_loses_no_promised_order() -> None:
    """`make faults --redis-failover` in short: Redis with a replica and three real
    Sentinels, a real master and worker reaching it through them, traders buying and
    selling; the Redis primary killed with SIGKILL, the Sentinels promote the replica,
    trading resumes with no manual step, and every order is checked as above."""
    faults = _load()
    report = faults.run(rounds=1, phase_seconds=3.0, traders=3, redis_failover=True)
    assert [kill["killed"] for kill in report["kills"]] == ["redis primary (Sentinel failover)"]
    assert report["orders_filled"] > 0, report
    assert report["problems"] == [], report["problems"]
