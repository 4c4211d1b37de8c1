"""Orders people can trust, as a user meets them: a real master, two real workers,
``pt client`` in a subprocess.

* A client that stops waiting (its own timeout, Ctrl-C) is told the outcome is
  unknown, with the order id and how to check, and exit status 3, never
  "rejected"; the order then fills once and ``pt client order`` says so.
* The same client order id sent through two workers at once is one order.
* A limit order waits in the book with its cash reserved, shows in
  ``orders --open``, and ``cancel`` gives the cash back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
from test_e2e_support import PASSWORD, ROOT, STARTING_CASH, Servers, account_id, new_user, running
from test_worker_support import wait_for
from tls_support import pki

from papertrader.client import ClientError, PaperTraderClient
from papertrader.store import keys

EXIT_OUTCOME_UNKNOWN = 3


@pytest.fixture
def servers(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Servers]:
    with running(Servers(tmp_path, redis_url, database_url, workers=2)) as started:
        started.wait_quotes()
        yield started


class Pt:
    """``pt client`` in a subprocess, against one worker, with its own session file."""

    def __init__(self, servers: Servers, session_file: Path, index: int = 0) -> None:
        self.worker = f"127.0.0.1:{servers.worker_port(index)}"
        self.session_file = session_file

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cli.main", "client", "--session-file",
                str(self.session_file), *args]  # fmt: skip

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
        return {**env, "PYTHONPATH": str(ROOT), "PT_WORKER": self.worker, "PT_CA": str(pki().ca)}

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), input=stdin, capture_output=True, text=True, env=self.env(),
            cwd=ROOT, timeout=120, check=False,
        )  # fmt: skip

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


def orders_of(database_url: str, account: int) -> list[tuple[str, str, int]]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT client_order_id::text, status, quantity FROM orders WHERE account_id = %s",
            (account,),
        )
        rows = [(str(c), str(s), int(q)) for c, s, q in cur.fetchall()]
    conn.close()
    return rows


def queued(servers: Servers) -> int:
    client = redis.Redis.from_url(servers.redis_url)
    try:
        return int(client.xlen(keys.ORDERS))
    finally:
        client.close()


def paused(servers: Servers) -> Any:
    """The master stopped (SIGSTOP) until the context ends: orders wait in the stream."""

    class Paused:
        def __enter__(self) -> None:
            master = servers.procs["master"].popen
            assert master is not None
            master.send_signal(signal.SIGSTOP)

        def __exit__(self, *exc: object) -> None:
            master = servers.procs["master"].popen
            assert master is not None
            master.send_signal(signal.SIGCONT)

    return Paused()


def _hears_ctrl_c() -> None:
    """In the child before exec: Ctrl-C back to its default, which Python turns into
    KeyboardInterrupt. A suite started in the background by a non-interactive shell
    (`make test &`) inherits SIGINT ignored, and the client would never hear it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_client_that_stops_waiting_is_told_the_outcome_is_unknown(
    servers: Servers, tmp_path: Path
) -> None:
    pt = Pt(servers, tmp_path / "session.json")
    name = f"late{uuid.uuid4().hex[:8]}"
    pt.login(name)
    cid = str(uuid.uuid4())
    with paused(servers):
        result = pt("--timeout", "0.5", "buy", "AAPL", "1", "--client-order-id", cid)
        assert result.returncode == EXIT_OUTCOME_UNKNOWN, (result.stdout, result.stderr)
        assert f"outcome unknown: order {cid}; check with `pt client order {cid}`" in (
            result.stderr
        )
        assert "rejected" not in result.stderr and "Traceback" not in result.stderr
        # Ctrl-C while waiting: the same honest answer.
        ctrl_c = str(uuid.uuid4())
        process = subprocess.Popen(
            pt.command("buy", "AAPL", "2", "--client-order-id", ctrl_c), env=pt.env(), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_hears_ctrl_c,
        )  # fmt: skip
        wait_for(lambda: queued(servers) >= 2, timeout=30)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == EXIT_OUTCOME_UNKNOWN, stderr
        assert f"outcome unknown: order {ctrl_c}" in stderr and "Aborted" not in stderr
    # The master comes back: both orders fill, once each, and the user can see it.
    for placed in (cid, ctrl_c):
        state = wait_for(
            lambda placed=placed: (doc := pt.json("order", placed))["status"] == "filled" and doc,  # type: ignore[misc]
            timeout=30,
        )
        assert state["client_order_id"] == placed and state["executed_at"]
    rows = orders_of(servers.database_url, account_id(servers.database_url, name))
    assert sorted(rows) == sorted([(cid, "filled", 1), (ctrl_c, "filled", 2)])
    # Sending the first again with its id changes nothing: the answer is its fill.
    again = pt.json("buy", "AAPL", "1", "--client-order-id", cid)
    assert again["status"] == "filled" and again["client_order_id"] == cid
    assert len(orders_of(servers.database_url, account_id(servers.database_url, name))) == 2


def test_one_client_order_id_through_two_workers_at_once_is_one_order(
    servers: Servers,
) -> None:
    with servers.client(0) as first, servers.client(1) as second:
        name = new_user(first)
        assert second.resume(first.session_id) is not None  # type: ignore[arg-type]
        cid = uuid.uuid4()
        answers: list[object] = []
        go = threading.Barrier(2)

        def buy(client: PaperTraderClient) -> None:
            go.wait(10)
            try:
                answers.append(client.buy("MSFT", 7, client_order_id=cid))
            except ClientError as exc:
                answers.append(exc)

        threads = [threading.Thread(target=buy, args=(c,)) for c in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(answers) == 2
        fills = [a for a in answers if not isinstance(a, Exception)]
        assert len(fills) == 2, answers  # both told the one fill
        assert fills[0] == fills[1]
        rows = orders_of(servers.database_url, account_id(servers.database_url, name))
        assert rows == [(str(cid), "filled", 7)]
        portfolio = first.portfolio()
        assert [(p.symbol, p.quantity) for p in portfolio.positions] == [("MSFT", 7)]


def test_a_limit_order_waits_reserved_and_cancel_gives_the_cash_back(
    servers: Servers, tmp_path: Path
) -> None:
    pt = Pt(servers, tmp_path / "session.json", index=1)
    pt.login(f"lim{uuid.uuid4().hex[:8]}")
    placed = pt.json("buy", "AAPL", "10", "--limit", "1.00", "--tif", "gtc")
    assert placed["status"] == "open" and placed["type"] == "limit"
    assert placed["reserved_cash"] == "10.00" and placed["expires_at"] is None
    cid = placed["client_order_id"]
    human = pt("orders", "--open")
    assert human.returncode == 0 and cid in human.stdout and "open" in human.stdout
    assert [o["client_order_id"] for o in pt.json("orders", "--open")] == [cid]

    canceled = pt.json("cancel", cid)
    assert canceled["status"] == "canceled" and canceled["reserved_cash"] == "0.00"
    assert pt.json("orders", "--open") == []
    again = pt("cancel", cid)  # a cancel is idempotent: a retry gets the same answer
    assert again.returncode == 0 and "Canceled" in again.stdout
    unknown = pt("order", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "no order" in unknown.stderr
    portfolio = pt.json("portfolio")
    assert Decimal(portfolio["cash"]) == STARTING_CASH
    history = pt.json("orders")
    assert [(o["status"], o["client_order_id"]) for o in history] == [("canceled", cid)]


def test_a_queued_market_order_can_be_canceled_before_its_drain(
    servers: Servers, tmp_path: Path
) -> None:
    pt = Pt(servers, tmp_path / "session.json")
    pt.login(f"can{uuid.uuid4().hex[:8]}")
    cid = str(uuid.uuid4())
    outcome: dict[str, subprocess.CompletedProcess[str]] = {}
    with paused(servers):
        buyer = threading.Thread(
            target=lambda: outcome.update(buy=pt("buy", "AAPL", "3", "--client-order-id", cid))
        )
        buyer.start()
        wait_for(lambda: queued(servers) >= 1, timeout=30)
    # The master is back; cancel at once: canceled before the drain, or already filled.
    result = pt("--json", "cancel", cid)
    buyer.join(60)
    state = pt.json("order", cid)
    if result.returncode == 0:
        assert json.loads(result.stdout)["status"] == "canceled" == state["status"]
        assert outcome["buy"].returncode == 0 and "canceled" in outcome["buy"].stdout
    else:  # the drain was first: the cancel says so, and the buyer got the fill
        assert state["status"] == "filled" and "filled" in result.stdout
        assert outcome["buy"].returncode == 0 and "Bought 3 AAPL" in outcome["buy"].stdout


def test_a_quantity_the_wire_cannot_carry_is_a_usage_error(
    servers: Servers, tmp_path: Path
) -> None:
    pt = Pt(servers, tmp_path / "session.json")
    pt.login(f"big{uuid.uuid4().hex[:8]}")
    for args in (
        ["buy", "AAPL", "99999999999999999999999"],
        ["sell", "AAPL", "1", "--limit", "1e99999"],
        ["buy", "AAPL", "1", "--limit", "-3"],
        ["buy", "AAPL", "1", "--client-order-id", "not-a-uuid"],
    ):
        result = pt(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
    big = pt("buy", "AAPL", "2000000000")  # fits the wire, more than an order may ask
    assert big.returncode == 1 and "quantity must be" in big.stderr


def test_equity_is_recorded_and_charted(tmp_path: Path, redis_url: str, database_url: str) -> None:
    stack = Servers(
        tmp_path, redis_url, database_url, env_extra={"PT_EQUITY_SNAPSHOT_SECONDS": "0"}
    )
    with running(stack):
        stack.wait_quotes()
        pt = Pt(stack, tmp_path / "session.json")
        pt.login(f"eq{uuid.uuid4().hex[:8]}")
        assert pt.json("buy", "AAPL", "4")["status"] == "filled"
        # One recorded point (the day's points are per minute, the last of each) and
        # the equity now, which ends every answer.
        history = wait_for(
            lambda: (
                len((doc := pt.json("portfolio", "--history", "--range", "day"))["points"]) >= 2
                and doc
            ),
            timeout=60,
        )
        points = history["points"]
        assert history["range"] == "day" and all(Decimal(p["equity"]) > 0 for p in points)
        assert points == sorted(points, key=lambda p: p["time"])
        chart = pt("portfolio", "--history", "--range", "day")
        assert chart.returncode == 0 and "equity, day" in chart.stdout
        portfolio = pt.json("portfolio")
        assert Decimal(portfolio["equity"]) == Decimal(portfolio["cash"]) + sum(
            Decimal(p["market_value"]) for p in portfolio["positions"]
        )

        # A competition account has its own history, asked for by the competition's name.
        name = f"Cup {uuid.uuid4().hex[:6]}"
        made = pt("competitions", "create", name, "--ends", "30d", "--cash", "5000.00")
        assert made.returncode == 0, made.stderr
        assert pt("competitions", "join", name).returncode == 0
        assert pt.json("buy", "MSFT", "1", "--competition", name)["status"] == "filled"
        asked = ("portfolio", "--history", "--range", "day", "--competition", name)
        held = wait_for(lambda: len((doc := pt.json(*asked))["points"]) >= 2 and doc, timeout=60)
        assert held["competition"] == name and held["range"] == "day"
        # Its equity starts from the competition's cash, not the practice account's.
        assert all(Decimal(p["equity"]) < 10_000 for p in held["points"]), held
        assert all(Decimal(p["cash"]) < Decimal("5000.00") for p in held["points"]), held
        practice = pt.json("portfolio", "--history", "--range", "day")
        assert practice["competition"] is None
        assert all(Decimal(p["equity"]) > 10_000 for p in practice["points"]), practice
        stranger = pt("portfolio", "--history", "--competition", "No Such Cup")
        assert stranger.returncode == 1 and "No Such Cup" in stranger.stderr
        assert "Traceback" not in stranger.stderr
        misuse = pt("portfolio", "--competition", name)
        assert misuse.returncode == 2 and "competitions show" in misuse.stderr
