"""Redis with Sentinel: settings, the client factory, the launchers, a failover.

Real redis-server primary and replica and three real redis-sentinel processes
(tests/sentinel_support.py).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import gevent
import pytest
import redis
from sentinel_support import SENTINEL_PASSWORD, SERVICE, SentinelStack, sentinel_stack
from tls_support import pki

from papertrader.config.settings import ConfigError, Settings
from papertrader.limits.limiter import GCRA
from papertrader.master.redis_functions import load_functions
from papertrader.services import redis_replica, redis_sentinel, redis_server
from papertrader.services.binaries import find_binary
from papertrader.services.state import read_pid_file
from papertrader.store import keys, redis_users
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.redis_connect import (
    RedisConfigError,
    connect,
    on_primary,
    sentinel_config,
)
from papertrader.store.sessions import Session, SessionError, SessionStore
from papertrader.worker.session_cache import SessionCache


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelStack]:
    """One arrangement for the module: the failover test, which changes it, runs last."""
    with sentinel_stack(tmp_path_factory.mktemp("sentinel")) as started:
        yield started


def test_sentinel_settings_are_checked() -> None:
    settings = Settings(redis_sentinels="s1:26379, s2:26379,[::1]:26380")
    assert settings.sentinel_addresses == [("s1", 26379), ("s2", 26379), ("::1", 26380)]
    assert Settings().sentinel_addresses == []
    with pytest.raises(ConfigError, match="redis_sentinels"):
        Settings(redis_sentinels="s1")
    with pytest.raises(ConfigError, match="redis_sentinel_service"):
        Settings(redis_sentinel_service="has space")
    with pytest.raises(ConfigError, match="redis_min_replicas_ack"):
        Settings(redis_min_replicas_ack=17)
    with pytest.raises(ConfigError, match="redis_replica_ack_timeout"):
        Settings(redis_replica_ack_timeout=0)


def test_sentinel_password_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2-sentinel\n")
    secret.chmod(0o644)
    settings = Settings(redis_sentinels="127.0.0.1:1", redis_sentinel_password_file=secret)
    with pytest.raises(RedisConfigError, match="chmod 600") as caught:
        sentinel_config(settings)
    assert "hunter2" not in str(caught.value)
    secret.chmod(0o600)
    config = sentinel_config(settings)
    assert config is not None and config.password == "hunter2-sentinel"
    assert "hunter2" not in repr(config)
    with pytest.raises(RedisConfigError, match="unix://"):
        connect("unix:///tmp/redis.sock", settings)


def test_sentinels_and_nodes_give_each_user_only_its_part(stack: SentinelStack) -> None:
    sentinel = stack.sentinels[0]
    as_client = redis_sentinel.client(sentinel)
    try:
        assert as_client.sentinel_get_master_addr_by_name(SERVICE)
        with pytest.raises(redis.ResponseError, match="NOPERM|no permissions"):
            as_client.execute_command("SENTINEL", "FAILOVER", SERVICE)  # type: ignore[no-untyped-call]
        with pytest.raises(redis.ResponseError, match="NOPERM|no permissions"):
            as_client.execute_command("SENTINEL", "SET", SERVICE, "quorum", "1")  # type: ignore[no-untyped-call]
    finally:
        as_client.close()
    nobody = redis.Redis(host="127.0.0.1", port=sentinel.port, socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        nobody.ping()
    wrong = redis.Redis(
        host="127.0.0.1", port=sentinel.port, username="pt-sentinel-client", password="x"
    )
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    for record in stack.sentinels:  # they hold the auth-pass of the data nodes
        assert Path(record.config_file).stat().st_mode & 0o077 == 0
    assert SENTINEL_PASSWORD not in Path(stack.sentinels[0].log_file).read_text()
    # On the data nodes the replication and Sentinel users can do only their job.
    for user, password in (
        ("pt-replication", stack.primary.replication_password),
        ("pt-sentinel", stack.primary.sentinel_password),
    ):
        node = redis.Redis(
            host="127.0.0.1", port=stack.primary.port, username=user, password=password
        )
        try:
            assert node.ping()
            with pytest.raises(redis.ResponseError, match="NOPERM|no permissions"):
                node.get(keys.PREFIX + "probe")
            with pytest.raises(redis.ResponseError, match="NOPERM|no permissions"):
                node.execute_command("FLUSHALL")  # type: ignore[no-untyped-call]
        finally:
            node.close()
    for data_node in (stack.primary, stack.replica):
        admin = redis_server.client(data_node, timeout=5)
        try:
            users = set(admin.acl_users())
        finally:
            admin.close()
        assert {"pt-admin", "pt-master", "pt-replication", "pt-sentinel"} <= users


def test_a_client_through_sentinel_reads_writes_and_survives_a_failover(
    stack: SentinelStack,
) -> None:
    client = connect(stack.primary.master_url, stack.settings(), max_connections=4)
    client.set(keys.PREFIX + "probe", "before")
    load_functions(client)  # the master's library: it must reach the replica too
    client.wait(1, 5000)  # the replica holds both
    listener = client.pubsub()  # type: ignore[no-untyped-call]
    listener.subscribe(keys.SESSIONS_ENDED)
    assert on_primary(client, listener.connection)
    # A worker's session cache, holding a session it verified.
    store = SessionStore(client, 3600, 3600, ip_check=False)
    cache = SessionCache(store, client)
    cache.start()
    _until(lambda: cache.epoch_holding(_probe_session(store, cache)) is not None)
    session = store.create(2, "trader", "127.0.0.1", False)
    assert cache.get(session.session_id, None) is not None
    assert cache.epoch_holding(cache.get(session.session_id, None)) is not None  # in memory
    client.wait(1, 5000)
    old = stack.kill_primary()
    new = stack.wait_failover(old)
    assert new == f"127.0.0.1:{stack.replica.port}"
    # The same client, no manual step: its next commands go to the promoted replica.
    for _ in range(50):
        try:
            assert client.get(keys.PREFIX + "probe") == b"before"
            break
        except redis.ConnectionError:
            continue
    # A subscriber still connected where the primary was is told to subscribe again.
    assert not on_primary(client, listener.connection)
    listener.close()
    # The cache saw its subscription break and emptied itself; a logout announced before
    # it subscribes again (it cannot hear it) must not leave the session usable.
    _until(lambda: cache.size == 0)
    store.end(session)
    _until(lambda: cache.epoch_holding(_probe_session(store, cache)) is not None)
    with pytest.raises(SessionError):
        cache.get(session.session_id, None)
    cache.stop()
    client.set(keys.PREFIX + "probe", "after")
    assert client.get(keys.PREFIX + "probe") == b"after"
    # The master's FUNCTIONs replicated: a worker's FCALL works on the new primary.
    allowed, _ = GCRA.bind(client)(keys=[keys.rate("probe", "x")], args=[1000, 5000, ""])
    assert int(allowed) == 1


def _until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Yield to the cache's listener (a greenlet) until ``condition`` holds. The test
    process is not monkey-patched, so the listener blocks while it waits for a message
    and the two take turns through gevent's callbacks (sleep(0)), not its timers."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0)


_probes: dict[int, Session] = {}


def _probe_session(store: SessionStore, cache: SessionCache) -> Session:
    """A session the cache holds (made once per cache, fetched through it)."""
    if id(cache) not in _probes:
        _probes[id(cache)] = store.create(1, "probe", "127.0.0.1", False)
    session = _probes[id(cache)]
    return cache.get(session.session_id, None)


def _calls(client: redis.Redis, command: str) -> int:
    """How often the server ran ``command`` (INFO commandstats)."""
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def _order() -> Order:
    return Order(
        order_id=uuid.uuid4(),
        account_id=7,
        side="buy",
        symbol="AAPL",
        quantity=1,
        received_at=datetime.now(timezone.utc),
        client_ip="127.0.0.1",
        worker="w1",
        client_order_id=uuid.uuid4(),
    )


def test_an_order_is_kept_only_once_the_replica_confirms_it(tmp_path: Path) -> None:
    """redis_min_replicas_ack = 1: XADD and WAIT in one round trip, as the worker's own
    Redis user; with the replica stopped the order is on the primary, but not kept."""
    server = find_binary("redis-server")
    primary = redis_server.start(tmp_path, None, server, 30)
    replica = None
    try:
        replica = redis_replica.start_replica(primary, server, 60)
        admin = redis_server.client(primary, timeout=5)
        for node in (primary, replica):
            nodes = redis_server.client(node, timeout=5)
            redis_users.set_user(
                nodes, redis_users.worker_user("w1"), "pw-w1", redis_users.WORKER_RULES
            )
            nodes.close()
        worker = redis.Redis.from_url(
            redis_users.url_for(primary.url, redis_users.worker_user("w1"), "pw-w1")
        )
        queue = OrderQueue(worker, replicas=1, replica_timeout=2.0)
        assert queue.submit(_order()) is True
        assert OrderQueue(worker).submit(_order()) is True  # no replica asked for
        # A logout (the master's) waits for the replica too: ended there as well.
        master = redis.Redis.from_url(primary.master_url)
        sessions = SessionStore(master, 3600, 3600, ip_check=False, replicas=1)
        ended = sessions.create(3, "leaver", "127.0.0.1", False)
        waits = _calls(admin, "wait")
        sessions.end(ended)
        assert _calls(admin, "wait") == waits + 1  # the logout was waited for
        on_replica = redis_server.client(replica, timeout=5)
        assert on_replica.exists(keys.session(ended.session_id.hex)) == 0
        on_replica.close()
        master.close()
        redis_server.stop(replica, 30)
        alone = OrderQueue(worker, replicas=1, replica_timeout=0.2)
        assert alone.submit(_order()) is False
        assert admin.xlen(keys.ORDERS) == 3  # on the primary all the same
        worker.close()
        admin.close()
    finally:
        for record in (replica, primary):
            if record is not None and redis_server.server_pid(record) is not None:
                redis_server.stop(record, 30)


def test_with_tls_the_sentinels_replication_and_clients_all_speak_tls(tmp_path: Path) -> None:
    """The data nodes serve TLS only: the replica syncs over TLS, the Sentinels listen
    on TLS and reach the nodes over it, and a client through them verifies every hop
    with the deployment's CA (the URL's ssl_ca_certs, or tls_ca)."""
    made = pki()
    tls = redis_server.RedisTls(str(made.cert), str(made.key), str(made.ca))
    with sentinel_stack(tmp_path, tls) as stack:
        url = stack.primary.master_url
        assert url.startswith("rediss://")
        client = connect(url, stack.settings(), max_connections=4)
        client.set(keys.PREFIX + "tls-probe", "1")
        assert client.wait(1, 5000) == 1  # the replica has it, over TLS replication
        bare = url.split("?", 1)[0]  # no CA in the URL: tls_ca verifies the nodes
        settings = stack.settings(tls_ca=made.ca)
        assert connect(bare, settings).get(keys.PREFIX + "tls-probe") == b"1"
        plaintext = redis.Redis(
            host="127.0.0.1",
            port=stack.sentinels[0].port,
            username=redis_sentinel.CLIENT_USER,
            password=SENTINEL_PASSWORD,
            socket_timeout=5,
        )
        with pytest.raises(redis.ConnectionError):
            plaintext.ping()
        client.close()


def test_a_frozen_primary_is_left_for_the_new_one(tmp_path: Path) -> None:
    """A primary that stops answering without closing its connections (frozen with
    SIGSTOP, as one cut off by the network looks): the Sentinels promote the replica,
    and a client that was talking to the old one gives up on it after its socket
    timeout and continues on the new one, instead of waiting for ever."""
    with sentinel_stack(tmp_path) as stack:
        client = connect(
            stack.primary.master_url, stack.settings(), max_connections=4, socket_timeout=3
        )
        client.set(keys.PREFIX + "frozen", "before")
        client.wait(1, 5000)
        frozen = stack.kill_primary(signal.SIGSTOP)
        try:
            stack.wait_failover(frozen)
            answers = []
            for _ in range(10):
                try:
                    answers.append(client.get(keys.PREFIX + "frozen"))
                    break
                except (redis.ConnectionError, redis.TimeoutError):
                    continue
            assert answers == [b"before"]
            client.set(keys.PREFIX + "frozen", "after")
        finally:
            pid = read_pid_file(Path(frozen.pid_file))
            if pid is not None:
                os.kill(pid, signal.SIGCONT)
        client.close()
