"""`scripts/faults.py --redis-failover`: Redis with a replica and three Sentinels.

The private Redis of `pt services up` gets a replica and three Sentinels
(papertrader/services/redis_replica.py, redis_sentinel.py; Sentinel timings
shortened so a failover takes seconds), and every process started afterwards
reaches Redis through the Sentinels (PT_REDIS_SENTINELS...) with
``redis_min_replicas_ack = 1``: a worker calls an order queued only once the
replica has it. A failover step kills the current primary with SIGKILL, waits
until every Sentinel names the replica, and starts the killed node again as a
replica of the new primary (what an operator, or a supervisor restarting
redis-server, does); the next step fails back the other way.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import redis

from papertrader.config.settings import Settings
from papertrader.services import redis_replica, redis_sentinel, redis_server
from papertrader.services.binaries import find_binary
from papertrader.services.state import RedisRecord, load_state, locked, save_state
from papertrader.store.redis_connect import connect

SERVICE = "papertrader"
TIMING = redis_sentinel.Timing(down_after_ms=1000, failover_timeout_ms=5000, quorum=2)
PASSWORD = "faults-sentinel-password-0123456789"


class RedisHa:
    """The replica and the Sentinels of one fault run, and the failover step."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.nodes: list[RedisRecord] = []
        self.sentinels: list[redis_sentinel.SentinelRecord] = []
        self.password_file = state / "sentinel-password"

    def setup(self, env: dict[str, str]) -> None:
        """Add the replica and the Sentinels; ``env`` (every later process's) names them."""
        with locked(self.state):
            services = load_state(self.state)
            primary = services.redis
            assert primary is not None
            redis_replica.ensure_replication_users(primary)
            save_state(self.state, services)  # the passwords, for `pt services`
        replica = redis_replica.start_replica(primary, find_binary("redis-server"))
        self.nodes = [primary, replica]
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(PASSWORD + "\n")
        self.sentinels = redis_sentinel.start_sentinels(
            primary,
            find_binary("redis-sentinel"),
            self.state / "sentinels",
            PASSWORD,
            service=SERVICE,
            timing=TIMING,
            timeout=60,
        )
        env.update(
            {
                "PT_REDIS_SENTINELS": ",".join(s.address for s in self.sentinels),
                "PT_REDIS_SENTINEL_SERVICE": SERVICE,
                "PT_REDIS_SENTINEL_USERNAME": redis_sentinel.CLIENT_USER,
                "PT_REDIS_SENTINEL_PASSWORD_FILE": str(self.password_file),
                "PT_REDIS_MIN_REPLICAS_ACK": "1",
                "PT_REDIS_REPLICA_ACK_TIMEOUT": "2",
            }
        )

    def settings(self) -> Settings:
        return Settings(
            redis_sentinels=",".join(s.address for s in self.sentinels),
            redis_sentinel_service=SERVICE,
            redis_sentinel_username=redis_sentinel.CLIENT_USER,
            redis_sentinel_password_file=self.password_file,
        )

    def primary_address(self) -> str | None:
        named = {redis_sentinel.primary_address(s, SERVICE) for s in self.sentinels}
        return named.pop() if len(named) == 1 else None

    def failover(self) -> dict[str, Any]:
        """SIGKILL the primary; the Sentinels promote the replica; the killed node comes
        back as a replica of the new primary. What was seen (``problems``: what failed)."""
        address = self.primary_address()
        victims = [n for n in self.nodes if address == f"127.0.0.1:{n.port}"]
        if not victims:
            return {"killed": "redis primary", "problems": [f"no agreed primary ({address})"]}
        victim = victims[0]
        pid = redis_server.server_pid(victim)
        assert pid is not None
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        problems: list[str] = []
        new = None
        deadline = killed + 60
        while time.monotonic() < deadline:
            new = self.primary_address()
            if new is not None and new != address:
                break
            time.sleep(0.1)
        else:
            problems.append(f"the Sentinels did not fail over within 60 s (primary {new})")
        seconds = round(time.monotonic() - killed, 1)
        victim.replicaof = new
        redis_server.start(Path(victim.data_dir).parent, victim, find_binary("redis-server"), 60)
        redis_replica.wait_synced(victim, 60)
        return {
            "killed": "redis primary (Sentinel failover)",
            "failover_seconds": seconds,
            "new_primary": new,
            "problems": problems,
        }

    def drained(self) -> bool:
        """Whether the order stream on the current primary is empty."""
        services = load_state(self.state)
        assert services.redis is not None
        client = connect(services.redis.url, self.settings(), socket_timeout=5)
        try:
            return int(client.xlen("pt:orders")) == 0
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the Sentinels and the nodes `pt services down` does not know of."""
        for record in self.sentinels:
            try:
                redis_sentinel.stop_sentinel(record)
            except Exception:
                pass
        for node in self.nodes[1:]:
            try:
                if redis_server.server_pid(node) is not None:
                    redis_server.stop(node, 30)
            except Exception:
                pass
