"""Which master is active: a PostgreSQL advisory lock, a lease, and a fencing token.

Two or more masters may run; exactly one is active. Each keeps a connection
of its own (not from the pool) and tries ``pg_try_advisory_lock`` on it; the
one that gets the lock takes over (``pt_take_over``: the epoch in
``master_epoch`` goes up by one), records the epoch in Redis, and only then
starts its loops (prices, drain, watchdog...). The others are standbys: they
refuse worker links with the active master's address, answer getWorkerList
from the active master's mirror in Redis, and try the lock again every
``poll`` seconds.

Why this is safe (docs/OPERATIONS.md, "Standby masters"):

* The lock belongs to the connection: a master killed (or its host gone) loses
  it as soon as PostgreSQL sees the connection end.
* A master that is paused (SIGSTOP, a VM frozen) keeps its TCP connection, so
  the lock connection sets ``idle_session_timeout`` to the lease: PostgreSQL
  itself ends the session of a master that did not ping it for a lease, and
  the lock is free. The active master pings every quarter lease.
* A lock connection that ends while the master runs (PostgreSQL restarted) is
  opened again and the lock taken again; if the epoch is still ours nobody
  took over and the master goes on, otherwise (or if PostgreSQL stays
  unreachable for a lease) it is deposed.
* A paused master may wake up still believing it is active. Every transaction
  of an active master begins with ``pt_fence(epoch)`` (``begin``), which fails
  once another master took over, and its pool's connections end a
  transaction left idle for a lease (``idle_in_transaction_session_timeout``),
  so the take-over never waits on a frozen master. Its Redis writes of
  quotes and order outcomes check the epoch in Redis as well. The first
  refusal, or a failed ping, ends the master's active life: the process
  stops (``lost`` is set) and a supervisor starts it again as a standby.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import gevent
import gevent.event
import psycopg2
import psycopg2.extensions
import redis
from loguru import logger

from papertrader.store import master_epoch
from papertrader.store.master_epoch import ActiveMaster, DatabaseFenced, Fenced
from papertrader.store.pool import Cursor, PgConnection

#: Errors that mean the lock connection is gone.
_CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


def holder_name() -> str:
    """How this process is named in master_epoch.holder and `pt status`."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class Leadership:
    """This master's claim to be the active one; see the module docstring.

    ``on_active(epoch)`` runs in a greenlet of its own when ``run`` took over (a caller
    of ``try_acquire`` that got True starts the master's work itself); ``lost`` is set
    when this master must stop.
    """

    def __init__(
        self,
        database_url: str,
        client: redis.Redis,
        lease: float,
        address: str,
        on_active: Callable[[int], None],
    ) -> None:
        self._dsn = database_url
        self._redis = client
        self.lease = lease
        self.poll = min(1.0, lease / 4)
        self.address = address
        self.holder = holder_name()
        self._on_active = on_active
        self._conn: PgConnection | None = None
        #: Our epoch while active; None while standby.
        self.epoch: int | None = None
        #: The active master as last read (a standby names it when it refuses a link).
        self.known: ActiveMaster | None = None
        #: Set once the active master's loops run (links are welcome from then on).
        self.serving = False
        self.lost = gevent.event.Event()
        self.lost_reason = ""
        #: Since when the lock connection could not be renewed (None: it is fine).
        self._unreachable_since: float | None = None

    @property
    def active(self) -> bool:
        """Whether this master is the active one and serving (links are welcome)."""
        return self.epoch is not None and self.serving and not self.lost.is_set()

    def refusal(self) -> str:
        """What a standby tells a worker that links to it: where the active master is."""
        known = self.known
        if self.epoch is not None and not self.lost.is_set():
            return "this master is taking over; link again in a moment"
        if known is None or not known.address:
            return "this master is a standby; the active master is not known yet"
        return (
            f"this master is a standby; the active master is {known.address} (epoch {known.epoch})"
        )

    # hooks for the master's pool ---------------------------------------------------
    def begin(self, cursor: Cursor) -> None:
        """First statement of every pool transaction: fenced while active; read-only
        while standby (a standby writes nothing)."""
        epoch = self.epoch
        if epoch is None:
            cursor.execute("SET TRANSACTION READ ONLY")
            return
        try:
            master_epoch.fence(cursor, epoch)
        except psycopg2.Error as exc:
            if not master_epoch.is_fenced(exc):
                raise
            self.lose(f"another master took over after epoch {epoch}")
            raise DatabaseFenced(f"fenced: epoch {epoch} is no longer active") from None

    def on_connect(self, conn: PgConnection) -> None:
        """A transaction left idle for a lease ends (a frozen master holds no lock long)."""
        with conn.cursor() as cur:
            cur.execute("SET idle_in_transaction_session_timeout = %s", (int(self.lease * 1000),))
        conn.commit()

    # the lock --------------------------------------------------------------------
    def _connection(self) -> PgConnection:
        if self._conn is None or self._conn.closed:
            conn = psycopg2.connect(self._dsn, application_name="papertrader master lock")
            conn.autocommit = True
            with conn.cursor() as cur:
                # PostgreSQL ends this session after a lease without a ping: the lease.
                cur.execute("SET idle_session_timeout = %s", (int(self.lease * 1000),))
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
            self._conn = None

    def try_acquire(self) -> bool:
        """One attempt: take the lock and take over if free. True once active. Raises
        psycopg2 errors (the caller decides whether that is fatal)."""
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                if not master_epoch.try_lock(cur):
                    self.known = master_epoch.read_active(cur)
                    return False
                # Never wait forever on a previous master's transaction.
                cur.execute("SET lock_timeout = %s", (int(self.lease * 2000),))
                epoch = master_epoch.take_over(cur, self.holder, self.address)
                cur.execute("SET lock_timeout = 0")
                self.known = master_epoch.read_active(cur)
        except _CONNECTION_ERRORS:
            self._drop_connection()
            raise
        except psycopg2.Error:
            self._drop_connection()  # releases the lock we may hold
            raise
        try:
            master_epoch.claim_redis_epoch(self._redis, epoch)
        except Fenced:
            self._drop_connection()
            raise
        except redis.RedisError:
            self._drop_connection()  # the next attempt takes over again, with a new epoch
            raise
        self.epoch = epoch
        logger.info("this master is now the active one (epoch {})", epoch)
        return True

    def lose(self, reason: str) -> None:
        """Stop being active: nothing more is written (fenced), the master stops."""
        if self.lost.is_set():
            return
        self.lost_reason = reason
        logger.error("this master is no longer the active one: {}; stopping", reason)
        self.lost.set()
        # Not closing the lock connection here: the leadership greenlet may be in a query
        # on it, and psycopg2's close() would wait for it holding the whole thread. The
        # greenlet closes it as it ends (and stop() after it).

    def _still_active(self) -> None:
        """The ping of the lease: the lock connection answers and names our epoch."""
        conn = self._conn
        try:
            if conn is None:
                raise psycopg2.InterfaceError("no lock connection")
            with conn.cursor() as cur:
                current = master_epoch.read_active(cur)
        except _CONNECTION_ERRORS as exc:
            self._renew(" ".join(str(exc).split()))
            return
        self._unreachable_since = None
        self.known = current
        if current.epoch != self.epoch:
            self.lose(f"the epoch is {current.epoch} now, not ours ({self.epoch})")

    def _renew(self, problem: str) -> None:
        """The lock connection ended (PostgreSQL restarted, or ended our session after a
        lease of silence). Take the lock again on a new connection: if nobody took over
        meanwhile (the epoch is still ours) nothing else was written and we go on; if
        another master holds it or took over, we are deposed. PostgreSQL unreachable
        for longer than a lease deposes us too: a standby that can reach it may have
        taken over, and workers must not stay linked to a master that cannot serve."""
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
            logger.warning("the leader lock's connection ended ({}); taking it again", problem)
        self._drop_connection()
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                if not master_epoch.try_lock(cur):
                    self.known = master_epoch.read_active(cur)
                    self.lose("another master holds the leader lock now")
                    return
                current = master_epoch.read_active(cur)
        except _CONNECTION_ERRORS as exc:
            self._drop_connection()
            if now - self._unreachable_since > self.lease:
                self.lose(f"PostgreSQL unreachable for longer than the lease ({exc})")
            return
        self.known = current
        if current.epoch != self.epoch:
            self.lose(f"another master took over (epoch {current.epoch}, ours {self.epoch})")
            return
        self._unreachable_since = None
        logger.info("leader lock taken again; still the active master (epoch {})", self.epoch)

    def run(self, stop: gevent.event.Event) -> None:
        """The leadership greenlet: try the lock as a standby, ping it while active."""
        try:
            self._run(stop)
        finally:
            self._drop_connection()

    def _run(self, stop: gevent.event.Event) -> None:
        while not stop.is_set() and not self.lost.is_set():
            if self.epoch is not None:
                if stop.wait(timeout=self.lease / 4):
                    break
                self._still_active()
                continue
            try:
                if self.try_acquire():
                    # In its own greenlet: the lease's pings go on while it starts up.
                    assert self.epoch is not None
                    gevent.spawn(self._on_active, self.epoch)
                    continue
            except (psycopg2.Error, redis.RedisError, Fenced) as exc:
                logger.warning(
                    "could not try the active master's lock: {}", " ".join(str(exc).split())
                )
            stop.wait(timeout=self.poll)

    def close(self) -> None:
        """Release the lock (closing its connection) at a clean stop, once the leadership
        greenlet has ended (it is the connection's only user)."""
        self._drop_connection()
