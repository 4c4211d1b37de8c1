"""Main module of the worker (spec 3.2.1): wire the modules together, start, stop.

The process must be monkey-patched by gevent before this module is imported
(``pt worker run`` does it), so redis-py, sockets and queues all yield to the
event loop instead of blocking it.

Start order follows the spec: quotes are loaded, the master link starts
connecting, then the worker listens for clients. It does not wait for the
master: quotes, session resumes and logouts are served without it, and a login
while the master is away gets a prompt UNAVAILABLE instead of a hang.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import redis
from gevent.server import StreamServer
from loguru import logger

from papertrader import metrics
from papertrader.config import Settings
from papertrader.config.settings import join_host_port
from papertrader.keyring import Keyring
from papertrader.limits.accounts import AccountGate
from papertrader.limits.auth import AuthGate
from papertrader.limits.pending_orders import PendingOrders
from papertrader.log import crash_guard, install_logging_for, log_file_for, uninstall_logging
from papertrader.metrics_server import MetricsServer
from papertrader.protocol import max_chunk_size
from papertrader.services import ServicesError, resolve_state_dir
from papertrader.stack.runfiles import announced
from papertrader.store.order_queue import OrderQueue
from papertrader.store.quotes import QuoteStore
from papertrader.store.session_signing import SessionVerifier
from papertrader.store.sessions import SessionStore
from papertrader.tls import plaintext_refusal
from papertrader.tls.accept import TlsAcceptor
from papertrader.web.origins import OriginPolicy, WorkerDirectory
from papertrader.web.server import WebServer, page_config
from papertrader.web.static_files import StaticFiles
from papertrader.worker.auth_tunnel import AuthTunnel
from papertrader.worker.cache import QuoteCache
from papertrader.worker.client_handler import ClientHandler
from papertrader.worker.client_management import ClientManager
from papertrader.worker.forwarding import Commands, UserData
from papertrader.worker.history import PriceHistory
from papertrader.worker.history_cache import HistoryCache
from papertrader.worker.link import Link, LinkIdentity
from papertrader.worker.link_relay import LinkRelayServer, RelayLink, relay_path
from papertrader.worker.master_link import MasterLink
from papertrader.worker.order_sender import OrderSender
from papertrader.worker.orders import OrderDesk, order_wait_timeout
from papertrader.worker.outcome_inbox import OutcomeInbox
from papertrader.worker.processes import (
    ServingProcesses,
    process_count,
    reuse_port_listener,
    watch_parent,
)
from papertrader.worker.session_cache import SessionCache
from papertrader.worker.startup import (
    WorkerStartError,
    link_handshake,
    make_redis,
    ports_tls,
    redis_url_for,
)

#: Seconds given to connected clients to finish their current request at shutdown.
STOP_GRACE = 5.0


class Worker:
    """One worker server: its modules, started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        state_dir: Path | None = None,
        *,
        process_index: int = 0,
        relay: Path | None = None,
    ) -> None:
        """``relay``: with several processes (``processes.py``), process 0 serves the master
        link to the others there, and the others (``process_index`` > 0) use it."""
        self.settings = settings
        self.redis = redis_client
        self.process_index = process_index
        #: Ports shared with this worker's other processes (SO_REUSEPORT).
        self.reuse_port = relay is not None
        self.tls, link_tls = ports_tls(settings, state_dir)
        self.started_at = datetime.now(timezone.utc)
        self._started = time.monotonic()
        self.cache = QuoteCache(
            QuoteStore(redis_client),
            settings.assets,
            settings.update_interval,
            settings.max_data_size,
        )
        #: The web port speaks TLS with the client port's certificate (https://, wss://).
        web_tls = self.tls.context if self.tls is not None else None
        self.web_origin = (
            settings.web_origin(tls=web_tls is not None) if settings.web_enabled else ""
        )
        identity = LinkIdentity(
            worker_uuid=settings.worker_id,
            name=settings.worker_name,
            region=settings.region,
            client_address=settings.worker_client_address,
            web_origin=self.web_origin,
        )
        self.keyring: Keyring | None = None
        self.relay_server: LinkRelayServer | None = None
        self.link: Link
        if process_index > 0 and relay is not None:  # no key here: process 0 holds the link
            self.link = RelayLink(
                relay,
                identity,
                on_refused=self._out_of_service,
                on_session_key=self._session_key,
            )
        else:
            self.keyring, handshake = link_handshake(settings, state_dir)
            self.link = master_link = MasterLink(
                settings.master_addresses,
                identity,
                heartbeat_interval=max(1.0, settings.update_interval),
                max_data_size=settings.max_data_size,
                authenticate=handshake,
                status=self.status,
                on_refused=self._out_of_service,
                ssl_context=link_tls,
                on_session_key=self._session_key,
            )
            if relay is not None:
                self.relay_server = LinkRelayServer(master_link, relay)
        self.sessions = SessionCache(
            SessionStore(
                redis_client,
                settings.session_ttl_seconds,
                settings.session_remember_ttl_seconds,
                settings.session_ip_check,
                require_signature=True,  # the key arrives over the master link
            ),
            redis_client,
        )
        self.clients = ClientManager(self.sessions)
        self.outcomes = OutcomeInbox(redis_client)
        self.order_sender = OrderSender(
            OrderQueue(
                redis_client,
                replicas=settings.redis_min_replicas_ack,
                replica_timeout=settings.redis_replica_ack_timeout,
            ),
            PendingOrders(redis_client, settings.max_pending_orders_per_account),
        )
        handler = ClientHandler(
            settings,
            self.clients,
            self.cache,
            AuthTunnel(
                self.link,
                self.clients,
                gate=AuthGate.from_settings(redis_client, settings),
                accounts=AccountGate.from_settings(redis_client, settings),
            ),
            OrderDesk(
                self.order_sender,
                self.outcomes,
                self.cache,
                settings.worker_name,
                order_wait_timeout(settings.update_interval),
                settings.max_order_quantity,
                settings.update_interval,
                settings.max_pending_orders_per_account,
            ),
            UserData(self.link, max_chunk_size(settings.max_data_size)),
            PriceHistory(
                self.link,
                HistoryCache(
                    redis_client,
                    settings.history_cache_bytes,
                    shared_max_bytes=settings.history_shared_cache_bytes,
                ),
                self.cache,
                max_chunk_size(settings.max_data_size),
                settings.update_interval,
            ),
            Commands(self.link),
        )
        handler.out_of_service = lambda: self.link.out_of_service
        self.handler = handler
        handle: Any = handler
        if self.tls is not None:
            refusal = plaintext_refusal(settings.max_data_size)
            handle = TlsAcceptor(handler, self.tls.context, refusal, "client port")
        self.server = StreamServer((settings.worker_host, settings.worker_port), handle)
        self.metrics_server: MetricsServer | None = None
        self.web: WebServer | None = None
        self.directory: WorkerDirectory | None = None
        if settings.web_enabled:
            policy = OriginPolicy(self.web_origin, settings.web_origins)
            self.web = WebServer(
                (settings.web_host or settings.worker_host, settings.web_port),
                handler,
                policy,
                web_tls,
                settings.max_data_size,
                StaticFiles(generated={"/config.json": page_config(settings, self.web_origin)}),
            )
            self.directory = WorkerDirectory(self.link, policy)
            self.web.directory = self.directory
        self._greenlets: list[gevent.Greenlet] = []
        self._stopped = gevent.event.Event()

    def _session_key(self, raw: bytes) -> None:
        """The master's session-signing public key, from the sealed link: from now on
        every session record read is checked against it."""
        try:
            verifier = SessionVerifier.from_bytes(raw)
        except ValueError:
            logger.error("the master sent a session key that is not an Ed25519 public key")
            return
        store = self.sessions.store
        if store.verifier is not None and store.verifier.raw() != raw:
            logger.warning("the master's session key changed: sessions signed before are refused")
            self.sessions.clear()
        store.set_verifier(verifier)

    def _set_web_origin(self, origin: str) -> None:
        """The page's origin once known: announced on the link, allowed on the upgrade."""
        self.web_origin = origin
        self.link.identity = dataclasses.replace(self.link.identity, web_origin=origin)
        if self.web is not None and self.directory is not None:
            policy = OriginPolicy(origin, self.settings.web_origins)
            self.web.origins = self.directory.policy = policy
            self.web.static.files["/config.json"] = StaticFiles.entry(
                page_config(self.settings, origin), ".json"
            )

    def status(self) -> dict[str, Any]:
        """Live figures for `pt workers info` (asked by the master over the link)."""
        updated = self.cache.updated_at
        age = None
        if updated is not None:
            age = int((datetime.now(timezone.utc) - updated).total_seconds())
        return {
            "name": self.settings.worker_name,
            "region": self.settings.region,
            "started_at": self.started_at,
            "uptime_seconds": int(time.monotonic() - self._started),
            "clients": self.clients.count,
            "logged_in": self.clients.logged_in,
            "cache_updated_at": updated,
            "cache_age_seconds": age,
            "link_connections": self.link.connections,
            "tls": "on" if self.tls is not None else "off (tls = false)",
            **(self.tls.status() if self.tls is not None else {}),
        }

    def health(self) -> tuple[bool, dict[str, Any]]:
        """What /healthz says: failing while out of service or without Redis (clients
        would get nothing); a master link that is down is shown but is not a failure,
        since quotes, resumes and logouts are still served."""
        problems: list[str] = []
        if self.link.out_of_service:
            problems.append(f"out of service: {self.link.out_of_service}")
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            problems.append(f"Redis unreachable: {exc}")
        updated = self.cache.updated_at
        return not problems, {
            "role": "worker",
            "name": self.settings.worker_name,
            "clients": self.clients.count,
            "master_link": "up" if self.link.connected else "down",
            "quotes_updated_at": updated,
            "problems": problems,
        }

    def _start_metrics(self) -> None:
        """Gauges read at scrape time, the build info, and the HTTP endpoint if enabled."""
        settings = self.settings
        metrics.WORKER_INFO.labels(metrics.version(), "worker", settings.worker_name).set(1)
        metrics.CLIENT_CONNECTIONS_OPEN.set_function(lambda: self.clients.count)
        metrics.MASTER_LINK_UP.set_function(lambda: 1 if self.link.connected else 0)
        metrics.read_at_scrape(metrics.QUOTE_CACHE_AGE, self._quote_age)
        if not settings.metrics_enabled:
            return
        server = MetricsServer(
            settings.metrics_host, settings.metrics_port, metrics.WORKER, self.health
        )
        try:
            server.start()
        except OSError as exc:
            where = join_host_port(settings.metrics_host, settings.metrics_port)
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise WorkerStartError(
                f"cannot listen for metrics on {where}: {why} (metrics_port, or "
                "metrics_enabled = false)"
            ) from None
        self.metrics_server = server
        logger.info(f"metrics and health on http://{join_host_port(*server.address)}/metrics")

    def _quote_age(self) -> float | None:
        updated = self.cache.updated_at
        return None if updated is None else (datetime.now(timezone.utc) - updated).total_seconds()

    @property
    def metrics_address(self) -> str | None:
        return None if self.metrics_server is None else join_host_port(*self.metrics_server.address)

    def _out_of_service(self, reason: str) -> None:
        """The master refused or booted us: our clients must go to another worker."""
        logger.warning(f"the master refused this worker ({reason}): not serving clients")
        self.handler.shed(reason)

    @property
    def address(self) -> tuple[str, int]:
        """Where the server listens (the real port when configured with port 0)."""
        host, port = self.server.address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind, load quotes, start the link, serve. WorkerStartError if the port is unusable."""
        settings = self.settings
        try:
            if self.reuse_port:
                self.server.set_listener(
                    reuse_port_listener(settings.worker_host, settings.worker_port)
                )
            self.server.init_socket()  # bind first: a taken port fails before anything starts
        except OSError as exc:
            where = join_host_port(settings.worker_host, settings.worker_port)
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise WorkerStartError(f"cannot listen on {where}: {why}") from None
        self._start_metrics()
        if self.web is not None:
            try:
                if self.reuse_port:
                    host = settings.web_host or settings.worker_host
                    self.web.server.set_listener(reuse_port_listener(host, settings.web_port))
                self.web.init_socket()
            except OSError as exc:
                host = settings.web_host or settings.worker_host
                why = os.strerror(exc.errno) if exc.errno else str(exc)
                raise WorkerStartError(
                    f"cannot listen for the web page on {join_host_port(host, settings.web_port)}: "
                    f"{why} (set web_port, or web_enabled = false)"
                ) from None
            if settings.web_port == 0:  # any free port: the origin names the one we got
                self._set_web_origin(settings.web_origin(self.web.tls, self.web.address[1]))
        self.cache.start()
        self.sessions.start()
        if self.cache.loaded:
            known = len(self.cache.known_symbols)
            logger.info(f"{known} assets known, quotes of {self.cache.updated_at}")
        self.link.start()
        if self.relay_server is not None:
            self.relay_server.start()
        self.server.start()
        if self.web is not None and self.directory is not None:
            self.web.start()
            self._greenlets.append(gevent.spawn(self.directory.run, self._stopped))
            logger.info(
                f"web page at {self.web_origin}/ (listening on "
                f"{join_host_port(*self.web.address)}, {self.web.static.total_bytes // 1024} KiB)"
            )
        logger.info(
            f"worker {settings.worker_name} (uuid {settings.worker_id}, region {settings.region}) "
            f"listening for clients on {join_host_port(*self.address)} "
            f"({'TLS' if self.tls is not None else 'plaintext'}), "
            f"advertised as {settings.worker_client_address}; "
            f"master at {self.link.where}"
        )

    def stop(self) -> None:
        """Stop listening, let clients finish briefly, drop the link; idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        logger.info(f"worker {self.settings.worker_name} stopping ({self.clients.count} clients)")
        if self.web is not None:
            self.web.stop(timeout=STOP_GRACE)
        self.server.stop(timeout=STOP_GRACE)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        if self.relay_server is not None:
            self.relay_server.stop()
        self.link.stop()
        self.cache.stop()
        self.sessions.stop()
        self.order_sender.stop()
        self.outcomes.stop()
        self.redis.close()
        self.redis.connection_pool.disconnect()
        if self.keyring is not None:
            self.keyring.stop_agent()
        logger.info(f"worker {self.settings.worker_name} stopped")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` has been called; True if it has."""
        return bool(self._stopped.wait(timeout))


def run_worker(
    settings: Settings,
    state_dir: Path | None = None,
    *,
    command: list[str] | None = None,
    process_index: int = 0,
    relay: Path | None = None,
) -> None:
    """Run a worker until SIGTERM or SIGINT (the body of ``pt worker run``).

    ``command`` is how this worker was started (``pt worker run`` passes it): with
    it, process 0 starts ``worker_processes`` - 1 more processes serving the same
    ports (``processes.py``), each ``command`` plus its index and the relay's path.

    Problems the operator must fix (no Redis configured, port taken) are
    logged as one line and raised as WorkerStartError, without a traceback;
    anything else is a crash, logged with its traceback by ``crash_guard``.
    """
    log_file = log_file_for(settings, state_dir, settings.worker_name)
    install_logging_for(settings, log_file)
    failure: WorkerStartError | None = None
    if process_index == 0 and (settings.database_url or settings.database_owner_url):
        logger.warning(
            "this worker's settings hold a database URL, which no worker uses: remove it "
            "(a worker taken over would hand it out; docs/SECURITY.md, The database)"
        )
    state = resolve_state_dir(state_dir or settings.state_dir)
    count = process_count(settings) if command is not None and process_index == 0 else 1
    if count > 1:
        relay = relay_path(state / "run", settings.worker_name)
    try:
        with crash_guard():
            try:
                worker = Worker(
                    settings,
                    make_redis(redis_url_for(settings, state_dir), settings),
                    state_dir,
                    process_index=process_index,
                    relay=relay,
                )
                worker.start()
            except (WorkerStartError, ServicesError) as exc:
                logger.error(f"worker {settings.worker_name} not started: {exc}")
                failure = WorkerStartError(str(exc))
            else:
                if process_index > 0:  # process 0 announces the worker and stops us
                    watch_parent(lambda: os.kill(os.getpid(), signal.SIGTERM))
                    _serve_until_signalled(worker)
                    return
                children = None
                if count > 1 and command is not None and relay is not None:
                    children = ServingProcesses(count, _child_command(worker, command, relay))
                    children.start()
                with announced(
                    state,
                    settings.worker_name,
                    "worker",
                    join_host_port(*worker.address),
                    log_file,
                    metrics=worker.metrics_address,
                ):
                    _serve_until_signalled(worker, children)
    finally:
        uninstall_logging()  # flushes the held entries to the log file
    if failure is not None:
        raise failure


def _child_command(
    worker: Worker, command: list[str], relay: Path
) -> Callable[[int], tuple[list[str], dict[str, str]]]:
    """How process 0 starts process ``index``: same command and settings, on the ports
    process 0 bound (also when they were 0: any free port)."""

    def child(index: int) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        if worker.web is not None:
            env["PT_WEB_PORT"] = str(worker.web.address[1])
        env["PT_METRICS_ENABLED"] = "false"  # /metrics and /healthz are process 0's
        argv = [*command, "--port", str(worker.address[1])]
        return [*argv, "--process-index", str(index), "--relay", str(relay)], env

    return child


def _serve_until_signalled(worker: Worker, children: ServingProcesses | None = None) -> None:
    """Block until SIGTERM or SIGINT, then stop the worker (and its other processes)."""
    stop = gevent.event.Event()
    handlers = [
        gevent.signal_handler(signal.SIGTERM, stop.set),
        gevent.signal_handler(signal.SIGINT, stop.set),
    ]
    try:
        stop.wait()
        logger.info("stop signal received")
    finally:
        for handler in handlers:
            handler.cancel()
        if children is not None:
            children.stop()
        worker.stop()
