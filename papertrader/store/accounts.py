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


class AccountTaken(Exception):
    """The username or the e-mail address already belongs to an account."""

    def __init__(self, what: Literal["username", "email"]) -> None:
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
    )


def create_account(
    pool: ConnectionPool, username: str, email: str, password_hash: str, cash: Decimal
) -> Account:
    """Insert a password account; ``AccountTaken`` if a unique index refuses it.

    The index, not a prior SELECT, is what guarantees uniqueness: two
    registrations racing for one name both pass any pre-check, one INSERT wins.
    """
    try:
        with pool.transaction() as cur:
            cur.execute(
                "INSERT INTO accounts (username, email, is_password, password_hash, cash)"
                " VALUES (%s, %s, TRUE, %s, %s)"
                " RETURNING id, username, email, is_password, password_hash, cash, created_at",
                (username, email, password_hash, cash),
            )
            row = cur.fetchone()
    except psycopg2.errors.UniqueViolation as exc:
        constraint = exc.diag.constraint_name or ""
        raise AccountTaken("email" if "email" in constraint else "username") from None
    assert row is not None
    return _account(row)


def find_account_by_username(pool: ConnectionPool, username: str) -> Account | None:
    """The account whose username equals ``username`` ignoring case, or None."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT id, username, email, is_password, password_hash, cash, created_at"
            " FROM accounts WHERE lower(username) = lower(%s)",
            (username,),
        )
        row = cur.fetchone()
    return None if row is None else _account(row)


def get_account(pool: ConnectionPool, account_id: int) -> Account | None:
    """The account with this id, or None (deleted since the session was made)."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT id, username, email, is_password, password_hash, cash, created_at"
            " FROM accounts WHERE id = %s",
            (account_id,),
        )
        row = cur.fetchone()
    return None if row is None else _account(row)


def taken(pool: ConnectionPool, username: str, email: str) -> tuple[bool, bool]:
    """Whether the username and the e-mail address are in use (ignoring case).

    A cheap check before spending a bcrypt hash on a registration that the
    unique index would refuse anyway.
    """
    with pool.transaction() as cur:
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE lower(username) = lower(%s)),"
            " EXISTS (SELECT 1 FROM accounts WHERE lower(email) = lower(%s))",
            (username, email),
        )
        row = cur.fetchone()
    assert row is not None
    return bool(row[0]), bool(row[1])
