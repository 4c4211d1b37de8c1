"""Planning a stack: everything that happens before the first child starts.

``prepare`` takes the resolved settings of one ``pt up`` and leaves a record
ready for the supervisor: the ports checked free, Redis and PostgreSQL
running (the private ones of the state directory unless both URLs are
configured), the schema migrated as its owner with the master's role granted
its rows (only the master gets a database URL, and it is that role's: the
workers get none), a key pair for the master and each worker
(GnuPG homes in the state directory, reused on later runs), the workers
registered on the master (their keys, allowed from this machine only), and
per child the exact command line and environment to start it with.

Each step is a function of its own; a new kind of preparation (TLS
certificates, per-process database roles or Redis users) is one more step
that adds files to the state directory and entries to a child's ``env``:
``certificates`` gives each server its certificate from the state
directory's private CA (``stack/certificates.py``). Under ``pt up --ha`` a
standby master shares the master's key pair and ``stack/ha.py`` adds the
replicated services.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from papertrader.config import Settings
from papertrader.config.settings import derive_worker_uuid, join_host_port
from papertrader.stack import ha, ha_redis
from papertrader.stack.certificates import certificates
from papertrader.stack.processes import probe_host
from papertrader.stack.record import Child, StackError, StackRecord, kept_environment, logs_dir

if TYPE_CHECKING:
    from papertrader.services import ServiceUrls

#: Where `pt up`'s own workers may link from: this machine.
LOCAL_WORKER_IPS = ("127.0.0.1/32", "::1/128")
#: How a child runs ``pt``: this interpreter and the installed CLI package.
PT_COMMAND = (sys.executable, "-m", "papertrader_cli")
#: One worker's identity in the caller's environment would be shared by all of ours.
PER_WORKER_VARIABLES = (
    "PT_WORKER_GNUPG_HOME",
    "PT_WORKER_KEY_FINGERPRINT",
    "PT_MASTER_FINGERPRINT",
    "PT_WORKER_NAME",
    "PT_WORKER_UUID",
    "PT_WORKER_ADVERTISE",
    "PT_WORKER_PORT",
    "PT_WEB_PORT",
    "PT_WEB_ADVERTISE",
)
#: Database URLs: the master gets its own role's; the owner's and the workers' none.
DATABASE_VARIABLES = ("PT_DATABASE_URL", "PT_DATABASE_OWNER_URL")

Say = Callable[[str], None]


@dataclass(frozen=True)
class StackOptions:
    """What one ``pt up`` was asked for, with every path already absolute."""

    settings: Settings
    state_dir: Path
    config_path: Path | None
    detached: bool
    timeout: float
    cwd: Path
    #: ``pt up --ha``: a standby master and replicated services (``stack/ha.py``).
    ha: bool = False
    #: The standby master's port under ``ha`` (None: the port below master_port).
    standby_port: int | None = None

    def masters(self) -> list[tuple[str, int]]:
        """Each master's name and port: "master", and "master-2" (the standby) with ``ha``."""
        first = ("master", self.settings.master_port)
        if not self.ha:
            return [first]
        standby = self.standby_port if self.standby_port is not None else first[1] - 1
        return [first, ("master-2", standby)]

    def worker_names(self) -> list[str]:
        return [f"worker-{i + 1}" for i in range(self.settings.workers)]

    def worker_ports(self) -> list[int]:
        return [self.settings.worker_port + i for i in range(self.settings.workers)]

    def metrics_ports(self) -> list[int]:
        """Each master's metrics port, then each worker's (none when metrics are off)."""
        settings = self.settings
        if not settings.metrics_enabled:
            return []
        count = len(self.masters()) + settings.workers
        return [settings.metrics_port + i for i in range(count)]

    @cached_property
    def web_ports(self) -> list[int]:
        """Each worker's web port: web_port, the next one, and so on (0: any free one
        each); none when the web client is off."""
        settings = self.settings
        if not settings.web_enabled:
            return []
        if settings.web_port == 0:
            from papertrader.services.ports import free_port

            return [free_port(probe_host(settings.web_host or settings.worker_host))
                    for _ in range(settings.workers)]  # fmt: skip
        return [settings.web_port + i for i in range(settings.workers)]


@dataclass(frozen=True)
class KeyPair:
    """A key pair the stack made (or found) in the state directory."""

    home: Path
    fingerprint: str
    public_key: str


def check_ports(options: StackOptions) -> None:
    """Every port the stack will listen on is free now (else StackError naming it)."""
    from papertrader.services.ports import port_is_free

    settings = options.settings
    ports = options.worker_ports()
    if ports[-1] > 65535:
        raise StackError(
            f"worker ports {ports[0]}-{ports[-1]} go past 65535: choose a lower --worker-port"
        )
    masters = options.masters()
    if not 1 <= masters[-1][1] <= 65535 or len({p for _, p in masters}) < len(masters):
        raise StackError(
            f"the standby master's port would be {masters[-1][1]}: choose one with --standby-port"
        )
    wanted = [(name, settings.master_host, port) for name, port in masters] + [
        (name, settings.worker_host, port)
        for name, port in zip(options.worker_names(), ports, strict=True)
    ]
    metrics_ports = options.metrics_ports()
    if metrics_ports and metrics_ports[-1] > 65535:
        raise StackError("metrics ports go past 65535: choose a lower metrics_port")
    names = [name for name, _ in masters] + options.worker_names()
    wanted += [
        (f"metrics of {name}", settings.metrics_host, port)
        for name, port in zip(names, metrics_ports, strict=False)
    ]
    web_host = settings.web_host or settings.worker_host
    for name, port in zip(options.worker_names(), options.web_ports, strict=False):
        if port > 65535:
            raise StackError(f"the web port of {name} would be {port}: choose a lower web_port")
        wanted.append((f"the web page of {name}", web_host, port))
    for what, host, port in wanted:
        if not port_is_free(port, probe_host(host)):
            raise StackError(
                f"port {port} on {host} (for {what}) is already in use; choose another port"
            )


def start_services_for(record: StackRecord, options: StackOptions, say: Say) -> ServiceUrls:
    """The Redis and PostgreSQL URLs: configured ones, else the private services (started).

    The record is saved before the services start, so a ``pt down`` after a
    crash right here still finds and stops them.
    """
    from papertrader.services import (
        ServicesError,
        resolve_urls,
        services_status,
        start_services,
    )
    from papertrader.stack.record import save_record

    settings = options.settings
    if settings.redis_url and settings.database_url:
        return resolve_urls(settings, options.state_dir)
    try:
        before = services_status(options.state_dir)
        already = bool(before["redis"]["running"] and before["postgres"]["running"])
        record.services_started = not already
        save_record(record)
        start_services(options.state_dir, timeout=options.timeout)
        urls = resolve_urls(settings, options.state_dir)
    except ServicesError as exc:
        raise StackError(str(exc)) from None
    say("services  running" + ("" if record.services_started else " (already were)"))
    return urls


def migrate_schema(urls: ServiceUrls, say: Say) -> None:
    """Apply the migrations not yet applied, as the owner; grant the master's role."""
    from papertrader.store import migrate as schema
    from papertrader.store.roles import master_role_for

    master_role = master_role_for(urls.owner_url, urls.database_url)
    try:
        applied = schema.migrate(urls.owner_url, master_role=master_role)
    except schema.MigrationError as exc:
        raise StackError(str(exc)) from None
    if applied:
        say(f"schema    applied {', '.join(applied)}")
    if master_role is None:
        say("schema    note: the master logs in as the schema's owner (one database URL)")


def key_pair(home: Path, name: str, say: Say) -> KeyPair:
    """The key pair in ``home``, made on the first run (GnuPG home 0700)."""
    from papertrader.keyring import Keyring, KeyringError

    try:
        keyring = Keyring(home, create=True)
        try:
            existing = keyring.secret_fingerprints()
            fingerprint = existing[0] if existing else keyring.generate(name)
            public = keyring.export_public(fingerprint).decode("ascii")
        finally:
            keyring.stop_agent()
    except KeyringError as exc:
        raise StackError(f"key of {name}: {exc}") from None
    if not existing and keyring.gpg_home != keyring.home:
        say(f"keys      {home} is reached through {keyring.gpg_home} (short path for gpg-agent)")
    return KeyPair(home, fingerprint, public)


def register_workers(
    database_url: str, workers: list[tuple[str, uuid.UUID, KeyPair, str]], region: str
) -> None:
    """Allow our workers on the master, with their keys, from this machine only, pinned
    to their client addresses and region (idempotent on the name: re-runs update the
    row, an operator's disable stays)."""
    import psycopg2

    from papertrader.store.pool import ConnectionPool
    from papertrader.store.workers import WorkerConflict, register_worker

    pool = ConnectionPool(database_url, size=1)
    name = ""
    try:
        for name, worker_id, key, address in workers:
            register_worker(
                pool, name, worker_id, region, key.public_key, key.fingerprint, LOCAL_WORKER_IPS,
                address,
            )  # fmt: skip
    except WorkerConflict as exc:
        raise StackError(f"registering {name}: {exc}") from None
    except psycopg2.Error as exc:
        raise StackError(f"registering the workers in PostgreSQL: {exc}".strip()) from None
    finally:
        pool.close()


def redis_users_for(
    admin_url: str,
    state_dir: Path,
    names: list[str],
    tls_ca: Path | None = None,
    settings: Settings | None = None,
) -> dict[str, Path]:
    """Each worker's own Redis user (``store/redis_users.py``), its URL in a 0600 file of
    the state directory; the files by worker name. Re-runs keep the passwords. With
    ``settings`` naming Sentinels the users are made on the primary and every replica
    (ACL users do not replicate)."""
    import redis

    from papertrader.store import redis_users
    from papertrader.store.redis_connect import RedisConfigError, admin_nodes

    where = settings if settings is not None else Settings(tls_ca=tls_ca)
    try:
        admin = admin_nodes(admin_url, where, socket_connect_timeout=5)
    except (RedisConfigError, redis.RedisError) as exc:
        raise StackError(f"making the workers' Redis users: {exc}") from None
    files: dict[str, Path] = {}
    try:
        for name in names:
            user = redis_users.worker_user(name)
            files[name] = redis_users.url_file(state_dir, user)
            redis_users.provision(admin, admin_url, user, redis_users.WORKER_RULES, files[name])
    except (redis.RedisError, redis_users.UsersUnavailable) as exc:
        raise StackError(
            f"making the workers' Redis users: {exc} (the Redis URL must be its admin user's)"
        ) from None
    finally:
        for node in admin:
            node.close()
    return files


def base_environment(options: StackOptions, redis_url: str) -> dict[str, str]:
    """What every child gets: the caller's settings plus the stack's resolved ones.

    No database URL: the master's is added to its own environment only.
    """
    settings = options.settings
    dropped = (*PER_WORKER_VARIABLES, *DATABASE_VARIABLES)
    env = {k: v for k, v in kept_environment(os.environ).items() if k not in dropped}
    env.update(
        {
            "PT_REDIS_URL": redis_url,
            "PT_STATE_DIR": str(options.state_dir),
            "PT_MASTER_HOST": settings.master_host,
            "PT_MASTER_PORT": str(settings.master_port),
            "PT_UPDATE_INTERVAL": repr(settings.update_interval),
            "PT_MARKET_PROVIDER": settings.market_provider,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if options.config_path is not None:
        env["PT_CONFIG"] = str(options.config_path)
    else:
        env.pop("PT_CONFIG", None)
    return env


def _child(
    options: StackOptions,
    name: str,
    role: str,
    args: list[str],
    env: dict[str, str],
    host: str,
    port: int,
    worker_uuid: str | None = None,
    metrics_port: int | None = None,
) -> Child:
    logs = logs_dir(options.state_dir)
    metrics = None
    if metrics_port is not None:
        env = {**env, "PT_METRICS_PORT": str(metrics_port)}
        metrics = join_host_port(probe_host(options.settings.metrics_host), metrics_port)
    log = logs / f"{name}.log"
    common = ["--log-file", str(log), "--state-dir", str(options.state_dir)]
    if options.config_path is not None:
        common += ["--config", str(options.config_path)]
    return Child(
        name=name,
        role=role,
        argv=[*PT_COMMAND, *args, *common],
        # One file per process: no copy of the entries on stderr, whose raw output (what
        # is printed before logging starts) is appended to the same log file.
        env={**env, "PT_LOG_FILE": str(log), "PT_LOG_STDERR": "false"},
        cwd=str(options.cwd),
        host=host,
        port=port,
        log=str(log),
        console=str(log),
        uuid=worker_uuid,
        metrics=metrics,
    )


def plan_children(
    options: StackOptions,
    env: dict[str, str],
    master_key: KeyPair,
    worker_keys: dict[str, KeyPair],
    database: dict[str, str],
    worker_redis: dict[str, Path] | None = None,
) -> list[Child]:
    """The masters and the workers, each with its command line and environment (the
    masters' alone with a database URL, ``database``: their role's). Every master shares
    one key pair (``master_key``); every worker names every master. A worker gets no
    Redis URL of the stack: only the file holding its own Redis user's
    (``worker_redis``, PT_REDIS_URL_FILE)."""
    settings = options.settings
    masters = options.masters()
    metrics_ports: list[int | None] = [*options.metrics_ports()]
    metrics_ports += [None] * (len(masters) + settings.workers - len(metrics_ports))
    children = [
        _child(
            options,
            name,
            "master",
            ["master", "run", "--host", settings.master_host, "--port", str(port)],
            {**env, "PT_MASTER_GNUPG_HOME": str(master_key.home), **database},
            settings.master_host,
            port,
            metrics_port=metrics_ports[index],
        )
        for index, (name, port) in enumerate(masters)
    ]
    master_args = [
        arg
        for _, port in masters
        for arg in ("--master", join_host_port(probe_host(settings.master_host), port))
    ]
    workers = zip(
        options.worker_names(), options.worker_ports(), metrics_ports[len(masters) :], strict=True
    )
    web_ports = options.web_ports
    # Every core, shared by the workers of this host (worker_processes: one per core).
    processes = settings.worker_processes or max(1, (os.cpu_count() or 1) // settings.workers)
    for index, (name, port, metrics_port) in enumerate(workers):
        worker_id = str(derive_worker_uuid(name))
        key = worker_keys[name]
        web: dict[str, str] = {}
        if web_ports:
            web["PT_WEB_PORT"] = str(web_ports[index])
        own_redis: dict[str, str] = {}
        if worker_redis is not None:
            own_redis["PT_REDIS_URL_FILE"] = str(worker_redis[name])
        children.append(
            _child(
                options,
                name,
                "worker",
                ["worker", "run", "--name", name, "--uuid", worker_id,
                 "--region", settings.region, "--host", settings.worker_host,
                 "--port", str(port), *master_args, "--processes", str(processes)],
                {
                    **{k: v for k, v in env.items() if worker_redis is None or k != "PT_REDIS_URL"},
                    **own_redis,
                    "PT_WORKER_GNUPG_HOME": str(key.home),
                    "PT_WORKER_KEY_FINGERPRINT": key.fingerprint,
                    "PT_MASTER_FINGERPRINT": master_key.fingerprint,
                    **web,
                },
                settings.worker_host,
                port,
                worker_uuid=worker_id,
                metrics_port=metrics_port,
            )
        )  # fmt: skip
    for child, web_port in zip(children[len(masters) :], web_ports, strict=False):
        worker_settings = settings.with_overrides(worker_port=child.port, web_port=web_port)
        child.web = worker_settings.web_origin(tls=settings.tls)
    return children


def prepare(record: StackRecord, options: StackOptions, say: Say) -> None:
    """Services, schema, keys, registration and the children's recipes, into ``record``."""
    from papertrader.keyring import master_home, worker_home

    settings = options.settings
    if options.ha:
        ha.refuse_configured_services(settings)
        ha.start_recorded_replica(options)
    urls = start_services_for(record, options, say)
    # Under --ha the replica runs before the first commit: commits wait for it.
    database = ha.replicated_database(options, say) if options.ha else {}
    # Under --ha every process reaches Redis through the Sentinels.
    redis_env = ha_redis.replicated_redis(options, say) if options.ha else {}
    redis_settings = settings.with_overrides(**ha_redis.as_settings(redis_env))
    migrate_schema(urls, say)
    master_key = key_pair(master_home(settings, options.state_dir), "papertrader-master", say)
    names = options.worker_names()
    worker_keys = {
        name: key_pair(
            worker_home(settings.with_overrides(worker_name=name), options.state_dir), name, say
        )
        for name in names
    }
    addresses = {
        name: join_host_port(settings.worker_host, port)
        for name, port in zip(names, options.worker_ports(), strict=True)
    }
    register_workers(
        urls.database_url,
        [(name, derive_worker_uuid(name), worker_keys[name], addresses[name]) for name in names],
        settings.region,
    )
    worker_redis = redis_users_for(
        urls.redis_url, options.state_dir, names, settings.tls_ca, redis_settings
    )
    say(f"keys      master {master_key.fingerprint}; {len(names)} workers registered")
    tls_files = certificates(options, say)
    env = {**base_environment(options, urls.master_redis_url or urls.redis_url), **redis_env}
    record.children = plan_children(
        options,
        env,
        master_key,
        worker_keys,
        {"PT_DATABASE_URL": urls.database_url, **database},
        worker_redis,
    )
    for child in record.children:
        child.env.update(tls_files.get(child.name, {}))
