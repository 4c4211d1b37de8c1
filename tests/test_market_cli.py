"""`pt market backfill` and `pt market status` against the test's PostgreSQL and Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import redis
from test_e2e_support import ROOT, child_env

from papertrader.store.market_status import MarketStatusStore


def pt(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "papertrader_cli", "market", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_backfill_loads_a_file_once_and_names_a_bad_line(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    env = child_env(redis_url, database_url, tmp_path / "state")
    bars = tmp_path / "bars.csv"
    bars.write_text(
        "symbol,time,open,high,low,close,volume\n"
        "AAPL,2026-02-02,10.00,11.00,9.00,10.50,100\n"
        "AAPL,2026-02-03,10.50,11.50,10.00,11.00,120\n"
        "ZZZZ,2026-02-03,1.00,1.00,1.00,1.00,1\n"
    )
    first = pt(["backfill", "--file", str(bars), "--json"], env)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["rows"], report["added"], report["kept"]) == (3, 3, 0)
    assert report["not_configured"] == ["ZZZZ"]
    again = json.loads(pt(["backfill", "--file", str(bars), "--json"], env).stdout)
    assert (again["added"], again["kept"]) == (0, 3)
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), max(close) FROM asset_bars WHERE symbol = 'AAPL'")
        assert cur.fetchone() == (2, 11)
    conn.close()

    broken = tmp_path / "broken.csv"
    broken.write_text("symbol,time,open,high,low,close,volume\nAAPL,yesterday,1,1,1,1,1\n")
    failed = pt(["backfill", "--file", str(broken)], env)
    assert failed.returncode == 1
    assert "line 2: time 'yesterday'" in failed.stderr and "Traceback" not in failed.stderr


def test_status_before_any_master_says_so(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    env = child_env(redis_url, database_url, tmp_path / "state")
    result = pt(["status"], env)
    assert result.returncode == 3, result.stderr  # no prices at all: a monitor must notice
    assert "provider         sim" in result.stdout and "none yet" in result.stdout


def test_status_exits_non_zero_exactly_when_the_prices_are_stale(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    env = child_env(redis_url, database_url, tmp_path / "state")
    client = redis.Redis.from_url(redis_url)
    store = MarketStatusStore(client)
    now = datetime.now(timezone.utc)
    try:
        store.record("sim", None, 5.0, now, True, None, 1)
        fresh = pt(["status", "--json"], env)
        assert fresh.returncode == 0, fresh.stderr
        assert json.loads(fresh.stdout)["stale"] is False

        store.record("sim", None, 5.0, now - timedelta(minutes=5), True, None, 1)
        old = pt(["status"], env)
        assert old.returncode == 3 and "STALE" in old.stdout

        store.record("http", "stooq", 5.0, now, False, "HTTP 503 from the quote API", 1)
        failing = pt(["status", "--json"], env)
        assert failing.returncode == 3
        assert json.loads(failing.stdout)["last_error"] == "HTTP 503 from the quote API"
    finally:
        client.close()
