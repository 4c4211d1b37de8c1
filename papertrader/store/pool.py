"""A small PostgreSQL connection pool that waits instead of failing when busy.

psycopg2's own pools raise when every connection is taken; a server with a
greenlet per client wants the greenlet to wait its turn. Built on the stdlib
``queue``, which gevent's monkey-patching makes cooperative, so the same pool
serves the CLI (plain threads) and the servers (greenlets). Call
``make_cooperative()`` once in a gevent process so queries yield to the event
loop instead of blocking it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions
import psycopg2.extras

Cursor = psycopg2.extensions.cursor
PgConnection = psycopg2.extensions.connection
#: Run at the start of every transaction (the master's fencing check, store/master_epoch.py).
BeginHook = Callable[[Cursor], None]
#: Run once on each new connection (session settings).
ConnectHook = Callable[[PgConnection], None]


def make_cooperative() -> None:
    """Let psycopg2 wait on sockets through gevent (psycogreen's wait callback)."""
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()


class PoolTimeout(RuntimeError):
    """No connection became free in time: the database is overloaded or gone."""


class ConnectionPool:
    """At most ``size`` connections to ``dsn``, opened lazily, reused LIFO.

    ``begin`` (if given) runs first in every transaction and ``on_connect`` on every new
    connection: the master fences its transactions with them.
    """

    def __init__(
        self,
        dsn: str,
        size: int = 10,
        timeout: float = 30.0,
        *,
        begin: BeginHook | None = None,
        on_connect: ConnectHook | None = None,
    ) -> None:
        self.begin = begin
        self.on_connect = on_connect
        self._dsn = dsn
        self._size = size
        self._timeout = timeout
        self._idle: queue.LifoQueue[PgConnection] = queue.LifoQueue()
        self._opened = 0
        self._lock = threading.Lock()
        self._closed = False

    def _acquire(self) -> PgConnection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            may_open = self._opened < self._size
            if may_open:
                self._opened += 1
        if may_open:
            try:
                conn = psycopg2.connect(self._dsn)
                if self.on_connect is not None:
                    try:
                        self.on_connect(conn)
                    except BaseException:
                        conn.close()
                        raise
            except Exception:
                with self._lock:
                    self._opened -= 1
                raise
            return conn
        try:
            return self._idle.get(timeout=self._timeout)
        except queue.Empty:
            raise PoolTimeout(f"no database connection free within {self._timeout:g}s") from None

    def _release(self, conn: PgConnection, broken: bool) -> None:
        if broken or self._closed or conn.closed:
            with self._lock:
                self._opened -= 1
            try:
                conn.close()
            except psycopg2.Error:
                pass
            return
        self._idle.put(conn)

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor inside one transaction: committed on success, rolled back on error."""
        conn = self._acquire()
        broken = False
        try:
            with conn.cursor() as cursor:
                if self.begin is not None:
                    self.begin(cursor)
                yield cursor
            conn.commit()
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        except BaseException:
            try:
                conn.rollback()
            except psycopg2.Error:
                broken = True
            raise
        finally:
            self._release(conn, broken)

    def close(self) -> None:
        """Close idle connections; ones in use close when they come back."""
        self._closed = True
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            conn.close()
            with self._lock:
                self._opened -= 1
