"""Quote requests per second through one worker process, 100 concurrent connections,
over TCP and over the worker's WebSocket (the browser's carriage).

Baseline in the same run: bench.bare_server answering the same frames; the
TCP figure is the WebSocket figure's baseline (same worker, same requests).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

from bench.loadgen import request_bytes, run_load, run_websocket_load
from bench.stack import free_port, spawn, stop, wait_for_port
from papertrader.keyring import Keyring
from papertrader.market.providers import SimulatedProvider
from papertrader.services import ServiceUrls
from papertrader.store.quotes import QuoteStore
from papertrader.store.sessions import SessionStore


def bench_quotes(
    urls: ServiceUrls, state: Path, connections: int = 100, seconds: float = 10.0
) -> dict[str, Any]:
    client = redis.Redis.from_url(urls.redis_url)
    now = datetime.now(timezone.utc)
    QuoteStore(client).publish(SimulatedProvider(1).fetch(["AAPL", "MSFT"], now, {}), now)
    session = SessionStore(client, 3600, 3600, ip_check=True).create(1, "bench", "127.0.0.1", False)
    payload = request_bytes(session.session_id, "AAPL")

    bare_port = free_port()
    bare = spawn(["-m", "bench.bare_server", str(bare_port)], {}, state / "bare.log")
    try:
        wait_for_port(bare_port, bare)
        run_load(bare_port, payload, connections, 1.0)  # warm-up
        baseline = run_load(bare_port, payload, connections, seconds)
    finally:
        stop(bare)

    worker_port, web_port = free_port(), free_port()
    # A worker needs its key pair and a pinned master key to start, even with no master.
    keyring = Keyring(state / "gnupg-bench", create=True)
    fingerprint = keyring.secret_fingerprints()[:1] or [keyring.generate("bench")]
    keyring.stop_agent()
    env = {
        "PT_WORKER_GNUPG_HOME": str(keyring.home),
        "PT_MASTER_FINGERPRINT": fingerprint[0],
        "PT_REDIS_URL": urls.redis_url,
        "PT_DATABASE_URL": urls.database_url,
        "PT_WORKER_PORT": str(worker_port),
        "PT_WEB_PORT": str(web_port),
        "PT_MASTER_CONNECT": f"127.0.0.1:{free_port()}",  # no master: quotes need none
        "PT_UPDATE_INTERVAL": "5",
        "PT_LOG_FILE": str(state / "worker.log"),
    }
    worker = spawn(["-m", "papertrader_cli", "worker", "run"], env, state / "worker.out")
    try:
        wait_for_port(worker_port, worker)
        run_load(worker_port, payload, connections, 1.0)
        measured = run_load(worker_port, payload, connections, seconds)
        wait_for_port(web_port, worker)
        origin = f"http://127.0.0.1:{web_port}"
        run_websocket_load(web_port, origin, payload, connections, 1.0)
        websocket = run_websocket_load(web_port, origin, payload, connections, seconds)
    finally:
        stop(worker)
    return {
        "connections": connections,
        "seconds": seconds,
        "worker_quotes_per_second": round(measured),
        "bare_gevent_quotes_per_second": round(baseline),
        "ratio_to_baseline": round(measured / baseline, 3) if baseline else None,
        "websocket_quotes_per_second": round(websocket),
        "websocket_ratio_to_tcp": round(websocket / measured, 3) if measured else None,
        "target": 10_000,
    }
