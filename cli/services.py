"""``pt services``: the private Redis and PostgreSQL for local use.

``up`` starts them (first time: creates them), ``status`` says whether they
run, ``down`` stops them keeping their data. Everything lives in the state
directory (``--state-dir`` / ``PT_STATE_DIR``), so several independent
installations can coexist on one machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import fail, json_option, print_json, state_dir_option


@click.group()
def services() -> None:
    """Private Redis and PostgreSQL on 127.0.0.1, for development and single-machine use.

    `pt services up` starts them with random passwords and records their URLs
    in the state directory, where `pt db migrate` and the servers find them.
    PostgreSQL has a superuser that only sets it up, an owner role for the
    schema (migrations) and the master's role (rows only). Set PT_REDIS_URL /
    PT_DATABASE_URL / PT_DATABASE_OWNER_URL instead to use servers of your own.
    """


show_secrets_option = click.option(
    "--show-secrets",
    is_flag=True,
    help="Print the URLs with their passwords (for PT_REDIS_URL / PT_DATABASE_URL "
    "elsewhere); masked otherwise.",
)


@services.command()
@state_dir_option
@json_option
@show_secrets_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for each server to answer.",
)
@click.option(
    "--redis-tls-cert",
    type=click.Path(exists=True, dir_okay=False, resolve_path=True),
    help="Redis serves TLS only (plaintext port off) with this PEM certificate; "
    "give --redis-tls-key and --redis-tls-ca too.",
)
@click.option(
    "--redis-tls-key",
    type=click.Path(exists=True, dir_okay=False, resolve_path=True),
    help="The private key of --redis-tls-cert.",
)
@click.option(
    "--redis-tls-ca",
    type=click.Path(exists=True, dir_okay=False, resolve_path=True),
    help="The CA that issued --redis-tls-cert; the rediss:// URL names it for clients.",
)
def up(
    state_dir: Path | None,
    as_json: bool,
    show_secrets: bool,
    timeout: float,
    redis_tls_cert: str | None,
    redis_tls_key: str | None,
    redis_tls_ca: str | None,
) -> None:
    """Start Redis and PostgreSQL (creating them the first time) and print their URLs.

    Safe to run again: running servers are left alone. The URLs contain the
    generated passwords, shown masked unless --show-secrets; they are stored
    in services.json (mode 0600) in the state directory. With the --redis-tls-*
    files Redis speaks TLS only (its URL is rediss://); a running plaintext
    Redis is restarted with them, and later runs without them keep TLS.
    """
    from papertrader.services import ServicesError, mask_url, resolve_state_dir, start_services
    from papertrader.services.redis_server import RedisTls

    files = (redis_tls_cert, redis_tls_key, redis_tls_ca)
    if any(files) and not all(files):
        fail("give --redis-tls-cert, --redis-tls-key and --redis-tls-ca together")
    redis_tls = (
        RedisTls(redis_tls_cert, redis_tls_key, redis_tls_ca)
        if redis_tls_cert and redis_tls_key and redis_tls_ca
        else None
    )
    try:
        urls = start_services(state_dir, timeout=timeout, redis_tls=redis_tls)
    except ServicesError as exc:
        fail(str(exc))
        return
    directory = resolve_state_dir(state_dir)
    shown = (lambda url: url) if show_secrets else mask_url
    if as_json:
        print_json(
            {
                "state_dir": str(directory),
                "redis_url": shown(urls.redis_url),
                "database_url": shown(urls.database_url),
                "database_owner_url": shown(urls.owner_url),
            }
        )
        return
    click.echo(f"Services running (state in {directory}).")
    click.echo(f"  PT_REDIS_URL={shown(urls.redis_url)}")
    click.echo(f"  PT_DATABASE_URL={shown(urls.database_url)}")
    click.echo(f"  PT_DATABASE_OWNER_URL={shown(urls.owner_url)}  (migrations only, no server)")
    if not show_secrets:
        click.echo("  (passwords masked: --show-secrets prints them)")
    click.echo(f"Next: pt db migrate --state-dir {directory}")


def _describe(name: str, info: dict[str, Any]) -> str:
    """One human line per server."""
    if not info.get("initialized"):
        return f"{name:<10} not set up (run `pt services up`)"
    state = "running" if info["running"] else "stopped"
    pid = f" pid {info['pid']}" if info.get("pid") else ""
    return (
        f"{name:<10} {state:<8} port {info['port']}{pid}\n"
        f"{'':<10} url  {info['url']}\n"
        f"{'':<10} data {info['data_dir']}\n"
        f"{'':<10} log  {info['log_file']}"
    )


@services.command()
@state_dir_option
@json_option
@show_secrets_option
def status(state_dir: Path | None, as_json: bool, show_secrets: bool) -> None:
    """Show whether Redis and PostgreSQL run, their ports, data and (masked) URLs.

    Exits with status 3 when either is not running, so scripts can test it.
    """
    from papertrader.services import ServicesError, read_service_urls, services_status

    try:
        report = services_status(state_dir)
        urls = read_service_urls(state_dir) if show_secrets else None
    except ServicesError as exc:
        fail(str(exc))
        return
    if urls is not None:
        report["redis"]["url"], report["postgres"]["url"] = urls.redis_url, urls.database_url
        report["postgres"]["owner_url"] = urls.owner_url
    if as_json:
        print_json(report)
    else:
        click.echo(f"state dir  {report['state_dir']}")
        click.echo(_describe("redis", report["redis"]))
        click.echo(_describe("postgres", report["postgres"]))
    if not (report["redis"]["running"] and report["postgres"]["running"]):
        raise SystemExit(3)


@services.command()
@state_dir_option
@json_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for each server to stop.",
)
def down(state_dir: Path | None, as_json: bool, timeout: float) -> None:
    """Stop Redis and PostgreSQL. Their data is kept; `pt services up` brings them back."""
    from papertrader.services import ServicesError, stop_services

    try:
        stopped = stop_services(state_dir, timeout=timeout)
    except ServicesError as exc:
        fail(str(exc))
        return
    if as_json:
        print_json({"stopped": stopped})
        return
    for name, was_running in stopped.items():
        click.echo(f"{name:<10} {'stopped' if was_running else 'was not running'}")


@services.command()
@state_dir_option
@click.option(
    "--stop-primary",
    is_flag=True,
    help="Stop the primary first (fast shutdown), to try a failover; without it the "
    "primary must already be down.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the primary to stop and the replica to accept writes.",
)
def promote(state_dir: Path | None, stop_primary: bool, timeout: float) -> None:
    """Promote the PostgreSQL replica of `pt up --ha` to primary.

    The promotion path of docs/OPERATIONS.md on this machine's trial stack:
    refused while the old primary runs (two primaries would take writes), the
    replica promoted, and its commits no longer waiting for a replica. The
    masters reconnect by themselves (their URL names both servers); `pt status`
    shows the active master. The old primary is not started again: for a new
    replica, `pt down` and start afresh with another state directory.
    """
    from papertrader.services import resolve_state_dir
    from papertrader.stack import StackError
    from papertrader.stack.ha import promote_replica

    directory = resolve_state_dir(state_dir)
    try:
        replica = promote_replica(directory, stop_primary, timeout)
    except StackError as exc:
        fail(str(exc))
        return
    click.echo(f"postgres replica on 127.0.0.1:{replica.port} is the primary now")
