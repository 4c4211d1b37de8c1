"""Schema migrations and the constraints that protect the money."""

from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from papertrader.store.migrate import (
    MigrationError,
    applied_migrations,
    list_migrations,
    migrate,
    pending_migrations,
)

ALL = [m.name for m in list_migrations()]
# The tables of spec 2.4 created by 0001_initial.sql that are tables still (transactions,
# the history, became a view of orders in 0005_order_book.sql).
INITIAL_TABLES = {"accounts", "positions", "workers", "asset_bars", "assets"}


def declared_tables() -> set[str]:
    """Tables the migration files create (and do not drop later), plus the bookkeeping table.

    Read from the files so a later migration that adds a table keeps this test true.
    """
    created: set[str] = {"schema_migrations"}
    for migration in list_migrations():
        text = migration.sql.lower()
        created |= set(re.findall(r"create\s+table\s+(?:if\s+not\s+exists\s+)?(\w+)", text))
        created -= set(re.findall(r"drop\s+table\s+(?:if\s+exists\s+)?(\w+)", text))
    return created


TABLES = declared_tables()


def tables(url: str) -> set[str]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def test_files_are_ordered_and_start_with_the_initial_schema() -> None:
    assert ALL[0] == "0001_initial.sql"
    assert ALL == sorted(ALL)
    assert INITIAL_TABLES < TABLES


def test_migrate_applies_everything_once(empty_database_url: str) -> None:
    assert pending_migrations(empty_database_url) == ALL
    assert applied_migrations(empty_database_url) == []

    assert migrate(empty_database_url) == ALL
    assert tables(empty_database_url) == TABLES
    assert [name for name, _ in applied_migrations(empty_database_url)] == ALL

    assert migrate(empty_database_url) == []
    assert pending_migrations(empty_database_url) == []
    assert tables(empty_database_url) == TABLES


def test_concurrent_runs_apply_each_file_once(empty_database_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        start.wait()
        try:
            results.append(migrate(empty_database_url))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(name for result in results for name in result) == ALL


def test_a_failing_file_is_rolled_back_and_not_recorded(
    empty_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE good (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int);\nSELEC oops;")
    with pytest.raises(MigrationError, match="0002_bad.sql"):
        migrate(empty_database_url, tmp_path)
    assert [name for name, _ in applied_migrations(empty_database_url)] == ["0001_good.sql"]
    assert "good" in tables(empty_database_url) and "half" not in tables(empty_database_url)

    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int);")
    assert migrate(empty_database_url, tmp_path) == ["0002_bad.sql"]


def test_badly_named_or_duplicate_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "1_initial.sql").write_text("")
    with pytest.raises(MigrationError, match="NNNN_"):
        list_migrations(tmp_path)
    (tmp_path / "1_initial.sql").unlink()
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0001_b.sql").write_text("")
    with pytest.raises(MigrationError, match="share the number 0001"):
        list_migrations(tmp_path)


def test_unreachable_database_is_a_migration_error() -> None:
    with pytest.raises(MigrationError, match="cannot connect"):
        migrate("postgresql://nobody:x@127.0.0.1:1/none?connect_timeout=2")


def test_database_url_fixture_is_migrated(database_url: str) -> None:
    assert pending_migrations(database_url) == []
    assert tables(database_url) == TABLES


def test_no_column_uses_a_binary_float(db_conn: psycopg2.extensions.connection) -> None:
    with db_conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND data_type IN ('real', 'double precision')"
        )
        assert cur.fetchall() == []
        cur.execute(
            "SELECT table_name || '.' || column_name, numeric_precision, numeric_scale"
            " FROM information_schema.columns"
            " WHERE table_schema = 'public' AND data_type = 'numeric'"
        )
        numeric = {name: (precision, scale) for name, precision, scale in cur.fetchall()}
    assert numeric["accounts.cash"] == (20, 2)
    assert numeric["transactions.amount"] == (20, 2)
    for price in ("positions.average_price", "transactions.price", "asset_bars.close"):
        assert numeric[price] == (20, 6)


def _account(
    conn: psycopg2.extensions.connection,
    username: str = "alice",
    email: str = "alice@example.com",
    cash: str = "100000.00",
    is_password: bool = True,
    password_hash: str = "$2b$12$hash",
) -> int:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO accounts (username, email, cash, is_password, password_hash)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (username, email, cash, is_password, password_hash),
        )
        row = cur.fetchone()
    assert row is not None
    return int(row[0])


def _refused(
    conn: psycopg2.extensions.connection,
    error: type[psycopg2.Error],
    statement: str,
    args: tuple[object, ...] = (),
) -> None:
    """``statement`` must fail with ``error``; the transaction is rolled back after."""
    with pytest.raises(error), conn.cursor() as cur:
        cur.execute(statement, args)
    conn.rollback()


def test_cash_can_never_go_negative(db_conn: psycopg2.extensions.connection) -> None:
    with pytest.raises(psycopg2.errors.CheckViolation):
        _account(db_conn, cash="-0.01")
    db_conn.rollback()
    account = _account(db_conn, cash="0.00")
    db_conn.commit()
    _refused(
        db_conn,
        psycopg2.errors.CheckViolation,
        "UPDATE accounts SET cash = cash - 1 WHERE id = %s",
        (account,),
    )


def test_positions_can_never_go_negative(db_conn: psycopg2.extensions.connection) -> None:
    account = _account(db_conn)
    with db_conn.cursor() as cur:
        cur.execute(
            "INSERT INTO positions (account_id, symbol, quantity, average_price)"
            " VALUES (%s, 'AAPL', 3, 187.123456)",
            (account,),
        )
    db_conn.commit()
    _refused(
        db_conn,
        psycopg2.errors.CheckViolation,
        "UPDATE positions SET quantity = quantity - 4 WHERE account_id = %s",
        (account,),
    )
    _refused(
        db_conn,
        psycopg2.errors.CheckViolation,
        "INSERT INTO positions (account_id, symbol, quantity, average_price)"
        " VALUES (%s, 'MSFT', -1, 1)",
        (account,),
    )
    with db_conn.cursor() as cur:
        cur.execute("SELECT average_price::text FROM positions WHERE account_id = %s", (account,))
        assert cur.fetchone() == ("187.123456",)  # exact, not a float


def test_accounts_rules(db_conn: psycopg2.extensions.connection) -> None:
    _account(db_conn)
    db_conn.commit()
    # Usernames and e-mail addresses are unique regardless of case.
    _refused(
        db_conn,
        psycopg2.errors.UniqueViolation,
        "INSERT INTO accounts (username, email, cash, password_hash)"
        " VALUES ('ALICE', 'other@example.com', 0, 'h')",
    )
    _refused(
        db_conn,
        psycopg2.errors.UniqueViolation,
        "INSERT INTO accounts (username, email, cash, password_hash)"
        " VALUES ('bob', 'Alice@Example.com', 0, 'h')",
    )
    # A password account needs a hash; a third-party account has none.
    _refused(
        db_conn,
        psycopg2.errors.CheckViolation,
        "INSERT INTO accounts (username, email, cash) VALUES ('carol', 'c@example.com', 0)",
    )
    _account(db_conn, "dave", "d@example.com", is_password=False, password_hash="")
    _refused(
        db_conn,
        psycopg2.errors.CheckViolation,
        "INSERT INTO accounts (username, email, cash, password_hash)"
        " VALUES ('', 'e@example.com', 0, 'h')",
    )
    _refused(
        db_conn,
        psycopg2.errors.StringDataRightTruncation,
        "INSERT INTO accounts (username, email, cash, password_hash)"
        " VALUES (%s, 'f@e.com', 0, 'h')",
        ("x" * 25,),
    )


def test_orders_rules(db_conn: psycopg2.extensions.connection) -> None:
    account = _account(db_conn)
    order = uuid.uuid4()
    insert = (
        "INSERT INTO orders (order_id, account_id, client_order_id, side, symbol, quantity,"
        " status, fill_id, price, amount, received_at, executed_at, client_ip)"
        " VALUES (%s, %s, %s, %s, 'AAPL', %s, 'filled', nextval('orders_fill_id_seq'), 10.5,"
        " 21.00, now(), now(), '203.0.113.7')"
    )
    with db_conn.cursor() as cur:
        cur.execute(insert, (str(order), account, str(order), "buy", 2))
    db_conn.commit()
    # The same order applied twice is refused.
    _refused(
        db_conn,
        psycopg2.errors.UniqueViolation,
        insert,
        (str(order), account, str(order), "sell", 2),
    )
    other = str(uuid.uuid4())
    _refused(db_conn, psycopg2.errors.CheckViolation, insert, (other, account, other, "hold", 2))
    _refused(db_conn, psycopg2.errors.CheckViolation, insert, (other, account, other, "sell", 0))
    # A filled order needs its fill; an open one cannot have one.
    _refused(
        db_conn,
        psycopg2.errors.CheckViolation,
        "INSERT INTO orders (order_id, account_id, client_order_id, side, symbol, quantity, status)"
        " VALUES (%s, %s, %s, 'buy', 'AAPL', 1, 'filled')",
        (other, account, other),
    )
    with db_conn.cursor() as cur:  # the history is a view of the filled orders
        cur.execute(
            "SELECT amount::text, host(client_ip) FROM transactions WHERE order_id = %s",
            (str(order),),
        )
        assert cur.fetchone() == ("21.00", "203.0.113.7")


def test_reservations_can_never_exceed_cash_or_units(
    db_conn: psycopg2.extensions.connection,
) -> None:
    account = _account(db_conn, cash="100.00")
    db_conn.commit()
    _refused(
        db_conn,
        psycopg2.errors.CheckViolation,
        "UPDATE accounts SET reserved_cash = 100.01 WHERE id = %s",
        (account,),
    )
    with db_conn.cursor() as cur:
        cur.execute(
            "INSERT INTO positions (account_id, symbol, quantity, average_price)"
            " VALUES (%s, 'AAPL', 3, 1)",
            (account,),
        )
    db_conn.commit()
    _refused(
        db_conn,
        psycopg2.errors.CheckViolation,
        "UPDATE positions SET reserved_quantity = 4 WHERE account_id = %s",
        (account,),
    )


def test_workers_and_bars(db_conn: psycopg2.extensions.connection) -> None:
    with db_conn.cursor() as cur:
        cur.execute(
            "INSERT INTO workers (uuid, name, gpg_public_key, gpg_fingerprint, allowed_ips)"
            " VALUES (%s, 'w1', 'key', 'FPR', %s::cidr[]) RETURNING enabled, allowed_ips::text[]",
            (str(uuid.uuid4()), ["10.0.0.0/8", "192.0.2.1/32"]),
        )
        assert cur.fetchone() == (True, ["10.0.0.0/8", "192.0.2.1/32"])
        cur.execute("INSERT INTO assets (symbol, name) VALUES ('AAPL', 'Apple') RETURNING currency")
        assert cur.fetchone() == ("USD",)
        cur.execute(
            "INSERT INTO asset_bars (symbol, period_start, open, high, low, close, volume)"
            " VALUES ('AAPL', '2026-01-02T14:30Z', 1, 2, 0.5, 1.5, 100)"
        )
    db_conn.commit()
    _refused(
        db_conn,
        psycopg2.errors.CheckViolation,
        "INSERT INTO asset_bars (symbol, period_start, open, high, low, close, volume)"
        " VALUES ('AAPL', '2026-01-02T14:31Z', 1, 2, 0.5, 1.5, -1)",
    )
    _refused(
        db_conn,
        psycopg2.errors.UniqueViolation,
        "INSERT INTO asset_bars (symbol, period_start, open, high, low, close, volume)"
        " VALUES ('AAPL', '2026-01-02T14:30Z', 1, 2, 0.5, 1.5, 1)",
    )
