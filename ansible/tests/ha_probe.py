"""Run with a host's PaperTrader: is the replicated arrangement what it should be?

    ha_probe.py check REDIS_PRIMARY REDIS_REPLICA PG_PRIMARY PG_REPLICA SENTINEL...
    ha_probe.py primary SENTINEL_DIR...

``check`` waits (up to 30 s) until, and exits 1 with the reason unless:
the Redis replica is a connected replica of the primary with the primary's
replication offset, the same users on both nodes (ACLs do not replicate: the
deployment makes them on each); every Sentinel names the primary, sees the
others and the replica; the PostgreSQL primary streams to the replica
synchronously and the replica has replayed everything the primary wrote.
Prints one JSON line of what it saw. ``primary`` prints the address each
Sentinel names (JSON).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import redis

from papertrader.services import redis_sentinel, redis_server
from papertrader.services.host_replicas import load_sentinel
from papertrader.services.postgres_cluster import _connect
from papertrader.services.state import load_state

TIMEOUT = 30.0


def sentinels(directories: list[str]) -> list[redis_sentinel.SentinelRecord]:
    records = [load_sentinel(Path(d)) for d in directories]
    missing = [d for d, r in zip(directories, records, strict=True) if r is None]
    if missing:
        raise SystemExit(f"no sentinel.json in {missing}")
    return [r for r in records if r is not None]


def users(acl_list: list[Any]) -> dict[str, set[str]]:
    """ACL LIST as user -> its words (password digests, rules) in no order: a user set
    live and the same user loaded from a file list their rules in different orders."""
    lines = [line.decode() if isinstance(line, bytes) else str(line) for line in acl_list]
    return {line.split()[1]: set(line.split()[2:]) - {"sanitize-payload"} for line in lines}


def redis_view(primary_dir: str, replica_dir: str, watchers: list[Any]) -> dict[str, Any]:
    primary = load_state(Path(primary_dir)).redis
    replica = load_state(Path(replica_dir)).redis
    assert primary is not None and replica is not None
    p, r = redis_server.client(primary, timeout=5), redis_server.client(replica, timeout=5)
    try:
        p_info, r_info = p.info("replication"), r.info("replication")
        view: dict[str, Any] = {
            "primary": f"127.0.0.1:{primary.port}",
            "replica_role": r_info.get("role"),
            "link": r_info.get("master_link_status"),
            "replica_of": f"{r_info.get('master_host')}:{r_info.get('master_port')}",
            "offsets": [p_info.get("master_repl_offset"), r_info.get("slave_repl_offset")],
            "same_users": users(p.acl_list()) == users(r.acl_list()),
            "users": len(p.acl_list()),
        }
    finally:
        p.close()
        r.close()
    named, peers, replicas = [], [], []
    for record in watchers:
        named.append(redis_sentinel.primary_address(record))
        conn = redis_sentinel.client(record)
        try:
            peers.append(len(conn.execute_command("SENTINEL", "SENTINELS", "papertrader")))
            replicas.append(len(conn.execute_command("SENTINEL", "REPLICAS", "papertrader")))
        except redis.RedisError as exc:
            peers.append(str(exc))
        finally:
            conn.close()
    view |= {"sentinels_name": named, "sentinel_peers": peers, "sentinel_replicas": replicas}
    return view


def redis_problem(view: dict[str, Any], count: int) -> str | None:
    if view["replica_role"] != "slave" or view["link"] != "up":
        return "the replica is not a connected replica"
    if view["replica_of"] != view["primary"]:
        return "the replica follows another primary"
    if view["offsets"][0] != view["offsets"][1]:
        return "the replica is behind"
    if not view["same_users"]:
        return "the nodes have different users"
    if set(view["sentinels_name"]) != {view["primary"]}:
        return "the Sentinels do not all name the primary"
    if view["sentinel_peers"] != [count - 1] * count or view["sentinel_replicas"] != [1] * count:
        return "the Sentinels do not all see each other and the replica"
    return None


def postgres_view(primary_dir: str, replica_dir: str) -> dict[str, Any]:
    primary = load_state(Path(primary_dir)).postgres
    replica = load_state(Path(replica_dir)).postgres
    assert primary is not None and replica is not None
    conn = _connect(primary, "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT application_name, state, sync_state FROM pg_stat_replication")
            streams = cur.fetchall()
            cur.execute("SHOW synchronous_standby_names")
            row = cur.fetchone()
            cur.execute("SELECT pg_current_wal_lsn()::text")
            lsn = cur.fetchone()
    finally:
        conn.close()
    conn = _connect(replica, "postgres")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() >= %s::pg_lsn",
                (lsn[0] if lsn else "0/0",),
            )
            recovery, caught_up = cur.fetchone() or (None, None)
    finally:
        conn.close()
    return {
        "streams": [list(s) for s in streams],
        "synchronous_standby_names": row[0] if row else None,
        "replica_in_recovery": recovery,
        "replica_caught_up": caught_up,
    }


def postgres_problem(view: dict[str, Any]) -> str | None:
    streams = view["streams"]
    if len(streams) != 1 or streams[0][1] != "streaming" or streams[0][2] != "sync":
        return "the primary does not stream to one synchronous replica"
    if streams[0][0] != view["synchronous_standby_names"]:
        return "synchronous_standby_names does not name the replica"
    if not view["replica_in_recovery"] or not view["replica_caught_up"]:
        return "the replica is not a caught-up standby"
    return None


def check(dirs: list[str], sentinel_dirs: list[str]) -> int:
    """``dirs``: the services directories of the Redis primary and replica, then of the
    PostgreSQL primary and replica."""
    watchers = sentinels(sentinel_dirs)
    deadline = time.monotonic() + TIMEOUT
    while True:
        views = {
            "redis": redis_view(dirs[0], dirs[1], watchers),
            "postgres": postgres_view(dirs[2], dirs[3]),
        }
        problem = redis_problem(views["redis"], len(watchers)) or postgres_problem(
            views["postgres"]
        )
        if problem is None:
            print(json.dumps(views))
            return 0
        if time.monotonic() > deadline:
            print(f"{problem} after {TIMEOUT:.0f} s: {json.dumps(views)}")
            return 1
        time.sleep(0.5)


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"] and len(argv) >= 6:
        return check(argv[1:5], argv[5:])
    if argv[:1] == ["primary"]:
        print(json.dumps([redis_sentinel.primary_address(s) for s in sentinels(argv[1:])]))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
