"""Replicas and Sentinels of a deployment's private services, one set per host.

``pt up --ha`` (stack/ha.py, ha_redis.py) runs every replica from one state
directory. A deployment (Ansible's process mode: ansible/roles/redis_replica,
redis_sentinel, postgresql_replica) gives each its own host and state
directory: this module starts, on such a host, what the host holds, from the
primary's record as read on the primary's host (passed in, never read from the
primary's files), with the same launchers:

* a Redis replica (services/redis_replica.py) whose ACL file is a copy of the
  primary's (ACLs do not replicate; users made later go to every node through
  store/redis_users), recorded as this state directory's ``redis`` with its
  ``replicaof``;
* one Sentinel (services/redis_sentinel.py, its first config rendered by
  ``render_config``, rewritten by Sentinel afterwards), recorded in
  ``sentinel.json`` (0600);
* a PostgreSQL streaming replica (services/postgres_replica.py), recorded as
  this state directory's ``postgres``.

Each call leaves a running service alone (so a second Ansible run changes
nothing) and starts a stopped one on its data. The private services listen on
127.0.0.1 only: every host of such a deployment is this machine.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from papertrader.services import (
    postgres_cluster,
    postgres_replica,
    redis_replica,
    redis_sentinel,
    redis_server,
)
from papertrader.services.binaries import find_binary
from papertrader.services.errors import ServicesError
from papertrader.services.ports import LOOPBACK
from papertrader.services.redis_sentinel import SentinelRecord, Timing
from papertrader.services.state import (
    PostgresRecord,
    RedisRecord,
    ensure_private_dir,
    load_state,
    locked,
    save_state,
    write_private_file,
)
from papertrader.store.redis_connect import RedisConfigError, sentinel_manager

if TYPE_CHECKING:
    from redis.sentinel import Sentinel

    from papertrader.config import Settings

SENTINEL_FILE = "sentinel.json"
RecordT = TypeVar("RecordT", RedisRecord, PostgresRecord)


def redis_replica_up(
    state_dir: Path, primary: RedisRecord, acl_text: str, timeout: float
) -> tuple[RedisRecord, bool]:
    """This host's replica of ``primary`` (made the first time with ``acl_text`` as its
    users file, started again if stopped); True if it was started."""
    ensure_private_dir(state_dir)
    with locked(state_dir):
        state = load_state(state_dir)
        record = state.redis
        if record is not None and redis_server.is_running(record):
            return record, False
        if record is None:
            record = redis_replica.replica_record(primary, data_dir=state_dir / "redis")
        started = redis_replica.start_replica(
            primary, find_binary("redis-server"), timeout, record, acl_text=acl_text
        )
        state.redis = started
        save_state(state_dir, state)
        return started, True


def load_sentinel(state_dir: Path) -> SentinelRecord | None:
    path = state_dir / SENTINEL_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ServicesError(
            f"{path} is damaged ({exc}): stop its Sentinel and move the file away"
        ) from None
    return SentinelRecord(**document)


def sentinel_up(
    state_dir: Path,
    primary: RedisRecord,
    port: int,
    password: str,
    timing: Timing,
    service: str = redis_sentinel.DEFAULT_SERVICE,
    timeout: float = 30.0,
) -> tuple[SentinelRecord, bool]:
    """This host's Sentinel watching ``primary`` on ``port`` (its users' password
    ``password``); True if it was started. A Sentinel that ran before keeps the config
    it rewrote (the current primary, its peers)."""
    ensure_private_dir(state_dir)
    with locked(state_dir):
        record = load_sentinel(state_dir)
        if record is None:
            record = SentinelRecord(
                port=port, password=password, data_dir=str(state_dir / "sentinel")
            )
        elif redis_sentinel.is_running(record):
            return record, False
        started = redis_sentinel.start_sentinel(
            record, primary, find_binary("redis-sentinel"), service, timing, timeout
        )
        write_private_file(state_dir / SENTINEL_FILE, json.dumps(asdict(started), indent=2))
        return started, True


def pg_replica_up(
    state_dir: Path, primary: PostgresRecord, name: str, timeout: float
) -> tuple[PostgresRecord, bool]:
    """This host's streaming replica of ``primary`` (copied with pg_basebackup the first
    time, as standby ``name``); True if it was started."""
    ensure_private_dir(state_dir)
    with locked(state_dir):
        state = load_state(state_dir)
        record = state.postgres
        if record is not None and postgres_cluster.is_running(record):
            return record, False
        if record is not None and (Path(record.data_dir) / "PG_VERSION").exists():
            record = postgres_replica.start(record, timeout)
        else:
            root = postgres_cluster.cluster_root(state_dir, postgres_cluster.service_user())
            record = postgres_replica.create(
                primary, name, max(timeout, 120.0), root=root, owner=state_dir
            )
        state.postgres = record
        save_state(state_dir, state)
        return record, True


def database_urls(primary: PostgresRecord, replica: PostgresRecord) -> dict[str, str]:
    """The masters' settings: both servers (libpq keeps the writable one) and, for
    history, the replica first."""
    return {
        "database_url": postgres_replica.failover_url([primary, replica]),
        "database_read_url": postgres_replica.failover_url(
            [replica, primary], target="prefer-standby"
        ),
    }


def record_from(cls: type[RecordT], document: dict[str, Any]) -> RecordT:
    """A record from its JSON (``services.json``'s entry; unknown keys such as ``url``
    dropped), for a primary's record handed over from its host."""
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{key: value for key, value in document.items() if key in names})
    except TypeError as exc:
        raise ServicesError(f"not a {cls.__name__}: {exc}") from None


#: A Sentinel's flags for a primary it is not sure of: down as it sees it, or being replaced.
UNSETTLED_FLAGS = frozenset({"s_down", "o_down", "failover_in_progress"})


def settled_primary(manager: Sentinel, service: str) -> str | None:
    """host:port of the primary every Sentinel that answers names for ``service``, with
    none of them down on it or replacing it; None while that is not so (a failover under
    way, the Sentinels disagreeing) or when none answers.

    Not redis-py's ``discover_master``: mid-failover (reconf_slaves) a Sentinel 7.0
    clears the dead primary's s_down while its failover_in_progress stands, and
    ``discover_master`` then names the dead node, which ``follow_sentinels`` would bring
    back as a second primary. A Sentinel that cannot be reached or does not monitor
    ``service`` is left out; one that refuses our password is an error."""
    named: set[str] = set()
    for sentinel in manager.sentinels:
        try:
            state = sentinel.sentinel_master(service)
        except redis.AuthenticationError:
            raise
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            continue
        if not isinstance(state, dict):  # redis-py types it dict | bool; a Sentinel gives a dict
            continue
        flags = set(str(state.get("flags", "")).split(","))
        if "master" not in flags or flags & UNSETTLED_FLAGS:
            return None
        named.add(f"{state['ip']}:{int(state['port'])}")
    return named.pop() if len(named) == 1 else None


def follow_sentinels(
    state_dir: Path, settings: Settings, timeout: float = 30.0
) -> tuple[str | None, bool]:
    """Before a stopped private Redis is started again: write into its record the role
    the Sentinels give it (``replicaof`` the primary they name, or none if they name
    it), so it comes back as a replica of the node promoted meanwhile instead of a
    second primary with older data, which the replica, holding every acknowledged
    order, would then copy. Returns the primary they name (None: no node is recorded, or
    for ``timeout`` s they named no settled primary: a failover under way, or every
    node down) and whether the record changed. A running node is left to them."""
    with locked(state_dir):
        state = load_state(state_dir)
        node = state.redis
        if node is None or redis_server.is_running(node):
            return None, False
        deadline = time.monotonic() + timeout
        try:
            manager = sentinel_manager(settings, node.url)
            while (address := settled_primary(manager, settings.redis_sentinel_service)) is None:
                if time.monotonic() > deadline:
                    return None, False
                time.sleep(0.5)
        except (RedisConfigError, redis.RedisError) as exc:
            raise ServicesError(f"cannot ask the Sentinels for the primary: {exc}") from exc
        role = None if address == f"{LOOPBACK}:{node.port}" else address
        if node.replicaof == role:
            return address, False
        node.replicaof = role
        save_state(state_dir, state)
        return address, True
