"""``/metrics`` and ``/healthz`` on a server process's own HTTP port.

With ``metrics_enabled`` the master and every worker listen on
``metrics_host:metrics_port`` (loopback by default: the figures say how busy
the deployment is, so exposing them is the operator's choice) and answer:

* ``GET /metrics``: the process's registry in Prometheus's text format
  (``papertrader/metrics.py`` lists every series, docs/OPERATIONS.md too);
* ``GET /healthz``: ``200`` and ``{"status": "ok", ...}`` when the process
  serves, ``503`` and ``{"status": "failing", "problems": [...]}`` when it
  does not (what "serves" means is the process's ``health()``: a load
  balancer takes a failing worker out, Ansible waits for ``ok``).

It is a gevent WSGI server in the server's own event loop, with a small
pool: a scraper that hangs cannot tie up more than a few greenlets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import gevent.pool
from gevent.pywsgi import WSGIServer
from loguru import logger
from prometheus_client import CollectorRegistry, make_wsgi_app

#: (healthy, details): what ``/healthz`` reports.
Health = Callable[[], tuple[bool, dict[str, Any]]]
#: Concurrent HTTP requests served; more wait in the listen backlog.
MAX_CONNECTIONS = 16

StartResponse = Callable[..., Any]


def metrics_app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    """The WSGI application: /metrics, /healthz, 404 for anything else."""
    prometheus = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            try:
                healthy, details = health()
            except Exception as exc:  # a health check that breaks is a failing one
                logger.warning("health check failed: {}", exc)
                healthy, details = False, {"problems": [f"health check failed: {exc}"]}
            body = json.dumps(
                {"status": "ok" if healthy else "failing", **details}, default=str, sort_keys=True
            ).encode()
            status = "200 OK" if healthy else "503 Service Unavailable"
            start_response(
                status,
                [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                 ("Cache-Control", "no-store")],
            )  # fmt: skip
            return [body]
        if path == "/metrics":
            result: Iterable[bytes] = prometheus(environ, start_response)
            return result
        body = b"not found: try /metrics or /healthz\n"
        start_response(
            "404 Not Found",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


class MetricsServer:
    """The HTTP endpoint of one process: ``start()`` binds (OSError if it cannot)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        self._server = WSGIServer(
            (host, port),
            metrics_app(registry, health),
            spawn=gevent.pool.Pool(MAX_CONNECTIONS),
            log=None,
        )

    def start(self) -> None:
        self._server.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self._server.stop(timeout=2)
