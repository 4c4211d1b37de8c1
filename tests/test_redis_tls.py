"""Redis over TLS (issue 9): the private Redis of `pt services up --redis-tls-*` and the
``rediss://`` clients of the master and workers (papertrader.store.redis_tls).

A real redis-server with TLS and certificates from a real CA: verified with the
deployment's CA (tls_ca), refused with another CA or for a name not in the
certificate, and no plaintext anywhere (plaintext port off, TLS port drops a
plaintext client).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from tls_support import pki

from papertrader.services import redis_server
from papertrader.services.binaries import find_binary
from papertrader.services.errors import ServicesError
from papertrader.services.redis_server import RedisTls
from papertrader.services.state import RedisRecord
from papertrader.store.redis_tls import redis_tls_options
from papertrader.tls.local import LocalPki

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisRecord]:
    """A private Redis started plaintext, then switched to TLS by a start with the files."""
    state_dir = tmp_path_factory.mktemp("redis-tls")
    binary = find_binary("redis-server")
    record = redis_server.start(state_dir, None, binary, TIMEOUT)
    made = pki()
    tls = RedisTls(str(made.cert), str(made.key), str(made.ca))
    try:
        record = redis_server.start(state_dir, record, binary, TIMEOUT, tls)
        yield record
    finally:
        redis_server.stop(record, TIMEOUT)


def connect(url: str, ca: Path | None) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, **redis_tls_options(url, ca))


def test_tls_only_with_the_url_naming_its_ca(tls_redis: RedisRecord) -> None:
    url = tls_redis.url
    assert url.startswith("rediss://") and "ssl_ca_certs=" in url
    client = connect(url, None)  # the URL's own CA
    assert client.ping()
    assert client.config_get("port") == {"port": "0"}  # no plaintext listener at all
    assert client.config_get("tls-port") == {"tls-port": str(tls_redis.port)}
    assert redis_server.is_running(tls_redis)  # `pt services` itself speaks TLS to it


def test_tls_ca_setting_verifies_a_url_without_one(tls_redis: RedisRecord) -> None:
    bare = tls_redis.url.split("?", 1)[0]
    assert connect(bare, pki().ca).ping()


def test_another_ca_and_a_wrong_name_are_refused(tls_redis: RedisRecord, tmp_path: Path) -> None:
    other = LocalPki.at(tmp_path)
    other.ensure_ca()
    bare = tls_redis.url.split("?", 1)[0]
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        connect(bare, other.ca_cert).ping()


def test_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    """A Redis whose certificate (from the right CA) names only redis.example: a client
    of 127.0.0.1 refuses it."""
    made = pki()
    cert, key = tmp_path / "other.pem", tmp_path / "other.key"
    LocalPki.at(made.directory).issue_to(["redis.example"], cert, key)
    binary = find_binary("redis-server")
    tls = RedisTls(str(cert), str(key), str(made.ca))
    record = redis_server.new_record(tmp_path / "state")
    record.tls_cert, record.tls_key, record.tls_ca = tls.cert, tls.key, tls.ca
    try:
        # start() proves it up by talking to it, which the wrong name forbids: launch only.
        with pytest.raises(ServicesError):
            redis_server.start(tmp_path / "state", record, binary, 3.0, tls)
        bare = record.url.split("?", 1)[0]
        with pytest.raises(redis.ConnectionError, match="match"):
            connect(bare, made.ca).ping()
    finally:
        redis_server.stop(record, TIMEOUT)


def test_plaintext_is_refused(tls_redis: RedisRecord) -> None:
    plain = redis.Redis(
        host="127.0.0.1",
        port=tls_redis.port,
        password=tls_redis.password,
        socket_timeout=10,
        retry=Retry(NoBackoff(), 0),
    )
    with pytest.raises(redis.ConnectionError):
        plain.ping()
