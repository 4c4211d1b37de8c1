"""``pt up --ha``: the stack without a single point of failure, on one machine.

What ``--ha`` adds to an ordinary ``pt up`` (``plan.py`` does the rest, with
the same code: TLS, per-process roles and Redis users, keys):

* a **standby master** ("master-2") beside the active one: both share the
  master's GnuPG home (one key pair, one session-signing key), both get the
  same database URL, and every worker names both (``StackOptions.masters``);
  which one is active is decided by the masters themselves (PostgreSQL's
  advisory lock, docs/OPERATIONS.md "Standby masters");
* a **synchronous streaming replica** of the private PostgreSQL
  (``services/postgres_replica.py``), started before the first commit (the
  primary waits for it at every commit); the masters reach whichever server
  accepts writes through a multi-host URL (``target_session_attrs=read-write``)
  and read price history from the replica.

The replica's record (port, directory; passwords as in ``services.json``) is
kept in ``<state_dir>/ha.json`` (0600), so a later ``pt up --ha`` starts the
same replica again and ``pt down`` stops it.

PostgreSQL is never restarted by the supervisor under ``--ha``: a primary that
came back on its own after the replica was promoted would take writes again
(two primaries). Promotion is the operator's step, documented in
docs/OPERATIONS.md ("Promotion path"); the supervisor's log names the command.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papertrader.services import ServicesError, postgres_replica
from papertrader.services.redis_sentinel import SentinelRecord
from papertrader.services.state import (
    PostgresRecord,
    RedisRecord,
    load_state,
    write_private_file,
)
from papertrader.stack.record import StackError

if TYPE_CHECKING:
    from papertrader.config import Settings
    from papertrader.stack.plan import Say, StackOptions
    from papertrader.stack.record import StackRecord

HA_FILE = "ha.json"


@dataclass
class HaServices:
    """What ``ha.json`` remembers: the services ``--ha`` adds to the private ones (the
    Redis primary and the PostgreSQL primary stay in ``services.json``)."""

    pg_replica: PostgresRecord | None = None
    redis_replica: RedisRecord | None = None
    sentinels: list[SentinelRecord] = field(default_factory=list)

    def to_json(self) -> str:
        document = {
            "pg_replica": None if self.pg_replica is None else asdict(self.pg_replica),
            "redis_replica": None if self.redis_replica is None else asdict(self.redis_replica),
            "sentinels": [asdict(s) for s in self.sentinels],
        }
        return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _record(cls: type[Any], document: Any) -> Any:
    """``cls`` from its ``asdict`` (keys it does not declare dropped), None from nothing."""
    if not document:
        return None
    names = set(cls.__dataclass_fields__)
    return cls(**{key: value for key, value in document.items() if key in names})


def ha_file(state_dir: Path) -> Path:
    return state_dir / HA_FILE


def load_ha(state_dir: Path) -> HaServices:
    """The recorded services of ``--ha`` (none recorded: an empty record)."""
    path = ha_file(state_dir)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return HaServices(
            pg_replica=_record(PostgresRecord, document.get("pg_replica")),
            redis_replica=_record(RedisRecord, document.get("redis_replica")),
            sentinels=[_record(SentinelRecord, s) for s in document.get("sentinels") or []],
        )
    except FileNotFoundError:
        return HaServices()
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise StackError(
            f"{path} is damaged ({exc}); stop the replica it names and move the file away"
        ) from None


def save_ha(state_dir: Path, services: HaServices) -> None:
    write_private_file(ha_file(state_dir), services.to_json())


def refuse_configured_services(settings: Settings) -> None:
    """``--ha`` replicates the private services: configured URLs would be left single."""
    urls = (("redis_url", settings.redis_url), ("database_url", settings.database_url))
    configured = [name for name, value in urls if value]
    if configured:
        raise StackError(
            "pt up --ha starts its own replicated Redis and PostgreSQL, but "
            f"{' and '.join(configured)} is configured (PT_REDIS_URL / PT_DATABASE_URL or "
            "the config file): unset it, or run "
            "`pt up` without --ha against your own servers (docs/OPERATIONS.md shows how to "
            "replicate them)"
        )


def _primary(state_dir: Path) -> PostgresRecord:
    primary = load_state(state_dir).postgres
    if primary is None:
        raise StackError(f"no private PostgreSQL is recorded in {state_dir}")
    return primary


def start_recorded_replica(options: StackOptions) -> None:
    """Start the replica of an earlier ``pt up --ha`` before its primary: the primary
    was left synchronous, so its first commit (the roles' set-up) waits for the replica."""
    services = load_ha(options.state_dir)
    replica = services.pg_replica
    if replica is None or not (Path(replica.data_dir) / "PG_VERSION").exists():
        return
    try:
        services.pg_replica = postgres_replica.start(replica, options.timeout)
    except ServicesError as exc:
        raise StackError(f"the PostgreSQL replica: {exc}") from None
    save_ha(options.state_dir, services)


def replicated_database(options: StackOptions, say: Say) -> dict[str, str]:
    """Make the synchronous replica (the first time), make the primary wait for it;
    the masters' database settings.

    Returns PT_DATABASE_URL (both servers, the writable one chosen by libpq)
    and PT_DATABASE_READ_URL (the replica first) for every master.
    """
    directory = options.state_dir
    primary = _primary(directory)
    services = load_ha(directory)
    try:
        replica = services.pg_replica
        if replica is not None and (Path(replica.data_dir) / "PG_VERSION").exists():
            made = False
        else:
            say("postgres  copying the primary to its replica (pg_basebackup)")
            replica = postgres_replica.create(primary, timeout=max(options.timeout, 120.0))
            made = True
        services.pg_replica = replica
        save_ha(directory, services)
        if postgres_replica.is_primary(replica):
            raise StackError(
                f"the PostgreSQL replica in {replica.data_dir} was promoted: it and the old "
                f"primary in {primary.data_dir} would both take writes. For this trial "
                f"stack, start afresh: `pt down`, then remove {directory} (and the "
                "directories above)"
            )
        postgres_replica.make_synchronous(primary)
    except ServicesError as exc:
        raise StackError(f"the PostgreSQL replica: {exc}") from None
    say(
        f"postgres  primary 127.0.0.1:{primary.port}, synchronous replica 127.0.0.1:"
        f"{replica.port}{' (new)' if made else ''}"
    )
    servers = [primary, replica]
    return {
        "PT_DATABASE_URL": postgres_replica.failover_url(servers),
        "PT_DATABASE_READ_URL": postgres_replica.failover_url(
            servers[::-1], target="prefer-standby"
        ),
    }


def stop_ha_watchers(record: StackRecord, report: Any = None) -> None:
    """Before the primaries stop: the Sentinels (they would fail over meanwhile)."""
    if record.ha and record.services_started:
        from papertrader.stack.ha_redis import stop_sentinels

        stop_sentinels(record, report)


def stop_ha_services(record: StackRecord, timeout: float, report: Any = None) -> None:
    """Stop the replicas ``--ha`` started (after their primaries: they take the last of
    their changes)."""
    if not (record.ha and record.services_started):
        return
    from papertrader.stack.ha_redis import stop_replica

    stop_replica(record, timeout, report)
    replica = load_ha(record.state_dir).pg_replica
    if replica is None:
        return
    running = (Path(replica.data_dir) / "postmaster.pid").exists()
    try:
        postgres_replica.stop(replica, timeout)
    except ServicesError as exc:
        raise StackError(f"stopping the PostgreSQL replica: {exc}") from None
    if report is not None:
        report("postgres replica", "stopped" if running else "was not running")


def look_at_ha_services(record: StackRecord, timeout: float) -> list[str]:
    """What the supervisor of an ``--ha`` stack says about its services (and does).

    The replica is started again when it stopped (the primary's commits wait
    for it); a stopped primary is left stopped with the promotion path named.
    """
    from papertrader.services import postgres_cluster
    from papertrader.stack.ha_redis import look_at_redis

    notes = look_at_redis(record, timeout)
    directory = record.state_dir
    primary = load_state(directory).postgres
    replica = load_ha(directory).pg_replica
    if replica is not None and not postgres_cluster.is_running(replica):
        try:
            started = postgres_replica.start(replica, timeout)
        except ServicesError as exc:
            notes.append(f"the PostgreSQL replica stopped and could not be started: {exc}")
        else:
            with contextlib.suppress(OSError):
                services = load_ha(directory)
                services.pg_replica = started
                save_ha(directory, services)
            notes.append(f"the PostgreSQL replica stopped; started again on port {started.port}")
    if primary is not None and not postgres_cluster.is_running(primary):
        if replica is not None and postgres_replica.is_primary(replica):
            return notes  # promoted: the old primary stays down (docs/OPERATIONS.md)
        notes.append(
            "the PostgreSQL primary stopped and is not restarted under --ha (it could come "
            "back beside a promoted replica): promote the replica with `pt services promote "
            f'--state-dir {directory}` (docs/OPERATIONS.md, "Promotion path")'
        )
    return notes


def ha_summary(record: StackRecord) -> dict[str, Any]:
    """For ``pt up``'s announcement: the active master (as PostgreSQL records it) and
    where the PostgreSQL primary and replica listen."""
    from papertrader.stack.ha_redis import redis_summary
    from papertrader.stack.status import active_master

    masters = [c for c in record.children if c.role == "master"]
    url = masters[0].env.get("PT_DATABASE_URL") if masters else None
    primary = load_state(record.state_dir).postgres
    replica = load_ha(record.state_dir).pg_replica
    return {
        "active_master": active_master(url) if url else None,
        "postgres": {
            "primary": None if primary is None else f"127.0.0.1:{primary.port}",
            "replica": None if replica is None else f"127.0.0.1:{replica.port}",
            "replica_data_dir": None if replica is None else replica.data_dir,
            "synchronous": True,
        },
        "redis": redis_summary(record.state_dir),
    }


def ha_services_status(state_dir: Path) -> dict[str, dict[str, Any]]:
    """For ``pt status``: the services ``pt up --ha`` added, by name (none recorded: {})."""
    from papertrader.services import postgres_cluster, redis_sentinel, redis_server

    try:
        services = load_ha(state_dir)
    except StackError as exc:
        return {"ha services": {"initialized": True, "running": False, "error": str(exc)}}
    report: dict[str, dict[str, Any]] = {}
    base = {"external": False, "initialized": True}
    if services.redis_replica is not None:
        node = services.redis_replica
        running = redis_server.is_running(node)
        report["redis replica"] = {
            **base, "running": running, "pid": node.pid if running else None,
            "port": node.port, "log_file": node.log_file, "replicaof": node.replicaof,
        }  # fmt: skip
    for index, sentinel in enumerate(services.sentinels, 1):
        running = redis_sentinel.is_running(sentinel)
        report[f"sentinel-{index}"] = {
            **base, "running": running, "pid": sentinel.pid if running else None,
            "port": sentinel.port, "log_file": sentinel.log_file,
        }  # fmt: skip
    replica = services.pg_replica
    if replica is not None:
        running = postgres_cluster.is_running(replica)
        report["postgres replica"] = {
            **base,
            "running": running,
            "pid": postgres_cluster.postmaster_pid(replica) if running else None,
            "port": replica.port,
            "data_dir": replica.data_dir,
            "log_file": replica.log_file,
            "promoted": running and postgres_replica.is_primary(replica),
        }
    return report


def promote_replica(state_dir: Path, stop_primary: bool, timeout: float) -> PostgresRecord:
    """The promotion path of docs/OPERATIONS.md on the stack of ``pt up --ha``: the old
    primary down (stopped here with ``stop_primary``, refused while it runs otherwise),
    the replica promoted, its commits no longer waiting for a replica it does not have."""
    from papertrader.services import postgres_cluster
    from papertrader.services.binaries import find_postgres_binaries

    replica = load_ha(state_dir).pg_replica
    if replica is None:
        raise StackError(
            f"no PostgreSQL replica is recorded in {state_dir} (`pt up --ha` makes one)"
        )
    primary = _primary(state_dir)
    try:
        if postgres_cluster.is_alive(primary):
            if not stop_primary:
                raise StackError(
                    f"the primary (port {primary.port}) still runs: a promoted replica beside "
                    "it would make two primaries; stop it first, or pass --stop-primary"
                )
            postgres_cluster.stop(primary, find_postgres_binaries(), timeout)
        if not postgres_replica.is_primary(replica):
            postgres_replica.promote(replica, timeout)
        postgres_replica.make_synchronous(replica, None)
    except ServicesError as exc:
        raise StackError(f"promoting the replica: {exc}") from None
    return replica
