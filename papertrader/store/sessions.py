"""Sessions in Redis, shared by every worker (spec 2.4.2 and the connectionless model).

A session is a Redis hash whose TTL is its expiry, so an expired session simply
is not there, on every worker at once, and logout is one DEL.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import cast

import redis

from papertrader.protocol.errors import ErrorCode
from papertrader.store import keys


class SessionError(Exception):
    """A session was refused; ``code`` is the ErrorCode sent back to the client."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Session:
    session_id: uuid.UUID
    account_id: int
    username: str
    client_ip: str
    remember: bool
    expires_at: datetime


class SessionStore:
    """Create, verify and end sessions. Thread- and greenlet-safe (redis-py pools)."""

    def __init__(
        self,
        client: redis.Redis,
        ttl_seconds: int,
        remember_ttl_seconds: int,
        ip_check: bool = True,
    ) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self._remember_ttl = remember_ttl_seconds
        self._ip_check = ip_check

    def create(self, account_id: int, username: str, client_ip: str, remember: bool) -> Session:
        """A fresh 128-bit random session id; the short or long expiry by ``remember``."""
        session_id = uuid.UUID(bytes=secrets.token_bytes(16))
        ttl = self._remember_ttl if remember else self._ttl
        expires_at = datetime.now(timezone.utc) + timedelta(seconds=ttl)
        key = keys.session(session_id.hex)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "account_id": account_id,
                "username": username,
                "client_ip": client_ip,
                "remember": int(remember),
                "expires_at": expires_at.isoformat(),
            },
        )
        pipe.expire(key, ttl)
        pipe.sadd(keys.account_sessions(account_id), session_id.hex)
        pipe.expire(keys.account_sessions(account_id), self._remember_ttl)
        pipe.execute()
        return Session(session_id, account_id, username, client_ip, remember, expires_at)

    def get(self, session_id: uuid.UUID, client_ip: str | None) -> Session:
        """The live session, or SessionError (unknown, expired, or used from another IP)."""
        return self.verify(self.fetch(session_id), client_ip)

    def fetch(self, session_id: uuid.UUID) -> Session:
        """The session as stored, or SessionError if there is none (unknown or expired)."""
        if session_id.int == 0:
            raise SessionError(
                ErrorCode.INVALID_SESSION, "this instruction needs a session id: log in first"
            )
        raw = cast("dict[bytes, bytes]", self._redis.hgetall(keys.session(session_id.hex)))
        if not raw:
            raise SessionError(
                ErrorCode.INVALID_SESSION, "session is unknown or expired: log in again"
            )
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        session = Session(
            session_id=session_id,
            account_id=int(fields["account_id"]),
            username=fields["username"],
            client_ip=fields["client_ip"],
            remember=fields["remember"] == "1",
            expires_at=datetime.fromisoformat(fields["expires_at"]),
        )
        return session

    def verify(self, session: Session, client_ip: str | None) -> Session:
        """Refuse a session used from another address (unless configured otherwise)."""
        if self._ip_check and client_ip is not None and client_ip != session.client_ip:
            raise SessionError(
                ErrorCode.SESSION_IP_MISMATCH, "session belongs to another address: log in again"
            )
        return session

    def end(self, session: Session) -> None:
        """Logout: gone for every worker at once.

        The announcement on SESSIONS_ENDED lets workers that keep sessions in
        memory drop this one now rather than at its expiry.
        """
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(keys.session(session.session_id.hex))
        pipe.srem(keys.account_sessions(session.account_id), session.session_id.hex)
        pipe.publish(keys.SESSIONS_ENDED, session.session_id.hex)
        pipe.execute()
