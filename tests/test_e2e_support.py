"""Helpers for the end-to-end tests: a real master and real workers as child processes.

No tests here. ``Servers`` starts ``pt master run`` and ``pt worker run`` on
free ports against the test's own Redis database and PostgreSQL database (the
``redis_url`` / ``database_url`` fixtures), with a short update interval and
the cheapest bcrypt cost, and waits until the master lists every worker.
Each process writes its console to ``<tmp>/logs/<name>.out``; a failing check
can include the end of those logs with ``Servers.logs()``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg2
import redis
from test_workers_keys import master_env, register, worker_env
from tls_support import pki, tls_env

from papertrader.client import ClientError, PaperTraderClient, get_worker_list
from papertrader.config.settings import derive_worker_uuid
from papertrader.protocol import ErrorCode
from papertrader.services.ports import free_port
from papertrader.store import keys
from papertrader.store.order_queue import Order
from papertrader.store.pool import ConnectionPool

ROOT = Path(__file__).resolve().parent.parent
UPDATE_INTERVAL = 0.3
STARTING_CASH = Decimal("100000.00")
PASSWORD = "correct horse battery"


def child_env(redis_url: str, database_url: str, state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server under test: the caller's PT_* settings do not leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
    env.update(
        {
            "PT_REDIS_URL": redis_url,
            "PT_DATABASE_URL": database_url,
            "PT_UPDATE_INTERVAL": str(UPDATE_INTERVAL),
            "PT_BCRYPT_COST": "4",
            "PT_STATE_DIR": str(state_dir),
            "PT_STARTING_CASH": str(STARTING_CASH),
            # Tests register and log in many users from one address: limits of their own
            # are set by the tests about limits (test_e2e_abuse.py).
            "PT_LOGIN_RATE_PER_ADDRESS": "100000/minute",
            "PT_REGISTER_RATE_PER_ADDRESS": "100000/minute",
            "PT_REGISTER_RATE_PER_EMAIL": "100000/minute",
            "PT_RESUME_RATE_PER_ADDRESS": "100000/minute",
            "PT_WEB_PORT": "0",  # the web page on any free port: tests run side by side
            "PT_WORKER_PROCESSES": "1",  # one process per worker unless a test asks for more
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(master_env(tls=False))  # `pt up` makes the stack's CA and certificates
    env.update(extra)
    return env


def free_block(count: int) -> int:
    """A first port such that it and the next ``count - 1`` can be bound now."""
    from papertrader.services.ports import port_is_free

    while True:
        first = free_port()
        if first + count < 65535 and all(port_is_free(p) for p in range(first, first + count)):
            return first


def retry_port_races(
    start: Callable[[], subprocess.CompletedProcess[str]], attempts: int = 3
) -> subprocess.CompletedProcess[str]:
    """Run ``start`` (which picks fresh free ports each time) again when it was refused
    only because one of its ports was taken meanwhile: on a machine shared with other
    test runs, a port free when picked can be gone when bound. That race is the test
    machine's, not a behaviour under test; every other outcome is returned as it is."""
    for _ in range(attempts - 1):
        result = start()
        if result.returncode == 0 or "is already in use" not in result.stdout + result.stderr:
            return result
    return start()


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    args: list[str]
    port: int
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: Where this launch's lines start in ``log`` (a restart appends to it).
    log_start: int = 0

    def announced(self) -> bool:
        """Whether this launch logged that it listens on ``port``: another process
        answering on the port (it was taken meanwhile) is not taken for this one."""
        with open(self.log, "rb") as log:
            log.seek(self.log_start)
            lines = log.read().decode(errors="replace").splitlines()
        return any("listening" in line and f":{self.port} " in line for line in lines)


@dataclass
class Servers:
    """A master and ``workers`` workers, started with ``start()``, stopped with ``stop()``."""

    tmp_path: Path
    redis_url: str
    database_url: str
    workers: int = 1
    env_extra: dict[str, str] = field(default_factory=dict)
    master_port: int = field(default_factory=free_port)
    procs: dict[str, Proc] = field(default_factory=dict)
    #: Standby masters ("master-2"...), started after the first; every worker names them all.
    standbys: int = 0

    def __post_init__(self) -> None:
        self.state_dir = self.tmp_path / "state"
        self.log_dir = self.tmp_path / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = child_env(
            self.redis_url, self.database_url, self.state_dir, **{**tls_env(), **self.env_extra}
        )
        self.procs["master"] = Proc(
            "master",
            ["master", "run", "--port", str(self.master_port)],
            self.master_port,
            self.log_dir / "master.out",
        )
        for index in range(2, self.standbys + 2):
            port = free_port()
            self.procs[f"master-{index}"] = Proc(
                f"master-{index}",
                ["master", "run", "--port", str(port)],
                port,
                self.log_dir / f"master-{index}.out",
            )
        masters = [arg for name in self.master_names for arg in ("--master", self.address(name))]
        for index in range(1, self.workers + 1):
            name = f"worker-{index}"
            port = free_port()
            self.procs[name] = Proc(
                name,
                [
                    "worker",
                    "run",
                    "--name",
                    name,
                    "--region",
                    "test",
                    "--port",
                    str(port),
                    *masters,
                ],
                port,
                self.log_dir / f"{name}.out",
                env=worker_env(name),
            )

    # -- processes ---------------------------------------------------------------
    @property
    def worker_names(self) -> list[str]:
        return [name for name in self.procs if not name.startswith("master")]

    @property
    def master_names(self) -> list[str]:
        return [name for name in self.procs if name.startswith("master")]

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.procs[name].port}"

    def worker_port(self, index: int = 0) -> int:
        return self.procs[self.worker_names[index]].port

    def launch(self, name: str) -> None:
        proc = self.procs[name]
        env = {**self.env, **proc.env}
        if name in self.worker_names:
            env.pop("PT_DATABASE_URL")  # as in production: a worker has no database URL
        with open(proc.log, "ab") as out:
            proc.log_start = out.tell()
            proc.popen = subprocess.Popen(
                [sys.executable, "-m", "papertrader_cli", *proc.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(ROOT),
            )

    def wait_port(self, name: str, timeout: float = 30.0) -> None:
        """Until ``name`` says it listens on its port and the port answers;
        AssertionError if it exits first."""
        proc = self.procs[name]
        assert proc.popen is not None
        deadline = time.monotonic() + timeout
        while True:
            if proc.popen.poll() is not None:
                raise AssertionError(f"{name} exited ({proc.popen.returncode})\n{self.logs()}")
            if proc.announced() and port_answers(proc.port):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} never answered on {proc.port}\n{self.logs()}")
            time.sleep(0.05)

    def port_was_taken(self, name: str) -> bool:
        """Whether ``name`` exited because another process held its port: the test
        machine's race (see ``retry_port_races``), not a behaviour under test."""
        popen = self.procs[name].popen
        if popen is None or popen.poll() is None:
            return False
        return "Address already in use" in self.procs[name].log.read_text(errors="replace")

    def start_master(self, name: str, attempts: int = 3) -> None:
        """Launch master ``name`` and wait for its port, on a new port if its own was
        taken before it could listen."""
        for attempt in range(attempts):
            self.launch(name)
            try:
                self.wait_port(name)
                return
            except AssertionError:
                if not self.port_was_taken(name) or attempt == attempts - 1:
                    raise
            self.move(name, free_port())

    def move(self, name: str, port: int) -> None:
        """Give ``name`` (not running) a new port: in its arguments, in the workers'
        ``--master`` arguments for a master, in its registration for a worker."""
        proc = self.procs[name]
        old, proc.port = self.address(name), port
        proc.args[proc.args.index("--port") + 1] = str(port)
        if name == "master":
            self.master_port = port
        if name in self.master_names:
            for worker in self.worker_names:
                args = self.procs[worker].args
                args[:] = [self.address(name) if arg == old else arg for arg in args]
        else:
            self.register_workers()

    def wait_linked(self, timeout: float = 30.0) -> None:
        """Until the master's getWorkerList names every worker; AssertionError at once
        if one of them exited."""
        wanted = set(self.worker_names)
        deadline = time.monotonic() + timeout
        while True:
            for name in self.worker_names:
                popen = self.procs[name].popen
                if popen is not None and popen.poll() is not None:
                    raise AssertionError(f"{name} exited ({popen.returncode})\n{self.logs()}")
            try:
                listed = {w.get("name") for w in self.worker_list(5)}
                if wanted <= listed:
                    return
            except ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"workers not linked to the master\n{self.logs()}")
            time.sleep(0.1)

    def wait_quotes(self, timeout: float = 30.0) -> None:
        """Until the worker serves a quote (its cache loaded the master's first prices)."""
        deadline = time.monotonic() + timeout
        name = f"probe{uuid.uuid4().hex[:8]}"
        with self.client() as probe:
            # The master lists a worker as it welcomes it; the worker may take a moment
            # more to mark its link up, answering UNAVAILABLE meanwhile.
            while True:
                try:
                    probe.register(name, f"{name}@example.org", PASSWORD)
                    break
                except ClientError as exc:
                    if exc.code is not ErrorCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            probe.login(name, PASSWORD)
            while True:
                try:
                    probe.quote("AAPL")
                    return
                except ClientError as exc:
                    if time.monotonic() > deadline:
                        raise
                    if exc.session_problem:  # a very short session TTL under test
                        probe.login(name, PASSWORD)
                    time.sleep(0.1)

    def register_workers(self) -> None:
        pool = ConnectionPool(self.database_url, size=1)
        try:
            for name in self.worker_names:
                args = self.procs[name].args
                region = args[args.index("--region") + 1]  # pinned as the worker says it
                address = f"127.0.0.1:{self.procs[name].port}"
                register(pool, name, derive_worker_uuid(name), region, address=address)
        finally:
            pool.close()

    def start(self, attempts: int = 3) -> Servers:
        self.register_workers()
        for name in self.master_names:
            self.start_master(name)
        for name in self.worker_names:
            self.launch(name)
        for attempt in range(attempts):
            try:
                for name in self.worker_names:
                    self.wait_port(name)
                self.wait_linked()
                return self
            except AssertionError:
                taken = [name for name in self.worker_names if self.port_was_taken(name)]
                if not taken or attempt == attempts - 1:
                    raise
                for name in taken:
                    self.move(name, free_port())
                    self.launch(name)
        return self

    def restart_master(self) -> None:
        self.launch("master")
        self.wait_port("master")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        popen = self.procs[name].popen
        assert popen is not None
        popen.send_signal(sig)
        popen.wait(timeout=30)

    def stop(self) -> None:
        for name in [*self.worker_names, *reversed(self.master_names)]:
            popen = self.procs[name].popen
            if popen is not None and popen.poll() is None:
                popen.terminate()
                try:
                    popen.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait(timeout=5)

    def logs(self, lines: int = 30) -> str:
        parts = []
        for proc in self.procs.values():
            try:
                text = proc.log.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = ["(no log)"]
            parts.append(f"--- {proc.name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    # -- clients -----------------------------------------------------------------
    def client(
        self, index: int = 0, timeout: float = 90.0, source_address: str | None = None
    ) -> PaperTraderClient:
        """A client of worker ``index``, in TLS, verifying it with the test CA."""
        return PaperTraderClient(
            "127.0.0.1",
            self.worker_port(index),
            timeout=timeout,
            source_address=source_address,
            ca=pki().ca,
        )

    def worker_list(self, timeout: float = 10.0) -> list[dict[str, object]]:
        """The master's getWorkerList, in TLS, verifying the master with the test CA."""
        return get_worker_list("127.0.0.1", self.master_port, timeout, ca=pki().ca)


@contextmanager
def running(servers: Servers) -> Iterator[Servers]:
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


def new_user(client: PaperTraderClient, prefix: str = "u") -> str:
    """Register and log in a fresh user; returns the username."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    client.register(name, f"{name}@example.org", PASSWORD)
    client.login(name, PASSWORD)
    return name


def account_id(database_url: str, username: str) -> int:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM accounts WHERE username = %s", (username,))
        row = cur.fetchone()
    conn.close()
    assert row is not None, username
    return int(row[0])


def queue_orders(redis_url: str, orders: list[Order]) -> None:
    """XADD the orders in one pipeline, exactly as workers queue them."""
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for order in orders:
            pipe.xadd(keys.ORDERS, order.fields())  # type: ignore[arg-type]
        pipe.execute()
    finally:
        client.close()


def expected_holdings(history: Sequence[object]) -> tuple[Decimal, dict[str, int]]:
    """Cash and positions implied by a transaction history, from the starting cash."""
    cash = STARTING_CASH
    positions: dict[str, int] = {}
    for entry in history:
        row = entry if isinstance(entry, dict) else vars(entry)  # a dict, or a client Trade
        amount = row["amount"]
        quantity = row["quantity"]
        symbol = row["symbol"]
        assert isinstance(amount, Decimal) and isinstance(quantity, int) and isinstance(symbol, str)
        if row["side"] == "buy":
            cash -= amount
            positions[symbol] = positions.get(symbol, 0) + quantity
        else:
            cash += amount
            positions[symbol] = positions.get(symbol, 0) - quantity
    return cash, {symbol: qty for symbol, qty in positions.items() if qty}
