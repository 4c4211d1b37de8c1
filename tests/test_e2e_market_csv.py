"""`pt up --provider csv`: history, charts and forecasts offline from the bundled sample.

The whole stack is started the way a teacher would (`pt up --detach`), with
the test's own Redis and PostgreSQL; then `pt client` and `pt market` are run
as a person would run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from test_e2e_support import PASSWORD, ROOT, child_env, retry_port_races

from papertrader.market.csvfile import SAMPLE, read_series
from papertrader.services.ports import free_port


def run(
    args: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "papertrader_cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def ok_json(args: list[str], env: dict[str, str], code: int = 0) -> Any:
    result = run([*args, "--json"], env)
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout)


def test_up_with_the_csv_provider_serves_history_and_charts_offline(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    state = tmp_path / "state"
    env = child_env(redis_url, database_url, state)
    env.pop("PT_UPDATE_INTERVAL")
    master_port, worker_port = free_port(), free_port()
    before = ok_json(["market", "status", "--state-dir", str(state)], env, code=3)  # no prices
    assert before["running"] is False and before["api_calls"] == 0

    def start() -> subprocess.CompletedProcess[str]:
        nonlocal master_port, worker_port
        master_port, worker_port = free_port(), free_port()
        return run(
            ["up", "--detach", "--json", "--provider", "csv", "--state-dir", str(state),
             "--master-port", str(master_port), "--worker-port", str(worker_port),
             "--update-interval", "0.3"],
            env,
        )  # fmt: skip

    up = retry_port_races(start)
    assert up.returncode == 0, up.stderr
    try:
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
        client_env.update(
            PYTHONPATH=str(ROOT),
            PT_WORKER=f"127.0.0.1:{worker_port}",
            PT_SESSION_FILE=str(tmp_path / "session.json"),
            PT_CA=str(state / "tls" / "ca.pem"),  # the private CA of the pt up stack
        )
        registered = run(
            ["client", "register", "teacher", "--email", "t@example.org", "--password-stdin"],
            client_env,
            stdin=PASSWORD + "\n",
        )
        assert registered.returncode == 0, registered.stderr
        login = run(["client", "login", "teacher", "--password-stdin"], client_env, PASSWORD + "\n")
        assert login.returncode == 0, login.stderr

        sample = [
            q for q in read_series(SAMPLE)["AAPL"] if (q.time.year, q.time.month) == (2026, 3)
        ]
        month = ok_json(
            ["client", "bars", "AAPL", "--range", "month", "--date", "2026-03-31"], client_env
        )
        assert [b["period_start"][:10] for b in month["bars"]] == [
            q.time.date().isoformat() for q in sample
        ]
        assert [Decimal(b["close"]) for b in month["bars"]] == [q.close for q in sample]
        assert all(isinstance(b["close"], str) for b in month["bars"])  # money is never a float

        week = run(["client", "bars", "AAPL", "--range", "week", "--date", "2026-03-18"],
                   client_env)  # fmt: skip
        assert week.returncode == 0, week.stderr
        assert "AAPL week: 5 bars" in week.stdout and "2026-03-16 00:00" in week.stdout

        chart = run(["client", "quote", "AAPL", "--chart", "--range", "year", "--date",
                     "2026-10-30"], client_env)  # fmt: skip
        assert chart.returncode == 0, chart.stderr
        assert "AAPL year: 10 bars" in chart.stdout and len(chart.stdout.splitlines()) >= 10

        forecast = ok_json(["client", "forecast", "AAPL", "--horizon", "3"], client_env)
        assert len(forecast["points"]) == 3 and forecast["method"] == "holt-linear"

        too_early = run(["client", "bars", "AAPL", "--range", "day", "--date", "2020-01-06"],
                        client_env)  # fmt: skip
        assert too_early.returncode == 1 and "before AAPL's history starts" in too_early.stderr

        status = ok_json(["market", "status", "--state-dir", str(state)], env)
        assert status["provider"] == "csv" and status["running"] is True
        assert status["stale"] is False and status["api_calls"] == 0
        assert status["history_queries"] >= 2
        assert date.fromisoformat(status["last_update"][:10]) >= date(2026, 1, 1)
    finally:
        down = run(["down", "--state-dir", str(state)], env)
    assert down.returncode == 0, down.stderr
