"""``pt services`` for a deployment whose replicas and Sentinels have hosts of their own.

What Ansible's process mode runs on each host (ansible/roles/redis_replica,
redis_sentinel, postgresql_replica), with the launchers ``pt up --ha`` uses
(papertrader/services/host_replicas.py). A primary's record, passwords
included, comes on standard input as JSON, never on the command line (other
users could read it in the process list): ``{"primary": {...}}`` as the
primary's ``services.json`` holds it, plus ``"acl"`` (its users file) for a
Redis replica.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .common import fail, json_option, print_json, state_dir_option
from .services import services

timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the server to answer (and, for a replica, to sync).",
)


def _input() -> dict[str, Any]:
    """The JSON document on standard input, with its ``primary``."""
    try:
        document = json.loads(sys.stdin.read())
    except ValueError as exc:
        fail(f"standard input is not JSON: {exc}")
    if not isinstance(document, dict) or not isinstance(document.get("primary"), dict):
        fail('standard input must be a JSON object with "primary" (the primary\'s record)')
    return document


def _directory(state_dir: Path | None) -> Path:
    from papertrader.services import resolve_state_dir

    return resolve_state_dir(state_dir)


def _show(as_json: bool, document: dict[str, Any], line: str) -> None:
    if as_json:
        print_json(document)
    else:
        click.echo(line)


@services.command("redis-replication-users")
@state_dir_option
@json_option
def redis_replication_users(state_dir: Path | None, as_json: bool) -> None:
    """Give the private Redis its replication and Sentinel users (pt-replication may only
    sync, pt-sentinel only what Sentinel sends), before its replicas and Sentinels start.

    Run on the primary's host. Passwords are made once and kept in services.json."""
    from papertrader.services import ServicesError, redis_replica
    from papertrader.services.state import load_state, locked, save_state

    directory = _directory(state_dir)
    try:
        with locked(directory):
            state = load_state(directory)
            if state.redis is None:
                fail(f"no private Redis in {directory}: run `pt services up` first")
            changed = redis_replica.ensure_replication_users(state.redis)
            if changed:
                save_state(directory, state)
    except ServicesError as exc:
        fail(str(exc))
    _show(as_json, {"changed": changed}, "made" if changed else "already there")


@services.command("redis-follow")
@state_dir_option
@json_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the Sentinels to name a primary that answers (a failover "
    "under way); then the node keeps its recorded role.",
)
def redis_follow(state_dir: Path | None, as_json: bool, timeout: float) -> None:
    """Before a stopped private Redis is started again (`pt services up`): record the role
    the Sentinels give it, so it comes back as a replica of the node they promoted
    meanwhile, not as a second primary with older data. A running node is left alone.

    The Sentinels are the settings' (redis_sentinels, redis_sentinel_username,
    redis_sentinel_password_file; PT_REDIS_SENTINELS...)."""
    from papertrader.config import ConfigError, load_settings
    from papertrader.services import ServicesError
    from papertrader.services.host_replicas import follow_sentinels

    try:
        settings = load_settings()
        if not settings.sentinel_addresses:
            fail("no Sentinels are configured (redis_sentinels / PT_REDIS_SENTINELS)")
        primary, changed = follow_sentinels(_directory(state_dir), settings, timeout)
    except (ConfigError, ServicesError) as exc:
        fail(str(exc))
    _show(
        as_json,
        {"primary": primary, "changed": changed},
        f"the Sentinels name {primary or 'no primary'}"
        + ("; recorded" if changed else "; as recorded"),
    )


@services.command("redis-replica")
@state_dir_option
@json_option
@timeout_option
def redis_replica_command(state_dir: Path | None, as_json: bool, timeout: float) -> None:
    """Run this host's replica of a private Redis (made the first time, started again when
    stopped, left alone when running).

    Standard input: {"primary": its record, "acl": its users file}. The replica gets the
    same users file (ACLs do not replicate) and logs in to the primary as pt-replication.
    """
    from papertrader.services import ServicesError
    from papertrader.services.host_replicas import record_from, redis_replica_up
    from papertrader.services.state import RedisRecord

    document = _input()
    acl = document.get("acl")
    if not isinstance(acl, str) or not acl.strip():
        fail('standard input needs "acl": the primary\'s users file')
    try:
        primary = record_from(RedisRecord, document["primary"])
        record, started = redis_replica_up(_directory(state_dir), primary, acl, timeout)
    except ServicesError as exc:
        fail(f"the Redis replica: {exc}")
    _show(
        as_json,
        {"started": started, "port": record.port, "replicaof": record.replicaof},
        f"redis replica on 127.0.0.1:{record.port} of {record.replicaof}: "
        + ("started" if started else "running"),
    )


@services.command("sentinel")
@state_dir_option
@json_option
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="Its port.")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The Sentinels' password (0600; the processes' redis_sentinel_password_file).",
)
@click.option("--service", default="papertrader", show_default=True, help="Service name.")
@click.option("--quorum", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--down-after-ms",
    type=click.IntRange(min=100),
    default=5000,
    show_default=True,
    help="A primary silent this long is down.",
)
@click.option(
    "--failover-timeout-ms",
    type=click.IntRange(min=1000),
    default=60000,
    show_default=True,
    help="Bound of one failover attempt.",
)
@timeout_option
def sentinel_command(
    state_dir: Path | None,
    as_json: bool,
    port: int,
    password_file: Path,
    service: str,
    quorum: int,
    down_after_ms: int,
    failover_timeout_ms: int,
    timeout: float,
) -> None:
    """Run this host's Sentinel watching a private Redis (its first config written once:
    Sentinel rewrites it as it learns; a running one is left alone).

    Standard input: {"primary": {"port", "sentinel_password", "tls_cert", "tls_key",
    "tls_ca"}}: what the Sentinel needs of the primary's record, nothing more."""
    from papertrader.services import ServicesError
    from papertrader.services.host_replicas import record_from, sentinel_up
    from papertrader.services.redis_sentinel import Timing
    from papertrader.services.state import RedisRecord
    from papertrader.store.redis_connect import RedisConfigError, read_secret_file

    given = _input()["primary"]
    try:
        password = read_secret_file(password_file, "the Sentinels' password file")
        # Only what render_config reads of the primary; the rest stays empty.
        blank = dict.fromkeys(("password", "data_dir", "config_file", "pid_file", "log_file"), "")
        primary = record_from(RedisRecord, {**blank, **given})
        record, started = sentinel_up(
            _directory(state_dir),
            primary,
            port,
            password,
            Timing(down_after_ms, failover_timeout_ms, quorum),
            service,
            timeout,
        )
    except (ServicesError, RedisConfigError) as exc:
        fail(f"the Sentinel: {exc}")
    _show(
        as_json,
        {"started": started, "address": record.address},
        f"sentinel on {record.address}: {'started' if started else 'running'}",
    )


@services.command("pg-replica")
@state_dir_option
@json_option
@click.option(
    "--name",
    default="replica1",
    show_default=True,
    help="Its application_name on the primary (what synchronous_standby_names names).",
)
@click.option("--show-secrets", is_flag=True, help="Print the masters' URLs with their passwords.")
@timeout_option
def pg_replica_command(
    state_dir: Path | None, as_json: bool, name: str, show_secrets: bool, timeout: float
) -> None:
    """Run this host's streaming replica of a private PostgreSQL (copied with pg_basebackup
    the first time, started again when stopped, left alone when running), and print the
    masters' database_url (both servers, target_session_attrs=read-write) and
    database_read_url (the replica first).

    Standard input: {"primary": its record}."""
    from papertrader.services import ServicesError
    from papertrader.services.host_replicas import database_urls, pg_replica_up, record_from
    from papertrader.services.state import PostgresRecord, mask_url

    try:
        primary = record_from(PostgresRecord, _input()["primary"])
        record, started = pg_replica_up(_directory(state_dir), primary, name, timeout)
    except ServicesError as exc:
        fail(f"the PostgreSQL replica: {exc}")
    urls = database_urls(primary, record)
    if not show_secrets:
        urls = {key: mask_url(url) for key, url in urls.items()}
    _show(
        as_json,
        {"started": started, "port": record.port, **urls},
        f"postgres replica on 127.0.0.1:{record.port}: {'started' if started else 'running'}",
    )


@services.command("pg-synchronous")
@state_dir_option
@json_option
@click.argument("standbys")
def pg_synchronous(state_dir: Path | None, as_json: bool, standbys: str) -> None:
    """Make the private PostgreSQL wait at every commit until STANDBYS (a replica's
    --name, or e.g. "ANY 1 (a, b)") has it on disk: an order reported filled survives the
    primary's loss. Run on the primary's host once its replica streams (commits block
    while no such replica is connected)."""
    import psycopg2

    from papertrader.services import ServicesError, postgres_replica
    from papertrader.services.state import load_state

    state = load_state(_directory(state_dir))
    if state.postgres is None:
        fail("no private PostgreSQL here: run `pt services up` first")
    try:
        changed = postgres_replica.ensure_synchronous(state.postgres, standbys)
    except (ServicesError, OSError, psycopg2.Error) as exc:
        fail(f"cannot make PostgreSQL synchronous: {exc}")
    _show(as_json, {"changed": changed}, "set" if changed else "already so")
