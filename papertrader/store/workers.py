"""Registered worker servers (spec 2.4.5, 3.1.5): PostgreSQL ``workers`` and the live view in Redis.

PostgreSQL holds who may connect (UUID, name, region, GPG identity, allowed
IPs, enabled); Redis holds who is connected right now (``WORKERS_CONNECTED``
and one ``worker_live`` hash each), written by the master so ``pt`` commands
can show it without asking the master.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg2.errors
import redis

from papertrader.store import keys
from papertrader.store.pool import ConnectionPool


class WorkerConflict(Exception):
    """The UUID is already registered under another name."""


@dataclass(frozen=True)
class WorkerRecord:
    id: int
    uuid: UUID
    name: str
    region: str | None
    enabled: bool
    allowed_ips: tuple[str, ...]  # CIDRs; empty = no address at all (the master refuses)
    gpg_fingerprint: str
    registered_at: datetime
    last_seen_at: datetime | None
    #: host:port clients are told to use; the worker's LINK_HELLO must say the same.
    #: None for a worker registered before addresses were pinned (refused until set).
    address: str | None = None


_SELECT = (
    "SELECT id, uuid::text, name, region, enabled, allowed_ips::text[], gpg_fingerprint,"
    " registered_at, last_seen_at, advertise_address FROM workers"
)


def _record(row: tuple[Any, ...]) -> WorkerRecord:
    return WorkerRecord(
        id=int(row[0]),
        uuid=UUID(row[1]),
        name=str(row[2]),
        region=row[3],
        enabled=bool(row[4]),
        allowed_ips=tuple(row[5] or ()),
        gpg_fingerprint=str(row[6]),
        registered_at=row[7],
        last_seen_at=row[8],
        address=row[9],
    )


def register_worker(
    pool: ConnectionPool,
    name: str,
    uuid: UUID,
    region: str | None,
    public_key: str = "",
    fingerprint: str = "",
    allowed_ips: Sequence[str] = (),
    address: str | None = None,
) -> None:
    """Register a worker, or update the one of that name (idempotent on ``name``).

    ``region`` and ``address`` (host:port for clients) are what the worker's
    LINK_HELLO must say: the master refuses anything else. ``enabled`` is left
    as it is on an update, so re-running a deployment script does not re-enable
    a worker an operator switched off. Raises ``WorkerConflict`` if the UUID
    belongs to a worker of another name.
    """
    try:
        with pool.transaction() as cur:
            cur.execute(
                "INSERT INTO workers (uuid, name, region, gpg_public_key, gpg_fingerprint,"
                " allowed_ips, advertise_address)"
                " VALUES (%s::uuid, %s, %s, %s, %s, %s::cidr[], %s)"
                " ON CONFLICT (name) DO UPDATE SET uuid = EXCLUDED.uuid, region = EXCLUDED.region,"
                " gpg_public_key = EXCLUDED.gpg_public_key,"
                " gpg_fingerprint = EXCLUDED.gpg_fingerprint, allowed_ips = EXCLUDED.allowed_ips,"
                " advertise_address = EXCLUDED.advertise_address",
                (str(uuid), name, region, public_key, fingerprint, list(allowed_ips), address),
            )
    except psycopg2.errors.UniqueViolation:
        raise WorkerConflict(f"worker UUID {uuid} is registered under another name") from None


def get_worker_by_uuid(pool: ConnectionPool, uuid: UUID) -> WorkerRecord | None:
    with pool.transaction() as cur:
        cur.execute(_SELECT + " WHERE uuid = %s::uuid", (str(uuid),))
        row = cur.fetchone()
    return None if row is None else _record(row)


def get_public_key(pool: ConnectionPool, uuid: UUID) -> str:
    """The worker's registered public key (ASCII-armored), "" if none or unknown."""
    with pool.transaction() as cur:
        cur.execute("SELECT gpg_public_key FROM workers WHERE uuid = %s::uuid", (str(uuid),))
        row = cur.fetchone()
    return "" if row is None else str(row[0])


def remove_worker(pool: ConnectionPool, name: str) -> bool:
    """Forget a worker; False if no worker has that name. Its history is kept (orders
    name workers by name, not by this row)."""
    with pool.transaction() as cur:
        cur.execute("DELETE FROM workers WHERE name = %s", (name,))
        return bool(cur.rowcount)


def get_worker_by_name(pool: ConnectionPool, name: str) -> WorkerRecord | None:
    with pool.transaction() as cur:
        cur.execute(_SELECT + " WHERE name = %s", (name,))
        row = cur.fetchone()
    return None if row is None else _record(row)


def list_workers(pool: ConnectionPool) -> list[WorkerRecord]:
    with pool.transaction() as cur:
        cur.execute(_SELECT + " ORDER BY name")
        rows = cur.fetchall()
    return [_record(row) for row in rows]


def set_worker_enabled(pool: ConnectionPool, name: str, enabled: bool) -> bool:
    """Enable or disable a worker; False if no worker has that name.

    A connected worker that is disabled is dropped by the master within a
    heartbeat period (it re-checks at every watchdog round).
    """
    with pool.transaction() as cur:
        cur.execute("UPDATE workers SET enabled = %s WHERE name = %s", (enabled, name))
        return bool(cur.rowcount)


def mark_seen(pool: ConnectionPool, uuid: UUID) -> bool:
    """Record that the worker is alive now; False if it is no longer registered and enabled."""
    with pool.transaction() as cur:
        cur.execute(
            "UPDATE workers SET last_seen_at = now() WHERE uuid = %s::uuid RETURNING enabled",
            (str(uuid),),
        )
        row = cur.fetchone()
    return row is not None and bool(row[0])


# Redis: the workers connected right now ------------------------------------


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def publish_live(client: redis.Redis, uuid: UUID, fields: Mapping[str, str]) -> None:
    """Announce (or refresh) a connected worker."""
    pipe = client.pipeline(transaction=True)
    pipe.sadd(keys.WORKERS_CONNECTED, uuid.hex)
    mapping: dict[Any, Any] = dict(fields)  # redis-py's Mapping type is invariant in the key
    pipe.hset(keys.worker_live(uuid.hex), mapping=mapping)
    pipe.execute()


def remove_live(client: redis.Redis, uuid: UUID) -> None:
    """The worker disconnected."""
    pipe = client.pipeline(transaction=True)
    pipe.srem(keys.WORKERS_CONNECTED, uuid.hex)
    pipe.delete(keys.worker_live(uuid.hex))
    pipe.execute()


def clear_live(client: redis.Redis) -> None:
    """Forget every connected worker: a master starting has no links yet, whatever a
    previous (killed) master left behind."""
    members = client.smembers(keys.WORKERS_CONNECTED)
    pipe = client.pipeline(transaction=True)
    for member in members:
        pipe.delete(keys.worker_live(_text(member)))
    pipe.delete(keys.WORKERS_CONNECTED)
    pipe.execute()


def read_live(client: redis.Redis) -> list[dict[str, str]]:
    """The connected workers as the master announced them (with ``uuid``), by name."""
    found: list[dict[str, str]] = []
    for member in client.smembers(keys.WORKERS_CONNECTED):
        raw = client.hgetall(keys.worker_live(_text(member)))
        if raw:
            fields = {_text(k): _text(v) for k, v in raw.items()}
            fields["uuid"] = _text(member)
            found.append(fields)
    return sorted(found, key=lambda f: f.get("name", ""))
