"""Competitions, their members and their accounts in PostgreSQL (migration 0009).

A member's competition account is a row of ``accounts`` owned by the member
(``owner_id``), so the drain fills its orders exactly as it fills a practice
account's. This module creates, finds, joins and leaves competitions, resolves
"the account of user U in competition C" for orders and lists, and reads what
a leaderboard is computed from. It decides nothing about who may see what:
``master/competitions.py`` does.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from papertrader.store.pool import ConnectionPool

#: Join codes: eight characters without the ones people misread (0/O, 1/I/L).
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8


def new_join_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normal_code(code: str) -> str:
    """A join code as typed ("k7qp-m2xd", spaces) in its stored form ("K7QPM2XD")."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


@dataclass(frozen=True)
class Competition:
    id: int
    name: str
    created_by: int | None  # the creating user's account; None: an operator
    creator_name: str  # "" for an operator (or a deleted user)
    starts_at: datetime
    ends_at: datetime
    starting_cash: Decimal
    symbols: tuple[str, ...] | None  # None: every asset
    join_code: str | None  # None: public
    created_at: datetime
    members: int = 0
    joined: bool = False  # the asking user is a member

    @property
    def private(self) -> bool:
        return self.join_code is not None

    def status(self, now: datetime) -> str:
        if now < self.starts_at:
            return "upcoming"
        return "running" if now < self.ends_at else "ended"

    def trades(self, symbol: str) -> bool:
        return self.symbols is None or symbol.upper() in self.symbols


class CompetitionConflict(Exception):
    """A competition of that name exists already."""


_SELECT = (
    "SELECT c.id, c.name, c.created_by, COALESCE(u.username, ''), c.starts_at, c.ends_at,"
    " c.starting_cash, c.symbols, c.join_code, c.created_at,"
    " (SELECT count(*) FROM competition_members m WHERE m.competition_id = c.id),"
    " EXISTS (SELECT 1 FROM competition_members m"
    "         WHERE m.competition_id = c.id AND m.user_id = %s)"
    " FROM competitions c LEFT JOIN accounts u ON u.id = c.created_by"
)


def _competition(row: Sequence[Any]) -> Competition:
    return Competition(
        id=int(row[0]),
        name=str(row[1]),
        created_by=None if row[2] is None else int(row[2]),
        creator_name=str(row[3]),
        starts_at=row[4],
        ends_at=row[5],
        starting_cash=Decimal(row[6]),
        symbols=None if row[7] is None else tuple(row[7]),
        join_code=row[8],
        created_at=row[9],
        members=int(row[10]),
        joined=bool(row[11]),
    )


def create(
    pool: ConnectionPool,
    name: str,
    starts_at: datetime,
    ends_at: datetime,
    starting_cash: Decimal,
    symbols: Sequence[str] | None,
    private: bool,
    created_by: int | None,
) -> Competition:
    """Create a competition (a fresh join code if private); CompetitionConflict if the
    name is taken."""
    with pool.transaction() as cur:
        cur.execute("SELECT 1 FROM competitions WHERE lower(name) = lower(%s)", (name,))
        if cur.fetchone() is not None:
            raise CompetitionConflict(name)
        code = None
        while private and code is None:
            code = new_join_code()
            cur.execute("SELECT 1 FROM competitions WHERE join_code = %s", (code,))
            if cur.fetchone() is not None:
                code = None
        cur.execute(
            "INSERT INTO competitions (name, created_by, starts_at, ends_at, starting_cash,"
            " symbols, join_code) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                name, created_by, starts_at, ends_at, starting_cash,
                None if symbols is None else list(symbols), code,
            ),
        )  # fmt: skip
        row = cur.fetchone()
        assert row is not None
        cur.execute(_SELECT + " WHERE c.id = %s", (created_by, row[0]))
        created = cur.fetchone()
    assert created is not None
    return _competition(created)


def open_count(pool: ConnectionPool, created_by: int, now: datetime) -> int:
    """How many competitions a user created that have not ended."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT count(*) FROM competitions WHERE created_by = %s AND ends_at > %s",
            (created_by, now),
        )
        row = cur.fetchone()
    return int(row[0]) if row else 0


def by_name(pool: ConnectionPool, name: str, user_id: int | None = None) -> Competition | None:
    """The competition of that name (any case), whoever may see it."""
    with pool.transaction() as cur:
        cur.execute(_SELECT + " WHERE lower(c.name) = lower(%s)", (user_id, name))
        row = cur.fetchone()
    return None if row is None else _competition(row)


def by_code(pool: ConnectionPool, code: str, user_id: int | None = None) -> Competition | None:
    """The private competition with this join code."""
    with pool.transaction() as cur:
        cur.execute(_SELECT + " WHERE c.join_code = %s", (user_id, normal_code(code)))
        row = cur.fetchone()
    return None if row is None else _competition(row)


def visible(pool: ConnectionPool, user_id: int | None, limit: int) -> list[Competition]:
    """The competitions a user may see (public ones, private ones they joined or
    created; every one for an operator, ``user_id`` None), running and upcoming
    first, then the most recently ended."""
    where = "" if user_id is None else (
        " WHERE c.join_code IS NULL OR c.created_by = %s OR EXISTS (SELECT 1 FROM"
        " competition_members m WHERE m.competition_id = c.id AND m.user_id = %s)"
    )  # fmt: skip
    params: tuple[Any, ...] = (user_id,) if user_id is None else (user_id, user_id, user_id)
    with pool.transaction() as cur:
        cur.execute(
            _SELECT
            + where
            + " ORDER BY c.ends_at <= now(), CASE WHEN c.ends_at > now() THEN c.starts_at END,"
            " c.ends_at DESC, c.id LIMIT %s",
            (*params, limit),
        )
        rows = cur.fetchall()
    return [_competition(row) for row in rows]


def member_account(pool: ConnectionPool, competition_id: int, user_id: int) -> int | None:
    """The user's account in the competition, or None if not a member."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT account_id FROM competition_members WHERE competition_id = %s AND user_id = %s",
            (competition_id, user_id),
        )
        row = cur.fetchone()
    return None if row is None else int(row[0])


def join(pool: ConnectionPool, competition: Competition, user_id: int) -> bool:
    """Make the user a member with a fresh account holding the starting cash; False if
    already a member (nothing changes)."""
    with pool.transaction() as cur:
        cur.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (user_id,))
        if cur.fetchone() is None:
            raise LookupError("the user's account no longer exists")
        cur.execute(
            "SELECT 1 FROM competition_members WHERE competition_id = %s AND user_id = %s",
            (competition.id, user_id),
        )
        if cur.fetchone() is not None:
            return False
        handle = f"~{competition.id}.{user_id}"
        # A username left behind by an earlier membership (left since) is reused.
        cur.execute("DELETE FROM accounts WHERE username = %s AND owner_id = %s", (handle, user_id))
        cur.execute(
            "INSERT INTO accounts (username, email, is_password, password_hash, cash, owner_id)"
            " VALUES (%s, %s, FALSE, '', %s, %s) RETURNING id",
            (handle, f"{handle}@competition.invalid", competition.starting_cash, user_id),
        )
        row = cur.fetchone()
        assert row is not None
        cur.execute(
            "INSERT INTO competition_members (competition_id, user_id, account_id)"
            " VALUES (%s, %s, %s)",
            (competition.id, user_id, row[0]),
        )
    return True


def leave(pool: ConnectionPool, competition_id: int, user_id: int) -> bool:
    """End the membership: the competition account goes, with its positions and orders
    (open ones with their reservations). False if the user was not a member."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT a.id FROM competition_members m JOIN accounts a ON a.id = m.account_id"
            " WHERE m.competition_id = %s AND m.user_id = %s FOR UPDATE OF a",
            (competition_id, user_id),
        )
        row = cur.fetchone()
        if row is None:
            return False
        cur.execute("DELETE FROM orders WHERE account_id = %s", (row[0],))
        cur.execute("DELETE FROM accounts WHERE id = %s", (row[0],))
    return True


@dataclass(frozen=True)
class Standing:
    """What one member's place is computed from."""

    username: str
    account_id: int
    user_id: int
    cash: Decimal
    joined_at: datetime
    positions: tuple[tuple[str, int, Decimal], ...]  # symbol, units, average cost


def standings(pool: ConnectionPool, competition_id: int) -> list[Standing]:
    """Every member's cash and positions, in the order they joined."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT u.username, a.id, u.id, a.cash, m.joined_at,"
            " COALESCE((SELECT array_agg(ARRAY[p.symbol, p.quantity::text,"
            "           p.average_price::text] ORDER BY p.symbol)"
            "           FROM positions p WHERE p.account_id = a.id AND p.quantity > 0),"
            "          '{}')"
            " FROM competition_members m"
            " JOIN accounts a ON a.id = m.account_id JOIN accounts u ON u.id = m.user_id"
            " WHERE m.competition_id = %s ORDER BY m.joined_at, u.username",
            (competition_id,),
        )
        rows = cur.fetchall()
    return [
        Standing(
            username=str(row[0]),
            account_id=int(row[1]),
            user_id=int(row[2]),
            cash=Decimal(row[3]),
            joined_at=row[4],
            positions=tuple((str(s), int(q), Decimal(a)) for s, q, a in row[5]),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class Membership:
    """What the drain needs to know of a competition order's account."""

    account_id: int
    starts_at: datetime
    ends_at: datetime
    symbols: tuple[str, ...] | None


def memberships(
    pool: ConnectionPool, wanted: Iterable[tuple[int, str]]
) -> dict[tuple[int, str], Membership | None]:
    """(user id, lower-cased competition name) -> the user's account there and the
    competition's terms, or None (no such competition, or not a member); one query."""
    pairs = sorted(set(wanted))
    found: dict[tuple[int, str], Membership | None] = dict.fromkeys(pairs)
    if not pairs:
        return found
    with pool.transaction() as cur:
        cur.execute(
            "SELECT w.user_id, w.name, m.account_id, c.starts_at, c.ends_at, c.symbols"
            " FROM unnest(%s::bigint[], %s::text[]) AS w(user_id, name)"
            " JOIN competitions c ON lower(c.name) = w.name"
            " JOIN competition_members m ON m.competition_id = c.id AND m.user_id = w.user_id",
            ([p[0] for p in pairs], [p[1] for p in pairs]),
        )
        for user_id, name, account_id, starts_at, ends_at, symbols in cur.fetchall():
            found[(int(user_id), str(name))] = Membership(
                int(account_id), starts_at, ends_at, None if symbols is None else tuple(symbols)
            )
    return found


def order_accounts(pool: ConnectionPool, order_ids: Sequence[str]) -> dict[str, int]:
    """order id (hex) -> the account of the order recorded with it, for those known."""
    if not order_ids:
        return {}
    with pool.transaction() as cur:
        cur.execute(
            "SELECT replace(order_id::text, '-', ''), account_id FROM orders"
            " WHERE order_id = ANY (%s::uuid[])",
            (list(order_ids),),
        )
        return {str(row[0]): int(row[1]) for row in cur.fetchall()}


def owned_accounts(pool: ConnectionPool, user_id: int) -> list[int]:
    """The user's competition accounts."""
    with pool.transaction() as cur:
        cur.execute("SELECT id FROM accounts WHERE owner_id = %s ORDER BY id", (user_id,))
        return [int(row[0]) for row in cur.fetchall()]
