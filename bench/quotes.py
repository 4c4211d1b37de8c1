"""Quote requests per second through one worker process, 100 concurrent connections,
over TLS (as deployed) and over the worker's WebSocket in TLS (the browser's
carriage), through a worker of two processes (``worker_processes = 2``) on one
port, and through the same worker code without TLS (``tls = false``); and how long
a new TLS connection takes (a full handshake, p50).

Baseline in the same run: bench.bare_server answering the same frames, in
plaintext and over TLS (with the worker's server context: the TLS worker's
figure beside a bare server that pays for TLS too); the
TCP figure of the one-process worker is the baseline of the WebSocket figure
and of the two-process one (same requests); the plaintext worker is the TLS
figure's (the cost of TLS on kept connections), a new TCP connection the TLS
handshake's.

The targets are measured in interleaved rounds (bare, worker, WebSocket, bare,
worker...), so a machine whose load changes during the run moves every figure
alike; each figure also says how much CPU its server process spent per quote
(from /proc), which a busy machine disturbs much less than throughput.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

from bench.loadgen import LoadResult, connect_p50_ms, request_bytes, run_load
from bench.stack import ROOT, spawn, stop, wait_for_port
from papertrader.client import ClientError, PaperTraderClient
from papertrader.config import load_settings
from papertrader.keyring import master_home
from papertrader.market.providers import SimulatedProvider
from papertrader.services import ServiceUrls
from papertrader.services.ports import free_port
from papertrader.store.quotes import QuoteStore
from papertrader.store.session_signing import KEY_FILE, load_or_create
from papertrader.store.sessions import SessionStore
from papertrader.tls.local import LocalPki, ca_file

#: Seconds per round; PT_BENCH_SECONDS is the total per target.
ROUND_SECONDS = 2.0


def with_children(pid: int) -> list[int]:
    """``pid`` and its child processes (a worker's serving processes 1..N-1)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(child) for child in children.read_text().split())]


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used (all their threads)."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@dataclass
class Target:
    """One server measured: how to load it, and what its rounds added up to."""

    name: str
    port: int
    pids: Callable[[], list[int]]
    origin: str | None = None
    #: The CA file the server is verified with: the target speaks TLS.
    ca: str | None = None
    result: LoadResult = field(default_factory=LoadResult)
    elapsed: float = 0.0
    server_cpu: float = 0.0

    def round(self, payload: bytes, connections: int, seconds: float, processes: int) -> None:
        pids = self.pids()
        before = cpu_seconds(pids)
        part = run_load(
            self.port, payload, connections, seconds, processes=processes, origin=self.origin,
            ca=self.ca,
        )  # fmt: skip
        self.server_cpu += cpu_seconds(pids) - before
        self.elapsed += part.seconds
        part.seconds = 0.0
        self.result.add(part)

    def figures(self) -> dict[str, Any]:
        rate = self.result.requests / self.elapsed if self.elapsed else 0.0
        per_quote = self.server_cpu / self.result.requests if self.result.requests else None
        gen = self.result.cpu_seconds / self.result.requests if self.result.requests else None
        return {
            "quotes_per_second": round(rate),
            "p50_ms": self.result.percentile_ms(0.50),
            "p99_ms": self.result.percentile_ms(0.99),
            "server_cpu_us_per_quote": round(per_quote * 1e6, 1) if per_quote else None,
            "loadgen_cpu_us_per_quote": round(gen * 1e6, 1) if gen else None,
            "server_cores_used": (
                round(self.server_cpu / self.elapsed, 2) if self.elapsed else None
            ),
        }


def _pt(args: list[str], env: dict[str, str]) -> str:
    """One `pt` command of this repository's code; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "papertrader_cli", *args], env={**os.environ,
        "PYTHONPATH": str(ROOT), **env}, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"pt {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class Master:
    """A real master for the bench's workers: since issue 10 a worker accepts only
    sessions signed by the master, whose public key reaches it over the link."""

    env: dict[str, str]
    port: int
    fingerprint: str
    state: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls, urls: ServiceUrls, state: Path, started: list[subprocess.Popen[bytes]],
        tls: bool = True,
    ) -> Master:  # fmt: skip
        """``tls=False``: for the plaintext worker, whose link is plaintext too."""
        port = free_port()
        env = {
            "PT_STATE_DIR": str(state),
            "PT_REDIS_URL": urls.redis_url,
            "PT_DATABASE_URL": urls.database_url,
            "PT_MASTER_PORT": str(port),
            "PT_UPDATE_INTERVAL": "5",
            "PT_LOG_FILE": str(state / "master.log"),
            **({} if tls else {"PT_TLS": "false"}),
        }
        fingerprint = _pt(["master", "keygen"], env).splitlines()[-1].strip()
        proc = spawn(["-m", "papertrader_cli", "master", "run"], env, state / "master.out")
        started.append(proc)
        wait_for_port(port, proc)
        return cls(env, port, fingerprint, state, proc)

    def sessions(self, client: redis.Redis) -> SessionStore:
        """Sessions as the master mints them, signed with its key."""
        signer = load_or_create(master_home(load_settings(environ=self.env), self.state) / KEY_FILE)
        return SessionStore(client, 3600, 3600, ip_check=True, signer=signer)

    def register(self, name: str, port: int) -> dict[str, str]:
        """A worker ``name`` on ``port``, registered as `pt workers register` does: its env."""
        home = self.state / f"gnupg-{name}"
        key = self.state / f"{name}.asc"
        _pt(["workers", "keygen", "--home", str(home), "--name", name, "--out", str(key)],
            self.env)  # fmt: skip
        where = ["--ip", "127.0.0.1/32", "--region", "local", "--address", f"127.0.0.1:{port}"]
        worker_uuid = _pt(["workers", "register", name, "--key", str(key), *where], self.env)
        return {
            "PT_WORKER_NAME": name,
            "PT_WORKER_UUID": worker_uuid.splitlines()[-1].strip(),
            "PT_WORKER_GNUPG_HOME": str(home),
            "PT_MASTER_FINGERPRINT": self.fingerprint,
            "PT_MASTER_CONNECT": f"127.0.0.1:{self.port}",
        }


def worker_env(
    urls: ServiceUrls,
    state: Path,
    port: int,
    web_port: int,
    master: Master,
    name: str,
    processes: int = 1,
    tls: bool = True,
) -> dict[str, str]:
    """What a `pt worker run` of ``processes`` processes needs, linked to ``master``; with
    TLS a certificate from the state directory's private CA, as `pt up` gives it
    (``tls=False``: the same worker with tls = false, on loopback)."""
    return {
        **master.register(name, port),
        "PT_REDIS_URL": urls.redis_url,
        "PT_WORKER_PORT": str(port),
        "PT_WEB_PORT": str(web_port),
        "PT_UPDATE_INTERVAL": "5",
        "PT_LOG_FILE": str(state / f"worker-{port}.log"),
        "PT_STATE_DIR": str(state),
        "PT_WORKER_PROCESSES": str(processes),
        **({} if tls else {"PT_TLS": "false"}),
    }


def answers_quotes(
    port: int, session: uuid.UUID, ca: str | None, logs: list[Path], timeout: float = 60
) -> None:
    """Wait until the worker answers a real quote to the bench's session (linked, the
    master's key received): the figures must count quotes, not refusals."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with PaperTraderClient("127.0.0.1", port, session_id=session, ca=ca,
                                   tls=ca is not None) as client:  # fmt: skip
                client.quote("AAPL")
                return
        except ClientError as exc:
            if time.monotonic() > deadline:
                tails = "".join(
                    f"\n--- {log.name}\n" + "\n".join(
                        [x for x in log.read_text().splitlines() if "client #" not in x][-15:])
                    for log in logs if log.exists()
                )  # fmt: skip
                raise RuntimeError(f"the worker on {port} serves no quote: {exc}{tails}") from None
            time.sleep(0.5)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the two-process worker did not start its second process")
        time.sleep(0.1)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def priced(urls: ServiceUrls, seconds: float) -> tuple[redis.Redis, int, int]:
    """A Redis client, with prices for AAPL and MSFT in the quote cache (what the workers
    answer from); the load generator's processes, and the rounds of ``seconds``."""
    client = redis.Redis.from_url(urls.redis_url)
    now = datetime.now(timezone.utc)
    QuoteStore(client).publish(SimulatedProvider(1).fetch(["AAPL", "MSFT"], now, {}), now)
    processes = int(os.environ.get("PT_BENCH_LOADGEN_PROCESSES", str(os.cpu_count() or 1)))
    return client, processes, max(1, round(seconds / ROUND_SECONDS))


def spawn_worker(
    urls: ServiceUrls, state: Path, port: int, master: Master, name: str, processes: int = 1
) -> subprocess.Popen[bytes]:
    """`pt worker run` as ``name`` on ``port`` (TLS, a web port of its own)."""
    return spawn(
        ["-m", "papertrader_cli", "worker", "run"],
        worker_env(urls, state, port, free_port(), master, name, processes=processes),
        state / f"{name}.out",
    )


def bench_quotes(
    urls: ServiceUrls, state: Path, connections: int = 100, seconds: float = 10.0
) -> dict[str, Any]:
    client, processes, rounds = priced(urls, seconds)

    started: list[subprocess.Popen[bytes]] = []
    try:
        bare_port = free_port()
        bare = spawn(["-m", "bench.bare_server", str(bare_port)], {}, state / "bare.log")
        started.append(bare)
        master = Master.start(urls, state, started)
        # The bare server over TLS, with a certificate from the workers' CA.
        bare_cert, bare_key = LocalPki(state).server_files("bench-bare", ["127.0.0.1"])
        bare_tls_port = free_port()
        bare_tls = spawn(
            ["-m", "bench.bare_server", str(bare_tls_port), str(bare_cert), str(bare_key)],
            {}, state / "bare-tls.log",
        )  # fmt: skip
        started.append(bare_tls)
        session = master.sessions(client).create(1, "bench", "127.0.0.1", False)
        payload = request_bytes(session.session_id, "AAPL")
        worker_port, web_port = free_port(), free_port()
        worker = spawn(
            ["-m", "papertrader_cli", "worker", "run"],
            worker_env(urls, state, worker_port, web_port, master, "bench-tls"),
            state / "worker.out",
        )
        started.append(worker)
        # The same worker on every core: 2 processes (one per core here) on one port.
        wide_port = free_port()
        wide = spawn_worker(urls, state, wide_port, master, "bench-wide", processes=2)
        started.append(wide)
        waits = ((bare_port, bare), (bare_tls_port, bare_tls), (worker_port, worker),
                 (web_port, worker))  # fmt: skip
        for port, proc in waits:
            wait_for_port(port, proc)
        wait_for_port(wide_port, wide)
        wait_until(lambda: len(with_children(wide.pid)) == 2)
        time.sleep(3)  # the second process binds the port once it has loaded
        ca = str(ca_file(state))  # the workers' certificates are verified, as clients do
        logs = [state / "master.log"]
        for port in (worker_port, wide_port):
            answers_quotes(port, session.session_id, ca, [state / f"worker-{port}.log", *logs])
        # The plaintext worker's link is plaintext too: a master with tls = false (the
        # same key) for it, once the TLS workers have the session key and the TLS master
        # is gone (two masters would make one a standby). Quotes need no master.
        stop(master.proc)
        plain_master = Master.start(urls, state, started, tls=False)
        plain_port = free_port()
        plain = spawn(
            ["-m", "papertrader_cli", "worker", "run"],
            worker_env(
                urls, state, plain_port, free_port(), plain_master, "bench-plain", tls=False
            ),  # fmt: skip
            state / "worker-plain.out",
        )
        started.append(plain)
        wait_for_port(plain_port, plain)
        plain_logs = [state / f"worker-{plain_port}.log", *logs]
        answers_quotes(plain_port, session.session_id, None, plain_logs)
        stop(plain_master.proc)
        for port in (worker_port, wide_port):  # still serving without their master
            answers_quotes(port, session.session_id, ca, [state / f"worker-{port}.log", *logs])
        origin = f"https://127.0.0.1:{web_port}"
        targets = [
            Target("bare", bare_port, lambda: [bare.pid]),
            Target("bare_tls", bare_tls_port, lambda: [bare_tls.pid], ca=ca),
            Target("worker", worker_port, lambda: [worker.pid], ca=ca),
            Target("websocket", web_port, lambda: [worker.pid], origin, ca=ca),
            Target("two_processes", wide_port, lambda: with_children(wide.pid), ca=ca),
            Target("plaintext", plain_port, lambda: [plain.pid]),
        ]
        load_before = load_average()
        for target in targets:  # warm-up
            run_load(target.port, payload, connections, 1.0, origin=target.origin, ca=target.ca)
        for _ in range(rounds):
            for target in targets:
                target.round(payload, connections, seconds / rounds, processes)
        handshake_ms = connect_p50_ms(worker_port, ca)
        tcp_connect_ms = connect_p50_ms(plain_port, None)
        load_after = load_average()
    finally:
        for proc in started:
            stop(proc)
    bare_f, bare_tls_f, worker_f, ws_f, wide_f, plain_f = (t.figures() for t in targets)
    plain_rate, bare_tls_rate = plain_f["quotes_per_second"], bare_tls_f["quotes_per_second"]
    bare_rate, worker_rate = bare_f["quotes_per_second"], worker_f["quotes_per_second"]
    return {
        "connections": connections,
        "seconds": seconds,
        "rounds": rounds,
        "load_generator": f"{processes} processes of bench/loadgen.py (gevent)",
        "load_average_before_after": [load_before, load_after],
        "bare_gevent": bare_f,
        "bare_gevent_tls": bare_tls_f,
        "worker": worker_f,
        "websocket": ws_f,
        "worker_two_processes": wide_f,
        "two_processes_to_one": (
            round(wide_f["quotes_per_second"] / worker_rate, 3) if worker_rate else None
        ),
        "worker_plaintext": plain_f,
        "tls_ratio_to_plaintext": round(worker_rate / plain_rate, 3) if plain_rate else None,
        "tls_handshake_p50_ms": handshake_ms,
        "tcp_connect_p50_ms": tcp_connect_ms,
        "worker_quotes_per_second": worker_rate,
        "bare_gevent_quotes_per_second": bare_rate,
        "ratio_to_baseline": round(worker_rate / bare_rate, 3) if bare_rate else None,
        # Both over TLS: the worker's own cost, the transport's paid by both.
        "ratio_to_bare_tls": round(worker_rate / bare_tls_rate, 3) if bare_tls_rate else None,
        "plaintext_ratio_to_bare": round(plain_rate / bare_rate, 3) if bare_rate else None,
        "websocket_quotes_per_second": ws_f["quotes_per_second"],
        "websocket_ratio_to_tcp": (
            round(ws_f["quotes_per_second"] / worker_rate, 3) if worker_rate else None
        ),
        "target_ratio": 0.6,
    }
