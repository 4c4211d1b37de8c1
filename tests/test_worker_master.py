"""A worker and the real master together: accounts, quotes, orders, user data, master restarts.

Both servers run as subprocesses on free ports against the test's Redis and
PostgreSQL; the client speaks the protocol over TCP. Nothing is simulated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest
from test_worker_support import ROOT, Client, running_worker, wait_for
from test_workers_keys import PEER_ADDRESS, master_env, register

from papertrader.config.settings import derive_worker_uuid
from papertrader.protocol import ErrorCode, Instruction, Message, Value
from papertrader.protocol.records import from_record, from_records
from papertrader.services.ports import free_port
from papertrader.store.pool import ConnectionPool

pytest.importorskip("papertrader.master.main")

DATA = 1
PASSWORD = "correct horse battery"


@contextmanager
def running_master(tmp_path: Path, redis_url: str, database_url: str, port: int) -> Iterator[Path]:
    """The real master on ``port``; yields its log file. SIGTERM at the end."""
    log = tmp_path / f"master-{time.monotonic_ns()}.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PT_")}
    env.update(
        {
            "PT_REDIS_URL": redis_url,
            "PT_DATABASE_URL": database_url,
            "PT_BCRYPT_COST": "4",
            "PT_UPDATE_INTERVAL": "0.3",
            "PT_ASSETS": "AAPL,MSFT",
            "PT_LOG_FLUSH_SECONDS": "0.1",
            **master_env(),
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.master", "run", "--state-dir", str(tmp_path / "state"),
         "--port", str(port), "--log-file", str(log)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: process.poll() is not None or "listening" in _read(log), timeout=30)
        assert process.poll() is None, _read(log)
        yield log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def fail_args(message: Message) -> tuple[int, str]:
    code, reason = message.args[0], message.args[1]
    assert isinstance(code, int) and isinstance(reason, str)
    return code, reason


def data(client: Client, session: uuid.UUID, instruction: Instruction, *args: Value) -> Value:
    """switchState(1), then one data request; its decoded value (fails on DATA_FAIL)."""
    assert client.switch(DATA, session).instruction is Instruction.STATE_SWITCH_SUCCESS
    _, value = client.fetch(instruction, *args, session=session)
    assert not isinstance(value, Message), value
    return value


def test_a_client_trades_through_a_worker_and_the_real_master(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    pool = ConnectionPool(database_url, size=1)
    try:
        register(pool, "worker-1", derive_worker_uuid("worker-1"), "local")
    finally:
        pool.close()

    master_port = free_port()
    with (
        running_master(tmp_path, redis_url, database_url, master_port),
        running_worker(
            tmp_path,
            redis_url,
            master_port=master_port,
            assets="AAPL,MSFT",
            bcrypt_cost=4,
            worker_advertise=PEER_ADDRESS,
        ) as worker,
    ):
        wait_for(lambda: "linked to master" in worker.log(), timeout=15)
        with Client(worker.port) as client:
            ok = client.call(Instruction.REGISTER, "alice", "alice@example.com", PASSWORD)
            assert ok.instruction is Instruction.REGISTER_SUCCESS, ok
            again = client.call(Instruction.REGISTER, "alice", "other@example.com", PASSWORD)
            assert fail_args(again)[0] == ErrorCode.USERNAME_TAKEN

            wrong = client.call(Instruction.LOGIN, "alice", "wrong password", False)
            assert wrong.instruction is Instruction.LOGIN_FAIL
            assert fail_args(wrong) == (
                ErrorCode.INVALID_CREDENTIALS,
                "unknown user or wrong password",
            )
            login = client.call(Instruction.LOGIN, "alice", PASSWORD, False)
            assert login.instruction is Instruction.SESSION_ID, login
            session = login.args[0]
            assert isinstance(session, uuid.UUID) and login.args[2] == "alice"

            def current_quote() -> object:
                assert client.switch(DATA, session).instruction is (
                    Instruction.STATE_SWITCH_SUCCESS
                )
                _, value = client.fetch(
                    Instruction.GET_ASSET_VALUE_CURRENT, "AAPL", session=session
                )
                return None if isinstance(value, Message) else value

            quote = from_record(wait_for(current_quote, timeout=10))
            assert quote["symbol"] == "AAPL" and quote["close"] > 0

            bought = client.call(Instruction.PURCHASE_ASSET, "AAPL", 2, session=session)
            assert bought.instruction is Instruction.PURCHASE_SUCCESS, bought
            order_id, symbol, quantity, price, _executed_at = bought.args
            assert (symbol, quantity) == ("AAPL", 2) and isinstance(price, Decimal)

            portfolio = from_record(data(client, session, Instruction.GET_USER_PORTFOLIO, ""))
            (position,) = from_records(portfolio["positions"])
            assert (position["symbol"], position["quantity"]) == ("AAPL", 2)
            assert portfolio["cash"] == Decimal("100000.00") - 2 * price

            history = from_records(
                data(client, session, Instruction.GET_USER_TRANSACTION_HISTORY, "")
            )
            assert [h["order_id"] for h in history] == [order_id]

            info = from_record(data(client, session, Instruction.GET_USER_INFO, ""))
            assert (info["username"], info["email"]) == ("alice", "alice@example.com")

            assert client.call(Instruction.LOGOUT, session=session).instruction is (
                Instruction.LOGOUT_SUCCESS
            )
            assert client.switch(DATA, session).instruction is Instruction.STATE_SWITCH_FAIL


def test_the_worker_survives_a_master_restart(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    pool = ConnectionPool(database_url, size=1)
    try:
        register(pool, "worker-1", derive_worker_uuid("worker-1"), "local")
    finally:
        pool.close()

    master_port = free_port()
    with running_worker(
        tmp_path, redis_url, master_port=master_port, worker_advertise=PEER_ADDRESS
    ) as worker:
        with running_master(tmp_path, redis_url, database_url, master_port):
            wait_for(lambda: worker.log().count("linked to master") == 1, timeout=15)
            with Client(worker.port) as client:
                ok = client.call(Instruction.REGISTER, "bob", "bob@example.com", PASSWORD)
                assert ok.instruction is Instruction.REGISTER_SUCCESS
        # Master stopped: logins fail at once, the client keeps its connection.
        with Client(worker.port) as client:
            wait_for(lambda: "link lost" in worker.log() or "cannot reach" in worker.log())
            started = time.monotonic()
            down = client.call(Instruction.LOGIN, "bob", PASSWORD, False)
            assert time.monotonic() - started < 1.0
            assert fail_args(down)[0] == ErrorCode.UNAVAILABLE
            with running_master(tmp_path, redis_url, database_url, master_port):
                wait_for(lambda: worker.log().count("linked to master") == 2, timeout=15)
                up = client.call(Instruction.LOGIN, "bob", PASSWORD, False)
                assert up.instruction is Instruction.SESSION_ID
