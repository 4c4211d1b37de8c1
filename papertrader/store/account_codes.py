"""One-time codes mailed to an account's owner: password reset, e-mail verification.

A code is 32 random bytes shown to the user in URL-safe base64; the table
keeps only its SHA-256 (``code_hash``), so reading the database gives nobody
a working code. Using one is a single UPDATE that succeeds only for an
unused, unexpired code of the right purpose, so a code works once even when
two requests race with it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from papertrader.store.pool import ConnectionPool

CODE_BYTES = 32


def new_code() -> str:
    """A fresh code as the user sees it (43 URL-safe characters)."""
    return secrets.token_urlsafe(CODE_BYTES)


def code_hash(code: str) -> bytes:
    """What the table stores for ``code`` (surrounding spaces from a paste ignored)."""
    return hashlib.sha256(code.strip().encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class UsedCode:
    account_id: int
    email: str
    created_at: datetime


def issue(
    pool: ConnectionPool, account_id: int, purpose: str, email: str, lifetime: timedelta
) -> str:
    """Store a new code for the account and return it (the only time it exists in clear).

    Earlier unused codes of the same purpose are withdrawn: only the newest
    mail works, so an old mail found later in a mailbox opens nothing.
    """
    code = new_code()
    with pool.transaction() as cur:
        cur.execute(
            "UPDATE account_codes SET used_at = now()"
            " WHERE account_id = %s AND purpose = %s AND used_at IS NULL",
            (account_id, purpose),
        )
        cur.execute(
            "INSERT INTO account_codes (code_hash, account_id, purpose, email, expires_at)"
            " VALUES (%s, %s, %s, %s, now() + %s)",
            (code_hash(code), account_id, purpose, email, lifetime),
        )
        # Old rows are of no use once expired: keep the table small.
        cur.execute("DELETE FROM account_codes WHERE expires_at < now() - interval '7 days'")
    return code


def use(pool: ConnectionPool, code: str, purpose: str) -> UsedCode | None:
    """Spend the code: its account, or None when it is unknown, used or expired."""
    with pool.transaction() as cur:
        cur.execute(
            "UPDATE account_codes SET used_at = now()"
            " WHERE code_hash = %s AND purpose = %s AND used_at IS NULL AND expires_at > now()"
            " RETURNING account_id, email, created_at",
            (code_hash(code), purpose),
        )
        row = cur.fetchone()
    return None if row is None else UsedCode(int(row[0]), str(row[1]), row[2])


def peek(pool: ConnectionPool, code: str, purpose: str) -> int | None:
    """The account whose code this is if it would be accepted now (without spending it)."""
    with pool.transaction() as cur:
        cur.execute(
            "SELECT account_id FROM account_codes WHERE code_hash = %s AND purpose = %s"
            " AND used_at IS NULL AND expires_at > now()",
            (code_hash(code), purpose),
        )
        row = cur.fetchone()
    return None if row is None else int(row[0])
