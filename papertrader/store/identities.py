"""Provider sign-ins linked to accounts (migration 0004, ``account_identities``).

An identity is the provider's ``(issuer, subject)`` pair: the ``sub`` claim
is the person's stable id at that issuer, while the e-mail address may change
or be recycled, so an account is never found by e-mail at sign-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2.errors

from papertrader.store.pool import ConnectionPool


@dataclass(frozen=True)
class Identity:
    account_id: int
    provider: str
    issuer: str
    subject: str
    email: str
    linked_at: datetime
    last_login_at: datetime | None


class IdentityTaken(Exception):
    """The sign-in is linked to another account, or the account has one of this provider."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _identity(row: tuple[Any, ...]) -> Identity:
    return Identity(int(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), row[5], row[6])


def find(pool: ConnectionPool, issuer: str, subject: str) -> Identity | None:
    """The identity of this person at this issuer, or None (never linked)."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT account_id, provider, issuer, subject,"
            " email, linked_at, last_login_at"
            " FROM account_identities WHERE issuer = %s AND subject = %s",
            (issuer, subject),
        )
        row = cur.fetchone()
    return None if row is None else _identity(row)


def of_account(pool: ConnectionPool, account_id: int) -> list[Identity]:
    """Every provider linked to the account, oldest link first."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT account_id, provider, issuer, subject,"
            " email, linked_at, last_login_at"
            " FROM account_identities WHERE account_id = %s ORDER BY linked_at",
            (account_id,),
        )
        rows = cur.fetchall()
    return [_identity(row) for row in rows]


def link(
    pool: ConnectionPool, account_id: int, provider: str, issuer: str, subject: str, email: str
) -> Identity:
    """Link a verified sign-in to the account; ``IdentityTaken`` if either side has one."""
    try:
        with pool.transaction() as cur:
            cur.execute(
                "INSERT INTO account_identities (account_id, provider, issuer, subject, email)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING account_id, provider, issuer, subject,"
                " email, linked_at, last_login_at",
                (account_id, provider, issuer, subject, email),
            )
            row = cur.fetchone()
    except psycopg2.errors.UniqueViolation as exc:
        constraint = exc.diag.constraint_name or ""
        raise IdentityTaken("provider" if "per_provider" in constraint else "subject") from None
    assert row is not None
    return _identity(row)


def unlink(pool: ConnectionPool, account_id: int, provider: str) -> bool:
    """Remove the account's link to ``provider``, only if a way in remains.

    The account row is locked first and the condition read after the lock
    (a new snapshot), so two concurrent unlinks, or an unlink racing a
    password removal, cannot together leave the account with no way in. False when
    nothing was removed (not linked, or it was the last way in).
    """
    with pool.transaction() as cur:
        cur.execute("SELECT is_password FROM accounts WHERE id = %s FOR UPDATE", (account_id,))
        row = cur.fetchone()
        if row is None:
            return False
        cur.execute(
            "DELETE FROM account_identities WHERE account_id = %s AND provider = %s"
            " AND (%s OR (SELECT count(*) FROM account_identities WHERE account_id = %s) > 1)",
            (account_id, provider, bool(row[0]), account_id),
        )
        return bool(cur.rowcount)


def touch(pool: ConnectionPool, issuer: str, subject: str, email: str) -> None:
    """Record a sign-in (and the e-mail the provider now reports)."""
    with pool.transaction() as cur:
        cur.execute(
            "UPDATE account_identities SET last_login_at = now(), email = %s"
            " WHERE issuer = %s AND subject = %s",
            (email, issuer, subject),
        )
