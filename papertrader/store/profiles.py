"""Whether an account's profile is public (migration 0007): private by default."""

from __future__ import annotations

from papertrader.store.pool import ConnectionPool


def is_public(pool: ConnectionPool, account_id: int) -> bool:
    """True if the account's owner made its profile public."""
    with pool.transaction() as cur:
        cur.execute("SELECT public_profile FROM accounts WHERE id = %s", (account_id,))
        row = cur.fetchone()
    return bool(row and row[0])


def set_public(pool: ConnectionPool, account_id: int, public: bool) -> bool:
    """Make the profile public or private; False if there is no such account."""
    with pool.transaction() as cur:
        cur.execute("UPDATE accounts SET public_profile = %s WHERE id = %s", (public, account_id))
        return bool(cur.rowcount)
