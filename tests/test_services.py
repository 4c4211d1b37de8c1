"""The embedded Redis and PostgreSQL: real servers, checked with the real clients."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
import redis
from click.testing import CliRunner

from papertrader.config import Settings
from papertrader.services import (
    ServicesError,
    ServiceUrls,
    destroy_services,
    read_service_urls,
    resolve_urls,
    services_status,
    start_services,
    stop_services,
)
from papertrader.services.binaries import SEARCH_PATH_ENV, find_binary
from papertrader.services.ports import free_port, port_is_free
from papertrader.services.postgres_cluster import cluster_root, service_user, socket_dir_for
from papertrader.services.state import (
    PostgresRecord,
    RedisRecord,
    ServicesState,
    load_state,
    mask_url,
    save_state,
)
from papertrader_cli.main import cli

# Keep the caller's PT_* settings out of the CLI runs: they would win over the state dir.
CLEAN_ENV: dict[str, str | None] = {
    "PT_CONFIG": None,
    "PT_REDIS_URL": None,
    "PT_DATABASE_URL": None,
    "PT_STATE_DIR": None,
}


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state directory whose services are destroyed after the test, whatever happened."""
    directory = tmp_path / "state"
    try:
        yield directory
    finally:
        if directory.exists():
            destroy_services(directory)


def redis_cli_ping(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["redis-cli", "-u", url, "ping"], capture_output=True, text=True, timeout=30, check=False
    )


def psql(url: str, query: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", url, "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-c", query],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_start_gives_urls_the_real_clients_accept(state_dir: Path) -> None:
    urls = start_services(state_dir)

    pong = redis_cli_ping(urls.redis_url)
    assert pong.stdout.strip() == "PONG", pong.stderr
    one = psql(urls.database_url, "select 1")
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == "1"

    assert urls.redis_url.startswith("redis://pt-admin:")  # the operator's user
    assert urls.master_redis_url is not None
    assert urls.master_redis_url.startswith("redis://pt-master:")
    assert redis_cli_ping(urls.master_redis_url).stdout.strip() == "PONG"
    assert urls.redis_url.endswith("/0")
    assert urls.database_url.startswith("postgresql://papertrader_master:")
    assert urls.owner_url.startswith("postgresql://papertrader_owner:")
    assert urls.database_url.endswith("/papertrader")
    assert "127.0.0.1:6379" not in urls.redis_url  # never the machine-wide servers
    assert "127.0.0.1:5432" not in urls.database_url
    # The URLs hold passwords: repr must not show them.
    assert urls.redis_url not in repr(urls) and "****" in repr(urls)


def test_secrets_are_private_and_servers_need_them(state_dir: Path) -> None:
    urls = start_services(state_dir)
    state = load_state(state_dir)
    assert state.redis is not None and state.postgres is not None

    acl = Path(state.redis.acl_file)
    for path in (state_dir / "services.json", Path(state.redis.config_file), acl):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    config = Path(state.redis.config_file).read_text()
    for line in ("appendonly yes", "bind 127.0.0.1", "protected-mode yes", "daemonize yes"):
        assert line in config
    assert f'aclfile "{acl}"' in config and "requirepass" not in config
    users = acl.read_text()
    assert "user default off" in users  # no user name, no access
    assert state.redis.password not in users and state.redis.master_password not in users

    no_password = f"redis://127.0.0.1:{state.redis.port}/0"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(no_password).ping()
    wrong = urls.database_url.replace(state.postgres.master_password, "wrong")
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(wrong).close()


def test_status_reports_running_with_masked_urls(state_dir: Path) -> None:
    urls = start_services(state_dir)
    report = services_status(state_dir)

    assert report["redis"]["running"] and report["postgres"]["running"]
    assert report["redis"]["pid"] and report["postgres"]["pid"]
    assert report["redis"]["url"] == mask_url(urls.redis_url)
    assert report["postgres"]["url"] == mask_url(urls.database_url)
    text = json.dumps(report)
    state = load_state(state_dir)
    assert state.redis is not None and state.postgres is not None
    for secret in (state.redis.password, state.postgres.password, state.postgres.owner_password,
                   state.postgres.master_password, state.redis.master_password):  # fmt: skip
        assert secret not in text


def test_start_twice_is_idempotent(state_dir: Path) -> None:
    first = start_services(state_dir)
    pids = services_status(state_dir)
    second = start_services(state_dir)
    assert second == first
    again = services_status(state_dir)
    assert again["redis"]["pid"] == pids["redis"]["pid"]
    assert again["postgres"]["pid"] == pids["postgres"]["pid"]
    assert read_service_urls(state_dir) == first


def test_stop_then_start_keeps_data(state_dir: Path) -> None:
    urls = start_services(state_dir)
    client = redis.Redis.from_url(urls.redis_url)
    client.rpush("orders:pending", b"order-1", b"order-2")
    client.close()
    created = psql(urls.owner_url, "create table kept (v text); insert into kept values ('x')")
    assert created.returncode == 0, created.stderr
    assert psql(urls.owner_url, "select v from kept").stdout.strip() == "x"

    assert stop_services(state_dir) == {"redis": True, "postgres": True}
    report = services_status(state_dir)
    assert not report["redis"]["running"] and not report["postgres"]["running"]
    assert redis_cli_ping(urls.redis_url).stdout.strip() != "PONG"
    assert stop_services(state_dir) == {"redis": False, "postgres": False}

    assert start_services(state_dir) == urls  # same ports were free: same URLs
    client = redis.Redis.from_url(urls.redis_url)
    assert client.lrange("orders:pending", 0, -1) == [b"order-1", b"order-2"]
    client.close()
    assert psql(urls.owner_url, "select v from kept").stdout.strip() == "x"


def test_restart_moves_to_a_new_port_when_the_old_one_is_taken(state_dir: Path) -> None:
    urls = start_services(state_dir)
    client = redis.Redis.from_url(urls.redis_url)
    client.set("k", "v")
    client.close()
    old = load_state(state_dir)
    assert old.redis is not None and old.postgres is not None
    stop_services(state_dir)

    squatters = []
    for port in (old.redis.port, old.postgres.port):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # despite TIME_WAIT
        sock.bind(("127.0.0.1", port))
        sock.listen()
        squatters.append(sock)
    try:
        moved = start_services(state_dir)
    finally:
        for sock in squatters:
            sock.close()

    new = load_state(state_dir)
    assert new.redis is not None and new.postgres is not None
    assert new.redis.port != old.redis.port and new.postgres.port != old.postgres.port
    assert new.redis.password == old.redis.password
    assert read_service_urls(state_dir) == moved != urls
    assert redis.Redis.from_url(moved.redis_url).get("k") == b"v"
    assert psql(moved.database_url, "select 1").stdout.strip() == "1"


def test_servers_planned_together_never_get_the_same_port() -> None:
    """A stack (Redis, PostgreSQL, master, workers) or a test's servers pick their ports
    one after another, each released before the next is picked; the kernel hands a
    released port out again now and then, and the second server could not listen. The
    old picker repeated a port some 300 times in 3,000 picks."""
    picks = [free_port() for _ in range(3000)]
    assert len(set(picks)) == len(picks)
    assert all(port_is_free(port) for port in picks[:50])  # and each is really free


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to the postgres user")
def test_as_root_the_cluster_belongs_to_the_postgres_user(state_dir: Path) -> None:
    start_services(state_dir)
    state = load_state(state_dir)
    assert state.postgres is not None
    assert state.postgres.run_as == "postgres"
    root = Path(state.postgres.root)
    data = Path(state.postgres.data_dir)
    # pytest's temporary directories are 0700 root: the cluster must live elsewhere.
    assert root.parent == Path("/var/tmp") and root.name.startswith("papertrader-pg-")
    assert root.stat().st_uid == data.stat().st_uid == service_user().uid  # type: ignore[union-attr]
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    # Deterministic: the same state directory always maps to the same place.
    assert cluster_root(state_dir, service_user()) == root


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to the postgres user")
def test_as_root_a_deleted_temporary_state_dir_leaves_no_cluster_behind(tmp_path: Path) -> None:
    """A state directory in /tmp deleted without `pt services destroy` (a test run, a
    trial stack) used to leave its /var/tmp cluster for ever; the next cluster made
    removes it. A stopped cluster whose state directory still exists is kept."""
    gone, kept, new = (tmp_path / name for name in ("gone", "kept", "new"))
    start_services(gone)
    start_services(kept)
    gone_root = Path(load_state(gone).postgres.root)  # type: ignore[union-attr]
    kept_root = Path(load_state(kept).postgres.root)  # type: ignore[union-attr]
    assert gone_root.parent == kept_root.parent == Path("/var/tmp")
    try:
        stop_services(gone)
        stop_services(kept)
        shutil.rmtree(gone)  # as `rm -r` of a temporary directory does
        assert gone_root.exists()
        start_services(new)
        assert not gone_root.exists()
        assert kept_root.exists()
        start_services(kept)  # and it still starts on its data
    finally:
        for state in (kept, new):
            destroy_services(state)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to the postgres user")
def test_as_root_a_reachable_state_dir_keeps_the_cluster_inside() -> None:
    reachable = Path("/var/tmp") / f"pt-test-{uuid.uuid4().hex}"
    reachable.mkdir(mode=0o755)
    try:
        assert cluster_root(reachable, service_user()) == reachable / "postgres"
    finally:
        shutil.rmtree(reachable)


def test_a_missing_program_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv(SEARCH_PATH_ENV, str(empty))
    with pytest.raises(ServicesError) as caught:
        start_services(tmp_path / "state")
    message = str(caught.value)
    assert "`redis-server`" in message and "`initdb`" in message
    assert "apt-get install redis-server" in message
    assert "apt-get install postgresql" in message
    assert not (tmp_path / "state").exists()  # nothing was started or created

    with pytest.raises(ServicesError, match=r"`pg_ctl` was not found.*apt-get install postgresql"):
        find_binary("pg_ctl", search_path="")


def test_a_missing_program_in_the_cli_is_one_line_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEARCH_PATH_ENV, "")
    result = CliRunner().invoke(cli, ["services", "up", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "apt-get install" in result.output and "Traceback" not in result.output


def test_stop_and_status_without_services(tmp_path: Path) -> None:
    assert stop_services(tmp_path / "nothing") == {"redis": False, "postgres": False}
    report = services_status(tmp_path / "nothing")
    assert report["redis"] == {"initialized": False, "running": False}
    assert read_service_urls(tmp_path / "nothing") is None


def _record_services(state_dir: Path) -> ServiceUrls:
    """Write a services.json as `pt services up` would (no servers needed to resolve URLs)."""
    state_dir.mkdir(parents=True)
    state = ServicesState(
        redis=RedisRecord(1111, "rpw", "d", "c", "p", "l"),
        postgres=PostgresRecord(2222, "ppw", "r", "d", "l", "s"),
    )
    save_state(state_dir, state)
    assert state.redis is not None and state.postgres is not None
    return ServiceUrls(
        state.redis.url,
        state.postgres.url,
        database_owner_url=state.postgres.owner_url,
        master_redis_url=state.redis.master_url,
    )


def test_resolve_urls_prefers_configured_then_recorded(tmp_path: Path) -> None:
    recorded = _record_services(tmp_path / "s")
    configured = Settings(
        redis_url="redis://elsewhere:6380/2", database_url="postgresql://u:p@db/app?sslmode=require"
    )
    assert resolve_urls(configured, tmp_path / "s") == ServiceUrls(
        "redis://elsewhere:6380/2", "postgresql://u:p@db/app?sslmode=require"
    )
    assert resolve_urls(Settings(state_dir=tmp_path / "s")) == recorded
    assert resolve_urls(Settings(), tmp_path / "s") == recorded
    # Another host and no sslmode named: verified TLS (the chain from tls_ca, and the name).
    half = resolve_urls(
        Settings(database_url="postgresql://u:p@db/app", tls_ca=Path("/etc/pt/ca.pem")),
        tmp_path / "s",
    )
    assert half == ServiceUrls(
        recorded.redis_url,
        "postgresql://u:p@db/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fpt%2Fca.pem",
        master_redis_url=recorded.master_redis_url,
    )


def test_resolve_urls_without_anything_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ServicesError) as caught:
        resolve_urls(Settings(), tmp_path / "none")
    message = str(caught.value)
    assert f"pt services up --state-dir {tmp_path / 'none'}" in message
    assert "PT_REDIS_URL" in message and "PT_DATABASE_URL" in message


def test_cli_up_status_down(state_dir: Path) -> None:
    runner = CliRunner(env=CLEAN_ENV)
    where = ["--state-dir", str(state_dir)]

    up = runner.invoke(cli, ["services", "up", *where])
    assert up.exit_code == 0, up.output
    assert "PT_REDIS_URL=redis://" in up.output and "PT_DATABASE_URL=postgresql://" in up.output
    urls = read_service_urls(state_dir)
    assert urls is not None
    secrets = [urlsplit(urls.redis_url).password, urlsplit(urls.database_url).password]
    assert all(secret and secret not in up.output for secret in secrets)  # masked unless asked
    assert "****" in up.output and "--show-secrets" in up.output

    up_json = runner.invoke(cli, ["services", "up", *where, "--json", "--show-secrets"])
    assert up_json.exit_code == 0, up_json.output
    document = json.loads(up_json.output)
    assert (document["redis_url"], document["database_url"]) == (urls.redis_url, urls.database_url)
    shown = runner.invoke(cli, ["services", "status", *where, "--json", "--show-secrets"])
    assert json.loads(shown.output)["redis"]["url"] == urls.redis_url

    status = runner.invoke(cli, ["services", "status", *where])
    assert status.exit_code == 0, status.output
    assert status.output.count("running") == 2 and "****" in status.output
    status_json = json.loads(runner.invoke(cli, ["services", "status", *where, "--json"]).output)
    assert status_json["redis"]["running"] and status_json["postgres"]["running"]

    migrate = runner.invoke(cli, ["db", "migrate", *where])
    assert migrate.exit_code == 0, migrate.output
    assert "applied 0001_initial.sql" in migrate.output
    assert "master role papertrader_master: rows only, no schema changes" in migrate.output
    again = runner.invoke(cli, ["db", "migrate", *where])
    assert again.exit_code == 0 and "database is up to date" in again.output
    db_status = runner.invoke(cli, ["db", "status", *where, "--json"])
    assert db_status.exit_code == 0, db_status.output
    shown_status = json.loads(db_status.output)
    assert shown_status["pending"] == [] and shown_status["master_role_problems"] == []

    down = runner.invoke(cli, ["services", "down", *where])
    assert down.exit_code == 0, down.output
    assert down.output.count("stopped") == 2
    stopped = runner.invoke(cli, ["services", "status", *where])
    assert stopped.exit_code == 3 and stopped.output.count("stopped") == 2


def test_socket_dir_falls_back_to_tcp_only_for_long_paths() -> None:
    assert socket_dir_for(Path("/var/tmp/papertrader-pg-0123456789abcdef/data")) == (
        "/var/tmp/papertrader-pg-0123456789abcdef/data"
    )
    assert socket_dir_for(Path("/tmp/" + "x" * 100)) == ""


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("redis://default:s3cret@127.0.0.1:6390/0") == (
        "redis://default:****@127.0.0.1:6390/0"
    )
    assert mask_url("postgresql://pt:p%40ss@127.0.0.1:5433/pt") == (
        "postgresql://pt:****@127.0.0.1:5433/pt"
    )
    assert mask_url("redis://127.0.0.1:6390/0") == "redis://127.0.0.1:6390/0"
    # a primary and its replica in one URL (docs/OPERATIONS.md): the hosts stay
    both = "pg1:5432,pg2:5433/pt?target_session_attrs=read-write"
    assert mask_url(f"postgresql://pt:s3cret@{both}") == f"postgresql://pt:****@{both}"
