"""The drain's session check: an order is applied only for the session that placed it.

A worker queues an order with the session it checked (its hex id, the
``session`` field of the stream entry) and the client address it stamped. A
compromised worker could ``XADD`` anything, so the master checks every entry
again when it drains it, against the sessions only it can write:

* the session must still be live (not logged out, not expired),
* it must belong to the order's account,
* and it must have been bound to the client address the worker stamped
  (unless ``session_ip_check`` is off).

Anything else is rejected with a reason (``SESSION_MISMATCH``, or
``INVALID_SESSION`` for a session that ended) in the same set-based apply as
every other order, never filled, and a mismatch is logged as an attack.

Entries queued before orders carried a session (an install upgraded with
orders waiting) are applied as before: ``pt:orders:before-sessions`` records
the last such entry's id, set once by the first master that checks sessions.

Most of this work is done before the drain (issue 15: the tick that answers an
interval's orders must be short). The intake calls ``prepare`` as entries
arrive: each session not seen before is read and its signature verified then,
and the record is remembered. At the drain, the sessions remembered are only
asked "do you still exist?" (one ``EXISTS`` naming them all); a session that
is gone, or any answer short of all of them, sends every one of them through
the full read again. That is as strict as reading every record at the drain:
a session record is written once, by the master, at login (``SessionStore``:
never rewritten after it; the workers' Redis user may only read sessions), and
it ends by being deleted (logout) or by expiring (its TTL), both of which
``EXISTS`` sees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import redis
from loguru import logger

from papertrader.protocol.errors import ErrorCode
from papertrader.store import keys
from papertrader.store.order_queue import Entry
from papertrader.store.orders import Refusal
from papertrader.store.sessions import Session, SessionError, SessionStore


def _stream_position(stream_id: bytes | str) -> tuple[int, int]:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms or 0), int(seq or 0)


def mark_orders_before_sessions(client: redis.Redis) -> None:
    """Record (once) the last entry queued before orders carried their session."""
    try:
        last = client.xinfo_stream(keys.ORDERS)["last-generated-id"]
    except redis.ResponseError:  # no stream yet: nothing was queued before
        last = b"0-0"
    client.set(keys.ORDERS_BEFORE_SESSIONS, last, nx=True)


#: Most session records remembered between drains (beyond it, forgotten and read again).
MAX_KNOWN = 100_000
#: Most keys one EXISTS names.
EXISTS_BATCH = 5000


class SessionCheck:
    """The drain's ``check``: the entries to refuse, with (code, reason)."""

    def __init__(
        self,
        client: redis.Redis,
        sessions: SessionStore,
        ip_check: bool = True,
        max_known: int = MAX_KNOWN,
    ) -> None:
        self._redis = client
        self._sessions = sessions
        self._ip_check = ip_check
        self._max_known = max_known
        #: Live session records read and verified (session hex -> record), and the
        #: verifier that checked them (another key: all are read again).
        self._known: dict[str, Session] = {}
        self._known_verifier = sessions.verifier

    def prepare(self, entries: Iterable[Entry]) -> None:
        """Read and verify the sessions of newly arrived entries that are not known yet
        (the intake calls this as orders arrive, so the drain has less to do)."""
        self._forget_if_rekeyed()
        known = self._known
        new = {
            e.staged.session
            for e in entries
            if e.staged is not None and e.staged.session and e.staged.session not in known
        }
        if new:
            self._read(new)

    def _forget_if_rekeyed(self) -> None:
        if self._sessions.verifier is not self._known_verifier:
            self._known.clear()
            self._known_verifier = self._sessions.verifier

    def _read(self, hexes: Iterable[str]) -> dict[str, Session | SessionError]:
        """Each session read and verified now; the live ones are remembered."""
        found = self._sessions.fetch_many(hexes)
        known = self._known
        for session_hex, session in found.items():
            if isinstance(session, Session):
                if len(known) >= self._max_known:
                    known.clear()
                known[session_hex] = session
            else:
                known.pop(session_hex, None)
        return found

    def _current(self, hexes: set[str]) -> dict[str, Session | SessionError]:
        """Each session as it stands now: the remembered ones if every one of them still
        exists, otherwise (and for the others) read again."""
        self._forget_if_rekeyed()
        known = self._known
        remembered = [h for h in hexes if h in known]
        current: dict[str, Session | SessionError] = {}
        if remembered:
            names = [keys.session(h) for h in remembered]
            live = 0
            for start in range(0, len(names), EXISTS_BATCH):
                live += int(self._redis.exists(*names[start : start + EXISTS_BATCH]))
            if live == len(remembered):
                current = {h: known[h] for h in remembered}
        rest = hexes.difference(current)
        if rest:
            current.update(self._read(rest))
        return current

    def _before_sessions(self) -> tuple[int, int]:
        raw = self._redis.get(keys.ORDERS_BEFORE_SESSIONS)
        return _stream_position(raw) if isinstance(raw, (bytes, str)) else (0, 0)

    def __call__(self, entries: Sequence[Entry]) -> Mapping[bytes, Refusal]:
        found = self._current(
            {e.staged.session for e in entries if e.staged is not None and e.staged.session}
        )
        cutoff: tuple[int, int] | None = None
        refused: dict[bytes, Refusal] = {}
        for entry in entries:
            staged = entry.staged
            if staged is None:
                continue
            if staged.session is None:
                if cutoff is None:
                    cutoff = self._before_sessions()
                if _stream_position(entry.stream_id) <= cutoff:
                    continue  # queued before orders carried their session
                refused[entry.stream_id] = self._attack(
                    entry, "the order names no session: it was not placed through a login"
                )
                continue
            session = found.get(staged.session)
            if isinstance(session, SessionError) or session is None:
                code = session.code if isinstance(session, SessionError) else None
                if code is ErrorCode.SESSION_UNVERIFIED:
                    refused[entry.stream_id] = self._attack(entry, session.reason)  # type: ignore[union-attr]
                    continue
                refused[entry.stream_id] = (
                    int(ErrorCode.INVALID_SESSION),
                    "the session that placed the order ended before it was applied "
                    "(logged out or expired): log in and place it again",
                )
                continue
            problem = self._mismatch(staged.account_id, staged.client_ip, session)
            if problem is not None:
                refused[entry.stream_id] = self._attack(entry, problem)
        return refused

    def _mismatch(self, account_id: str, client_ip: str | None, session: Session) -> str | None:
        if str(session.account_id) != account_id:
            return f"its session belongs to account {session.account_id}, not to {account_id}"
        if self._ip_check and client_ip != session.client_ip:
            return (
                f"its session was bound to {session.client_ip}, the worker stamped "
                f"{client_ip or 'no address'}"
            )
        return None

    @staticmethod
    def _attack(entry: Entry, why: str) -> Refusal:
        staged = entry.staged
        assert staged is not None
        logger.warning(
            "ATTACK? order {} for account {} queued by worker {!r} refused at the drain: {}",
            staged.order_id,
            staged.account_id,
            staged.worker[:64],
            why,
        )
        return (
            int(ErrorCode.SESSION_MISMATCH),
            "refused: the order does not match a live session of its account from the "
            "address it was placed from",
        )
