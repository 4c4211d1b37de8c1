"""A real Redis primary, its replica and three real Sentinels for the Sentinel tests.

Small Sentinel timings (down after 1 s, failover timeout 5 s) so a failover
takes a few seconds; the tests wait on what Redis reports, never on a sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from papertrader.config.settings import Settings
from papertrader.services import redis_replica, redis_sentinel, redis_server
from papertrader.services.binaries import find_binary
from papertrader.services.state import RedisRecord
from papertrader.store import redis_users

SERVICE = "pt-test"
TIMING = redis_sentinel.Timing(down_after_ms=1000, failover_timeout_ms=5000, quorum=2)
SENTINEL_PASSWORD = "sentinel-test-password"


@dataclass
class SentinelStack:
    """The nodes, the Sentinels and the settings that reach the primary through them."""

    primary: RedisRecord
    replica: RedisRecord
    sentinels: list[redis_sentinel.SentinelRecord]
    password_file: Path

    def settings(self, **overrides: object) -> Settings:
        return Settings(
            redis_sentinels=",".join(s.address for s in self.sentinels),
            redis_sentinel_service=SERVICE,
            redis_sentinel_username=redis_sentinel.CLIENT_USER,
            redis_sentinel_password_file=self.password_file,
            **overrides,  # type: ignore[arg-type]
        )

    def primary_now(self) -> str | None:
        for record in self.sentinels:
            address = redis_sentinel.primary_address(record, SERVICE)
            if address is not None:
                return address
        return None

    def kill_primary(self, how: int = signal.SIGKILL) -> RedisRecord:
        """kill -9 (or freeze, SIGSTOP) whichever node is the primary now; its record."""
        address = self.primary_now()
        victim = self.primary if address == f"127.0.0.1:{self.primary.port}" else self.replica
        pid = redis_server.server_pid(victim)
        assert pid is not None
        os.kill(pid, how)
        return victim

    def wait_failover(self, old: RedisRecord, timeout: float = 60.0) -> str:
        """Wait until every Sentinel names a primary other than ``old``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            named = {redis_sentinel.primary_address(s, SERVICE) for s in self.sentinels}
            if len(named) == 1 and None not in named and f"127.0.0.1:{old.port}" not in named:
                return str(named.pop())
            time.sleep(0.1)
        raise AssertionError(f"no failover within {timeout:.0f}s")


def worker_url(stack: SentinelStack, name: str, password: str = "worker-pw") -> str:
    """Define a worker's Redis user on every node (ACLs do not replicate); its URL."""
    for node in (stack.primary, stack.replica):
        admin = redis_server.client(node, timeout=5)
        try:
            redis_users.set_user(
                admin, redis_users.worker_user(name), password, redis_users.WORKER_RULES
            )
        finally:
            admin.close()
    return redis_users.url_for(stack.primary.url, redis_users.worker_user(name), password)


@contextlib.contextmanager
def sentinel_stack(root: Path, tls: redis_server.RedisTls | None = None) -> Iterator[SentinelStack]:
    """Start the primary, its replica and three Sentinels under ``root`` (all speaking
    TLS only, with ``tls``); stop them after."""
    server = find_binary("redis-server")
    primary = redis_server.start(root, None, server, 30, tls)
    replica: RedisRecord | None = None
    sentinels: list[redis_sentinel.SentinelRecord] = []
    try:
        redis_replica.ensure_replication_users(primary)
        replica = redis_replica.start_replica(primary, server, 60)
        password_file = root / "sentinel-password"
        password_file.write_text(SENTINEL_PASSWORD + "\n")
        password_file.chmod(0o600)
        sentinels = redis_sentinel.start_sentinels(
            primary,
            find_binary("redis-sentinel"),
            root,
            SENTINEL_PASSWORD,
            service=SERVICE,
            timing=TIMING,
            timeout=60,
        )
        yield SentinelStack(primary, replica, sentinels, password_file)
    finally:
        for record in sentinels:
            with contextlib.suppress(Exception):
                redis_sentinel.stop_sentinel(record)
        for node in (primary, replica):
            if node is None:
                continue
            with contextlib.suppress(Exception):
                if redis_server.server_pid(node) is not None:
                    redis_server.stop(node, 10)


def fresh_client(stack: SentinelStack, url: str) -> redis.Redis:
    from papertrader.store.redis_connect import connect

    return connect(url, stack.settings(), socket_timeout=5)
