"""Sessions in Redis, shared by every worker (spec 2.4.2 and the connectionless model).

A session is a Redis hash whose TTL is its expiry, so an expired session simply
is not there, on every worker at once, and logout is one DEL.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import cast

import redis
from loguru import logger

from papertrader.protocol.errors import ErrorCode
from papertrader.store import keys
from papertrader.store import session_signing as signing
from papertrader.store.session_signing import SessionSigner, SessionVerifier


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
    created_at: datetime | None = None

    @property
    def handle(self) -> str:
        """The session's public name (``session_handle``)."""
        return session_handle(self.session_id)


def session_handle(session_id: uuid.UUID) -> str:
    """A short public name of a session, for listing and revoking it.

    The session id is a bearer secret and never leaves the session's own
    client; the handle (12 hex digits of its SHA-256) names it in a list of
    one's sessions without letting anyone who sees the list use it.
    """
    return hashlib.sha256(session_id.bytes).hexdigest()[:12]


@dataclass(frozen=True)
class SessionView:
    """One live session as its owner sees it in ``pt client sessions list``."""

    session: Session
    last_used_at: datetime | None
    last_ip: str | None


#: Logout in one atomic step (a script, so that WAIT can follow it on the same
#: connection in the same round trip): KEYS = the session, its last use, the account's
#: set of sessions; ARGV = the session id, the channel announcing ended sessions.
_END_LUA = """
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
"""


class SessionStore:
    """Create, verify and end sessions. Thread- and greenlet-safe (redis-py pools)."""

    def __init__(
        self,
        client: redis.Redis,
        ttl_seconds: int,
        remember_ttl_seconds: int,
        ip_check: bool = True,
        *,
        signer: SessionSigner | None = None,
        verifier: SessionVerifier | None = None,
        require_signature: bool = False,
        replicas: int = 0,
        replica_timeout: float = 1.0,
    ) -> None:
        self._redis = client
        #: Replicas a logout waits for (WAIT; redis_min_replicas_ack): a Redis failover
        #: right after it must not bring the ended session back.
        self._replicas = replicas
        self._replica_timeout_ms = max(1, round(replica_timeout * 1000))
        self._end_script = client.register_script(_END_LUA)
        self._ttl = ttl_seconds
        self._remember_ttl = remember_ttl_seconds
        self._ip_check = ip_check
        #: The master's key (it alone mints sessions); None elsewhere.
        self._signer = signer
        #: The master's public key: every record read is checked against it when set
        #: (a worker's arrives over the master link: ``set_verifier``).
        self.verifier = verifier or (signer.verifier if signer is not None else None)
        #: Refuse every session while no verifier is known (the servers; tests may not).
        self.require_signature = require_signature

    def set_verifier(self, verifier: SessionVerifier) -> None:
        """The master's public key, as the link delivered it."""
        self.verifier = verifier

    def create(self, account_id: int, username: str, client_ip: str, remember: bool) -> Session:
        """A fresh 128-bit random session id; the short or long expiry by ``remember``."""
        session_id = uuid.UUID(bytes=secrets.token_bytes(16))
        ttl = self._remember_ttl if remember else self._ttl
        created_at = datetime.now(timezone.utc)
        expires_at = created_at + timedelta(seconds=ttl)
        key = keys.session(session_id.hex)
        fields = {
            "account_id": str(account_id),
            "username": username,
            "client_ip": client_ip,
            "remember": str(int(remember)),
            "expires_at": expires_at.isoformat(),
            "created_at": created_at.isoformat(),
        }
        if self._signer is not None:
            fields[signing.FIELD] = self._signer.sign(session_id.hex, fields)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
        pipe.expire(key, ttl)
        pipe.sadd(keys.account_sessions(account_id), session_id.hex)
        pipe.expire(keys.account_sessions(account_id), self._remember_ttl)
        pipe.execute()
        return Session(
            session_id, account_id, username, client_ip, remember, expires_at, created_at
        )

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
        return self._parse(session_id, raw)

    def fetch_many(self, session_hexes: Iterable[str]) -> dict[str, Session | SessionError]:
        """Each session as stored (one pipeline), or the SessionError it gives."""
        hexes = list(dict.fromkeys(session_hexes))
        pipe = self._redis.pipeline(transaction=False)
        for session_hex in hexes:
            pipe.hgetall(keys.session(session_hex))
        found: dict[str, Session | SessionError] = {}
        for session_hex, raw in zip(hexes, pipe.execute() if hexes else [], strict=True):
            try:
                found[session_hex] = self._parse(uuid.UUID(hex=session_hex), raw)
            except SessionError as exc:
                found[session_hex] = exc
        return found

    def _parse(self, session_id: uuid.UUID, raw: dict[bytes, bytes]) -> Session:
        if not raw:
            raise SessionError(
                ErrorCode.INVALID_SESSION, "session is unknown or expired: log in again"
            )
        try:
            fields = {k.decode(): v.decode() for k, v in raw.items()}
        except UnicodeDecodeError:
            fields = {}
        self._check_signature(session_id, fields)
        try:
            return Session(
                session_id=session_id,
                account_id=int(fields["account_id"]),
                username=fields["username"],
                client_ip=fields["client_ip"],
                remember=fields["remember"] == "1",
                expires_at=datetime.fromisoformat(fields["expires_at"]),
                created_at=(
                    datetime.fromisoformat(fields["created_at"]) if "created_at" in fields else None
                ),
            )
        except (UnicodeDecodeError, KeyError, ValueError):
            logger.warning("session {}... in Redis is damaged: refused", session_id.hex[:8])
            raise SessionError(
                ErrorCode.SESSION_UNVERIFIED, "the session record is damaged: log in again"
            ) from None

    def _check_signature(self, session_id: uuid.UUID, fields: dict[str, str]) -> None:
        verifier = self.verifier
        if verifier is None:
            if self.require_signature:
                raise SessionError(
                    ErrorCode.UNAVAILABLE,
                    "this server has not received the master's session key yet: "
                    "try again in a moment",
                )
            return
        if not verifier.verify(session_id.hex, fields):
            logger.warning(
                "ATTACK? session {}... in Redis does not carry the master's signature "
                "(forged, or made before sessions were signed): refused",
                session_id.hex[:8],
            )
            raise SessionError(
                ErrorCode.SESSION_UNVERIFIED,
                "this session was not made by the master (or before an upgrade): log in again",
            )

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
        memory drop this one now rather than at its expiry. With ``replicas`` the
        logout is followed by WAIT: a warning if no replica confirmed it in time
        (the session has ended on the primary; only a failover in that moment
        could bring it back).
        """
        hexed = session.session_id.hex
        pipe = self._redis.pipeline(transaction=False)
        self._end_script(
            keys=[
                keys.session(hexed),
                keys.session_seen(hexed),
                keys.account_sessions(session.account_id),
            ],
            args=[hexed, keys.SESSIONS_ENDED],
            client=pipe,
        )
        if self._replicas > 0:
            pipe.wait(self._replicas, self._replica_timeout_ms)
        answers = pipe.execute()
        if self._replicas > 0 and int(answers[-1]) < self._replicas:
            logger.warning(
                f"no Redis replica confirmed the end of a session of account "
                f"{session.account_id} in time; a failover now could bring it back"
            )

    # -- sessions a user controls (issue 12) ----------------------------------------
    def touch(self, session: Session, client_ip: str, now: datetime | None = None) -> None:
        """Record that the session was used now, from ``client_ip`` (for its owner's list).

        Kept beside the session, not in it (``keys.session_seen``), with the
        same expiry: the session record itself is never rewritten after login.
        """
        key = keys.session_seen(session.session_id.hex)
        moment = (now or datetime.now(timezone.utc)).isoformat()
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"at": moment, "ip": client_ip})
        pipe.expireat(key, session.expires_at)
        try:
            pipe.execute()
        except redis.RedisError as exc:  # bookkeeping only: never fail the request for it
            logger.debug(f"last use of a session not recorded ({exc})")

    def of_account(self, account_id: int) -> list[SessionView]:
        """The account's live sessions, newest first; ids of ended ones are tidied away."""
        members = cast("set[bytes]", self._redis.smembers(keys.account_sessions(account_id)))
        hexes = sorted(member.decode() for member in members)
        views: list[SessionView] = []
        gone: list[str] = []
        for session_hex in hexes:
            try:
                session = self.fetch(uuid.UUID(hex=session_hex))
            except (SessionError, ValueError):
                gone.append(session_hex)
                continue
            if session.account_id != account_id:
                continue
            seen = cast("dict[bytes, bytes]", self._redis.hgetall(keys.session_seen(session_hex)))
            at = seen.get(b"at")
            ip = seen.get(b"ip")
            views.append(
                SessionView(
                    session,
                    datetime.fromisoformat(at.decode()) if at else None,
                    ip.decode() if ip else None,
                )
            )
        if gone:
            self._redis.srem(keys.account_sessions(account_id), *gone)
        oldest = datetime.min.replace(tzinfo=timezone.utc)
        views.sort(key=lambda view: view.session.created_at or oldest, reverse=True)
        return views

    def end_all(self, account_id: int, keep: uuid.UUID | None = None) -> int:
        """End every session of the account except ``keep``; how many were ended."""
        ended = 0
        for view in self.of_account(account_id):
            if view.session.session_id != keep:
                self.end(view.session)
                ended += 1
        return ended
