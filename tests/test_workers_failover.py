"""Booting workers off, the worker list clients get, and clients failing over.

A real master and two real workers (subprocesses) on free ports; clients are
``FailoverClient``s that find their worker through the master.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from test_e2e_support import PASSWORD, ROOT, Servers, new_user, running
from test_worker_support import Client, wait_for
from tls_support import pki

from papertrader.client import FailoverClient, Fill
from papertrader.config.settings import derive_worker_uuid
from papertrader.protocol import ErrorCode, Instruction
from papertrader.store import keys
from papertrader.store.pool import ConnectionPool
from papertrader.store.worker_control import ask_master
from papertrader.store.workers import set_worker_enabled


def regions(servers: Servers, **by_worker: str) -> Servers:
    """Give workers their own regions (before start)."""
    for name, region in by_worker.items():
        args = servers.procs[name].args
        args[args.index("--region") + 1] = region
    return servers


@pytest.fixture
def servers(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Servers]:
    stack = regions(Servers(tmp_path, redis_url, database_url, workers=2), **{"worker-2": "eu"})
    with running(stack) as started:
        started.wait_quotes()
        yield started


def listed(servers: Servers) -> list[str]:
    return sorted(str(w["name"]) for w in servers.worker_list(5))


def boot(servers: Servers, name: str) -> bool:
    client = redis.Redis.from_url(servers.redis_url)
    try:
        answer = ask_master(client, "boot", derive_worker_uuid(name), 5)
    finally:
        client.close()
    return bool(answer.get("booted"))


def test_the_worker_list_names_exactly_the_connected_enabled_workers(servers: Servers) -> None:
    listing = servers.worker_list(5)
    assert {w["name"]: w["region"] for w in listing} == {"worker-1": "test", "worker-2": "eu"}
    assert {w["address"] for w in listing} == {
        f"127.0.0.1:{servers.worker_port(0)}",
        f"127.0.0.1:{servers.worker_port(1)}",
    }
    pool = ConnectionPool(servers.database_url, size=1)
    try:
        set_worker_enabled(pool, "worker-2", False)
        wait_for(lambda: listed(servers) == ["worker-1"], timeout=3)  # watchdog: one round
        time.sleep(1.5)  # it keeps retrying, and keeps being refused
        assert listed(servers) == ["worker-1"]
        # A disabled worker is out of service: new clients are told to go elsewhere.
        with Client(servers.worker_port(1)) as client:
            farewell = client.receive()
            assert farewell.instruction is Instruction.ERROR
            assert farewell.args[0] == ErrorCode.UNAVAILABLE and "out of service" in str(
                farewell.args[1]
            )
        set_worker_enabled(pool, "worker-2", True)
        wait_for(lambda: listed(servers) == ["worker-1", "worker-2"], timeout=10)
    finally:
        pool.close()
    servers.kill("worker-1")
    wait_for(lambda: listed(servers) == ["worker-2"], timeout=5)


def test_booted_workers_clients_fail_over_with_their_session(servers: Servers) -> None:
    clients = [
        FailoverClient("127.0.0.1", servers.master_port, region="eu", ca=pki().ca) for _ in range(3)
    ]
    try:
        sessions = []
        for client in clients:
            new_user(client)  # type: ignore[arg-type]
            assert client.worker is not None and client.worker["name"] == "worker-2"
            assert client.quote("AAPL").symbol == "AAPL"
            sessions.append(client.session_id)

        started = time.monotonic()
        assert boot(servers, "worker-2")
        # The booted worker closes its clients' connections within a second.
        for client in clients:
            assert client._client is not None
            wait_for(client._client.connection_lost, timeout=1.0, step=0.01)
        assert time.monotonic() - started < 1.5

        for client, session in zip(clients, sessions, strict=True):
            assert client.portfolio().cash is not None  # next request: served elsewhere
            assert client.session_id == session  # no new login
            assert client.worker is not None and client.worker["name"] == "worker-1"
            assert client.failovers == 1
    finally:
        for client in clients:
            client.close()
    # An enabled worker comes back after its backoff.
    wait_for(lambda: listed(servers) == ["worker-1", "worker-2"], timeout=10)


def test_pt_client_with_master_follows_the_workers(servers: Servers, tmp_path: Path) -> None:
    session_file = tmp_path / "session.json"

    def pt(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
        env["PYTHONPATH"] = str(ROOT)
        env["PT_CA"] = str(pki().ca)
        return subprocess.run(
            [sys.executable, "-m", "papertrader_cli", "client", "--master",
             f"127.0.0.1:{servers.master_port}", "--region", "eu",
             "--session-file", str(session_file), *args],
            input=stdin, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip

    name = f"cli{uuid.uuid4().hex[:8]}"
    assert pt("register", name, "--email", f"{name}@example.org", "--password-stdin",
              stdin=PASSWORD + "\n").returncode == 0  # fmt: skip
    assert pt("login", name, "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    # whoami names the worker the master pointed it to (the eu one), not a default.
    who = pt("whoami", "--json")
    assert json.loads(who.stdout)["worker"] == f"127.0.0.1:{servers.worker_port(1)}", who.stderr
    servers.kill("worker-2")  # the region's worker is gone: the CLI goes elsewhere
    wait_for(lambda: listed(servers) == ["worker-1"], timeout=5)
    quote = pt("quote", "AAPL", "--json")
    assert quote.returncode == 0, quote.stderr
    assert '"symbol": "AAPL"' in quote.stdout
    moved = pt("whoami", "--json")
    assert json.loads(moved.stdout)["worker"] == f"127.0.0.1:{servers.worker_port(0)}"


def test_an_order_whose_answer_is_lost_is_recovered_from_another_worker_not_resent(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    """The worker dies while its client waits for the order: the failover client asks
    another worker for that order (by its client order id) and reports its fill."""
    interval = 4.0
    slow = Servers(tmp_path, redis_url, database_url, workers=2, env_extra={
        "PT_UPDATE_INTERVAL": str(interval)})  # fmt: skip
    with running(regions(slow, **{"worker-2": "eu"})) as stack:
        stack.wait_quotes()
        client = FailoverClient("127.0.0.1", stack.master_port, region="eu", ca=pki().ca)
        new_user(client)  # type: ignore[arg-type]
        outcome: list[object] = []
        cid = uuid.uuid4()

        def order() -> None:
            try:
                outcome.append(client.buy("AAPL", 1, client_order_id=cid))
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)

        # Drains happen at multiples of the interval since the epoch: order just after
        # one, so the worker is still waiting for the outcome when it is killed.
        time.sleep((0.2 - time.time()) % interval)
        queue = redis.Redis.from_url(stack.redis_url)
        buyer = threading.Thread(target=order)
        buyer.start()
        wait_for(lambda: queue.xlen(keys.ORDERS) >= 1, timeout=2, step=0.005)
        queue.close()
        stack.kill("worker-2")
        buyer.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], Fill), outcome
        fill = outcome[0]
        # The order was queued once and is applied once: the history shows it exactly once.
        history = client.history()
        assert [(h.side, h.symbol, h.quantity) for h in history] == [("buy", "AAPL", 1)]
        assert history[0].order_id == fill.order_id and history[0].price == fill.price
        assert client.order(cid).status == "filled"
        assert client.worker is not None and client.worker["name"] == "worker-1"
        client.close()
