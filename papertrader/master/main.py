"""The master's main module (spec 3.1.1): start everything, serve, stop cleanly.

``Master`` owns the parts: the PostgreSQL pool, the Redis client, the quote
book, the worker registry, the StreamServer on the master port, and the
greenlets (the market update + order drain loop, the link watchdog...). Only
the active master runs those loops; a standby (another master holds the
leader lock, ``master/leadership.py``) listens, refuses worker links with the
active master's address, answers getWorkerList, and takes over when the lock
comes free.
``run_master`` is the process around it: logging, signals, crash dump.
The process must be gevent-patched before anything network-related is
imported (``pt master run`` does it).
"""

from __future__ import annotations

import errno
import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.pool
import psycopg2
import redis
from gevent.server import StreamServer
from loguru import logger

from papertrader import metrics
from papertrader.config import Settings
from papertrader.config.settings import join_host_port
from papertrader.keyring import Keyring, KeyringError, master_home
from papertrader.limits.pending_orders import PendingOrders
from papertrader.log import crash_guard, install_logging_for, log_file_for, uninstall_logging
from papertrader.mail.smtp import Mailer
from papertrader.market.providers import ProviderError, provider_from_settings
from papertrader.master import gc_tuning, trading_day
from papertrader.master.asset_retrieval import AssetRetrieval, QuoteBook
from papertrader.master.bcrypt_pool import BcryptPool
from papertrader.master.context import MasterContext
from papertrader.master.control import ControlListener
from papertrader.master.equity import EquityRecorder
from papertrader.master.handshake import MasterHandshake
from papertrader.master.leadership import Leadership
from papertrader.master.link_server import LinkServer
from papertrader.master.order_intake import OrderIntake
from papertrader.master.order_sessions import SessionCheck, mark_orders_before_sessions
from papertrader.master.redis_functions import load_functions
from papertrader.master.retention import RejectedOrdersPurge
from papertrader.master.transactions import TAKE_SHARE, OrderDrain
from papertrader.master.workers import WorkerRegistry, heartbeat_seconds
from papertrader.metrics_server import MetricsServer
from papertrader.oidc.discovery import ProviderDirectory
from papertrader.oidc.verify import IdTokenVerifier
from papertrader.services import ServicesError, ServiceUrls, resolve_state_dir, resolve_urls
from papertrader.stack.runfiles import announced
from papertrader.store import migrate, roles, session_signing
from papertrader.store.bars import ensure_assets
from papertrader.store.drain_status import DrainStatusStore
from papertrader.store.market_status import MarketStatusStore
from papertrader.store.master_epoch import Fenced
from papertrader.store.order_queue import OrderQueue
from papertrader.store.pg_tls import verified_url
from papertrader.store.pool import ConnectionPool, Cursor, PoolTimeout, make_cooperative
from papertrader.store.quotes import QuoteStore
from papertrader.store.redis_connect import RedisConfigError, connect
from papertrader.store.session_signing import SessionSigner
from papertrader.store.sessions import SessionStore
from papertrader.tls import plaintext_refusal
from papertrader.tls.accept import TlsAcceptor
from papertrader.tls.contexts import TlsConfigError
from papertrader.tls.setup import server_tls

DB_POOL_SIZE = 20
#: Connections to the replica that answers price history (database_read_url).
READ_POOL_SIZE = 8
REDIS_MAX_CONNECTIONS = 100
STOP_TIMEOUT = 30.0


def _read_only(cursor: Cursor) -> None:
    """The replica's pool writes nothing (a replica refuses anyway; a primary named by
    mistake must too)."""
    cursor.execute("SET TRANSACTION READ ONLY")


class MasterError(Exception):
    """The master cannot start; the message says why and what to do."""


class Master:
    """A master server in this (gevent) process: ``start()``, then ``stop()``."""

    def __init__(
        self, settings: Settings, urls: ServiceUrls, state_dir: Path | None = None
    ) -> None:
        self.settings = settings
        self.urls = urls
        try:
            self.tls = server_tls(
                settings, _state_dir(settings, state_dir), "master", [settings.master_host]
            )
        except TlsConfigError as exc:
            raise MasterError(str(exc)) from None
        self.keyring, self.fingerprint = _master_key(settings, state_dir)
        self._stop = gevent.event.Event()
        self._greenlets: list[gevent.Greenlet] = []
        self._server: StreamServer | None = None
        self.metrics_server: MetricsServer | None = None
        try:
            self.redis = connect(
                urls.master_redis_url or urls.redis_url,
                settings,
                max_connections=REDIS_MAX_CONNECTIONS,
                pool_timeout=20,
            )
        except RedisConfigError as exc:
            raise MasterError(str(exc)) from None
        self.leadership = Leadership(
            urls.database_url,
            self.redis,
            settings.master_lease_seconds,
            settings.master_link_address,
            on_active=self._take_over,
        )
        # Every transaction is fenced by the leadership (read-only while standby).
        self.pool = ConnectionPool(
            urls.database_url,
            size=DB_POOL_SIZE + settings.drain_lanes,  # the drain's lanes take one each
            begin=self.leadership.begin,
            on_connect=self.leadership.on_connect,
        )
        # Price history may come from a streaming replica (database_read_url): reads only.
        self.read_pool: ConnectionPool | None = None
        if settings.database_read_url is not None:
            self.read_pool = ConnectionPool(
                verified_url(settings.database_read_url, settings.tls_ca),
                size=READ_POOL_SIZE,
                begin=_read_only,
            )
        epoch = self._epoch
        self.quotes = QuoteBook()
        self.intake = OrderIntake(OrderQueue(self.redis))
        self.workers = WorkerRegistry(
            self.pool, self.redis, heartbeat_seconds(settings.update_interval)
        )
        self.context = MasterContext(
            settings=settings,
            pool=self.pool,
            redis=self.redis,
            sessions=SessionStore(
                self.redis,
                settings.session_ttl_seconds,
                settings.session_remember_ttl_seconds,
                settings.session_ip_check,
                signer=_session_signer(settings, state_dir),
                require_signature=True,
                replicas=settings.redis_min_replicas_ack,
                replica_timeout=settings.redis_replica_ack_timeout,
            ),
            quotes=self.quotes,
            workers=self.workers,
            oidc=IdTokenVerifier(
                ProviderDirectory(settings.oidc_providers),
                self.redis,
                settings.oidc_clock_skew_seconds,
                fresh_seconds=settings.oidc_fresh_seconds,
            ),
            mailer=Mailer(settings),
            intake=self.intake,
            bcrypt=BcryptPool(settings.bcrypt_threads, settings.bcrypt_queue),
            leadership=self.leadership,
            read_pool=self.read_pool,
        )
        close = trading_day.parse_clock(settings.market_close)
        session_check = SessionCheck(self.redis, self.context.sessions, settings.session_ip_check)
        self.intake.prepare = session_check.prepare  # sessions read as orders arrive
        self.drain = OrderDrain(
            OrderQueue(self.redis, epoch=epoch),
            self.pool,
            self.quotes.prices,
            status=DrainStatusStore(self.redis),
            intake=self.intake,
            day_end=lambda now: trading_day.day_order_end(now, close, settings.market_timezone),
            max_open=settings.max_open_orders,
            pending=PendingOrders(self.redis, settings.max_pending_orders_per_account),
            check=session_check,
            lanes=settings.drain_lanes,
            take_for=settings.update_interval * TAKE_SHARE,
        )
        self.purge = RejectedOrdersPurge(self.pool, settings.rejected_orders_retention_days)
        self.equity = EquityRecorder(
            self.pool, self.quotes.prices, settings.equity_snapshot_seconds
        )
        try:
            provider = provider_from_settings(settings)
        except ProviderError as exc:
            raise MasterError(str(exc)) from None
        self.retrieval = AssetRetrieval(
            settings.assets,
            settings.update_interval,
            provider,
            self.quotes,
            QuoteStore(self.redis, epoch=epoch),
            self.pool,
            after_update=self._after_update,
            status=MarketStatusStore(self.redis),
        )

    def _epoch(self) -> int | None:
        """This master's fencing token while active (Redis writes check it)."""
        return self.leadership.epoch

    def _after_update(self) -> None:
        """Each interval, after the prices: the order drain, then the equity record."""
        self.drain.run()
        self.equity.run()

    @property
    def address(self) -> tuple[str, int]:
        """Where the master listens (after ``start``)."""
        assert self._server is not None
        host, port = self._server.address[:2]
        return str(host), int(port)

    def _check_services(self) -> None:
        try:
            pending = migrate.pending_migrations(self.urls.database_url)
        except migrate.MigrationError as exc:
            detail = " ".join(str(exc).split())  # psycopg2 messages span lines
            raise MasterError(f"{detail}; is the database running (`pt services up`)?") from None
        if pending:
            raise MasterError(
                f"the database schema is not up to date ({len(pending)} migrations pending):"
                " run `pt db migrate`"
            )
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise MasterError(
                f"cannot reach Redis ({exc}); is it running (`pt services up`)?"
            ) from None

    def _prepare_active(self) -> None:
        """What only the active master writes before its loops start (raises MasterError)."""
        try:
            OrderQueue(self.redis).ensure_group()
            load_functions(self.redis)  # what the workers may run inside Redis (FCALL)
            mark_orders_before_sessions(self.redis)
        except redis.RedisError as exc:
            raise MasterError(f"cannot reach Redis ({exc})") from None
        try:
            ensure_assets(self.pool, self.settings.assets)
            self._warn_about_role()
        except (psycopg2.Error, PoolTimeout) as exc:
            detail = " ".join(str(exc).split())
            raise MasterError(f"cannot reach the database ({detail})") from None
        self.workers.clear_stale()
        self.retrieval.backfill()
        self.retrieval.seed()

    def _warn_about_role(self) -> None:
        """Say so when the database role could change the schema: an install of before
        the roles, or a URL of the owner's given to the master (it still runs)."""
        with self.pool.transaction() as cur:
            problems = roles.own_problems(cur)
        if problems:
            logger.warning(
                "the master's database role has more rights than it needs ({}): give it a "
                "role of its own and run `pt db migrate` (docs/OPERATIONS.md, Database roles)",
                "; ".join(problems),
            )

    def health(self) -> tuple[bool, dict[str, Any]]:
        """What /healthz says: failing when Redis or PostgreSQL cannot be reached (no
        login, order or drain can succeed); stale prices are shown, not a failure."""
        problems: list[str] = []
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            problems.append(f"Redis unreachable: {exc}")
        try:
            with self.pool.transaction() as cur:
                cur.execute("SELECT 1")
        except (psycopg2.Error, PoolTimeout) as exc:
            problems.append(f"PostgreSQL unreachable: {' '.join(str(exc).split())}")
        return not problems, {
            "role": "master",
            "active": self.leadership.active,
            "epoch": self.leadership.epoch,
            "linked_workers": len(self.workers.connected()),
            "prices_updated_at": self.quotes.snapshot().updated_at,
            "problems": problems,
        }

    def _start_metrics(self) -> None:
        """Gauges read at scrape time, the build info, and the HTTP endpoint if enabled."""
        settings = self.settings
        metrics.MASTER_INFO.labels(metrics.version(), "master", "master").set(1)
        metrics.LINKED_WORKERS.set_function(lambda: len(self.workers.connected()))
        metrics.read_at_scrape(metrics.MARKET_FEED_AGE, self._feed_age)
        if not settings.metrics_enabled:
            return
        server = MetricsServer(
            settings.metrics_host, settings.metrics_port, metrics.MASTER, self.health
        )
        try:
            server.start()
        except OSError as exc:
            where = join_host_port(settings.metrics_host, settings.metrics_port)
            raise MasterError(
                f"cannot listen for metrics on {where}: {exc.strerror or exc} (metrics_port, "
                "or metrics_enabled = false)"
            ) from None
        self.metrics_server = server
        logger.info("metrics and health on http://{}/metrics", join_host_port(*server.address))

    def _feed_age(self) -> float | None:
        updated = self.quotes.snapshot().updated_at
        return None if updated is None else (datetime.now(timezone.utc) - updated).total_seconds()

    @property
    def metrics_address(self) -> str | None:
        return None if self.metrics_server is None else join_host_port(*self.metrics_server.address)

    def start(self) -> None:
        """Check the services, listen; if the leader lock is free take over now (load the
        last quotes, start the loops), else serve as a standby until it comes free."""
        self._check_services()
        try:
            acquired = self.leadership.try_acquire()
        except (psycopg2.Error, redis.RedisError, Fenced) as exc:
            detail = " ".join(str(exc).split())
            raise MasterError(f"cannot ask PostgreSQL which master is active ({detail})") from None
        if acquired:
            self._prepare_active()
        host, port = self.settings.master_host, self.settings.master_port
        handshake = MasterHandshake(
            self.pool, self.keyring, self.fingerprint, self.settings.handshake_max_skew_seconds
        )
        handle: Any = LinkServer(self.context, handshake).handle
        if self.tls is not None:
            refusal = plaintext_refusal(self.settings.max_data_size)
            handle = TlsAcceptor(handle, self.tls.context, refusal, "master port")
        # A pool, not bare spawn: stop() can then wait for the connection greenlets.
        server = StreamServer(
            (host, port),
            handle,
            spawn=gevent.pool.Pool(self.settings.max_connections + 16),
        )
        try:
            server.start()
        except OSError as exc:
            hint = (
                "; another master (or program) uses that port: stop it or choose"
                " another with --port / master_port"
                if exc.errno == errno.EADDRINUSE
                else ""
            )
            self.leadership.close()
            raise MasterError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
            ) from None
        self._server = server
        self._start_metrics()
        self._greenlets = [
            gevent.spawn(self.leadership.run, self._stop),
            gevent.spawn(self.workers.run_watchdog, self._stop),
        ]
        listen_host, listen_port = self.address
        logger.info(
            "master listening on {}:{} ({}; {} assets, update interval {:g}s)",
            listen_host, listen_port, "TLS" if self.tls is not None else "plaintext",
            len(self.settings.assets), self.settings.update_interval,
        )  # fmt: skip
        logger.info("master key {} (workers pin it as master_fingerprint)", self.fingerprint)
        if acquired:
            self._start_loops()
        else:
            known = self.leadership.known
            logger.info(
                "standby: the active master is {} (epoch {}); taking over when it stops",
                (known.address or "unknown") if known else "unknown",
                known.epoch if known else "?",
            )  # fmt: skip

    def _start_loops(self) -> None:
        """The active master's work: prices and the drain, control requests, the intake."""
        self._greenlets += [
            gevent.spawn(self.retrieval.run, self._stop),
            gevent.spawn(ControlListener(self.redis, self.workers).run, self._stop),
            gevent.spawn(self.drain.intake.run, self._stop),
            gevent.spawn(self.purge.run, self._stop),
        ]
        self.leadership.serving = True

    def _take_over(self, epoch: int) -> None:
        """A standby got the lock (in the leadership greenlet's child): become active."""
        logger.warning("taking over as the active master (epoch {})", epoch)
        try:
            self._prepare_active()
        except MasterError as exc:
            self.leadership.lose(f"could not take over: {exc}")
            return
        if not self._stop.is_set() and not self.leadership.lost.is_set():
            self._start_loops()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop accepting, close the links, let a running update/drain finish, release."""
        if self._server is not None:
            self._server.close()
        self._stop.set()
        self.workers.close_all()
        if self._server is not None:
            self._server.stop(timeout=5)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        finished = gevent.joinall(self._greenlets, timeout=timeout)
        if len(finished) < len(self._greenlets):
            logger.warning("the market loop did not finish within {:g}s; stopping it", timeout)
            gevent.killall(self._greenlets, timeout=5)
        self.context.bcrypt.close()
        self.leadership.close()
        self.pool.close()
        if self.read_pool is not None:
            self.read_pool.close()
        self.redis.close()
        self.redis.connection_pool.disconnect()
        self.keyring.stop_agent()
        logger.info("master stopped")


def _master_key(settings: Settings, state_dir: Path | None) -> tuple[Keyring, str]:
    """The master's keyring and key fingerprint, or MasterError saying how to make one."""
    home = master_home(settings, state_dir)
    hint = f"make one with `pt master keygen --home {home}` (or set master_gnupg_home)"
    if not home.is_dir():
        raise MasterError(f"no master key: GnuPG home {home} does not exist; {hint}")
    try:
        keyring = Keyring(home)
        return keyring, keyring.own_fingerprint()
    except KeyringError as exc:
        raise MasterError(f"master key: {exc}; {hint}") from None


def _session_signer(settings: Settings, state_dir: Path | None) -> SessionSigner:
    """The key the master signs sessions with, beside its GnuPG key (made at first start)."""
    path = master_home(settings, state_dir) / session_signing.KEY_FILE
    try:
        return session_signing.load_or_create(path)
    except (OSError, ValueError) as exc:
        raise MasterError(f"session signing key {path}: {exc}") from None


def _state_dir(settings: Settings, state_dir: Path | None) -> Path:
    return resolve_state_dir(state_dir if state_dir is not None else settings.state_dir)


def run_master(settings: Settings, state_dir: Path | None = None) -> None:
    """Run a master until SIGTERM or SIGINT. Raises ``MasterError`` or ``ServicesError``
    (one line each, already logged) if it cannot start."""
    install_logging_for(settings, log_file_for(settings, state_dir, "master"))
    failure: str | None = None
    try:
        with crash_guard():
            try:
                urls = resolve_urls(settings, state_dir)
                make_cooperative()
                master = Master(settings, urls, state_dir)
                master.start()
                gc_tuning.tune()  # what start-up built lives as long as the process
            except (MasterError, ServicesError) as exc:
                logger.error("master cannot start: {}", exc)
                failure = str(exc)
            else:
                stopping = gevent.event.Event()
                for signum in (signal.SIGTERM, signal.SIGINT):
                    gevent.signal_handler(signum, stopping.set)
                # Losing the active role stops the process too (a supervisor restarts it:
                # it comes back as a standby).
                master.leadership.lost.rawlink(lambda _event: stopping.set())
                with announced(
                    _state_dir(settings, state_dir),
                    "master",
                    "master",
                    join_host_port(*master.address),
                    log_file_for(settings, state_dir, "master"),
                    metrics=master.metrics_address,
                ):
                    stopping.wait()
                    if master.leadership.lost.is_set():
                        failure = (
                            f"no longer the active master ({master.leadership.lost_reason});"
                            " start it again to serve as a standby"
                        )
                    else:
                        logger.info("stop requested; finishing the current interval")
                    master.stop()
    finally:
        uninstall_logging()
    if failure is not None:
        raise MasterError(failure)
