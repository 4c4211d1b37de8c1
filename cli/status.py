"""``pt status``: every process, service and figure of the stack at a glance.

A thin layer over ``papertrader.stack.status``; exit status 3 when anything
is down, unhealthy or stale (the problems are listed), so scripts and
monitors can test it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from .common import (
    config_option,
    json_option,
    print_json,
    print_table,
    settings_or_fail,
    state_dir_option,
)


def duration(seconds: float | None) -> str:
    """``45s``, ``12m03s``, ``5h02m``, ``3d04h``."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _sources(config_path: Path | None, state_dir: Path | None) -> tuple[Path, Any]:
    from papertrader.services import ServicesError, resolve_state_dir, resolve_urls
    from papertrader.stack import StackError, load_record
    from papertrader.stack.status import StatusSources

    settings = settings_or_fail(config_path)
    directory = resolve_state_dir(state_dir if state_dir is not None else settings.state_dir)
    redis_url, database_url = settings.redis_url, settings.database_url
    try:
        record = load_record(directory)
    except StackError:
        record = None
    masters = [] if record is None else [c for c in record.children if c.role == "master"]
    if masters:  # what the stack's own master uses wins over this shell's settings
        redis_url = masters[0].env.get("PT_REDIS_URL", redis_url)
        database_url = masters[0].env.get("PT_DATABASE_URL", database_url)
        settings = _with_sentinels(settings, masters[0].env)
    private = not (settings.redis_url and settings.database_url) or bool(
        record and record.services_started
    )
    if not (redis_url and database_url):
        try:
            urls = resolve_urls(settings, directory)
            redis_url, database_url = redis_url or urls.redis_url, database_url or urls.database_url
        except ServicesError:
            pass
    return directory, StatusSources(
        redis_url=redis_url,
        database_url=database_url,
        private_services=private,
        provider=settings.market_provider,
        update_interval=settings.update_interval,
        settings=settings,
    )


def _with_sentinels(settings: Any, env: dict[str, str]) -> Any:
    """``settings`` with the stack master's Redis Sentinel settings, if it has any."""
    from papertrader.config import ConfigError

    names = (
        "redis_sentinels",
        "redis_sentinel_service",
        "redis_sentinel_username",
        "redis_sentinel_password_file",
    )
    given: dict[str, Any] = {
        name: env[f"PT_{name.upper()}"] for name in names if f"PT_{name.upper()}" in env
    }
    if "redis_sentinel_password_file" in given:
        given["redis_sentinel_password_file"] = Path(given["redis_sentinel_password_file"])
    try:
        return settings.with_overrides(**given) if given else settings
    except ConfigError:
        return settings


def _health(proc: dict[str, Any]) -> str:
    if proc["healthz"] is True:
        return "ok (/healthz)"
    if proc["healthz"] is False:
        return "FAILING (/healthz)"
    if proc["state"] == "running":
        return "ok (port answers)"
    return "-"


def _print(document: dict[str, Any]) -> None:
    supervisor = document["supervisor"]
    where = f"state dir  {document['state_dir']}"
    if supervisor is not None:
        mode = "detached" if supervisor["detached"] else "foreground `pt up`"
        alive = "running" if supervisor["running"] else "GONE"
        where += f"   (supervisor pid {supervisor['pid']}, {mode}, {alive})"
    click.echo(where)
    procs = document["processes"]
    if procs:
        click.echo("")
        rows = []
        for p in procs:
            restarts = str(p["restarts"])
            if p["last_exit"]:
                restarts += f" (last: {p['last_exit']})"
            name = p["name"] + (f" ({p['master_role']})" if p.get("master_role") else "")
            rows.append(
                [name, p["state"], str(p["pid"] or "-"), duration(p["uptime_seconds"]),
                 p["address"], _health(p), restarts]
            )  # fmt: skip
        print_table(["PROCESS", "STATE", "PID", "UPTIME", "ADDRESS", "HEALTH", "RESTARTS"], rows)
    click.echo("")
    service_rows = []
    for name in document["services"]:
        s = document["services"][name]
        where = s.get("url") if s.get("external") else f"127.0.0.1:{s.get('port', '-')}"
        state = "running" if s.get("running") else "DOWN"
        if not s.get("external") and not s.get("initialized", True):
            state = "not set up"
        service_rows.append([name, state, str(s.get("pid") or "-"), str(where)])
    print_table(["SERVICE", "STATE", "PID", "ADDRESS"], service_rows)
    active = document.get("active_master")
    if active is not None:
        click.echo("")
        if active["lock_held"] and active["address"]:
            click.echo(
                f"master     active: {active['address']} (epoch {active['epoch']}, "
                f"{active['holder']}, since {active['since']})"
            )
        else:
            click.echo("master     NO ACTIVE MASTER (none holds the leader lock)")
    workers = document["workers"]
    if workers:
        click.echo("")
        print_table(
            ["LINKED WORKER", "REGION", "CLIENTS", "LOGGED IN", "UPTIME"],
            [[w["name"], w["region"] or "-", _count(w["clients"]), _count(w["logged_in"]),
              duration(w["uptime_seconds"])] for w in workers],
        )  # fmt: skip
    orders = document["orders"]
    if orders is not None:
        click.echo("")
        line = f"orders     {orders['queue_depth']} queued"
        drain = orders["last_drain"]
        if drain is None:
            line += "; no drain yet"
        elif drain["ok"]:
            line += (
                f"; last drain {duration(drain['age_seconds'])} ago: {drain['applied']} "
                f"decided in {drain['duration_ms']:.0f} ms"
            )
        else:
            line += f"; last drain {duration(drain['age_seconds'])} ago POSTPONED: {drain['error']}"
        click.echo(line)
    market = document["market"]
    if market is not None:
        if not market["running"]:
            click.echo(f"market     {market['provider']}: no update yet")
        else:
            state = "STALE" if market["stale"] else "fresh"
            click.echo(
                f"market     {market['provider']}: last update "
                f"{duration(market['age_seconds'])} ago ({state}), every "
                f"{market['update_interval']:g} s"
            )
    click.echo("")
    if document["problems"]:
        click.echo("problems:")
        for problem in document["problems"]:
            click.echo(f"  - {problem}")
    else:
        click.echo("all good")


def _count(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


@click.command()
@config_option
@state_dir_option
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="Look again every second until all is well, for at most SECONDS (scripts: "
    "start servers, then `pt status --wait 60`).",
)
@json_option
def status(config_path: Path | None, state_dir: Path | None, wait: float, as_json: bool) -> None:
    """Every process of the stack (pid, uptime, address, health, restarts), the
    services, the workers linked with their clients, the order queue and the
    last drain, the market feed's freshness.

    Exits with status 3, listing the problems, when something is down,
    unhealthy or stale (after --wait, if given); 0 when all is well.
    """
    from papertrader.stack.status import gather

    directory, sources = _sources(config_path, state_dir)
    deadline = time.monotonic() + wait
    document = gather(directory, sources)
    while not document["ok"] and time.monotonic() < deadline:
        time.sleep(1.0)
        document = gather(directory, sources)
    if as_json:
        print_json(document)
    else:
        _print(document)
    if not document["ok"]:
        raise SystemExit(3)
