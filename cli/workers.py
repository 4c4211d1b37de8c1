"""``pt workers``: which workers may link to the master, and the ones linked now (spec 3.1.5).

The registry lives in PostgreSQL (``workers`` table): name, UUID, GPG public
key and fingerprint, allowed IPs (CIDRs), region, enabled. Live figures and
booting a worker off go through the running master, asked over Redis
(``papertrader/store/worker_control.py``).

Adding a worker by hand (README, "Adding a worker in another region"):

    worker host:  pt workers keygen --home ~/.pt-gnupg --name eu-1 --out eu-1.asc
    master host:  pt workers register eu-1 --key eu-1.asc --ip 203.0.113.7/32 --region eu \
                      --address eu-1.example.com:2049
    worker host:  PT_WORKER_UUID=... PT_MASTER_FINGERPRINT=... pt worker run --name eu-1 ...
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .common import (
    config_option,
    database_pool,
    fail,
    json_option,
    print_json,
    print_table,
    state_dir_option,
    store_redis,
)

#: Seconds `pt workers` waits for the master's answer.
MASTER_TIMEOUT = 8.0


@click.group()
def workers() -> None:
    """Register worker servers, see them, boot them off.

    Only registered workers may link to the master: each proves itself with
    its GPG key, from an allowed IP, under its UUID. `pt up` registers its
    local workers itself; use these commands for workers on other machines.

    \b
    On the worker host:  pt workers keygen --home DIR --name NAME --out NAME.asc
    On the master host:  pt workers register NAME --key NAME.asc --ip CIDR --region R
                         --address HOST:PORT
    Then:                pt workers list | info NAME | boot NAME | disable NAME
    """


# -- plumbing -------------------------------------------------------------------
def _ask(
    config_path: Path | None, state_dir: Path | None, action: str, worker: uuid.UUID | None
) -> dict[str, Any]:
    """The master's answer; ControlError when it cannot be asked."""
    import redis

    from papertrader.store.worker_control import ControlError, ask_master

    client = store_redis(config_path, state_dir)
    try:
        return ask_master(client, action, worker, MASTER_TIMEOUT)
    except redis.RedisError as exc:
        raise ControlError(f"cannot reach Redis to ask the master ({exc})") from None
    finally:
        client.close()


def _redis_users(config_path: Path | None, state_dir: Path | None, action: str, name: str) -> str:
    """Switch the worker's Redis user off/on or delete it; a sentence saying what happened."""
    import redis

    from papertrader.store import redis_users

    user = redis_users.worker_user(name)
    do = {
        "disable": redis_users.disable_user,
        "enable": redis_users.enable_user,
        "remove": redis_users.delete_user,
    }[action]
    nodes = store_redis(config_path, state_dir, every_node=True)
    try:
        found = do(nodes, user)
    except (redis.RedisError, redis_users.UsersUnavailable) as exc:
        fail(f"its Redis user {user} is unchanged: {exc} (use the Redis admin user's URL)")
    finally:
        for node in nodes:
            node.close()
    if not found:
        return f"it had no Redis user {user}"
    done = {"disable": "switched off", "enable": "switched on", "remove": "deleted"}[action]
    return f"its Redis user {user} {done}"


def _record(pool: Any, name: str) -> Any:
    from papertrader.store.workers import get_worker_by_name

    record = get_worker_by_name(pool, name)
    if record is None:
        fail(f"no worker named {name!r} is registered (see `pt workers list`)")
    return record


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


# -- looking -------------------------------------------------------------------------
@workers.command(name="list")
@config_option
@state_dir_option
@json_option
def list_workers(config_path: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Every registered worker, and whether it is linked to the master now."""
    from papertrader.store.worker_control import ControlError
    from papertrader.store.workers import list_workers as registered

    with database_pool(config_path, state_dir) as pool:
        records = registered(pool)
    live: dict[str, Any] = {}
    master_note = ""
    try:
        live = _ask(config_path, state_dir, "list", None).get("workers", {})
    except ControlError as exc:
        master_note = str(exc)
    rows: list[dict[str, Any]] = []
    for record in records:
        figures = live.get(str(record.uuid))
        rows.append(
            {
                "name": record.name,
                "uuid": str(record.uuid),
                "region": record.region,
                "address": record.address,
                "allowed_ips": list(record.allowed_ips),
                "enabled": record.enabled,
                "fingerprint": record.gpg_fingerprint,
                "connected": figures is not None,
                "clients": None if figures is None else figures.get("clients"),
                "last_seen": None
                if record.last_seen_at is None
                else record.last_seen_at.isoformat(),
            }
        )
    if as_json:
        print_json({"workers": rows, "master": master_note or "running"})
        return
    if not rows:
        click.echo("No workers registered (`pt workers register NAME --key K --ip CIDR`).")
    else:
        headers = ["NAME", "UUID", "REGION", "ALLOWED IPS", "ENABLED", "CONNECTED", "CLIENTS",
                   "LAST SEEN"]  # fmt: skip
        table = [
            [
                r["name"],
                r["uuid"],
                r["region"] or "-",
                ",".join(r["allowed_ips"]) or "(none: refused)",
                "yes" if r["enabled"] else "no",
                "yes" if r["connected"] else "no",
                "-" if r["clients"] is None else str(r["clients"]),
                _when(rec.last_seen_at),
            ]
            for r, rec in zip(rows, records, strict=True)
        ]
        print_table(headers, table)
    if master_note:
        click.echo(f"note: connection state unknown: {master_note}", err=True)


@workers.command()
@config_option
@state_dir_option
@click.argument("name")
@json_option
def info(config_path: Path | None, state_dir: Path | None, name: str, as_json: bool) -> None:
    """What is registered for NAME, and its live figures asked through the master
    (uptime, clients, quote cache age, link latency)."""
    from papertrader.store.worker_control import ControlError

    with database_pool(config_path, state_dir) as pool:
        record = _record(pool, name)
    stored = {
        "name": record.name,
        "uuid": str(record.uuid),
        "region": record.region,
        "address": record.address,
        "enabled": record.enabled,
        "allowed_ips": list(record.allowed_ips),
        "fingerprint": record.gpg_fingerprint,
        "registered_at": record.registered_at.isoformat(),
        "last_seen": None if record.last_seen_at is None else record.last_seen_at.isoformat(),
    }
    live: dict[str, Any] | None = None
    problem = ""
    try:
        answer = _ask(config_path, state_dir, "status", record.uuid)
        if answer.get("error"):
            problem = str(answer["error"])
        elif answer.get("connected"):
            live = answer
        else:
            problem = f"worker {name} is not connected to the master"
    except ControlError as exc:
        problem = str(exc)
    if as_json:
        print_json({**stored, "live": live, "live_problem": problem or None})
        return
    for key, value in stored.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{key:<18}{'-' if shown in (None, '') else shown}")
    if live is None:
        click.echo(f"live figures unavailable: {problem}")
        return
    for key in ("uptime_seconds", "clients", "logged_in", "cache_age_seconds",
                "cache_updated_at", "link_latency_ms", "link_connections", "peer", "address",
                "connected_at", "tls", "tls_names", "tls_expires"):  # fmt: skip
        if key in live:
            click.echo(f"{key:<18}{'-' if live[key] is None else live[key]}")
    if live.get("tls_warning"):
        click.echo(f"warning: {live['tls_warning']}")
    if live.get("error"):
        click.echo(f"live figures incomplete: {live['error']}")


# -- acting ---------------------------------------------------------------------------------
def _boot(config_path: Path | None, state_dir: Path | None, record: Any) -> str:
    """Ask the master to drop the worker's link; a sentence saying what happened."""
    from papertrader.store.worker_control import ControlError

    try:
        answer = _ask(config_path, state_dir, "boot", record.uuid)
    except ControlError as exc:
        return f"not booted: {exc}"
    if answer.get("error"):
        return f"not booted: {answer['error']}"
    if answer.get("booted"):
        return f"worker {record.name} booted off (its link is closed)"
    return f"worker {record.name} was not connected"


@workers.command()
@config_option
@state_dir_option
@click.argument("name")
def boot(config_path: Path | None, state_dir: Path | None, name: str) -> None:
    """Disconnect the worker NAME from the master now.

    Its clients are sent to other workers. An enabled worker reconnects after
    a short backoff; to keep it off, `pt workers disable NAME`.
    """
    with database_pool(config_path, state_dir) as pool:
        record = _record(pool, name)
    outcome = _boot(config_path, state_dir, record)
    if outcome.startswith("not booted"):
        fail(outcome)
    click.echo(outcome)


@workers.command()
@config_option
@state_dir_option
@click.argument("name")
def disable(config_path: Path | None, state_dir: Path | None, name: str) -> None:
    """Refuse the worker NAME from now on, and boot it off if it is connected."""
    from papertrader.store.workers import set_worker_enabled

    with database_pool(config_path, state_dir) as pool:
        record = _record(pool, name)
        set_worker_enabled(pool, name, False)
    users = _redis_users(config_path, state_dir, "disable", name)
    click.echo(f"worker {name} disabled; {users}; {_boot(config_path, state_dir, record)}")


@workers.command()
@config_option
@state_dir_option
@click.argument("name")
def enable(config_path: Path | None, state_dir: Path | None, name: str) -> None:
    """Allow the worker NAME again (it links at its next retry)."""
    from papertrader.store.workers import set_worker_enabled

    with database_pool(config_path, state_dir) as pool:
        _record(pool, name)
        set_worker_enabled(pool, name, True)
    click.echo(f"worker {name} enabled; {_redis_users(config_path, state_dir, 'enable', name)}")


@workers.command()
@config_option
@state_dir_option
@click.argument("name")
def remove(config_path: Path | None, state_dir: Path | None, name: str) -> None:
    """Forget the worker NAME (and boot it off if it is connected)."""
    from papertrader.store.workers import remove_worker

    with database_pool(config_path, state_dir) as pool:
        record = _record(pool, name)
        remove_worker(pool, name)
    users = _redis_users(config_path, state_dir, "remove", name)
    click.echo(f"worker {name} removed; {users}; {_boot(config_path, state_dir, record)}")


# The key and registration commands join the group (they import this module's plumbing).
from . import workers_register  # noqa: E402, F401
