"""The one place a Redis client is built: a plain URL, or the primary the Sentinels name.

Every process (master, workers and their relay processes, the `pt` commands
that touch Redis, the metrics) calls :func:`connect`. Without Sentinel it is
``from_url`` as before. With ``redis_sentinels`` set it is redis-py's
``Sentinel(...).master_for(service)``: the URL still gives this process's own
Redis user and password, the logical database and TLS (``rediss://``), but
not where the primary is; the Sentinels say that.

What redis-py does on a failover (redis/sentinel.py): a connection asks the
Sentinels for the primary's address each time it connects; a command that
meets the demoted primary gets ``READONLY``, which the Sentinel connection
turns into a ``ConnectionError`` after dropping the socket, and a killed
primary gives a ``ConnectionError`` outright. Either way the next connection
asks the Sentinels again and lands on the new primary; the pool also drops
its idle connections once it sees the address change. So a caller's retry
after a ``ConnectionError`` is all a failover takes (the subscribers'
reconnect loops do that: worker/session_cache.py).

The Sentinels speak TLS when the data URL does (``rediss://``), verified with
the same CA (``tls_ca`` or the URL's ``ssl_ca_certs``), and are logged in to
with ``redis_sentinel_username`` and the password in
``redis_sentinel_password_file`` (0600, never logged).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel, SentinelConnectionPool

from papertrader.config.settings import Settings, redact_url
from papertrader.store.redis_tls import redis_tls_options

#: Seconds to reach one Sentinel; it answers from memory, so a slow one is a dead one.
SENTINEL_TIMEOUT = 2.0
#: Seconds a data node may take to answer before the connection counts as broken
#: (with Sentinel the next one asks the Sentinels again; without, the caller gets a
#: RedisError it answers as "unavailable" or "outcome unknown"): a primary cut off or
#: frozen answers nothing, and without a timeout its clients would wait on it for ever. Every
#: blocking command PaperTrader sends waits less (BLPOP slices of 2 s, XREADGROUP 1 s,
#: pub/sub polls 1 s, WAIT at most redis_replica_ack_timeout, 5 s).
NODE_TIMEOUT = 10.0


class RedisConfigError(ValueError):
    """The Redis or Sentinel configuration cannot be used; the message says why."""


class BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """A Sentinel pool whose greenlets wait for a free connection instead of failing
    with "Too many connections" (what the master and workers' BlockingConnectionPool
    does without Sentinel)."""


@dataclass(frozen=True)
class SentinelConfig:
    """Where the Sentinels are and how to log in to them (the password is never shown)."""

    addresses: tuple[tuple[str, int], ...]
    service: str
    username: str | None
    password: str | None

    def __repr__(self) -> str:
        shown = "'***'" if self.password is not None else "None"
        return (
            f"SentinelConfig(addresses={self.addresses!r}, service={self.service!r}, "
            f"username={self.username!r}, password={shown})"
        )


def read_secret_file(path: Path, what: str) -> str:
    """The first line of a 0600 file; RedisConfigError if others may read it or it is empty."""
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RedisConfigError(f"cannot read {what} from {path}: {exc}") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise RedisConfigError(f"{path} holds {what} but others may read it: chmod 600 {path}")
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise RedisConfigError(f"{path} is empty: it should hold {what}")
    return secret


def sentinel_config(settings: Settings) -> SentinelConfig | None:
    """The Sentinel configuration of ``settings``, None when it names no Sentinel."""
    addresses = settings.sentinel_addresses
    if not addresses:
        return None
    password = None
    if settings.redis_sentinel_password_file is not None:
        password = read_secret_file(
            settings.redis_sentinel_password_file, "the Sentinels' password"
        )
    return SentinelConfig(
        tuple(addresses),
        settings.redis_sentinel_service,
        settings.redis_sentinel_username,
        password,
    )


def _node_options(url: str, ca: Path | None) -> dict[str, Any]:
    """Connection options of the data nodes from ``url``, without its host and port."""
    try:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise RedisConfigError(f"the Redis URL cannot be used: {exc}") from None
    if "path" in options:
        raise RedisConfigError(
            "a unix:// Redis URL cannot be used with redis_sentinels: "
            "the Sentinels name the primary by host and port"
        )
    options.pop("host", None)
    options.pop("port", None)
    tls = options.pop("connection_class", None) is SSLConnection
    if tls:
        options["ssl"] = True
        # The URL's own options (ssl_ca_certs=...) win, as from_url lets them.
        options = {**redis_tls_options(url, ca), **options}
    return options


def _sentinel_options(config: SentinelConfig, node: dict[str, Any]) -> dict[str, Any]:
    """How to reach the Sentinels: their own login, the data nodes' TLS."""
    options: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
    }
    if config.username is not None:
        options["username"] = config.username
    if config.password is not None:
        options["password"] = config.password
    for key, value in node.items():
        if key == "ssl" or key.startswith("ssl_"):
            options[key] = value
    return options


def sentinel_manager(settings: Settings, url: str) -> Sentinel:
    """A redis-py Sentinel for ``settings`` (which must name Sentinels); the data nodes'
    options come from ``url``."""
    config = sentinel_config(settings)
    if config is None:
        raise RedisConfigError("redis_sentinels is not set")
    node = _node_options(url, settings.tls_ca)
    manager: Sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(config.addresses), sentinel_kwargs=_sentinel_options(config, node), **node
    )
    return manager


def connect(
    url: str,
    settings: Settings,
    *,
    max_connections: int | None = None,
    pool_timeout: float = 20.0,
    **options: Any,
) -> redis.Redis:
    """A client of the Redis primary as the user of ``url``.

    ``max_connections``: a pool of at most that many connections whose callers
    wait up to ``pool_timeout`` s for a free one (the servers'); None: an
    unbounded pool (short-lived `pt` commands). ``options`` go to every data
    connection (socket_timeout, retry...). ``tls_ca`` verifies a ``rediss://``
    server (and the Sentinels) unless the URL names a CA itself.
    """
    config = sentinel_config(settings)
    options.setdefault("socket_timeout", NODE_TIMEOUT)
    options.setdefault("socket_connect_timeout", NODE_TIMEOUT)
    if config is None:
        tls = redis_tls_options(url, settings.tls_ca)
        if max_connections is None:
            return redis.Redis.from_url(url, **tls, **options)
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout, **tls, **options
        )
        return redis.Redis(connection_pool=pool)
    manager = sentinel_manager(settings, url)
    if max_connections is not None:
        options.update(
            connection_pool_class=BlockingSentinelConnectionPool,
            max_connections=max_connections,
            timeout=pool_timeout,
        )
    primary: redis.Redis = manager.master_for(config.service, **options)  # type: ignore[no-untyped-call]
    return primary


def describe(url: str, settings: Settings) -> str:
    """Where ``connect`` goes, for logs: the masked URL, or the Sentinels and service."""
    if not settings.sentinel_addresses:
        return redact_url(url)
    return f"the primary of {settings.redis_sentinel_service!r} named by Sentinels " + (
        settings.redis_sentinels or ""
    )


def is_failover_error(exc: BaseException) -> bool:
    """Whether ``exc`` means "this primary is gone or demoted": reconnect and retry."""
    return isinstance(exc, (redis.ConnectionError, redis.ReadOnlyError, redis.TimeoutError))


def admin_nodes(url: str, settings: Settings, **options: Any) -> list[redis.Redis]:
    """Clients of every data node as the user of ``url``: the primary first, then each
    replica the Sentinels know of (none without Sentinel). For what does not replicate:
    ACL users (store/redis_users.py). A replica that is down is missed: run the command
    again once it is back."""
    primary = connect(url, settings, **options)
    config = sentinel_config(settings)
    if config is None:
        return [primary]
    manager = sentinel_manager(settings, url)
    node = {**_node_options(url, settings.tls_ca), **options}
    replicas = [
        redis.Redis(host=host, port=port, **node)
        for host, port in manager.discover_slaves(config.service)  # type: ignore[no-untyped-call]
    ]
    return [primary, *replicas]


#: Seconds between a subscriber's checks that it still listens to the primary.
FOLLOW_CHECK_SECONDS = 2.0


def on_primary(client: redis.Redis, connection: Any) -> bool:
    """Whether ``connection`` (a pub/sub's) still goes to the primary the Sentinels name.

    A killed primary breaks its subscribers' connections, and Sentinel kills the
    clients of a primary it demotes; but a primary cut off from the Sentinels keeps
    its subscribers, who would then hear nothing published on the new one. True
    without Sentinel, or when the Sentinels cannot be asked (nothing to compare).
    """
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool) or connection is None:
        return True
    try:
        address = pool.get_master_address()  # type: ignore[no-untyped-call]
    except (redis.ConnectionError, redis.TimeoutError):
        return True
    return (connection.host, int(connection.port)) == (address[0], int(address[1]))


class PrimaryMoved(redis.ConnectionError):
    """A subscriber's connection is no longer to the primary: subscribe again."""


def follows_failover(client: redis.Redis) -> bool:
    """Whether ``client`` reaches Redis through the Sentinels, so a broken connection is
    worth retrying: a new primary is on its way (without Sentinel nobody brings one)."""
    return isinstance(client.connection_pool, SentinelConnectionPool)
