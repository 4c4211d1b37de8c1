"""Fixtures shared by the whole suite: real Redis and PostgreSQL, never fakes.

One private redis-server and PostgreSQL cluster is started per test session
with ``papertrader.services`` (in a pytest temporary directory, on free
ports) and removed at the end. To use servers of your own instead, set
``PT_TEST_REDIS_URL`` and/or ``PT_TEST_DATABASE_URL``; the database user then
needs the CREATEDB privilege, and the Redis server is flushed freely.

Isolation per test:

* ``redis_url``: a logical Redis database of its own, flushed before and after.
* ``database_url``: a database of its own, created from a migrated template
  (copying a template is much faster than migrating) and dropped afterwards.
* ``empty_database_url``: the same without the schema (for migration tests).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
import pytest
import redis
from psycopg2 import sql

from papertrader.services import ServiceUrls, destroy_services, start_services
from papertrader.store.migrate import migrate

REDIS_TEST_DATABASES = range(1, 16)  # 0 is left alone; Redis has 16 by default


def _with_path(url: str, path: str) -> str:
    """``url`` with its path (database name or number) replaced."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + path, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def service_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceUrls]:
    """The Redis and PostgreSQL of this test session (base URLs: do not write into them)."""
    env_redis = os.environ.get("PT_TEST_REDIS_URL") or None
    env_database = os.environ.get("PT_TEST_DATABASE_URL") or None
    if env_redis and env_database:
        yield ServiceUrls(env_redis, env_database)
        return
    state_dir = tmp_path_factory.mktemp("services")
    urls = start_services(state_dir)
    try:
        yield ServiceUrls(env_redis or urls.redis_url, env_database or urls.database_url)
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
    conn = psycopg2.connect(service_urls.database_url)
    conn.autocommit = True
    return conn


def create_database(service_urls: ServiceUrls, template: str | None = None) -> str:
    """Create a uniquely named database (optionally copied from ``template``); returns its URL."""
    name = f"pt_test_{uuid.uuid4().hex[:16]}"
    conn = _admin(service_urls)
    try:
        with conn.cursor() as cur:
            if template is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            else:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
    finally:
        conn.close()
    return _with_path(service_urls.database_url, name)


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
    migrate(url)
    try:
        yield urlsplit(url).path.lstrip("/")
    finally:
        drop_database(service_urls, url)


@pytest.fixture
def empty_database_url(service_urls: ServiceUrls) -> Iterator[str]:
    """URL of a new database without any schema, dropped after the test."""
    url = create_database(service_urls)
    try:
        yield url
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
