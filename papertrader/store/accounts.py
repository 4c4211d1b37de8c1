"""Accounts in PostgreSQL (spec 2.4.1): create one, find one.

Usernames and e-mail addresses are unique case-insensitively (the
``lower(...)`` indexes of migration 0001), so every lookup compares with
PostgreSQL's ``lower`` on both sides: the index decides, never Python's idea
of lower case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg2.errors

from papertrader.store.pool import ConnectionPool


@dataclass(frozen=True)
class Account:
    """One row of ``accounts``. The hash stays out of ``repr`` so an account can be logged."""

    id: int
    username: str
    email: str
    is_password: bool
    password_hash: str = field(repr=False)
    cash: Decimal
    created_at: datetime
    email_verified: bool = False


@dataclass(frozen=True)
class NewIdentity:
    """A verified provider sign-in to record with a new account (``store/identities.py``)."""

    provider: str
    issuer: str
    subject: str


class AccountTaken(Exception):
    """The username or the e-mail address already belongs to an account."""

    def __init__(self, what: Literal["username", "email", "identity"]) -> None:
        super().__init__(f"{what} is taken")
        self.what = what


def _account(row: tuple[Any, ...]) -> Account:
    return Account(
        id=int(row[0]),
        username=str(row[1]),
        email=str(row[2]),
        is_password=bool(row[3]),
        password_hash=str(row[4]),
        cash=Decimal(row[5]),
        created_at=row[6],
        email_verified=bool(row[7]),
    )


def create_account(
    pool: ConnectionPool,
    username: str,
    email: str,
    password_hash: str,
    cash: Decimal,
    *,
    email_verified: bool = False,
    identity: NewIdentity | None = None,
) -> Account:
    """Insert an account; ``AccountTaken`` if a unique index refuses it.

    An empty ``password_hash`` makes an account without a password (spec
    3.1.3), which needs ``identity``: the provider sign-in it is created
    with, inserted in the same transaction so the account never exists
    without a way in. The index, not a prior SELECT, is what guarantees
    uniqueness: two registrations racing for one name both pass any
    pre-check, one INSERT wins.
    """
    if not password_hash and identity is None:
        raise ValueError("an account without a password needs a provider identity")
    try:
        with pool.transaction() as cur:
            cur.execute(
                "INSERT INTO accounts (username, email, is_password, password_hash, cash,"
                " email_verified) VALUES (%s, %s, %s, %s, %s, %s)"
                " RETURNING id, username, email, is_password,"
                " password_hash, cash, created_at, email_verified",
                (username, email, bool(password_hash), password_hash, cash, email_verified),
            )
            row = cur.fetchone()
            assert row is not None
            if identity is not None:
                cur.execute(
                    "INSERT INTO account_identities"
                    " (account_id, provider, issuer, subject, email, last_login_at)"
                    " VALUES (%s, %s, %s, %s, %s, now())",
                    (row[0], identity.provider, identity.issuer, identity.subject, email),
                )
    except psycopg2.errors.UniqueViolation as exc:
        constraint = exc.diag.constraint_name or ""
        if "identities" in constraint:
            raise AccountTaken("identity") from None
        raise AccountTaken("email" if "email" in constraint else "username") from None
    return _account(row)


def find_account_by_username(pool: ConnectionPool, username: str) -> Account | None:
    """The account whose username equals ``username`` ignoring case, or None."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT id, username, email, is_password,"
            " password_hash, cash, created_at, email_verified"
            " FROM accounts WHERE lower(username) = lower(%s)",
            (username,),
        )
        row = cur.fetchone()
    return None if row is None else _account(row)


def get_account(pool: ConnectionPool, account_id: int) -> Account | None:
    """The account with this id, or None (deleted since the session was made)."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT id, username, email, is_password,"
            " password_hash, cash, created_at, email_verified"
            " FROM accounts WHERE id = %s",
            (account_id,),
        )
        row = cur.fetchone()
    return None if row is None else _account(row)


def taken(pool: ConnectionPool, username: str, email: str) -> tuple[bool, bool]:
    """Whether the username and the e-mail address are in use (ignoring case).

    A cheap check before spending a bcrypt hash on a registration that the
    unique index would refuse anyway. The name of an account deleted less
    than ``username_retirement_days`` ago counts as taken.
    """
    with pool.transaction() as cur:
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE lower(username) = lower(%s))"
            " OR EXISTS (SELECT 1 FROM retired_usernames WHERE username_lower = lower(%s)"
            " AND retired_until > now()),"
            " EXISTS (SELECT 1 FROM accounts WHERE lower(email) = lower(%s))",
            (username, username, email),
        )
        row = cur.fetchone()
    assert row is not None
    return bool(row[0]), bool(row[1])


def find_account_by_email(pool: ConnectionPool, email: str) -> Account | None:
    """The account whose e-mail equals ``email`` ignoring case, or None."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT id, username, email, is_password,"
            " password_hash, cash, created_at, email_verified"
            " FROM accounts WHERE lower(email) = lower(%s)",
            (email,),
        )
        row = cur.fetchone()
    return None if row is None else _account(row)


def set_password_hash(pool: ConnectionPool, account_id: int, password_hash: str) -> bool:
    """Give the account this (non-empty) password hash; False if the account is gone."""
    if not password_hash:
        raise ValueError("remove a password with remove_password")
    with pool.transaction() as cur:
        cur.execute(
            "UPDATE accounts SET password_hash = %s, is_password = TRUE,"
            " password_changed_at = now() WHERE id = %s",
            (password_hash, account_id),
        )
        return bool(cur.rowcount)


def remove_password(pool: ConnectionPool, account_id: int) -> bool:
    """Remove the password only while a provider stays linked; False otherwise.

    The account row is locked before the linked providers are counted (a
    fresh snapshot after the lock), so a concurrent unlink cannot slip in
    between and leave the account with no way in.
    """
    with pool.transaction() as cur:
        cur.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE", (account_id,))
        if cur.fetchone() is None:
            return False
        cur.execute(
            "UPDATE accounts SET password_hash = '', is_password = FALSE,"
            " password_changed_at = now() WHERE id = %s"
            " AND EXISTS (SELECT 1 FROM account_identities WHERE account_id = %s)",
            (account_id, account_id),
        )
        return bool(cur.rowcount)


def mark_email_verified(pool: ConnectionPool, account_id: int, email: str) -> bool:
    """Record that the owner proved ``email`` (only if it is still the account's address)."""
    with pool.transaction() as cur:
        cur.execute(
            "UPDATE accounts SET email_verified = TRUE WHERE id = %s AND lower(email) = lower(%s)",
            (account_id, email),
        )
        return bool(cur.rowcount)


def delete_account(pool: ConnectionPool, account_id: int, retire_days: int) -> Account | None:
    """Delete the account and everything that names it; its username is retired.

    Removed in one transaction, the account row locked first (the drain locks
    the accounts it fills for, so no fill can land half-way): every order of
    the account (open ones in the book, filled ones, the history, refused and
    canceled ones), then the account row, which takes its positions, linked
    sign-ins and mailed codes with it (``ON DELETE CASCADE``). The lower-cased
    username goes to ``retired_usernames`` for ``retire_days`` days. An order
    still queued in Redis for the account is rejected by the next drain (the
    account does not exist). Returns the deleted account, or None if there was
    none.
    """
    with pool.transaction() as cur:
        cur.execute(
            "SELECT id, username, email, is_password,"
            " password_hash, cash, created_at, email_verified"
            " FROM accounts WHERE id = %s FOR UPDATE",
            (account_id,),
        )
        row = cur.fetchone()
        if row is None:
            return None
        # Every order of the account, whatever its state: the history (transactions)
        # and the refusals (rejected_orders) are views of this table, and open
        # orders (the book, with their reservations) go with the account.
        # ... and those of its competition accounts (migration 0009), which the
        # account row takes with it.
        cur.execute(
            "DELETE FROM orders WHERE account_id = %s OR account_id IN"
            " (SELECT id FROM accounts WHERE owner_id = %s)",
            (account_id, account_id),
        )
        cur.execute("DELETE FROM accounts WHERE id = %s", (account_id,))
        cur.execute(
            "INSERT INTO retired_usernames (username_lower, retired_until)"
            " VALUES (lower(%s), now() + make_interval(days => %s))"
            " ON CONFLICT (username_lower) DO UPDATE SET retired_at = now(),"
            " retired_until = EXCLUDED.retired_until",
            (row[1], retire_days),
        )
    return _account(row)
