"""A frozen Redis (SIGSTOP: a process paused, or a host cut off by the network) costs
the servers a bounded wait, not a hang: every connection `store.redis_connect.connect`
makes has a socket timeout (NODE_TIMEOUT, set there rather than left to redis-py's
default, which older releases left at none), with or without Sentinel. A worker then answers
"unavailable" or "outcome unknown" instead of keeping the client (and its pool slot)
waiting for ever.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from papertrader.config.settings import Settings
from papertrader.services import redis_server
from papertrader.services.binaries import find_binary
from papertrader.services.state import RedisRecord
from papertrader.store.redis_connect import NODE_TIMEOUT, connect

START_TIMEOUT = 30.0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisRecord]:
    """A Redis of this test's own: freezing the shared one would stall every test."""
    record = redis_server.start(tmp_path, None, find_binary("redis-server"), START_TIMEOUT)
    try:
        yield record
    finally:
        pid = redis_server.server_pid(record)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        redis_server.stop(record, START_TIMEOUT)


def test_a_frozen_redis_is_an_error_after_the_node_timeout_not_a_hang(
    private_redis: RedisRecord,
) -> None:
    # No retry, so the one timeout is what is measured (the servers' clients keep
    # redis-py's few retries: a handful of timeouts, still bounded).
    client = connect(private_redis.master_url, Settings(), retry=Retry(NoBackoff(), 0))
    assert client.ping()
    pid = redis_server.server_pid(private_redis)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.get("pt:anything")
        # Generous: the bound is that it ends, and not long after the node timeout.
        assert time.monotonic() - started < NODE_TIMEOUT * 6
    finally:
        os.kill(pid, signal.SIGCONT)
    # Thawed, the same client works again (a new connection replaces the broken one).
    assert client.ping()
