"""Fixtures shared by the whole suite: real Redis and PostgreSQL, never fakes.

One private redis-server and PostgreSQL cluster is started per test session
with ``papertrader.services`` (in a pytest temporary directory, on free
ports) and removed at the end. To use servers of your own instead, set
``PT_TEST_REDIS_URL`` and/or ``PT_TEST_DATABASE_URL``; the database user then
needs the CREATEDB and CREATEROLE privileges (the fixtures make an owner and
a master role, as the private cluster has), and the Redis server is flushed
freely.

The database roles are the production ones: a test database belongs to the
owner role, and ``database_url`` logs in as the master's role, so every test
that runs a master runs it with the master's grants and nothing more.

Isolation per test:

* ``redis_url``: a logical Redis database of its own, flushed before and after.
* ``database_url``: a database of its own, created from a migrated template
  (copying a template is much faster than migrating) and dropped afterwards.
* ``empty_database_url``: the same without the schema, as the owner (for
  migration tests).
"""

from __future__ import annotations

import itertools
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
import pytest
import redis
from psycopg2 import sql

from papertrader.master.redis_functions import load_functions
from papertrader.services import ServiceUrls, destroy_services, start_services
from papertrader.services.state import MASTER_ROLE, OWNER_ROLE, load_state
from papertrader.store.migrate import migrate
from papertrader.store.order_queue import OrderQueue
from papertrader.store.pool import ConnectionPool
from papertrader.store.roles import ensure_login_role, login_name

REDIS_TEST_DATABASES = range(1, 16)  # 0 is left alone; Redis has 16 by default


def _with_path(url: str, path: str) -> str:
    """``url`` with its path (database name or number) replaced."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + path, parts.query, parts.fragment))


@dataclass(frozen=True)
class TestServiceUrls(ServiceUrls):
    """The session's servers, plus the login that creates and drops test databases."""

    admin_url: str = ""


def _with_login(url: str, user: str, password: str) -> str:
    """``url`` logging in as ``user`` with ``password``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _own_roles(redis_url: str, admin_url: str) -> TestServiceUrls:
    """Owner and master roles on a server of the caller's (PT_TEST_DATABASE_URL)."""
    passwords = {OWNER_ROLE: secrets.token_urlsafe(18), MASTER_ROLE: secrets.token_urlsafe(18)}
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for role, password in passwords.items():
                ensure_login_role(cur, role, password)
    finally:
        conn.close()
    return TestServiceUrls(
        redis_url,
        _with_login(admin_url, MASTER_ROLE, passwords[MASTER_ROLE]),
        database_owner_url=_with_login(admin_url, OWNER_ROLE, passwords[OWNER_ROLE]),
        admin_url=admin_url,
    )


def _load_functions(url: str) -> None:
    """What the master loads at start-up, for tests of workers running without one."""
    client = redis.Redis.from_url(url)
    try:
        load_functions(client)
    finally:
        client.close()


@pytest.fixture(scope="session")
def service_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServiceUrls]:
    """The Redis and PostgreSQL of this test session (base URLs: do not write into them)."""
    env_redis = os.environ.get("PT_TEST_REDIS_URL") or None
    env_database = os.environ.get("PT_TEST_DATABASE_URL") or None
    if env_redis and env_database:
        _load_functions(env_redis)
        yield _own_roles(env_redis, env_database)
        return
    state_dir = tmp_path_factory.mktemp("services")
    urls = start_services(state_dir)
    try:
        _load_functions(env_redis or urls.redis_url)
        if env_database:
            yield _own_roles(env_redis or urls.redis_url, env_database)
        else:
            record = load_state(state_dir).postgres
            assert record is not None
            yield TestServiceUrls(
                env_redis or urls.redis_url,
                urls.database_url,
                database_owner_url=urls.owner_url,
                admin_url=record.admin_url,
            )
    finally:
        destroy_services(state_dir)


_redis_numbers = itertools.cycle(REDIS_TEST_DATABASES)


@pytest.fixture
def redis_url(service_urls: ServiceUrls) -> Iterator[str]:
    """URL of an empty logical Redis database for this test (flushed before and after)."""
    url = _with_path(service_urls.redis_url, str(next(_redis_numbers)))
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        yield url
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on this test's Redis database (bytes responses, as the servers use)."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


def _admin(service_urls: ServiceUrls) -> psycopg2.extensions.connection:
    """An autocommit connection for CREATE/DROP DATABASE (they refuse transactions)."""
    assert isinstance(service_urls, TestServiceUrls)
    conn = psycopg2.connect(service_urls.admin_url)
    conn.autocommit = True
    return conn


def create_database(service_urls: ServiceUrls, template: str | None = None) -> str:
    """Create a uniquely named database owned by the owner role (optionally copied from
    ``template``); returns the master role's URL of it."""
    name = f"pt_test_{uuid.uuid4().hex[:16]}"
    owner = sql.Identifier(login_name(service_urls.owner_url) or OWNER_ROLE)
    conn = _admin(service_urls)
    try:
        with conn.cursor() as cur:
            if template is None:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), owner)
                )
            else:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                        sql.Identifier(name), sql.Identifier(template), owner
                    )
                )
    finally:
        conn.close()
    return _with_path(service_urls.database_url, name)


def owner_url(service_urls: ServiceUrls, url: str) -> str:
    """The owner role's URL of the database of ``url``."""
    return _with_path(service_urls.owner_url, urlsplit(url).path.lstrip("/"))


def admin_url(service_urls: ServiceUrls, url: str) -> str:
    """The superuser's URL of the database of ``url`` (for what no PaperTrader role may do)."""
    assert isinstance(service_urls, TestServiceUrls)
    return _with_path(service_urls.admin_url, urlsplit(url).path.lstrip("/"))


def drop_database(service_urls: ServiceUrls, url: str) -> None:
    """Drop the database of ``url``, ending connections a test left open."""
    name = urlsplit(url).path.lstrip("/")
    conn = _admin(service_urls)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        conn.close()


@pytest.fixture(scope="session")
def migrated_template(service_urls: ServiceUrls) -> Iterator[str]:
    """Name of a database migrated once per session, copied by ``database_url``."""
    url = create_database(service_urls)
    migrate(owner_url(service_urls, url), master_role=login_name(url))
    try:
        yield urlsplit(url).path.lstrip("/")
    finally:
        drop_database(service_urls, url)


@pytest.fixture
def empty_database_url(service_urls: ServiceUrls) -> Iterator[str]:
    """The owner's URL of a new database without any schema, dropped after the test."""
    url = create_database(service_urls)
    try:
        yield owner_url(service_urls, url)
    finally:
        drop_database(service_urls, url)


@pytest.fixture
def database_url(service_urls: ServiceUrls, migrated_template: str) -> Iterator[str]:
    """URL of a new database with the full schema, dropped after the test."""
    url = create_database(service_urls, template=migrated_template)
    try:
        yield url
    finally:
        drop_database(service_urls, url)


@pytest.fixture
def db_conn(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection to this test's migrated database (closed after the test)."""
    conn = psycopg2.connect(database_url)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool]:
    """A connection pool on the test's own migrated database."""
    pool = ConnectionPool(database_url, size=4)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def queue(redis_client: redis.Redis) -> OrderQueue:
    """The order stream with the master's consumer group, on the test's own Redis."""
    queue = OrderQueue(redis_client)
    queue.ensure_group()
    return queue
