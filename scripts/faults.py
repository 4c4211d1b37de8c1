"""`make faults`: kill -9 each process in turn under trading load, then check every order.

A real stack is built the way the README documents it (`pt services up`,
`pt db migrate`, `pt master keygen`, `pt workers keygen/register`,
`pt master run`, `pt worker run`) in a temporary state directory. Traders
(threads with the client library, one account each) buy and sell without a
pause and write down what they were told about every order. In each round
the master, the worker, Redis and PostgreSQL are killed with SIGKILL in
turn, each restarted the documented way after a moment, with trading going
on throughout. Then the queue is left to drain and everything is checked:

* every order a trader was told was filled is in PostgreSQL exactly once,
  with that quantity and price; every order it was told was rejected is not;
* no fill exists that its trader was not told about, except orders whose
  outcome it was told is unknown (a crash between queuing and answering);
* each account's cash is the starting cash minus its buys plus its sells, to
  the cent; positions are the sum of its fills; nothing is negative.

With `--standby`, two masters run (the worker is given both): the active one
is killed with SIGKILL (the standby must take over within two update
intervals plus 5 s), and, in a second step, frozen with SIGSTOP for longer
than the lease, then woken with SIGCONT: by then the standby has taken over,
and the old master must write nothing (its writes are fenced) and stop. Each
is started again afterwards, as a standby.

With `--pg-replica`, PostgreSQL gets a synchronous streaming replica and the
masters (two) reach it by a multi-host URL (`target_session_attrs=read-write`):
the primary is killed with SIGKILL and the replica promoted, the documented
way (docs/OPERATIONS.md); trading must resume without any other step.

With `--redis-failover` (scripts/faults_redis.py), Redis gets a replica and
three Sentinels, every process reaches it through them and workers wait for
the replica (`redis_min_replicas_ack = 1`); each round kills the Redis primary
with SIGKILL, the Sentinels promote the replica, trading must resume with no
manual step, and the killed node comes back as the new replica.

Redis runs with `appendfsync everysec`: a Redis crash may lose the last
second of writes, so an order queued in that second and not yet drained may
be lost. Its trader was never told it was filled (at most "outcome
unknown"), which is what the checks allow.

    python scripts/faults.py --rounds 2 --phase-seconds 10 --traders 6 [--standby]
    python scripts/faults.py --rounds 1 --phase-seconds 10 --traders 6 --pg-replica
    python scripts/faults.py --rounds 2 --phase-seconds 10 --traders 6 --redis-failover

Exit status 0 when every check holds; the report is printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from faults_redis import RedisHa  # noqa: E402

from papertrader.client import ClientError, PaperTraderClient  # noqa: E402
from papertrader.client.errors import OrderOutcomeUnknown, ServerUnreachable  # noqa: E402
from papertrader.protocol import ErrorCode  # noqa: E402
from papertrader.services import postgres_replica, read_service_urls  # noqa: E402
from papertrader.services.ports import free_port  # noqa: E402
from papertrader.services.state import PostgresRecord, load_state, read_pid_file  # noqa: E402
from papertrader.store import master_epoch  # noqa: E402
from papertrader.tls.local import ca_file  # noqa: E402

PASSWORD = "faults are part of the plan 42"
STARTING_CASH = Decimal("100000.00")
#: The masters' lease (master_lease_seconds): how long a frozen master keeps the lock.
LEASE_SECONDS = 3.0
SYMBOLS = ("AAPL", "MSFT")
#: Rejections that are a verdict on the order itself (the drain decided them).
REJECTIONS = {
    ErrorCode.INSUFFICIENT_CASH,
    ErrorCode.INSUFFICIENT_POSITION,
    ErrorCode.UNKNOWN_ASSET,
    ErrorCode.INVALID_QUANTITY,
    ErrorCode.RATE_LIMITED,
}


def port_answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


@dataclass
class Record:
    """What one trader was told."""

    username: str
    #: By client order id (each order is sent with one of ours).
    filled: dict[str, tuple[str, str, int, Decimal]] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    errors: int = 0


class Stack:
    """The processes, started and restarted with the documented commands."""

    def __init__(self, state: Path, interval: float, masters: int = 1) -> None:
        self.state = state
        self.logs = state / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.master_ports = [free_port() for _ in range(masters)]
        self.master_port, self.worker_port = self.master_ports[0], free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
        self.env.update(
            {
                "PYTHONPATH": str(ROOT),
                "PT_STATE_DIR": str(state),
                "PT_UPDATE_INTERVAL": str(interval),
                "PT_BCRYPT_COST": "4",
                "PT_LOG_STDERR": "false",
                "PT_LOGIN_RATE_PER_ADDRESS": "100000/minute",
                "PT_RESUME_RATE_PER_ADDRESS": "100000/minute",
                "PT_REGISTER_RATE_PER_ADDRESS": "100000/minute",
                "PT_MASTER_LEASE_SECONDS": str(LEASE_SECONDS),
                "PT_WEB_PORT": "0",  # the worker's page on any free port: runs side by side
            }
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.worker_env: dict[str, str] = {}
        #: With a PostgreSQL replica: the servers (primary first) and the multi-host URL.
        self.pg_servers: list[PostgresRecord] = []
        self.replica: PostgresRecord | None = None
        self.database_url: str | None = None

    def pt(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "papertrader_cli", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pt {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def setup(self, pg_replica: bool = False, redis_ha: RedisHa | None = None) -> None:
        self.services_up()
        self.pt("db", "migrate")
        if pg_replica:
            self.add_pg_replica()
        if redis_ha is not None:  # before the worker's Redis user: made on every node
            redis_ha.setup(self.env)
        fingerprint = self.pt("master", "keygen").split()[-1]
        home = self.state / "gnupg-w1"
        key = self.state / "w1.asc"
        self.pt("workers", "keygen", "--home", str(home), "--name", "w1", "--out", str(key))
        address = f"127.0.0.1:{self.worker_port}"
        register = ("workers", "register", "w1", "--key", str(key), "--ip", "127.0.0.1/32")
        out = self.pt(*register, "--region", "faults", "--address", address)
        self.worker_env = {
            "PT_WORKER_UUID": out.split()[-1],
            "PT_WORKER_GNUPG_HOME": str(home),
            "PT_MASTER_FINGERPRINT": fingerprint,
        }
        for index in range(len(self.master_ports)):
            self.start_master(index)
        self.start_worker()

    def services_up(self) -> None:
        deadline = time.monotonic() + 90
        while True:  # after a SIGKILL, PostgreSQL may need a moment before it starts again
            try:
                self.pt("services", "up")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "papertrader_cli", *args],
                cwd=ROOT,
                env={**self.env, "PT_LOG_FILE": str(log), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @staticmethod
    def master_name(index: int) -> str:
        return "master" if index == 0 else f"master-{index + 1}"

    def add_pg_replica(self) -> None:
        """A synchronous streaming replica; from now on every process uses both servers."""
        primary = load_state(self.state).postgres
        assert primary is not None
        replica = postgres_replica.create(primary)
        postgres_replica.make_synchronous(primary)
        self.pg_servers = [primary, replica]
        self.replica = replica
        self.database_url = postgres_replica.failover_url(self.pg_servers)
        self.env["PT_DATABASE_URL"] = self.database_url

    def pg_failover(self) -> dict[str, Any]:
        """SIGKILL the primary, promote the replica (docs/OPERATIONS.md), wait for trading."""
        replica = self.pg_servers[1]
        killed = time.monotonic()
        self.kill("postgres")
        time.sleep(1.0)
        postgres_replica.promote(replica)
        wait_until(lambda: postgres_replica.is_primary(replica), 60, "the promoted replica")
        promoted = round(time.monotonic() - killed, 1)
        time.sleep(LEASE_SECONDS + 2)  # a master that could not renew its lease stopped
        self.restart_exited_masters()
        return {"killed": "postgres primary (replica promoted)", "promoted_after": promoted}

    def start_master(self, index: int = 0) -> None:
        port = self.master_ports[index]
        self._spawn(self.master_name(index), ["master", "run", "--port", str(port)])
        wait_until(lambda: port_answers(port), 60, "the master")

    def active_master(self) -> tuple[str, int, bool]:
        """(process name, epoch, lock held) of the active master, from PostgreSQL."""
        urls = read_service_urls(self.state)
        assert urls is not None
        with psycopg2.connect(self.database_url or urls.database_url) as conn, conn.cursor() as cur:
            active = master_epoch.read_active(cur)
            held = master_epoch.leader_alive(cur)
        conn.close()
        for index, port in enumerate(self.master_ports):
            if active.address.endswith(f":{port}"):
                return self.master_name(index), active.epoch, held
        return "", active.epoch, held

    def restart_exited_masters(self) -> None:
        """A master that lost the active role exited (a supervisor would start it again)."""
        for index in range(len(self.master_ports)):
            proc = self.procs.get(self.master_name(index))
            if proc is not None and proc.poll() is not None:
                self.start_master(index)

    def start_worker(self) -> None:
        args = ["worker", "run", "--name", "w1", "--region", "faults", "--port"]
        args += [str(self.worker_port)]
        for port in self.master_ports:
            args += ["--master", f"127.0.0.1:{port}"]
        self._spawn("worker", args, self.worker_env)
        wait_until(lambda: port_answers(self.worker_port), 60, "the worker")

    def kill(self, what: str) -> None:
        """SIGKILL one process: master, worker, redis or postgres."""
        if what in self.procs:
            self.procs[what].kill()
            self.procs[what].wait()
            return
        services = load_state(self.state)
        if what == "redis":
            assert services.redis is not None
            pid = read_pid_file(Path(services.redis.pid_file))
        else:
            assert services.postgres is not None
            pid = read_pid_file(Path(services.postgres.data_dir) / "postmaster.pid")
        if pid is None:
            raise RuntimeError(f"no pid for {what}")
        os.kill(pid, signal.SIGKILL)

    def restart(self, what: str) -> None:
        if what.startswith("master"):
            self.start_master(0 if what == "master" else int(what.split("-")[1]) - 1)
        elif what == "worker":
            self.start_worker()
        else:
            self.services_up()
            time.sleep(LEASE_SECONDS + 2)  # a master that could not renew its lease stops
            self.restart_exited_masters()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        try:
            self.pt("services", "down")
        except RuntimeError:
            pass
        if self.replica is not None:
            postgres_replica.stop(self.replica)
            shutil.rmtree(self.replica.root, ignore_errors=True)


class Trader(threading.Thread):
    """Buys and sells without a pause; writes down every answer."""

    def __init__(self, index: int, port: int, stop: threading.Event, ca: Path) -> None:
        super().__init__(daemon=True)
        self.port = port
        #: The private CA the servers' certificates come from (TLS, verified).
        self.ca = ca
        self.stop = stop
        self.record = Record(f"t{index}x{uuid.uuid4().hex[:6]}")
        self.random = random.Random(index)
        self.session: uuid.UUID | None = None
        self.client: PaperTraderClient | None = None

    def _connected(self) -> PaperTraderClient:
        if self.client is None:
            client = PaperTraderClient("127.0.0.1", self.port, timeout=90, ca=self.ca)
            if self.session is None:
                name = self.record.username
                try:
                    client.register(name, f"{name}@example.org", PASSWORD)
                except ClientError as exc:
                    if exc.code is not ErrorCode.USERNAME_TAKEN:
                        client.close()
                        raise
                self.session = client.login(name, PASSWORD).session_id
            else:
                client.resume(self.session)
            self.client = client
        return self.client

    def _drop(self, forget_session: bool = False) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        if forget_session:
            self.session = None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                client = self._connected()
            except ClientError as exc:
                self.record.errors += 1
                self._drop(forget_session=exc.session_problem)
                time.sleep(0.3)
                continue
            side = "buy" if self.random.random() < 0.6 else "sell"
            symbol = self.random.choice(SYMBOLS)
            quantity = self.random.randint(1, 5)
            cid = uuid.uuid4()  # our own order id: what we were told is recorded by it
            try:
                place = client.buy if side == "buy" else client.sell
                fill = place(symbol, quantity, client_order_id=cid)
                self.record.filled[str(cid)] = (side, symbol, quantity, fill.price)
            except OrderOutcomeUnknown:
                self.record.unknown.add(str(cid))  # it may fill: never re-sent as new
                self._drop()
            except ServerUnreachable as exc:
                if exc.lost:
                    self.record.unknown.add(str(cid))
                self._drop()
                time.sleep(0.3)
            except ClientError as exc:
                order = exc.order_id
                if order is not None and order.int != 0 and exc.code in REJECTIONS:
                    self.record.rejected.add(str(cid))
                elif order is not None and order.int != 0:
                    self.record.unknown.add(str(cid))
                elif exc.session_problem:
                    self._drop(forget_session=True)
                elif exc.code is ErrorCode.TIMEOUT:  # no answer in time: it may be queued
                    self.record.unknown.add(str(cid))
                    self._drop()
                else:  # refused before it was queued (no order id)
                    self.record.errors += 1
                    time.sleep(0.3)
        self._drop()


def check(database_url: str, traders: list[Trader]) -> list[str]:
    """Every promise against PostgreSQL; the list of broken ones (empty: all hold)."""
    problems: list[str] = []
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        for trader in traders:
            record = trader.record
            cur.execute("SELECT id, cash FROM accounts WHERE username = %s", (record.username,))
            row = cur.fetchone()
            if row is None:
                continue
            account, cash = row
            cur.execute(
                "SELECT client_order_id::text, side, symbol, quantity, price, amount"
                " FROM orders WHERE account_id = %s AND status = 'filled'",
                (account,),
            )
            fills = {r[0]: r[1:] for r in cur.fetchall()}
            who = record.username
            for order, (side, symbol, quantity, price) in record.filled.items():
                got = fills.get(order)
                if got is None or tuple(got[:4]) != (side, symbol, quantity, price):
                    problems.append(f"{who}: told filled {order}, PostgreSQL has {got}")
            for order in record.rejected & set(fills):
                problems.append(f"{who}: told rejected {order}, but it was filled")
            phantom = set(fills) - set(record.filled) - record.unknown
            if phantom:
                problems.append(f"{who}: {len(phantom)} fills nobody was told about")
            expected = STARTING_CASH
            held: dict[str, int] = {}
            for side, symbol, quantity, _price, amount in fills.values():
                expected += -amount if side == "buy" else amount
                held[symbol] = held.get(symbol, 0) + (quantity if side == "buy" else -quantity)
            if cash != expected:
                problems.append(f"{who}: cash {cash} but fills say {expected}")
            if cash < 0 or any(q < 0 for q in held.values()):
                problems.append(f"{who}: negative cash or position ({cash}, {held})")
            cur.execute("SELECT symbol, quantity FROM positions WHERE account_id = %s", (account,))
            stored = {symbol: quantity for symbol, quantity in cur.fetchall()}
            if stored != {s: q for s, q in held.items() if q}:
                problems.append(f"{who}: positions {stored}, fills say {held}")
    conn.close()
    return problems


def drained(redis_url: str) -> bool:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xlen("pt:orders")) == 0
    except redis.RedisError:
        return False
    finally:
        client.close()


def filled(crew: list[Trader]) -> int:
    return sum(len(trader.record.filled) for trader in crew)


def resume(
    seen: dict[str, Any], crew: list[Trader], before: int, phase: float, started: float
) -> dict[str, Any]:
    """After a step: trade for ``phase`` seconds; trading must have resumed by itself (a
    new fill, waited for a minute at most). Adds when, and the fills since the step."""
    seen["at"] = round(time.monotonic() - started, 1)
    time.sleep(phase)
    try:
        wait_until(lambda: filled(crew) > before, 60, "a fill after the step")
    except RuntimeError:
        seen.setdefault("problems", []).append(f"trading did not resume after {seen['killed']}")
    seen["filled_since"] = filled(crew) - before
    return seen


def take_over(stack: Stack, how: str, interval: float) -> dict[str, Any]:
    """Kill (SIGKILL) or freeze (SIGSTOP past the lease, then SIGCONT) the active master;
    the standby must take over, the old one write nothing and stop. Returns what was
    seen; ``problems`` lists what went wrong."""
    name, epoch, held = stack.active_master()
    problems: list[str] = []
    if not name or not held:
        return {"killed": how, "problems": [f"no active master before {how}: {name!r}"]}
    proc = stack.procs[name]
    log = stack.logs / f"{name}.log"
    log_before = log.stat().st_size if log.exists() else 0
    stopped = time.monotonic()
    proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
    limit = (2 * interval + 5) if how == "kill" else (LEASE_SECONDS + 2 * interval + 5)

    def taken_over() -> bool:
        new_name, new_epoch, new_held = stack.active_master()
        return new_held and new_epoch > epoch and new_name not in ("", name)

    try:
        wait_until(taken_over, limit + 60, "the standby to take over")
    except RuntimeError as exc:
        problems.append(str(exc))
    seconds = round(time.monotonic() - stopped, 1)
    if seconds > limit:
        problems.append(f"the standby took over after {seconds} s (limit {limit:g} s)")
    fenced = 0
    if how == "kill":
        proc.wait()
    else:
        time.sleep(2 * interval)  # the new master drains meanwhile
        proc.send_signal(signal.SIGCONT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            problems.append("the old master did not stop after it woke up deposed")
            proc.kill()
            code = proc.wait()
        text = log.read_text(errors="replace")[log_before:]
        if "no longer the active one" not in text:
            problems.append(f"the old master (exit {code}) never said it was deposed")
        fenced = text.count("fenced")
    stack.start_master(0 if name == "master" else int(name.split("-")[1]) - 1)
    return {
        "killed": f"active master ({how})",
        "takeover_seconds": seconds,
        "old_master_fenced_writes": fenced,
        "problems": problems,
    }


def run(
    rounds: int,
    phase_seconds: float,
    traders: int,
    interval: float = 0.5,
    standby: bool = False,
    pg_replica: bool = False,
    redis_failover: bool = False,
) -> dict[str, Any]:
    started = time.monotonic()
    keep = os.environ.get("FAULTS_KEEP_LOGS")  # a directory the logs are copied to
    with tempfile.TemporaryDirectory(prefix="pt-faults-") as tmp:
        stack = Stack(Path(tmp), interval, masters=2 if standby or pg_replica else 1)
        ha = RedisHa(stack.state) if redis_failover else None
        stop = threading.Event()
        crew: list[Trader] = []
        kills: list[dict[str, Any]] = []
        try:
            stack.setup(pg_replica=pg_replica, redis_ha=ha)
            ca = ca_file(stack.state)  # the state directory's CA, made by the servers
            crew = [Trader(i, stack.worker_port, stop, ca) for i in range(traders)]
            for trader in crew:
                trader.start()
            time.sleep(phase_seconds)
            for _ in range(rounds):
                if pg_replica:
                    before = filled(crew)
                    kills.append(resume(stack.pg_failover(), crew, before, phase_seconds, started))
                    break  # the old primary is gone: one failover per run
                if ha is not None:
                    before = filled(crew)
                    kills.append(resume(ha.failover(), crew, before, phase_seconds, started))
                    continue
                if standby:
                    for how in ("kill", "freeze"):
                        before = filled(crew)
                        seen = take_over(stack, how, interval)
                        kills.append(resume(seen, crew, before, phase_seconds, started))
                    continue
                for what in ("master", "worker", "redis", "postgres"):
                    before = filled(crew)
                    stack.kill(what)
                    time.sleep(1.0)
                    stack.restart(what)
                    kills.append(resume({"killed": what}, crew, before, phase_seconds, started))
            stop.set()
            for trader in crew:
                trader.join(timeout=120)
            urls = read_service_urls(stack.state)
            assert urls is not None
            empty = ha.drained if ha is not None else lambda: drained(urls.redis_url)
            wait_until(empty, 120, "the order queue to drain")
            time.sleep(interval * 4)  # the last drain's transaction is committed
            problems = check(stack.database_url or urls.database_url, crew)
            problems += [p for kill in kills for p in kill.get("problems", [])]
        finally:
            stop.set()
            stack.stop()
            if ha is not None:
                ha.stop()
            if keep:
                shutil.copytree(stack.logs, keep, dirs_exist_ok=True)
    return {
        "rounds": rounds,
        "kills": kills,
        "seconds": round(time.monotonic() - started, 1),
        "traders": [
            {
                "user": t.record.username,
                "filled": len(t.record.filled),
                "rejected": len(t.record.rejected),
                "unknown": len(t.record.unknown),
            }
            for t in crew
        ],
        "orders_filled": sum(len(t.record.filled) for t in crew),
        "problems": problems,
        "ok": not problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--phase-seconds", type=float, default=10.0)
    parser.add_argument("--traders", type=int, default=6)
    parser.add_argument(
        "--standby", action="store_true", help="two masters: kill and freeze the active one"
    )
    parser.add_argument(
        "--pg-replica",
        action="store_true",
        help="a PostgreSQL replica: kill the primary and promote the replica",
    )
    parser.add_argument(
        "--redis-failover",
        action="store_true",
        help="a Redis replica and three Sentinels: kill the Redis primary each round",
    )
    options = parser.parse_args()
    report = run(
        options.rounds,
        options.phase_seconds,
        options.traders,
        standby=options.standby,
        pg_replica=options.pg_replica,
        redis_failover=options.redis_failover,
    )
    print(json.dumps(report, indent=2, default=str))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
