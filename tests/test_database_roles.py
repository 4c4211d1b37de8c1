"""Issue 10, database roles: the master's role reads and writes rows, nothing more.

Against the real PostgreSQL of the session, with the roles the private
cluster makes (``papertrader_owner`` owns the schema, ``papertrader_master``
is the master's): what the master's role may not do is tried and must be
refused by PostgreSQL itself, a table a later migration creates is still
the master's to use, and an install of before the roles (everything owned
by the superuser every process logged in as) is moved to them by
``pt db migrate`` without losing an account, a position or a queued order,
and then trades.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest
import redis
from click.testing import CliRunner
from conftest import owner_url
from psycopg2 import sql
from test_services import CLEAN_ENV

from papertrader.master.transactions import drain_once
from papertrader.services import ServiceUrls, destroy_services, start_services
from papertrader.services.state import load_state, save_state
from papertrader.store.accounts import create_account, get_account
from papertrader.store.migrate import MigrationError, migrate
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.pool import ConnectionPool
from papertrader.store.portfolio import positions
from papertrader.store.roles import login_name, own_problems
from papertrader_cli.main import cli

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
PRICES = {"AAPL": Decimal("150.25")}

#: What the master's role tries and PostgreSQL must refuse: schema changes, and rows
#: or files it has no business with.
FORBIDDEN = {
    "create a table": "CREATE TABLE stolen (v text)",
    "create a function": "CREATE FUNCTION pt_evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "drop a table": "DROP TABLE accounts",
    "alter a table": "ALTER TABLE accounts ADD COLUMN backdoor text",
    "drop a column": "ALTER TABLE orders DROP COLUMN status",
    "truncate the orders": "TRUNCATE orders",
    "create an index": "CREATE INDEX accounts_cash_idx ON accounts (cash)",
    "replace a drain function": "DROP FUNCTION pt_iso(timestamptz)",
    "take a table over": "ALTER TABLE accounts OWNER TO CURRENT_USER",
    "rewrite the migrations' record": "DELETE FROM schema_migrations",
    "record a migration": "INSERT INTO schema_migrations (name) VALUES ('9999_x.sql')",
    "read the roles' password hashes": "SELECT rolpassword FROM pg_authid",
    "read a server file": "SELECT pg_read_file('postgresql.conf')",
    "run a program": "COPY accounts TO PROGRAM 'true'",
    "create a role": "CREATE ROLE intruder LOGIN SUPERUSER",
    "create a database": "CREATE DATABASE intruder",
    "become the owner": "SET ROLE papertrader_owner",
}


def test_postgresql_refuses_the_master_role_every_schema_change_and_foreign_read(
    database_url: str,
) -> None:
    conn = psycopg2.connect(database_url)
    conn.autocommit = True  # CREATE DATABASE refuses a transaction
    allowed = []
    try:
        for attempt, statement in FORBIDDEN.items():
            try:
                with conn.cursor() as cur:
                    cur.execute(statement)
                allowed.append(attempt)
            except psycopg2.errors.InsufficientPrivilege:
                pass
        with conn.cursor() as cur:  # and nothing changed
            cur.execute("SELECT count(*) FROM information_schema.columns"
                        " WHERE table_name = 'accounts' AND column_name = 'backdoor'")  # fmt: skip
            assert cur.fetchone() == (0,)
    finally:
        conn.close()
    assert allowed == []


def test_the_master_role_may_not_log_in_to_the_maintenance_database(
    service_urls: ServiceUrls, database_url: str
) -> None:
    if "PT_TEST_DATABASE_URL" in os.environ:
        pytest.skip("a server of the caller's: its maintenance database is its own business")
    maintenance = database_url.rsplit("/", 1)[0] + "/postgres"
    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        psycopg2.connect(maintenance).close()


def test_the_master_role_has_the_rights_it_uses_and_says_it_has_no_more(
    service_urls: ServiceUrls, database_url: str
) -> None:
    pool = ConnectionPool(database_url, size=1)
    try:
        account = create_account(pool, "rows", "rows@example.com", "$2b$04$x", Decimal("10.00"))
        with pool.transaction() as cur:
            assert own_problems(cur) == []
            cur.execute("SELECT count(*) FROM schema_migrations")  # the master's start check
            row = cur.fetchone()
            assert row is not None and row[0] > 0
            cur.execute("SELECT nextval('orders_fill_id_seq')")
            cur.execute("DELETE FROM accounts WHERE id = %s", (account.id,))
    finally:
        pool.close()
    owner = psycopg2.connect(owner_url(service_urls, database_url))
    try:
        with owner.cursor() as cur:
            assert own_problems(cur)  # the owner could change the schema: the master says so
    finally:
        owner.close()


def test_a_table_a_later_migration_creates_is_granted_as_it_is_created(
    service_urls: ServiceUrls, database_url: str
) -> None:
    owner = psycopg2.connect(owner_url(service_urls, database_url))
    try:
        with owner, owner.cursor() as cur:  # no grant pass: the default privileges alone
            cur.execute("CREATE TABLE later (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL)")
    finally:
        owner.close()
    master = psycopg2.connect(database_url)
    try:
        with master, master.cursor() as cur:
            cur.execute("INSERT INTO later (note) VALUES ('kept') RETURNING id")
            cur.execute("UPDATE later SET note = 'changed'")
            cur.execute("SELECT note FROM later")
            assert cur.fetchall() == [("changed",)]
        with pytest.raises(psycopg2.errors.InsufficientPrivilege), master.cursor() as cur:
            cur.execute("DROP TABLE later")
    finally:
        master.close()


def test_a_migration_run_with_the_master_role_is_refused_and_says_whose_url_to_use(
    database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0999_more.sql").write_text("CREATE TABLE more (id int);")
    with pytest.raises(MigrationError, match="migrate with the owner's URL"):
        migrate(database_url, tmp_path)
    assert migrate(database_url) == []  # an up-to-date schema needs nothing it may not do


# -- an install of before the roles ----------------------------------------------------
@pytest.fixture
def legacy_state(tmp_path: Path) -> Iterator[Path]:
    """A private cluster as PaperTrader left it before the roles: one superuser owns the
    database and every object in it, and services.json records only its password."""
    state_dir = tmp_path / "state"
    start_services(state_dir)
    try:
        state = load_state(state_dir)
        record = state.postgres
        assert record is not None
        admin = psycopg2.connect(record.admin_url)
        try:
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(record.database), sql.Identifier(record.user)))  # fmt: skip
                for role in (record.owner, record.master):
                    cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        finally:
            admin.close()
        record.owner_password = record.master_password = ""
        save_state(state_dir, state)
        migrate(record.admin_url)  # the old way: as the superuser
        yield state_dir
    finally:
        destroy_services(state_dir)


def test_pt_db_migrate_moves_an_install_of_before_the_roles_and_it_still_trades(
    legacy_state: Path, redis_client: redis.Redis
) -> None:
    record = load_state(legacy_state).postgres
    assert record is not None
    legacy = ConnectionPool(record.url, size=2)  # the superuser: what every process had
    queue = OrderQueue(redis_client)
    queue.ensure_group()
    try:
        account = create_account(legacy, "old", "old@example.com", "$2b$04$x", Decimal("10000.00"))
        bought = order(account.id, "buy", 10)
        queue.submit(bought)
        assert drain_once(queue, legacy, PRICES, now=T0) == 1
        waiting = order(account.id, "sell", 4)
        queue.submit(waiting)  # queued while the install is upgraded
        with legacy.transaction() as cur:
            assert own_problems(cur)  # the master would say so in its log
    finally:
        legacy.close()

    before = CliRunner().invoke(
        cli, ["db", "status", "--state-dir", str(legacy_state), "--json"], env=CLEAN_ENV
    )
    assert before.exit_code == 3  # the servers' login is a superuser: said, with the fix
    problems = json.loads(before.stdout)["master_role_problems"]
    assert any("is a superuser" in problem for problem in problems)
    result = CliRunner().invoke(
        cli, ["db", "migrate", "--state-dir", str(legacy_state), "--json"], env=CLEAN_ENV
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["master_role"] == "papertrader_master"

    upgraded = load_state(legacy_state).postgres
    assert upgraded is not None and upgraded.has_roles
    assert login_name(upgraded.url) == "papertrader_master"
    pool = ConnectionPool(upgraded.url, size=2)
    try:
        with pool.transaction() as cur:
            assert own_problems(cur) == []
            cur.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'orders'")
            assert cur.fetchone() == ("papertrader_owner",)
        kept = get_account(pool, account.id)
        assert kept is not None and kept.username == "old"
        assert kept.cash == Decimal("10000.00") - 10 * PRICES["AAPL"]
        assert drain_once(queue, pool, PRICES, now=T0) == 1  # the queued order, as the master
        assert {p.symbol: p.quantity for p in positions(pool, account.id)} == {"AAPL": 6}
        assert queue.wait_outcome(waiting.order_id, timeout=2) is not None
    finally:
        pool.close()


def order(account_id: int, side: str, quantity: int) -> Order:
    return Order(
        order_id=uuid.uuid4(),
        account_id=account_id,
        side=side,  # type: ignore[arg-type]
        symbol="AAPL",
        quantity=quantity,
        received_at=T0,
        client_ip="203.0.113.7",
        worker="w1",
    )
