"""``pt client`` as a user runs it, against a real master and worker.

Checks what scripts rely on: exit statuses, the session file's mode, and the
shape of every ``--json`` document (money as strings, never floats).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from test_e2e_support import PASSWORD, ROOT, STARTING_CASH, Servers, running
from tls_support import pki

from papertrader.client.session_file import load_session

QUOTE_KEYS = {"symbol", "open", "high", "low", "close", "volume", "time"}
ORDER_KEYS = {
    "status",
    "reason",
    "order_id",
    "symbol",
    "side",
    "quantity",
    "price",
    "executed_at",
}
HISTORY_KEYS = {"order_id", "side", "symbol", "quantity", "price", "executed_at"}
POSITION_KEYS = {"symbol", "quantity", "average_price", "price", "market_value"}


@pytest.fixture
def servers(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Servers]:
    with running(Servers(tmp_path, redis_url, database_url)) as started:
        started.wait_quotes()
        yield started


class Pt:
    """Runs ``pt client`` in a subprocess with one worker and one session file."""

    def __init__(self, servers: Servers, session_file: Path) -> None:
        self.worker = f"127.0.0.1:{servers.worker_port()}"
        self.session_file = session_file

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
        env["PYTHONPATH"] = str(ROOT)
        env["PT_WORKER"] = self.worker
        env["PT_CA"] = str(pki().ca)  # the deployment's CA, as a user of it is given
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "papertrader_cli",
                "client",  # fmt: skip
                "--session-file",
                str(self.session_file),
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
            check=False,
        )

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def login(self, user: str) -> None:
        result = self("register", user, "--email", f"{user}@example.org", "--password-stdin",
                      stdin=PASSWORD + "\n")  # fmt: skip
        assert result.returncode == 0, result.stderr
        result = self("login", user, "--password-stdin", stdin=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr


def _is_decimal_text(value: object) -> bool:
    return isinstance(value, str) and Decimal(value) == Decimal(value)


def test_a_trading_session_from_the_command_line(servers: Servers, tmp_path: Path) -> None:
    session_file = tmp_path / "conf" / "session.json"
    pt = Pt(servers, session_file)
    pt.login("carol")
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    assert pt.json("whoami")["username"] == "carol"

    quote = pt.json("quote", "aapl")
    assert set(quote) == QUOTE_KEYS and quote["symbol"] == "AAPL"
    assert all(_is_decimal_text(quote[k]) for k in ("open", "high", "low", "close"))
    assert isinstance(quote["volume"], int)
    several = pt.json("quote", "AAPL", "MSFT")
    assert [q["symbol"] for q in several] == ["AAPL", "MSFT"]

    bought = pt.json("buy", "AAPL", "5")
    assert ORDER_KEYS <= set(bought)  # and the order's other fields (client order id, times...)
    assert bought["status"] == "filled" and bought["side"] == "buy" and bought["quantity"] == 5
    assert _is_decimal_text(bought["price"]) and bought["reason"] is None

    rejected = pt("--json", "sell", "AAPL", "6")
    assert rejected.returncode == 1
    document = json.loads(rejected.stdout)
    assert ORDER_KEYS <= set(document)
    assert document["status"] == "rejected" and document["order_id"]
    assert "held" in document["reason"] and document["price"] is None

    portfolio = pt.json("portfolio")
    assert {"username", "cash", "positions", "total_value"} <= set(portfolio)
    assert portfolio["equity"] == portfolio["total_value"] and portfolio["realized_pnl"] == "0.00"
    assert Decimal(portfolio["cash"]) == STARTING_CASH - (Decimal(bought["price"]) * 5).quantize(
        Decimal("0.01")
    )
    (position,) = portfolio["positions"]
    assert POSITION_KEYS <= set(position) and position["quantity"] == 5
    assert Decimal(position["unrealized_pnl"]) == Decimal(position["market_value"]) - Decimal(
        position["cost_basis"]
    )
    assert _is_decimal_text(portfolio["total_value"])

    history = pt.json("history")
    assert [set(h) for h in history] == [HISTORY_KEYS]
    assert history[0]["order_id"] == bought["order_id"]

    assert pt.json("trades") == history  # the same, under a name that says what it is
    bars = pt.json("bars", "AAPL", "--range", "day")
    assert bars["symbol"] == "AAPL" and bars["range"] == "day" and bars["bars"]
    human_bars = pt("bars", "AAPL")
    assert human_bars.returncode == 0 and "AAPL day:" in human_bars.stdout
    not_a_user = pt("trades", "AAPL")
    assert not_a_user.returncode == 1 and "pt client bars AAPL" in not_a_user.stderr

    human = pt("portfolio")
    assert human.returncode == 0 and "Cash" in human.stdout and "AAPL" in human.stdout
    # Money with thousands separators: 100,000.00 less what AAPL cost.
    assert f"Cash         {Decimal(portfolio['cash']):,}" in human.stdout
    assert pt("whoami").stdout.startswith(f"carol on worker {pt.worker} ")

    assert pt("logout").returncode == 0
    assert not session_file.exists()
    after = pt("portfolio")
    assert after.returncode == 1 and "not logged in" in after.stderr


def test_failures_exit_1_with_one_line(servers: Servers, tmp_path: Path) -> None:
    pt = Pt(servers, tmp_path / "session.json")
    pt.login("dave")
    for args in (["buy", "NOPE", "1"], ["buy", "AAPL", "100000000"], ["quote", "NOPE"]):
        result = pt(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    wrong = pt("login", "dave", "--password-stdin", stdin="not it\n")
    assert wrong.returncode == 1 and "wrong password" in wrong.stderr

    # With --json a failure is a JSON document on stdout, not a line for people.
    as_json = pt("--json", "login", "dave", "--password-stdin", stdin="not it\n")
    assert as_json.returncode == 1 and as_json.stderr == ""
    error = json.loads(as_json.stdout)["error"]
    assert "wrong password" in error["message"] and error["code"] == "INVALID_CREDENTIALS"
    unknown = pt("quote", "NOPE", "--json")
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout)["error"]["code"] == "UNKNOWN_ASSET"


def test_expired_session_says_log_in_again(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    short = Servers(tmp_path, redis_url, database_url, env_extra={"PT_SESSION_TTL_SECONDS": "1"})
    with running(short):
        short.wait_quotes()
        session_file = tmp_path / "session.json"
        pt = Pt(short, session_file)
        pt.login("erin")
        stored = load_session(session_file)
        assert stored is not None
        time.sleep(max(0.0, (stored.expires_at - datetime.now(timezone.utc)).total_seconds()) + 0.3)
        result = pt("buy", "AAPL", "1")
    assert result.returncode == 1, result.stdout
    assert "log in again" in result.stderr
    assert "Traceback" not in result.stderr
    assert not session_file.exists()  # a dead session is not kept
