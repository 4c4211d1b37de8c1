"""Trading through a whole stack (`pt up`: master, one worker process, Redis, PostgreSQL).

* **Order latency**: 1,000 clients, each placing one market order per update
  interval at its own moment of the interval (spread evenly), each timed from
  sending the order to its answer (which comes after the master's drain).
  Target (issue 15): p99 within one interval + 20 ms.
* **Logins do not slow trading**: the same order load plus a quote probe (20
  connections, one quote each every 20 ms), first alone, then beside a flood of
  logins that keeps the master's bcrypt pool busy (``bcrypt_threads``: one per
  core) at the configured ``bcrypt_cost``. Target: quote and order p99 within
  2 times their idle values; logins a second beside what the cores allow.
  That baseline is measured in the same run: bcrypt checks a second at the
  configured cost with one thread per core (bcrypt releases the GIL), just
  before and just after the flood runs once alone, ahead of the trading
  phases (its logins a second against that rate: what the master's login
  path makes of the cores); beside trading the flood shares the cores with
  the worker, the drain and the clients.

The load comes from this process (gevent): paced requests on connections as lean
as the quote load generator's (``LeanClient``: the real frames, pre-encoded, a
fresh client order id patched into each order, answers read by their headers).
With the client library instead, the generator took 0.55 of a core (as much as
the worker) and answered its own 1,000 answers after each drain one by one, so
its queue was part of every latency measured.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import bcrypt
import gevent
import gevent.threadpool
import redis

from bench.loadgen import read_frames, request_bytes, tcp
from bench.quotes import cpu_seconds, with_children
from bench.stack import ROOT
from papertrader.client import ClientError, PaperTraderClient
from papertrader.config import load_settings
from papertrader.keyring import master_home
from papertrader.protocol import Instruction, Message, encode_message
from papertrader.protocol.records import to_record
from papertrader.services import resolve_urls
from papertrader.services.ports import free_port
from papertrader.stack.record import RECORD_FILE
from papertrader.store.pool import ConnectionPool
from papertrader.store.session_signing import KEY_FILE, load_or_create
from papertrader.store.sessions import SessionStore
from papertrader.tls.local import ca_file

TRADERS = 1000
INTERVAL = 1.0
QUOTE_PROBES = 20
QUOTE_PERIOD = 0.02
PASSWORD = "correct horse battery staple"
#: Times the stack is started on new ports when one was taken meanwhile.
PORT_ATTEMPTS = 3


def _pt(args: list[str], env: dict[str, str], timeout: float = 180) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "papertrader_cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"pt {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextmanager
def stack(state: Path) -> Iterator[tuple[dict[str, str], int]]:
    """`pt up --detach` in ``state``: its environment and worker-1's port; `pt down` after.

    The ports are picked free, but another process may take one before the stack
    binds it: then the stack is taken down and started again on other ports."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PT_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "PT_STATE_DIR": str(state),
            "PT_WORKER_PROCESSES": "1",
            "PT_WEB_ENABLED": "false",
            "PT_MAX_CONNECTIONS_PER_ADDRESS": str(TRADERS + 500),
            "PT_LOGIN_RATE_PER_ADDRESS": "1000000/minute",
            "PT_REGISTER_RATE_PER_ADDRESS": "1000000/minute",
            "PT_RESUME_RATE_PER_ADDRESS": "1000000/minute",
        }
    )
    for attempt in range(PORT_ATTEMPTS):
        worker_port = free_port()
        try:
            _pt(["up", "--detach", "--workers", "1", "--master-port", str(free_port()),
                 "--worker-port", str(worker_port), "--update-interval", str(INTERVAL)],
                env)  # fmt: skip
            break
        except RuntimeError as exc:
            if "already in use" not in str(exc) or attempt == PORT_ATTEMPTS - 1:
                raise
            _pt(["down"], env)
    try:
        _pt(["status", "--wait", "120"], env)
        yield env, worker_port
    finally:
        _pt(["down"], env)


def _percentile(values: array[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]) * 1000, 2)


class Phase:
    """One measured stretch: orders, quotes and (perhaps) logins side by side."""

    def __init__(self) -> None:
        self.orders = array("d")
        self.order_failures = 0
        self.quotes = array("d")
        self.logins = 0
        self.seconds = 0.0
        #: CPU time per order answered, by process role (microseconds; from /proc).
        self.cpu_us_per_order: dict[str, float] = {}

    def figures(self) -> dict[str, Any]:
        return {
            "orders": len(self.orders),
            "orders_failed": self.order_failures,
            "order_p50_ms": _percentile(self.orders, 0.5),
            "order_p99_ms": _percentile(self.orders, 0.99),
            "quotes": len(self.quotes),
            "quote_p50_ms": _percentile(self.quotes, 0.5),
            "quote_p99_ms": _percentile(self.quotes, 0.99),
            "logins_per_second": round(self.logins / self.seconds, 2) if self.seconds else 0,
            "cpu_us_per_order": self.cpu_us_per_order,
        }


class LeanClient:
    """One trader's (or quote probe's) connection, in TLS verified against the stack's CA,
    with the session the master minted: the protocol's real frames, encoded once by the
    reference encoder, and answers read by their headers (``read_frames``), so the
    generator costs little and the server is what is measured."""

    def __init__(self, port: int, ca: str, session_id: uuid.UUID) -> None:
        self.session_id = session_id
        self._sock = tcp(port, ca)
        self._buf = bytearray()
        self._quote = request_bytes(session_id, "AAPL")
        first = uuid.uuid4()
        ticket = {"client_order_id": first, "side": "buy", "symbol": "AAPL", "quantity": 1,
                  "type": "market", "time_in_force": "day"}  # fmt: skip
        self._order = bytearray(
            encode_message(
                Message(Instruction.PLACE_ORDER, (to_record(ticket),), session_id=session_id)
            )
        )
        self._order_id_at = self._order.index(first.bytes)

    def buy(self) -> bool:
        """A market buy of one AAPL under a new client order id; whether it filled (an
        ORDER_STATUS answer: a market order's state after the drain)."""
        at = self._order_id_at
        self._order[at : at + 16] = uuid.uuid4().bytes
        self._sock.sendall(self._order)
        return read_frames(self._sock, self._buf, 1) == Instruction.ORDER_STATUS

    def quote(self) -> None:
        """switchState(1) and getAssetValueCurrent(AAPL), answered by two frames."""
        self._sock.sendall(self._quote)
        read_frames(self._sock, self._buf, 2)

    def close(self) -> None:
        self._sock.close()


def _trader(client: LeanClient, offset: float, end: float, phase: Phase) -> None:
    start = time.monotonic()
    tick = 0
    while True:
        at = start + offset + tick * INTERVAL
        if at >= end:
            return
        gevent.sleep(max(0.0, at - time.monotonic()))
        sent = time.perf_counter()
        if client.buy():
            phase.orders.append(time.perf_counter() - sent)
        else:
            phase.order_failures += 1
        tick += 1


def _prober(client: LeanClient, end: float, phase: Phase) -> None:
    while time.monotonic() < end:
        sent = time.perf_counter()
        client.quote()
        phase.quotes.append(time.perf_counter() - sent)
        gevent.sleep(max(0.0, QUOTE_PERIOD - (time.perf_counter() - sent)))


def _login_loop(client: PaperTraderClient, name: str, end: float, phase: Phase) -> None:
    while time.monotonic() < end:
        try:
            client.login(name, PASSWORD)
            phase.logins += 1
        except ClientError:
            gevent.sleep(0.05)  # the master's bcrypt queue is full: it says so, we retry


def _run_phase(
    traders: list[LeanClient],
    probes: list[LeanClient],
    flooders: list[tuple[PaperTraderClient, str]],
    seconds: float,
) -> Phase:
    phase = Phase()
    begin = time.monotonic()
    end = begin + seconds
    jobs = [
        gevent.spawn(_trader, client, INTERVAL * i / len(traders), end, phase)
        for i, client in enumerate(traders)
    ]
    jobs += [gevent.spawn(_prober, client, end, phase) for client in probes]
    jobs += [gevent.spawn(_login_loop, client, name, end, phase) for client, name in flooders]
    gevent.joinall(jobs, raise_error=True)
    phase.seconds = time.monotonic() - begin
    return phase


def _stack_pids(state: Path) -> dict[str, int]:
    """The running master's and worker's pids, by role, from the stack's record."""
    record = json.loads((state / RECORD_FILE).read_text())
    return {child["role"]: int(child["pid"]) for child in record["children"] if child["pid"]}


def _cpu_per_order(pids: dict[str, int], run: Callable[[], Phase]) -> Phase:
    """``run()`` (a phase), with the master's and the worker's CPU time per order answered
    in it (from /proc, each with its child processes), and this process's (the load
    generator's), stored on the phase."""
    groups = {role: with_children(pid) for role, pid in pids.items()}
    before = {role: cpu_seconds(group) for role, group in groups.items()}
    own_before = _own_cpu_seconds()
    profile = os.environ.get("PT_BENCH_PROFILE")  # py-spy's samples of the worker meanwhile
    spy = None
    if profile:
        spy = subprocess.Popen(
            [shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
             "record", "--pid", str(pids["worker"]), "--format", "raw",
             "--output", profile, "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        phase = run()
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
            spy.wait(timeout=60)
    spent = {role: cpu_seconds(group) - before[role] for role, group in groups.items()}
    spent["load_generator"] = _own_cpu_seconds() - own_before
    for role, seconds in spent.items():
        phase.cpu_us_per_order[role] = round(seconds / max(1, len(phase.orders)) * 1e6, 1)
    return phase


def _own_cpu_seconds() -> float:
    """This process's CPU time (user and system): the load generator's."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _bcrypt_rate(cost: int, threads: int, seconds: float) -> float:
    """bcrypt checks a second at ``cost`` with ``threads`` threads (bcrypt releases the
    GIL): what the cores allow right now, the login flood's baseline."""
    hashed = bcrypt.hashpw(b"x", bcrypt.gensalt(cost))
    pool = gevent.threadpool.ThreadPool(threads)
    end = time.monotonic() + seconds

    def checks() -> int:
        done = 0
        while time.monotonic() < end:
            bcrypt.checkpw(b"x", hashed)
            done += 1
        return done

    begin = time.monotonic()
    try:
        total = sum(int(result.get()) for result in [pool.spawn(checks) for _ in range(threads)])
    finally:
        pool.kill()
    return round(total / (time.monotonic() - begin), 2)


def bench_trading(seconds: float = 10.0) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    with (
        tempfile.TemporaryDirectory(prefix="pt-bench-stack-") as tmp,
        stack(Path(tmp)) as (
            env,
            port,
        ),
    ):
        settings = load_settings(environ=env)
        urls = resolve_urls(settings, Path(tmp))
        ca = ca_file(Path(tmp))  # the stack's private CA: every client verifies the worker
        # One account through the real REGISTER (bcrypt at the configured cost); the
        # others get a copy of its password hash, so setting up costs no bcrypt.
        with PaperTraderClient("127.0.0.1", port, ca=ca) as first:
            first.register("bench0", "bench0@example.com", PASSWORD)
            first.login("bench0", PASSWORD)
            deadline = time.monotonic() + 30
            while True:  # the worker's quote cache has the master's first prices
                try:
                    first.quote("AAPL")
                    break
                except ClientError:
                    if time.monotonic() > deadline:
                        raise
                    gevent.sleep(0.2)
        pool = ConnectionPool(urls.owner_url, size=1)
        try:
            with pool.transaction() as cur:
                cur.execute("SELECT password_hash FROM accounts WHERE username = 'bench0'")
                (stored,) = cur.fetchone()  # type: ignore[misc]
                cur.execute(
                    "INSERT INTO accounts (username, email, password_hash, cash)"
                    " SELECT 'b' || g, 'b' || g || '@example.com', %s, %s"
                    " FROM generate_series(1, %s) AS g RETURNING id, username",
                    (stored, Decimal("1000000.00"), TRADERS + 4 * cores),
                )
                accounts = cur.fetchall()
        finally:
            pool.close()
        # Sessions as the master mints them: signed with its key (workers refuse others).
        signer = load_or_create(master_home(settings, Path(tmp)) / KEY_FILE)
        store = SessionStore(redis.Redis.from_url(urls.redis_url), 3600, 3600, ip_check=True,
                             signer=signer)  # fmt: skip
        traders = [
            LeanClient(port, str(ca), store.create(account_id, name, "127.0.0.1", False).session_id)
            for account_id, name in accounts[:TRADERS]
        ]
        probes = [LeanClient(port, str(ca), traders[i].session_id) for i in range(QUOTE_PROBES)]
        # One quote each: the worker's session cache then holds every trader's session, as
        # after a login through this worker (the bench mints them straight into Redis), and
        # no connection is closed as idle before it presented a session (30 s) while the
        # login flood runs alone.
        everyone = traders + probes
        gevent.joinall([gevent.spawn(client.quote) for client in everyone], raise_error=True)
        flooders = [
            (PaperTraderClient("127.0.0.1", port, ca=ca), name) for _, name in accounts[TRADERS:]
        ]
        # What one bcrypt check costs at the configured cost, in this process.
        check = time.perf_counter()
        bcrypt.checkpw(b"x", bcrypt.hashpw(b"x", bcrypt.gensalt(settings.bcrypt_cost)))
        hash_seconds = (time.perf_counter() - check) / 2
        load_before = [round(x, 2) for x in os.getloadavg()]
        # The baseline of the login rate: bcrypt alone on every core, just before and
        # just after the flood alone (the mean: a machine whose load moves moves both).
        raw_before = _bcrypt_rate(settings.bcrypt_cost, cores, min(seconds, 5.0) / 2)
        logins_alone = _run_phase([], [], flooders, seconds)
        raw_after = _bcrypt_rate(settings.bcrypt_cost, cores, min(seconds, 5.0) / 2)
        raw_rate = round((raw_before + raw_after) / 2, 2)
        pids = _stack_pids(Path(tmp))
        idle = _cpu_per_order(pids, lambda: _run_phase(traders, probes, [], seconds))
        flood = _run_phase(traders, probes, flooders, seconds)
        load_after = [round(x, 2) for x in os.getloadavg()]
        for client in traders + probes + [c for c, _ in flooders]:
            client.close()
    idle_f, flood_f = idle.figures(), flood.figures()

    def ratio(key: str) -> float | None:
        base, loaded = idle_f[key], flood_f[key]
        return round(loaded / base, 2) if base and loaded else None

    return {
        "traders": TRADERS,
        "update_interval": INTERVAL,
        "seconds_per_phase": seconds,
        "load_average_before_after": [load_before, load_after],
        "idle": idle_f,
        "login_flood": flood_f,
        "order_p99_target_ms": INTERVAL * 1000 + 20,
        "order_p99_flood_to_idle": ratio("order_p99_ms"),
        "quote_p99_flood_to_idle": ratio("quote_p99_ms"),
        "bcrypt_cost": settings.bcrypt_cost,
        "bcrypt_check_ms": round(hash_seconds * 1000, 1),
        "cores": cores,
        "logins_per_second_the_cores_allow": round(cores / hash_seconds, 2),
        "bcrypt_checks_per_second_on_every_core": raw_rate,
        "bcrypt_checks_per_second_before_after": [raw_before, raw_after],
        "logins_per_second_alone": logins_alone.figures()["logins_per_second"],
        "logins_alone_to_bcrypt_rate": (
            round(logins_alone.logins / logins_alone.seconds / raw_rate, 2) if raw_rate else None
        ),
    }
