"""A streaming replica of the private PostgreSQL cluster, and its promotion.

For trying failover on one machine (docs/OPERATIONS.md, "PostgreSQL with a
streaming replica", says the same for real hosts): ``create`` copies the
primary with ``pg_basebackup -R`` (the replica streams from it from then on)
and starts it on its own port; ``make_synchronous`` makes the primary wait,
at every commit, until the replica has the commit on disk, so an order the
master reported filled survives the primary's loss; ``promote`` turns the
replica into the primary once the old one is gone. The master reaches
whichever is the primary by the multi-host URL of ``failover_url``
(``target_session_attrs=read-write``: libpq tries each host and keeps the
one that accepts writes).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import quote

import psycopg2

from papertrader.services import postgres_cluster
from papertrader.services.binaries import find_postgres_binaries
from papertrader.services.errors import ServicesError
from papertrader.services.ports import LOOPBACK, free_port, port_is_free
from papertrader.services.postgres_cluster import (
    _connect,
    _launch,
    _prepare_root,
    _run,
    service_user,
    socket_dir_for,
)
from papertrader.services.postgres_orphans import mark_owner
from papertrader.services.state import PostgresRecord

#: The replica's name: its application_name on the primary and its directory's suffix.
REPLICA_NAME = "replica1"


def replica_root(primary: PostgresRecord, name: str = REPLICA_NAME) -> Path:
    """Beside the primary's directory (same owner, same reachability)."""
    root = Path(primary.root)
    return root.parent / f"{root.name}-{name}"


def create(
    primary: PostgresRecord,
    name: str = REPLICA_NAME,
    timeout: float = 120.0,
    root: Path | None = None,
    owner: Path | None = None,
) -> PostgresRecord:
    """Copy the running primary with pg_basebackup and start the copy as its replica
    (in ``root``; by default beside the primary's directory). ``owner``: what the
    copy belongs to, when under /var/tmp (postgres_orphans; default: the primary's
    directory, which a default ``root`` sits beside)."""
    user = service_user()
    bins = find_postgres_binaries()
    basebackup = Path(bins["pg_ctl"]).resolve().parent / "pg_basebackup"  # beside pg_ctl
    if not basebackup.exists():
        raise ServicesError(f"{basebackup} is missing (it comes with PostgreSQL's server package)")
    if root is None:
        root = replica_root(primary, name)
    _prepare_root(root, user)
    mark_owner(root, owner or Path(primary.root))
    data_dir = root / "data"
    # The same cluster (roles, passwords, database) in another directory, on another port.
    record = dataclasses.replace(
        primary,
        port=free_port(),
        root=str(root),
        data_dir=str(data_dir),
        log_file=str(root / "postgres.log"),
        socket_dir=socket_dir_for(data_dir),
        pid=None,
    )
    # -R writes standby.signal and primary_conninfo (password included) into the copy's
    # postgresql.auto.conf, 0600 and owned by the cluster's user.
    conninfo = (
        f"host={LOOPBACK} port={primary.port} user={primary.user} "
        f"password={primary.password} application_name={name}"
    )
    done = _run(
        # -c fast: checkpoint now rather than wait for a spread one (minutes on an idle
        # primary)
        [str(basebackup), "-d", conninfo, "-D", str(data_dir), "-X", "stream", "-R", "-c", "fast"],
        user,
        root,
        timeout,
    )
    if done.returncode != 0:
        raise ServicesError(
            f"pg_basebackup failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}"
        )
    _launch(record, bins, user, timeout)
    return record


def start(record: PostgresRecord, timeout: float = 60.0) -> PostgresRecord:
    """Start a replica made by ``create`` again on its data (a stopped one catches up with
    its primary by itself); its old port if still free, else a new one."""
    if postgres_cluster.is_running(record):
        return record
    if not port_is_free(record.port):
        record = dataclasses.replace(record, port=free_port())
    postgres_cluster._remove_stale_pid_file(record)
    _launch(record, find_postgres_binaries(), service_user(), timeout)
    return record


def make_synchronous(primary: PostgresRecord, name: str | None = REPLICA_NAME) -> None:
    """Commits on the primary wait until the replica has flushed them (and block while it
    is away: the price of never losing an acknowledged write); ``name`` None makes
    replication asynchronous again."""
    conn = _connect(primary, "postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            if name is None:
                cur.execute("ALTER SYSTEM RESET synchronous_standby_names")
            else:
                cur.execute("ALTER SYSTEM SET synchronous_standby_names = %s", (name,))
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()


def ensure_synchronous(primary: PostgresRecord, names: str) -> bool:
    """``make_synchronous`` unless the primary already waits for ``names`` (a standby's
    application_name, or a list such as ``ANY 1 (a, b)``); True if it changed."""
    conn = _connect(primary, "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW synchronous_standby_names")
            row = cur.fetchone()
    finally:
        conn.close()
    if row is not None and row[0] == names:
        return False
    make_synchronous(primary, names)
    return True


def promote(replica: PostgresRecord, timeout: float = 60.0) -> None:
    """Make the replica the primary (after the old primary is gone for good)."""
    bins = find_postgres_binaries()
    done = _run(
        [str(bins["pg_ctl"]), "promote", "-D", replica.data_dir, "-w", "-t", str(int(timeout))],
        service_user(),
        Path(replica.root),
        timeout + 5,
    )
    if done.returncode != 0:
        raise ServicesError(f"pg_ctl promote failed: {(done.stderr or done.stdout).strip()}")


def is_primary(record: PostgresRecord) -> bool:
    """Whether the server accepts writes now (not in recovery)."""
    try:
        conn = _connect(record, "postgres")
    except psycopg2.Error:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT NOT pg_is_in_recovery()")
            row = cur.fetchone()
            return bool(row and row[0])
    finally:
        conn.close()


def stop(record: PostgresRecord, timeout: float = 60.0) -> None:
    """Stop the server (fast shutdown); nothing to do if it is not running."""
    if not (Path(record.data_dir) / "postmaster.pid").exists():
        return
    bins = find_postgres_binaries()
    _run(
        [str(bins["pg_ctl"]), "stop", "-D", record.data_dir, "-m", "fast", "-w"],
        service_user(),
        Path(record.root),
        timeout,
    )


def failover_url(servers: list[PostgresRecord], target: str = "read-write") -> str:
    """One URL naming every server, as the master's role (the superuser's on a cluster of
    before the roles); libpq connects to the one that accepts writes (``target``
    prefer-standby: a replica if one answers, for database_read_url)."""
    first = servers[0]
    user, password = (
        (first.master, first.master_password) if first.has_roles else (first.user, first.password)
    )
    hosts = ",".join(f"{LOOPBACK}:{server.port}" for server in servers)
    return (
        f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{hosts}"
        f"/{quote(first.database, safe='')}?target_session_attrs={target}"
    )


__all__ = [
    "REPLICA_NAME",
    "create",
    "ensure_synchronous",
    "failover_url",
    "is_primary",
    "make_synchronous",
    "promote",
    "replica_root",
    "start",
    "stop",
]
