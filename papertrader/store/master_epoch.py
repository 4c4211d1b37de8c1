"""Which master is active, and its fencing token (migration 0008, docs/OPERATIONS.md).

PostgreSQL decides: the active master holds a session-level advisory lock
(``LEADER_LOCK_KEY``) on a connection of its own, and took over by raising
the epoch in ``master_epoch``. Every transaction it runs starts with
``pt_fence(epoch)`` (``fence``), so a master that lost the lock while paused
finds another epoch there and writes nothing. Its Redis writes that would
mislead when stale (quotes, order outcomes) check ``keys.MASTER_EPOCH`` the
same way (``fenced_pipeline`` here; the outcome script in ``order_queue``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions
import redis

from papertrader.store import keys

# Any constant shared by every master; it spells "PTmaster" in ASCII.
LEADER_LOCK_KEY = 0x50546D6173746572
#: SQLSTATE of pt_fence's refusal.
FENCED_SQLSTATE = "PTF01"

Cursor = psycopg2.extensions.cursor


class Fenced(Exception):
    """This master's epoch is no longer the active one: it must write nothing more."""


class DatabaseFenced(Fenced, psycopg2.OperationalError):
    """pt_fence refused a transaction. A psycopg2 OperationalError too, so every caller
    that answers "the database is unavailable" (never a wrong outcome) handles it."""


class RedisFenced(Fenced, redis.ConnectionError):
    """Redis has another master's epoch. A redis ConnectionError too, for the same reason."""


@dataclass(frozen=True)
class ActiveMaster:
    """The master that took over last (epoch 0: none ever did)."""

    epoch: int
    holder: str
    address: str
    since: datetime | None


def is_fenced(exc: BaseException) -> bool:
    """Whether a database error is pt_fence's refusal."""
    return isinstance(exc, psycopg2.Error) and exc.pgcode == FENCED_SQLSTATE


def fence(cursor: Cursor, epoch: int) -> None:
    """First statement of an active master's transaction (raises psycopg2.Error PTF01)."""
    cursor.execute("SELECT pt_fence(%s)", (epoch,))


def try_lock(cursor: Cursor) -> bool:
    """Take the leader lock for this session if nobody holds it."""
    cursor.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,))
    row = cursor.fetchone()
    return bool(row and row[0])


def take_over(cursor: Cursor, holder: str, address: str) -> int:
    """The new epoch; the caller's session must hold the leader lock. Waits for the
    previous master's transactions that are still running (they hold pt_fence's lock)."""
    cursor.execute("SELECT pt_take_over(%s, %s, %s)", (LEADER_LOCK_KEY, holder, address))
    row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def read_active(cursor: Cursor) -> ActiveMaster:
    cursor.execute("SELECT epoch, holder, address, since FROM master_epoch WHERE id = 1")
    row = cursor.fetchone()
    if row is None:  # the migration inserts it; only a hand-edited database lacks it
        return ActiveMaster(0, "", "", None)
    return ActiveMaster(int(row[0]), str(row[1]), str(row[2]), row[3])


def leader_alive(cursor: Cursor) -> bool:
    """Whether some session holds the leader lock now (an active master is running)."""
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND objsubid = 1 AND classid::bigint = %s AND objid::bigint = %s"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
        (LEADER_LOCK_KEY >> 32, LEADER_LOCK_KEY & 0xFFFFFFFF),
    )
    row = cursor.fetchone()
    return bool(row and row[0])


# Redis ------------------------------------------------------------------------


def claim_redis_epoch(client: redis.Redis, epoch: int) -> None:
    """Record ``epoch`` in Redis unless a later one is there already (then: Fenced)."""

    def claim(pipe: Any) -> None:
        current = pipe.get(keys.MASTER_EPOCH)
        if current is not None and int(current) > epoch:
            raise RedisFenced(f"Redis already has epoch {int(current)}, after ours ({epoch})")
        pipe.multi()
        pipe.set(keys.MASTER_EPOCH, str(epoch))

    client.transaction(claim, keys.MASTER_EPOCH)


def redis_epoch(client: redis.Redis) -> int | None:
    raw = client.get(keys.MASTER_EPOCH)
    return None if raw is None else int(raw)


def fenced_pipeline(client: redis.Redis, epoch: int, write: Callable[[Any], None]) -> None:
    """Run ``write(pipe)`` in one MULTI/EXEC unless Redis has seen a later epoch than ours
    (RedisFenced), the usual rule of a fencing token: the highest epoch seen wins, and
    each write raises it to its own (so a key lost in a Redis crash comes back). WATCH
    makes a take-over between the check and EXEC abort the write (then it is checked
    again)."""

    def guarded(pipe: Any) -> None:
        current = pipe.get(keys.MASTER_EPOCH)
        if current is not None and int(current) > epoch:
            raise RedisFenced(
                f"Redis names a later active master (epoch {int(current)}) than ours ({epoch})"
            )
        pipe.multi()
        if current is None or int(current) != epoch:
            pipe.set(keys.MASTER_EPOCH, str(epoch))
        write(pipe)

    client.transaction(guarded, keys.MASTER_EPOCH)
