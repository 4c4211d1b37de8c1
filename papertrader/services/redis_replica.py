"""A replica of the private Redis, for Redis with Sentinel on one machine (`pt up --ha`).

The replica is the primary's record with its own port and directory: the same
users and passwords (ACLs do not replicate, so every node gets the same ACL
file, copied from the primary's, workers' users included), the same TLS files
(it then replicates over TLS: ``tls-replication yes``), and ``replicaof`` the
primary, logging in as ``pt-replication`` (``masteruser``/``masterauth``; that
user may only PSYNC, REPLCONF and PING). Everything the primary holds reaches
it, FUNCTIONs too (FUNCTION LOAD replicates), so after a failover the workers'
FCALLs find their library on the promoted replica.

Every node's config carries the replication login (redis_server._replication):
the Sentinels turn a returning old primary into a replica of the new one, and
it must be able to log in there.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from pathlib import Path

import redis

from papertrader.services import redis_server
from papertrader.services.errors import ServicesError
from papertrader.services.ports import LOOPBACK, free_port
from papertrader.services.state import RedisRecord, ensure_private_dir, write_private_file
from papertrader.store import redis_users

#: The first replica's name: its directory is the primary's with this suffix.
REPLICA_NAME = "replica1"


def ensure_replication_users(primary: RedisRecord) -> bool:
    """Give ``primary`` the replication and Sentinel users (passwords made once); a running
    primary gets them at once (ACL SETUSER, ACL SAVE, CONFIG SET masteruser/masterauth),
    a stopped one at its next start. True if anything was new."""
    changed = False
    if not primary.replication_password:
        primary.replication_password = secrets.token_urlsafe(32)
        changed = True
    if not primary.sentinel_password:
        primary.sentinel_password = secrets.token_urlsafe(32)
        changed = True
    if redis_server.is_running(primary):
        apply_replication_users(primary)
    return changed


def apply_replication_users(node: RedisRecord) -> None:
    """Define the replication and Sentinel users on the running ``node`` and let it log in
    to a primary with the replication user (it may become a replica in a failover)."""
    conn = redis_server.client(node, timeout=5.0)
    try:
        redis_users.set_user(
            conn,
            redis_users.REPLICATION_USER,
            node.replication_password,
            redis_users.REPLICATION_RULES,
        )
        redis_users.set_user(
            conn, redis_users.SENTINEL_USER, node.sentinel_password, redis_users.SENTINEL_RULES
        )
        conn.config_set("masteruser", redis_users.REPLICATION_USER)
        conn.config_set("masterauth", node.replication_password)
        if redis_server.RedisTls.of(node) is not None:
            conn.config_set("tls-replication", "yes")
    except redis.RedisError as exc:
        raise ServicesError(f"cannot add the replication users to Redis: {exc}") from exc
    finally:
        conn.close()


def replica_record(
    primary: RedisRecord,
    name: str = REPLICA_NAME,
    primary_host: str = LOOPBACK,
    data_dir: Path | None = None,
) -> RedisRecord:
    """The record of a new replica of ``primary`` (not started): its own port and directory
    (``data_dir``; by default beside the primary's)."""
    if data_dir is None:
        root = Path(primary.data_dir)
        data_dir = root.parent / f"{root.name}-{name}"
    return dataclasses.replace(
        primary,
        port=free_port(),
        pid=None,
        data_dir=str(data_dir),
        config_file=str(data_dir / redis_server.CONFIG_NAME),
        pid_file=str(data_dir / "redis.pid"),
        log_file=str(data_dir / "redis.log"),
        replicaof=f"{primary_host}:{primary.port}",
        min_replicas_to_write=0,
    )


def start_replica(
    primary: RedisRecord,
    redis_server_binary: Path,
    timeout: float = 60.0,
    record: RedisRecord | None = None,
    name: str = REPLICA_NAME,
    acl_text: str | None = None,
) -> RedisRecord:
    """Start a replica of the running ``primary`` (or restart ``record``, a replica made
    before) and wait until it has synced; returns its record (keep it to stop it).

    The primary gets the replication users first if it has none. The replica's ACL file
    is the primary's (``acl_text``: its contents as read on the primary's host, for a
    replica whose primary's files are elsewhere), so the same users (workers' too) log
    in on both.
    """
    if not redis_server.is_running(primary):
        raise ServicesError("the Redis primary is not running: start it first")
    if acl_text is None:
        ensure_replication_users(primary)
        acl_text = Path(primary.acl_file).read_text(encoding="utf-8")
    elif not (primary.replication_password and primary.sentinel_password):
        raise ServicesError("the Redis primary has no replication user: ensure_replication_users")
    if record is None:
        record = replica_record(primary, name)
    record.replication_password = primary.replication_password
    record.sentinel_password = primary.sentinel_password
    ensure_private_dir(Path(record.data_dir))
    write_private_file(Path(record.acl_file), acl_text)
    started = redis_server.start(Path(record.data_dir).parent, record, redis_server_binary, timeout)
    wait_synced(started, timeout)
    return started


def wait_synced(replica: RedisRecord, timeout: float) -> None:
    """Wait until ``replica``'s link to its primary is up (the first sync done)."""
    deadline = time.monotonic() + timeout
    status = "unknown"
    while time.monotonic() < deadline:
        conn = redis_server.client(replica)
        try:
            info = conn.info("replication")
            status = str(info.get("master_link_status", "none"))
            if info.get("role") == "master" or status == "up":
                return
        except redis.RedisError as exc:
            status = str(exc)
        finally:
            conn.close()
        time.sleep(0.05)
    raise ServicesError(
        f"the Redis replica on port {replica.port} did not sync within {timeout:.0f}s "
        f"(link: {status}); see {replica.log_file}"
    )


def role(node: RedisRecord) -> str | None:
    """``master`` or ``slave`` as the running ``node`` says (None: it does not answer)."""
    conn = redis_server.client(node)
    try:
        return str(conn.info("replication").get("role"))
    except redis.RedisError:
        return None
    finally:
        conn.close()
