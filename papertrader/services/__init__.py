"""Private Redis and PostgreSQL for local use: ``pt services up`` and friends.

A developer or a single-machine deployment should not need to install,
configure and secure two database servers by hand. ``start_services`` starts
a private ``redis-server`` and PostgreSQL cluster on free 127.0.0.1 ports,
with random passwords, keeping their data in a state directory, and records
their URLs there. ``resolve_urls`` is how every other command finds them:
configured URLs (``PT_REDIS_URL`` / ``PT_DATABASE_URL`` /
``PT_DATABASE_OWNER_URL``) win; otherwise the recorded ones are used.

The cluster's superuser only makes the roles and the database: the master
gets the master role's URL, migrations the owner's (``store/roles.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from papertrader.services import postgres_cluster, redis_server
from papertrader.services.binaries import check_all, find_binary, find_postgres_binaries
from papertrader.services.errors import ServicesError
from papertrader.services.state import (
    default_state_dir,
    ensure_private_dir,
    load_state,
    locked,
    mask_url,
    resolve_state_dir,
    save_state,
    state_file,
)
from papertrader.store.pg_tls import verified_url

__all__ = [
    "ServiceSettings",
    "ServiceUrls",
    "ServicesError",
    "default_state_dir",
    "destroy_services",
    "mask_url",
    "prepare_database_roles",
    "read_service_urls",
    "resolve_state_dir",
    "resolve_urls",
    "services_status",
    "start_services",
    "stop_services",
]

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class ServiceUrls:
    """Where Redis and PostgreSQL are. The URLs hold passwords; ``repr`` masks them.

    ``database_url`` is the master's (its own role), ``database_owner_url`` the
    schema owner's, for migrations only; empty means the same as ``database_url``.
    """

    redis_url: str
    database_url: str
    #: Keyword-only: other optional URLs may follow the first two positionally.
    database_owner_url: str = field(default="", kw_only=True)

    @property
    def owner_url(self) -> str:
        """The URL migrations run as."""
        return self.database_owner_url or self.database_url

    #: The master's own Redis user (private Redis); None: the master uses ``redis_url``.
    master_redis_url: str | None = field(default=None, kw_only=True)

    def __repr__(self) -> str:
        return (
            f"ServiceUrls(redis_url={mask_url(self.redis_url)!r}, "
            f"database_url={mask_url(self.database_url)!r}, "
            f"database_owner_url={mask_url(self.owner_url)!r})"
        )


class ServiceSettings(Protocol):
    """The part of ``papertrader.config.Settings`` that ``resolve_urls`` reads.

    A protocol rather than an import keeps this package independent of the
    configuration loader (and usable with any object that has these fields).
    """

    @property
    def redis_url(self) -> str | None: ...

    @property
    def database_url(self) -> str | None: ...

    @property
    def database_owner_url(self) -> str | None: ...

    @property
    def state_dir(self) -> Path | None: ...

    @property
    def tls_ca(self) -> Path | None: ...


def start_services(
    state_dir: Path | str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    redis_tls: redis_server.RedisTls | None = None,
) -> ServiceUrls:
    """Start (or keep running) the private Redis and PostgreSQL of ``state_dir``.

    Idempotent: running servers are left alone and their URLs returned;
    stopped ones are restarted on their data (on a new port if the old one
    was taken meanwhile, recorded in ``services.json``). Every program is
    looked for before anything starts, so a missing one costs nothing.
    ``redis_tls``: Redis serves TLS only, with these files (None: as recorded).
    """
    check_all()
    directory = ensure_private_dir(resolve_state_dir(state_dir))
    redis_bin = find_binary("redis-server")
    pg_bins = find_postgres_binaries()
    with locked(directory):
        state = load_state(directory)
        state.redis = redis_server.start(directory, state.redis, redis_bin, timeout, redis_tls)
        save_state(directory, state)  # recorded before PostgreSQL starts, so `down` finds it
        state.postgres = postgres_cluster.start(directory, state.postgres, pg_bins, timeout)
        save_state(directory, state)
        return ServiceUrls(
            state.redis.url,
            state.postgres.url,
            database_owner_url=state.postgres.owner_url,
            master_redis_url=state.redis.master_url,
        )


def prepare_database_roles(state_dir: Path | str | None = None) -> bool:
    """Give the running private cluster of ``state_dir`` its owner and master roles.

    What ``pt services up`` does on every start, for ``pt db migrate`` on a
    cluster started by an older PaperTrader and still running: the roles are
    made and the database moves to the owner, rows untouched. False when no
    cluster is recorded there (nothing to do); ServicesError when it does not run.
    """
    directory = resolve_state_dir(state_dir)
    if not state_file(directory).exists():
        return False
    with locked(directory):
        state = load_state(directory)
        if state.postgres is None:
            return False
        if not postgres_cluster.is_running(state.postgres):
            raise ServicesError(
                f"the PostgreSQL of {directory} is not running: start it with "
                f"`pt services up --state-dir {directory}`"
            )
        postgres_cluster.ensure_roles(state.postgres)
        save_state(directory, state)
    return True


def stop_services(
    state_dir: Path | str | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> dict[str, bool]:
    """Stop both servers of ``state_dir``; returns which of them were running.

    Data is kept: ``start_services`` brings them back with it. Nothing
    recorded means nothing to stop, which is not an error.
    """
    directory = resolve_state_dir(state_dir)
    if not state_file(directory).exists():
        return {"redis": False, "postgres": False}
    with locked(directory):
        state = load_state(directory)
        stopped = {"redis": False, "postgres": False}
        errors: list[str] = []
        if state.redis is not None:
            try:
                stopped["redis"] = redis_server.stop(state.redis, timeout)
            except ServicesError as exc:
                errors.append(str(exc))
        if state.postgres is not None:
            try:
                bins = (
                    find_postgres_binaries() if postgres_cluster.is_alive(state.postgres) else None
                )
                stopped["postgres"] = postgres_cluster.stop(state.postgres, bins, timeout)
            except ServicesError as exc:
                errors.append(str(exc))
        save_state(directory, state)
    if errors:
        raise ServicesError("; ".join(errors))
    return stopped


def destroy_services(
    state_dir: Path | str | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Stop both servers and delete their data and record (throwaway state dirs, tests).

    Needed because the cluster may live outside the state directory (under
    /var/tmp when run as root), where deleting the state directory would
    leave it behind.
    """
    directory = resolve_state_dir(state_dir)
    stop_services(directory, timeout=timeout)
    with locked(directory):
        state = load_state(directory)
        if state.postgres is not None:
            postgres_cluster.remove(state.postgres)
        if state.redis is not None:
            redis_server.remove(state.redis)
        state_file(directory).unlink(missing_ok=True)


def read_service_urls(state_dir: Path | str | None = None) -> ServiceUrls | None:
    """The URLs recorded in ``state_dir``, or None if the services were never started there.

    This reads the record only; it does not check that the servers run.
    """
    state = load_state(resolve_state_dir(state_dir))
    if state.redis is None or state.postgres is None:
        return None
    return ServiceUrls(
        state.redis.url,
        state.postgres.url,
        database_owner_url=state.postgres.owner_url,
        master_redis_url=state.redis.master_url,
    )


def services_status(state_dir: Path | str | None = None) -> dict[str, Any]:
    """Whether each server runs, with ports, pids, data directories and masked URLs."""
    directory = resolve_state_dir(state_dir)
    state = load_state(directory)
    report: dict[str, Any] = {"state_dir": str(directory), "state_file": str(state_file(directory))}
    if state.redis is None:
        report["redis"] = {"initialized": False, "running": False}
    else:
        running = redis_server.is_running(state.redis)
        report["redis"] = {
            "initialized": True,
            "running": running,
            "pid": state.redis.pid if running else None,
            "port": state.redis.port,
            "data_dir": state.redis.data_dir,
            "log_file": state.redis.log_file,
            "url": mask_url(state.redis.url),
        }
    if state.postgres is None:
        report["postgres"] = {"initialized": False, "running": False}
    else:
        running = postgres_cluster.is_running(state.postgres)
        report["postgres"] = {
            "initialized": True,
            "running": running,
            "pid": postgres_cluster.postmaster_pid(state.postgres) if running else None,
            "port": state.postgres.port,
            "data_dir": state.postgres.data_dir,
            "log_file": state.postgres.log_file,
            "run_as": state.postgres.run_as,
            "url": mask_url(state.postgres.url),
            "owner_url": mask_url(state.postgres.owner_url),
        }
    return report


def resolve_urls(settings: ServiceSettings, state_dir: Path | str | None = None) -> ServiceUrls:
    """The Redis and PostgreSQL URLs a command should use.

    Configured URLs win and are used as they are; whichever is missing comes
    from the services recorded in the state directory (``state_dir``, else
    ``settings.state_dir``, else the default). A configured ``database_url``
    without ``database_owner_url`` is also the owner's (one role for both, as
    before the roles; docs/OPERATIONS.md says how to split them). A configured
    database URL to another host gets ``sslmode=verify-full`` unless it names a
    mode (``store/pg_tls.py``).
    """
    redis_url = settings.redis_url
    database_url = settings.database_url and verified_url(settings.database_url, settings.tls_ca)
    owner_url = verified_url(settings.database_owner_url or "", settings.tls_ca)
    if redis_url and database_url:
        return ServiceUrls(redis_url, database_url, database_owner_url=owner_url)
    directory = resolve_state_dir(state_dir if state_dir is not None else settings.state_dir)
    recorded = read_service_urls(directory)
    if recorded is None:
        missing = " and ".join(
            name
            for name, value in (("PT_REDIS_URL", redis_url), ("PT_DATABASE_URL", database_url))
            if not value
        )
        raise ServicesError(
            f"no Redis/PostgreSQL configured and none started in {directory}: run "
            f"`pt services up --state-dir {directory}` or set {missing}"
        )
    if database_url:
        return ServiceUrls(
            redis_url or recorded.redis_url,
            database_url,
            database_owner_url=owner_url,
            master_redis_url=None if redis_url else recorded.master_redis_url,
        )
    return ServiceUrls(
        redis_url or recorded.redis_url,
        recorded.database_url,
        database_owner_url=owner_url or recorded.database_owner_url,
        master_redis_url=None if redis_url else recorded.master_redis_url,
    )
