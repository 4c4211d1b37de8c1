"""`pt services redis-replica / sentinel / pg-replica / pg-synchronous`: what Ansible's
redis_replica, redis_sentinel and postgresql_replica roles run on each host, with a
real redis-server replica, redis-sentinel and PostgreSQL streaming replica."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from papertrader.services import (
    destroy_services,
    postgres_replica,
    redis_replica,
    redis_server,
    start_services,
)
from papertrader.services.host_replicas import load_sentinel
from papertrader.services.ports import free_port
from papertrader.services.redis_sentinel import primary_address, stop_sentinel
from papertrader.services.state import load_state
from papertrader_cli.main import cli

CLEAN_ENV: dict[str, str | None] = {
    "PT_CONFIG": None,
    "PT_REDIS_URL": None,
    "PT_DATABASE_URL": None,
    "PT_STATE_DIR": None,
}


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """State directories of three "hosts": the primaries', a replica host's, a Sentinel's."""
    dirs = {name: tmp_path / name for name in ("primary", "replica", "sentinel")}
    try:
        yield dirs
    finally:
        record = load_sentinel(dirs["sentinel"]) if dirs["sentinel"].exists() else None
        if record is not None:
            stop_sentinel(record)
        for name in ("replica", "primary"):
            if (dirs[name] / "services.json").exists():
                destroy_services(dirs[name])


def users(acl_list: list[Any]) -> dict[str, set[str]]:
    """ACL LIST as user -> its words (password digests, rules) in no order: a user set
    live and the same user loaded from a file list their rules in different orders."""
    lines = [line.decode() if isinstance(line, bytes) else str(line) for line in acl_list]
    return {line.split()[1]: set(line.split()[2:]) - {"sanitize-payload"} for line in lines}


def pt(
    *args: str, stdin: str | None = None, env: dict[str, str | None] | None = None
) -> tuple[int, dict[str, Any]]:
    result = CliRunner(env=CLEAN_ENV | (env or {})).invoke(cli, [*args, "--json"], input=stdin)
    return result.exit_code, json.loads(result.output)


def test_each_host_runs_its_part_once_and_the_primary_is_replicated(
    hosts: dict[str, Path],
) -> None:
    start_services(hosts["primary"])
    code, out = pt("services", "redis-replication-users", "--state-dir", str(hosts["primary"]))
    assert (code, out) == (0, {"changed": True})
    code, out = pt("services", "redis-replication-users", "--state-dir", str(hosts["primary"]))
    assert (code, out) == (0, {"changed": False})
    primary = load_state(hosts["primary"])
    assert primary.redis is not None and primary.postgres is not None
    acl = Path(primary.redis.acl_file).read_text(encoding="utf-8")

    # The Redis replica: the primary's users file, synced; a second call leaves it alone.
    given = json.dumps({"primary": asdict(primary.redis), "acl": acl})
    replica_args = ("services", "redis-replica", "--state-dir", str(hosts["replica"]))
    code, out = pt(*replica_args, stdin=given)
    assert code == 0 and out["started"] is True, out
    assert out["replicaof"] == f"127.0.0.1:{primary.redis.port}"
    assert pt(*replica_args, stdin=given)[1]["started"] is False
    replica = load_state(hosts["replica"]).redis
    assert replica is not None
    assert os.stat(replica.acl_file).st_mode & 0o777 == 0o600
    source, copy = redis_server.client(primary.redis), redis_server.client(replica)
    try:
        assert users(source.acl_list()) == users(copy.acl_list())
        source.set("pt:test:replicated", "yes")
        assert source.wait(1, 5000) == 1
        assert copy.get("pt:test:replicated") == b"yes"
    finally:
        source.close()
        copy.close()

    # A Sentinel: only what it needs of the primary on standard input.
    password_file = hosts["sentinel"].parent / "sentinel.password"
    password_file.write_text("sentinel-secret\n")
    password_file.chmod(0o600)
    needed = {k: asdict(primary.redis)[k] for k in ("port", "sentinel_password")}
    sentinel_args = (
        "services", "sentinel", "--state-dir", str(hosts["sentinel"]), "--port",
        str(free_port()), "--password-file", str(password_file), "--quorum", "1",
        "--down-after-ms", "500", "--failover-timeout-ms", "5000",
    )  # fmt: skip
    code, out = pt(*sentinel_args, stdin=json.dumps({"primary": needed}))
    assert code == 0 and out["started"] is True, out
    assert pt(*sentinel_args, stdin=json.dumps({"primary": needed}))[1]["started"] is False
    record = load_sentinel(hosts["sentinel"])
    assert record is not None
    assert primary_address(record) == f"127.0.0.1:{primary.redis.port}"
    assert os.stat(record.config_file).st_mode & 0o777 == 0o600

    # The PostgreSQL replica, then the primary waits for it.
    given = json.dumps({"primary": asdict(primary.postgres)})
    pg_args = ("services", "pg-replica", "--state-dir", str(hosts["replica"]), "--name", "r1")
    code, out = pt(*pg_args, stdin=given)
    assert code == 0 and out["started"] is True, out
    url = out["database_url"]
    assert "****" in url and url.endswith("?target_session_attrs=read-write")
    code, out = pt(*pg_args, "--show-secrets", stdin=given)
    assert out["started"] is False and primary.postgres.master_password in out["database_url"]
    sync_args = ("services", "pg-synchronous", "--state-dir", str(hosts["primary"]), "r1")
    assert pt(*sync_args) == (0, {"changed": True})
    assert pt(*sync_args) == (0, {"changed": False})
    pg_replica = load_state(hosts["replica"]).postgres
    assert pg_replica is not None and not postgres_replica.is_primary(pg_replica)

    # The Redis primary dies, the Sentinel promotes the replica: before the old node starts
    # again it is recorded as a replica of the new primary, and comes back as one.
    follow_args = ("services", "redis-follow", "--state-dir", str(hosts["primary"]))
    sentinel_env: dict[str, str | None] = {
        "PT_REDIS_SENTINELS": record.address,
        "PT_REDIS_SENTINEL_USERNAME": "pt-sentinel-client",
        "PT_REDIS_SENTINEL_PASSWORD_FILE": str(password_file),
    }
    assert pt(*follow_args, env=sentinel_env)[1]["changed"] is False  # running: left alone
    redis_server.stop(primary.redis, 30)
    deadline = time.monotonic() + 60
    while primary_address(record) != f"127.0.0.1:{replica.port}":
        assert time.monotonic() < deadline, "no failover within 60 s"
        time.sleep(0.2)
    code, out = pt(*follow_args, env=sentinel_env)
    assert (code, out) == (0, {"primary": f"127.0.0.1:{replica.port}", "changed": True})
    start_services(hosts["primary"])
    old = load_state(hosts["primary"]).redis
    assert old is not None and old.replicaof == f"127.0.0.1:{replica.port}"
    assert redis_replica.role(old) == "slave"


def test_bad_input_gets_a_reason(hosts: dict[str, Path]) -> None:
    code, out = pt("services", "redis-replica", "--state-dir", str(hosts["replica"]), stdin="{")
    assert code == 1 and "not JSON" in out["error"]["message"]
    code, out = pt(
        "services", "pg-replica", "--state-dir", str(hosts["replica"]), stdin='{"primary": {}}'
    )
    assert code == 1 and "not a PostgresRecord" in out["error"]["message"]
