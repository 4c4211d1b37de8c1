"""One worker's memory under hostile connections, beside its idle figure.

A real ``pt worker run`` process, linked to a real master (since issue 10 a
worker serves only sessions the master signed, with the key it sends over the
link: without it the pipelined quotes would all be refusals), is measured
(resident set size, from /proc) idle, then with 1,000 connections of each
hostile kind held open at once, one kind at a time:

* ``idle``: connected, silent (closed after client_preauth_idle_timeout);
* ``half_frames``: a header announcing the largest request the worker
  accepts (max_request_size) and half of its body, then nothing (closed by
  the whole-frame deadline); a header announcing more is refused at once;
* ``not_reading``: a logged-in client that pipelines 64 KiB of quote
  requests and never reads, with a 4 KiB receive buffer (the worker keeps at
  most client_send_buffer_bytes of answers for it, then closes it when it
  has not read for client_send_timeout).

Per-address connection caps are raised for the run (the bench connects from
one address); the figures show memory, which is what the caps protect.
Documented ceiling: ``CEILING_MB`` (bench/README.md).
"""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

from bench.loadgen import request_bytes
from bench.quotes import Master, answers_quotes, worker_env
from bench.stack import spawn, stop, wait_for_port
from papertrader.market.providers import SimulatedProvider
from papertrader.protocol import HEADER_SIZE, Instruction, Message, encode_message
from papertrader.services import ServiceUrls
from papertrader.services.ports import free_port
from papertrader.store.quotes import QuoteStore

CONNECTIONS = 1000
#: One worker under 1,000 connections of any hostile kind stays below this (MB).
CEILING_MB = 160
REQUEST_LIMIT = 8192


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _settle(pid: int, seconds: float = 3.0) -> float:
    """The RSS once it stopped moving (the worker has taken in what was sent)."""
    time.sleep(seconds)
    return rss_mb(pid)


def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    return sock


def _half_frame() -> bytes:
    frame = encode_message(Message(Instruction.LOGIN, ("x" * (REQUEST_LIMIT - 40), "y", False)))
    return frame[: HEADER_SIZE + (len(frame) - HEADER_SIZE) // 2]


def bench_hostile(urls: ServiceUrls, state: Path) -> dict[str, Any]:
    client = redis.Redis.from_url(urls.redis_url)
    now = datetime.now(timezone.utc)
    QuoteStore(client).publish(SimulatedProvider(1).fetch(["AAPL", "MSFT"], now, {}), now)
    started: list[subprocess.Popen[bytes]] = []
    master = Master.start(urls, state, started, tls=False)
    session = master.sessions(client).create(1, "bench", "127.0.0.1", False)
    pipelined = request_bytes(session.session_id, "AAPL")
    pipelined = pipelined * (65536 // len(pipelined))

    port = free_port()
    env = {
        **worker_env(urls, state, port, free_port(), master, "bench-hostile", tls=False),
        "PT_LOG_FILE": str(state / "hostile-worker.log"),
        "PT_MAX_CONNECTIONS_PER_ADDRESS": str(CONNECTIONS * 2),
        "PT_CLIENT_PREAUTH_IDLE_TIMEOUT": "120",
        "PT_CLIENT_SEND_TIMEOUT": "120",
        # The handler's own bounds are measured, on plaintext connections (loopback): a
        # TLS connection adds OpenSSL's per-connection state on top (bench/README.md).
    }
    worker = spawn(["-m", "papertrader_cli", "worker", "run"], env, state / "hostile-worker.out")
    started.append(worker)
    results: dict[str, Any] = {"connections": CONNECTIONS, "ceiling_mb": CEILING_MB}
    try:
        wait_for_port(port, worker)
        # The pipelined requests must be answered quotes, not refusals of the session.
        answers_quotes(port, session.session_id, None, [state / "hostile-worker.log"])
        results["baseline_mb"] = round(_settle(worker.pid), 1)
        kinds = {
            "idle": (None, b""),
            "half_frames": (None, _half_frame()),
            "not_reading": (4096, pipelined),
        }
        for kind, (rcvbuf, data) in kinds.items():
            socks = []
            for _ in range(CONNECTIONS):
                sock = _connect(port, rcvbuf)
                if data:
                    sock.setblocking(False)
                    try:
                        sock.send(data)
                    except BlockingIOError:
                        pass
                socks.append(sock)
            results[f"{kind}_connections_mb"] = round(_settle(worker.pid, 5.0), 1)
            for sock in socks:
                sock.close()
            _settle(worker.pid, 3.0)
        results["after_closing_mb"] = round(rss_mb(worker.pid), 1)
        worst = max(results[f"{kind}_connections_mb"] for kind in kinds)
        results["below_ceiling"] = worst < CEILING_MB
    finally:
        for proc in reversed(started):
            stop(proc)
        client.close()
    return results
