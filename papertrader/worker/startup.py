"""What a worker needs before it can start, each failing with one line for the operator.

Its Redis client (its own Redis user's URL: ``redis_url_for``), its TLS for
the client and web ports and the context that verifies the master (``ports_tls``),
its key and the master's pinned key (``link_handshake``). A
missing or wrong piece raises ``WorkerStartError`` saying what to do, never a
traceback (``run_worker`` in ``main.py`` logs it and exits).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import redis
from loguru import logger

from papertrader.config import Settings
from papertrader.config.settings import split_host_port
from papertrader.keyring import Keyring, KeyringError, worker_home
from papertrader.services import resolve_state_dir, resolve_urls
from papertrader.store.redis_connect import RedisConfigError, connect
from papertrader.store.redis_users import read_url_file, url_file, worker_user
from papertrader.tls.contexts import TlsConfigError
from papertrader.tls.setup import ServerTls, peer_context, server_tls
from papertrader.worker.handshake import WorkerHandshake

#: Redis connections one worker may hold: one per greenlet in a Redis command at once
#: (clients waiting for orders share one: ``outcome_inbox.py``).
REDIS_MAX_CONNECTIONS = 1024
#: A greenlet finding every Redis connection busy waits this long before failing.
REDIS_POOL_TIMEOUT = 20.0
REDIS_CONNECT_TIMEOUT = 5.0


class WorkerStartError(RuntimeError):
    """The worker cannot start (no Redis configured, port taken...): a message for the operator."""


def redis_url_for(settings: Settings, state_dir: Path | None) -> str:
    """The worker's own Redis user: ``redis_url_file`` (written by `pt workers register`),
    else the configured Redis, else the one `pt services up` recorded."""
    if settings.redis_url_file is not None:
        try:
            return read_url_file(settings.redis_url_file)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise WorkerStartError(
                f"cannot read the worker's Redis URL from {settings.redis_url_file}: {exc}"
            ) from None
    if settings.redis_url:
        return settings.redis_url
    directory = resolve_state_dir(state_dir if state_dir is not None else settings.state_dir)
    own = url_file(directory, worker_user(settings.worker_name))
    if own.exists():  # written by `pt up` / `pt workers register` on this host
        return redis_url_for(settings.with_overrides(redis_url_file=own), state_dir)
    logger.warning(
        "no Redis user of this worker (redis_url_file): using the operator's Redis user of "
        f"the private services; `pt workers register {settings.worker_name}` makes one"
    )
    return resolve_urls(settings, state_dir).redis_url


def make_redis(url: str, settings: Settings) -> redis.Redis:
    """A client whose pool makes greenlets wait for a free connection instead of failing
    (store/redis_connect.py: the primary the Sentinels name, or the URL's server); over
    ``rediss://`` it verifies the server with ``tls_ca`` unless the URL names a CA."""
    try:
        return connect(
            url,
            settings,
            max_connections=REDIS_MAX_CONNECTIONS,
            pool_timeout=REDIS_POOL_TIMEOUT,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        )
    except RedisConfigError as exc:
        raise WorkerStartError(str(exc)) from None


def ports_tls(
    settings: Settings, state_dir: Path | None
) -> tuple[ServerTls | None, ssl.SSLContext | None]:
    """The client (and web) ports' TLS and the context the master is verified with."""
    state = resolve_state_dir(state_dir if state_dir is not None else settings.state_dir)
    listen = [settings.worker_host]
    if settings.web_enabled:
        listen.append(settings.web_host or settings.worker_host)
    try:
        names = [split_host_port(settings.worker_client_address)[0]]
        own = server_tls(settings, state, settings.worker_name, listen, names)
        return own, peer_context(settings, state)
    except TlsConfigError as exc:
        raise WorkerStartError(str(exc)) from None


def link_handshake(settings: Settings, state_dir: Path | None) -> tuple[Keyring, WorkerHandshake]:
    """The worker's key and the pinned master key, or WorkerStartError saying what to do."""
    if settings.master_fingerprint is None:
        raise WorkerStartError(
            "master_fingerprint is not set: give the worker the fingerprint "
            "`pt master keygen` printed on the master host (PT_MASTER_FINGERPRINT)"
        )
    home = worker_home(settings, state_dir)
    hint = (
        f"make the worker's key with `pt workers keygen --home {home} --name "
        f"{settings.worker_name}` and register it on the master (or set worker_gnupg_home)"
    )
    if not home.is_dir():
        raise WorkerStartError(f"no worker key: GnuPG home {home} does not exist; {hint}")
    try:
        keyring = Keyring(home)
        own = keyring.own_fingerprint(settings.worker_key_fingerprint)
    except KeyringError as exc:
        raise WorkerStartError(f"worker key: {exc}; {hint}") from None
    handshake = WorkerHandshake(
        keyring, own, settings.master_fingerprint, settings.worker_id, settings.max_data_size
    )
    return keyring, handshake
