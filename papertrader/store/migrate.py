"""Schema migrations: ordered SQL files applied once each.

The schema lives in ``migrations/NNNN_name.sql``. ``migrate`` applies the
files not yet recorded in ``schema_migrations``, in order, each in its own
transaction together with its record, so a failing file leaves neither half a
schema change nor a record claiming it was applied. A session-level advisory
lock makes concurrent runs (two servers starting at once) safe: the second
waits, then finds nothing left to do.

Applied files must never be edited; a change is a new file.

Migrations run as the database's owner role. Given the master's role,
``migrate`` then grants it the master's rights and checks it has no more
(``papertrader/store/roles.py``), on every run, so a fresh database, an
upgraded one and one whose grants were tampered with all end the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from papertrader.store import roles

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant shared by every PaperTrader process; it spells "PTmigrat" in ASCII.
ADVISORY_LOCK_KEY = 0x50546D6967726174

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """An expected failure (no connection, a bad file, a failing statement), in one message."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    name: str
    path: Path

    @property
    def sql(self) -> str:
        """The file's SQL text."""
        return self.path.read_text(encoding="utf-8")


def list_migrations(directory: Path | None = None) -> list[Migration]:
    """The migration files of ``directory`` (default: the package's), in order.

    Files whose names do not match ``NNNN_name.sql`` are refused rather than
    skipped, and so are two files with one number: either would make the
    order ambiguous.
    """
    directory = MIGRATIONS_DIR if directory is None else directory
    migrations: list[Migration] = []
    numbers: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files must be named NNNN_lowercase_name.sql")
        if match.group(1) in numbers:
            raise MigrationError(
                f"{path.name} and {numbers[match.group(1)]} share the number {match.group(1)}"
            )
        numbers[match.group(1)] = path.name
        migrations.append(Migration(path.name, path))
    return migrations


def _connect(database_url: str) -> psycopg2.extensions.connection:
    try:
        return psycopg2.connect(database_url)
    except psycopg2.Error as exc:
        raise MigrationError(f"cannot connect to the database: {str(exc).strip()}") from exc


def _owner_hint(exc: psycopg2.Error) -> str:
    """What to do when a migration was refused for want of rights."""
    if isinstance(exc, psycopg2.errors.InsufficientPrivilege):
        return (
            " (this login may not change the schema, as the master's role may not: "
            "migrate with the owner's URL, database_owner_url / PT_DATABASE_OWNER_URL)"
        )
    return ""


def _grant(conn: psycopg2.extensions.connection, master_role: str) -> None:
    """The master's grants and their check, in one transaction."""
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_user")
            row = cur.fetchone()
            if row is not None and row[0] == master_role:
                raise MigrationError(
                    f"migrations run as {master_role}, the master's own role: give "
                    "the owner's URL (database_owner_url / PT_DATABASE_OWNER_URL)"
                )
            roles.grant_master(cur, master_role)
            roles.check_master(cur, master_role)
    except roles.RoleError as exc:
        raise MigrationError(f"the master's database role: {exc}") from None
    except psycopg2.Error as exc:
        raise MigrationError(
            f"granting the master's role {master_role}: {str(exc).strip()}"
        ) from exc


def applied_migrations(database_url: str) -> list[tuple[str, datetime]]:
    """Names and times of the migrations recorded as applied, in order."""
    conn = _connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            row = cur.fetchone()
            if row is None or not row[0]:
                return []
            cur.execute("SELECT name, applied_at FROM schema_migrations ORDER BY name")
            return [(str(name), applied_at) for name, applied_at in cur.fetchall()]
    except psycopg2.Error as exc:
        raise MigrationError(f"cannot read schema_migrations: {str(exc).strip()}") from exc
    finally:
        conn.close()


def pending_migrations(database_url: str, directory: Path | None = None) -> list[str]:
    """Names of the migration files not yet applied, in the order ``migrate`` would apply them."""
    done = {name for name, _ in applied_migrations(database_url)}
    return [m.name for m in list_migrations(directory) if m.name not in done]


def migrate(
    database_url: str, directory: Path | None = None, master_role: str | None = None
) -> list[str]:
    """Apply the pending migrations in order; returns the names applied (empty: up to date).

    ``database_url`` is the owner's. With ``master_role`` (another role than
    the owner), that role is then granted the master's rights and checked to
    have no more; a role with too many is a ``MigrationError`` saying which.
    """
    migrations = list_migrations(directory)
    conn = _connect(database_url)
    applied: list[str] = []
    try:
        conn.autocommit = True  # the advisory lock is per session, outside the transactions
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            conn.autocommit = False
            with conn, conn.cursor() as cur:
                # Only when missing: the master's role may not create tables, and an
                # up-to-date schema then needs nothing it may not do.
                cur.execute("SELECT to_regclass('schema_migrations') IS NULL")
                row = cur.fetchone()
                if row is not None and row[0]:
                    cur.execute(_CREATE_TABLE)
            with conn, conn.cursor() as cur:
                cur.execute("SELECT name FROM schema_migrations")
                done = {str(row[0]) for row in cur.fetchall()}
            for migration in migrations:
                if migration.name in done:
                    continue
                try:
                    with conn, conn.cursor() as cur:
                        cur.execute(migration.sql)
                        cur.execute(
                            "INSERT INTO schema_migrations (name) VALUES (%s)", (migration.name,)
                        )
                except psycopg2.Error as exc:
                    raise MigrationError(
                        f"migration {migration.name} failed and was rolled back: "
                        f"{str(exc).strip()}{_owner_hint(exc)}"
                    ) from exc
                applied.append(migration.name)
            if master_role:
                _grant(conn, master_role)
        finally:
            if not conn.closed:
                conn.rollback()
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    except psycopg2.Error as exc:
        raise MigrationError(f"migration failed: {str(exc).strip()}") from exc
    finally:
        conn.close()
    return applied
