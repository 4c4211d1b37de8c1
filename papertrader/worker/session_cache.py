"""Sessions this worker has verified, kept in memory (spec 3.2.3, "keep track of sessions").

A session never changes after login: it only ends, by its expiry time (known
here) or by logout (announced on the SESSIONS_ENDED channel). So a verified
session can be answered from memory until either happens, and a quote request
costs no Redis round trip. Whenever the announcement channel is not known to
be live (before the first subscription, after a disconnect) the cache is
emptied and bypassed, so a logout is never missed.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import gevent
import redis
from loguru import logger

from papertrader import metrics
from papertrader.protocol.errors import ErrorCode
from papertrader.store import keys
from papertrader.store.redis_connect import FOLLOW_CHECK_SECONDS, PrimaryMoved, on_primary
from papertrader.store.sessions import Session, SessionError, SessionStore

MAX_ENTRIES = 100_000
RESUBSCRIBE_DELAY = 1.0


class SessionCache:
    """Verified sessions by id, dropped on logout announcements and at expiry."""

    def __init__(self, store: SessionStore, client: redis.Redis) -> None:
        self.store = store
        self._redis = client
        self._sessions: dict[uuid.UUID, Session] = {}
        self._live = False  # True only while subscribed: otherwise never trust memory
        self._ended = 0  # counts announcements, to spot one racing a fetch
        #: Moves on whenever a session leaves this cache or the cache stops being live:
        #: a connection that saw a session held at epoch E may trust it while still E.
        self.epoch = 0
        self._listener: gevent.Greenlet | None = None

    def start(self) -> None:
        self._listener = gevent.spawn(self._listen)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.kill(block=False)
        self._live = False
        self._sessions.clear()
        self.epoch += 1

    def clear(self) -> None:
        """Forget every session (they are checked in Redis again on their next use)."""
        self._ended += 1  # a fetch racing this must not put an old answer back
        self._sessions.clear()

    @property
    def size(self) -> int:
        return len(self._sessions)

    def get(self, session_id: uuid.UUID, client_ip: str | None, fresh: bool = False) -> Session:
        """The live session checked against ``client_ip``, or SessionError.

        ``fresh`` asks Redis itself: for private data, resume and logout, where even
        the milliseconds a logout announcement takes to arrive matter. Market data
        requests and orders take the cached answer (the master's drain checks each
        order's session in Redis again: ``master/order_sessions.py``).
        """
        if fresh:
            try:
                stored = self.store.fetch(session_id)
            except SessionError:
                self.forget(session_id)
                raise
            return self.store.verify(stored, client_ip)
        cached = self._sessions.get(session_id) if self._live else None
        metrics.REQUEST_FIGURES.session_lookups["miss" if cached is None else "hit"] += 1
        if cached is not None:
            if cached.expires_at > datetime.now(timezone.utc):
                return self.store.verify(cached, client_ip)
            self._sessions.pop(session_id, None)
            self.epoch += 1
            raise SessionError(
                ErrorCode.INVALID_SESSION, "session is unknown or expired: log in again"
            )
        ended_before = self._ended
        session = self.store.fetch(session_id)
        if self._live and self._ended == ended_before:
            if len(self._sessions) >= MAX_ENTRIES:
                self._sessions.pop(next(iter(self._sessions)))  # the oldest entry
                self.epoch += 1
            self._sessions[session_id] = session
        return self.store.verify(session, client_ip)

    def epoch_holding(self, session: Session) -> int | None:
        """The epoch if ``session`` is the one held here and announcements are live (a
        connection may then trust it until the epoch moves on), else None."""
        if self._live and self._sessions.get(session.session_id) is session:
            return self.epoch
        return None

    def remember(self, session: Session) -> None:
        """A session this worker just created is known valid."""
        if self._live:
            self._sessions[session.session_id] = session

    def forget(self, session_id: uuid.UUID) -> None:
        self._sessions.pop(session_id, None)
        self.epoch += 1

    def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(keys.SESSIONS_ENDED)
                checked = time.monotonic()
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    gevent.sleep(0)  # a burst of announcements must not starve the clients
                    if time.monotonic() - checked >= FOLLOW_CHECK_SECONDS:
                        # After a Sentinel failover: listen where the master publishes.
                        checked = time.monotonic()
                        if not on_primary(self._redis, pubsub.connection):
                            raise PrimaryMoved("the Redis primary moved")
                    if message is None:
                        continue
                    if message.get("type") == "subscribe":
                        # Confirmed: from here on no announcement can be missed.
                        self._live = True
                    elif message.get("type") == "message":
                        self._ended += 1
                        try:
                            self._sessions.pop(uuid.UUID(hex=message["data"].decode()), None)
                            self.epoch += 1
                        except (ValueError, AttributeError):
                            logger.warning("ignoring a malformed session-ended announcement")
            except redis.RedisError as exc:
                logger.warning(f"session announcements unavailable ({exc}); not caching sessions")
            finally:
                self._live = False
                self._sessions.clear()
                self.epoch += 1
                pubsub.close()
            gevent.sleep(RESUBSCRIBE_DELAY)
