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

import ipaddress
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .common import (
    config_option,
    fail,
    json_option,
    print_json,
    print_table,
    provision_redis_user,
    state_dir_option,
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
@contextmanager
def _registry(config_path: Path | None, state_dir: Path | None) -> Iterator[Any]:
    """A one-connection pool on the configured database; errors become one line."""
    import psycopg2

    from papertrader.config import ConfigError, load_settings
    from papertrader.services import ServicesError, resolve_urls
    from papertrader.store.pool import ConnectionPool

    try:
        urls = resolve_urls(load_settings(config_path), state_dir)
    except (ConfigError, ServicesError) as exc:
        fail(str(exc))
    try:
        pool = ConnectionPool(urls.database_url, size=1)
    except psycopg2.Error as exc:
        fail(f"cannot reach the database: {' '.join(str(exc).split())}")
    try:
        yield pool
    except psycopg2.Error as exc:
        fail(f"database error: {' '.join(str(exc).split())}")
    finally:
        pool.close()


def _redis(config_path: Path | None, state_dir: Path | None, every_node: bool = False) -> Any:
    """A client of the Redis primary; ``every_node``: a list, the primary and each replica."""
    import redis

    from papertrader.config import ConfigError, load_settings
    from papertrader.services import ServicesError, resolve_urls
    from papertrader.store.redis_connect import RedisConfigError, admin_nodes, connect

    try:
        settings = load_settings(config_path)
        urls = resolve_urls(settings, state_dir)
    except (ConfigError, ServicesError) as exc:
        fail(str(exc))
    try:
        if every_node:
            return admin_nodes(urls.redis_url, settings, socket_connect_timeout=5)
        return connect(urls.redis_url, settings, socket_connect_timeout=5)
    except (RedisConfigError, redis.RedisError) as exc:
        fail(str(exc))


def _ask(
    config_path: Path | None, state_dir: Path | None, action: str, worker: uuid.UUID | None
) -> dict[str, Any]:
    """The master's answer; ControlError when it cannot be asked."""
    import redis

    from papertrader.store.worker_control import ControlError, ask_master

    client = _redis(config_path, state_dir)
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
    nodes = _redis(config_path, state_dir, every_node=True)
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


def _provision_redis_user(
    config_path: Path | None, state_dir: Path | None, name: str, url_path: Path | None
) -> Path:
    from papertrader.store import redis_users

    user, rules = redis_users.worker_user(name), redis_users.WORKER_RULES
    return provision_redis_user(config_path, state_dir, user, rules, url_path)[0]


def _record(pool: Any, name: str) -> Any:
    from papertrader.store.workers import get_worker_by_name

    record = get_worker_by_name(pool, name)
    if record is None:
        fail(f"no worker named {name!r} is registered (see `pt workers list`)")
    return record


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _cidrs(values: tuple[str, ...]) -> list[str]:
    cidrs = []
    for value in values:
        try:
            cidrs.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not an IP address or CIDR (e.g. 203.0.113.7/32)",
                param_hint="--ip",
            ) from None
    return cidrs


# -- keys --------------------------------------------------------------------------
@workers.command()
@click.option(
    "--home",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="GnuPG home for the worker's key pair (created with mode 0700). Give the same "
    "directory to the worker as worker_gnupg_home.",
)
@click.option("--name", required=True, help="The worker's name (the key's user id).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the public key here instead of to standard output.",
)
@json_option
def keygen(home: Path, name: str, out: Path | None, as_json: bool) -> None:
    """Make a worker's key pair (Ed25519) and export its public key.

    Run it on the worker host; copy the public key (.asc) to the master host
    and register it with `pt workers register`. The secret key never leaves
    HOME. If HOME already holds a key pair, that one is exported again.
    """
    from papertrader.keyring import Keyring, KeyringError

    try:
        keyring = Keyring(home, create=True)
        try:
            existing = keyring.secret_fingerprints()
            if len(existing) > 1:
                fail(f"{home} holds {len(existing)} key pairs; use an empty --home")
            fingerprint = existing[0] if existing else keyring.generate(name)
            public = keyring.export_public(fingerprint).decode("ascii")
        finally:
            keyring.stop_agent()
    except KeyringError as exc:
        fail(str(exc))
    if out is not None:
        try:
            out.write_text(public, encoding="ascii")
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror or exc}")
    if as_json:
        print_json(
            {
                "fingerprint": fingerprint,
                "home": str(keyring.home),
                "public_key_file": None if out is None else str(out),
                "public_key": public if out is None else None,
                "created": not existing,
            }
        )
        return
    if out is None:
        click.echo(public, nl=False)
    note = "made" if not existing else "already there, exported again"
    click.echo(f"key {fingerprint} ({note}) in {keyring.home}", err=out is None)
    if keyring.gpg_home != keyring.home:
        click.echo(
            f"note: gpg reaches it through the short path {keyring.gpg_home} "
            "(agent sockets need short paths)",
            err=True,
        )
    if out is not None:
        click.echo(
            f"Copy {out} to the master host and run: pt workers register {name} --key {out.name}"
            " --ip <worker IP>/32 --region <region> --address <host:port for clients>"
        )


@workers.command()
@config_option
@state_dir_option
@click.argument("name")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The worker's public key (ASCII-armored .asc from `pt workers keygen` or "
    "`gpg --export --armor`).",
)
@click.option(
    "--ip",
    "ips",
    required=True,
    multiple=True,
    metavar="CIDR",
    help="Address or CIDR the worker may connect from; repeat for several. "
    "A worker without any is refused.",
)
@click.option(
    "--region",
    default=None,
    help="Region shown to clients (e.g. eu, us-east); the worker must announce exactly this. "
    "Needed the first time; an update without it keeps the registered one.",
)
@click.option(
    "--address",
    default=None,
    metavar="HOST:PORT",
    help="Where clients reach the worker (its worker_advertise, or worker_host:worker_port): "
    "the master refuses the worker if it announces anything else, and lists only this "
    "address. Needed the first time; an update without it keeps the registered one.",
)
@click.option(
    "--uuid",
    "worker_uuid",
    default=None,
    help="Use this UUID instead of a new random one (e.g. a worker's existing PT_WORKER_UUID).",
)
@click.option(
    "--redis-url-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the worker's own Redis URL (0600; give it to the worker as "
    "redis_url_file / PT_REDIS_URL_FILE). Default: <state dir>/redis-users/pt-worker-NAME.url",
)
@json_option
def register(
    config_path: Path | None,
    state_dir: Path | None,
    name: str,
    key_file: Path,
    ips: tuple[str, ...],
    region: str | None,
    address: str | None,
    worker_uuid: str | None,
    redis_url_file: Path | None,
    as_json: bool,
) -> None:
    """Allow the worker NAME to link to the master; prints its UUID.

    The worker is pinned: it may link only from the given IPs, and only if it
    announces the given address and region. Running it again with the same
    name and key updates the IPs (and the region and address, if given) and
    keeps the UUID. A different key for a registered name is refused:
    `pt workers remove NAME` first.

    It also makes the worker's own Redis user (pt-worker-NAME, with only what
    a worker needs: docs/REDIS.md) and writes its URL to a 0600 file; the
    Redis URL this command uses must be the Redis admin user's. A re-run keeps
    the password in that file.
    """
    from papertrader.config.rules import NAME_RE
    from papertrader.keyring import KeyringError, scan_public_key
    from papertrader.master.admission import normalise_address
    from papertrader.store.redis_users import worker_user
    from papertrader.store.workers import WorkerConflict, get_worker_by_name, register_worker

    if not NAME_RE.fullmatch(name):
        raise click.BadParameter("1 to 64 characters from A-Z a-z 0-9 . _ -", param_hint="NAME")
    cidrs = _cidrs(ips)
    if region is not None and not NAME_RE.fullmatch(region):
        raise click.BadParameter("1 to 64 characters from A-Z a-z 0-9 . _ -", param_hint="--region")
    if address is not None:
        pinned = normalise_address(address)
        if pinned is None:
            raise click.BadParameter(
                f"{address!r} is not HOST:PORT (an IPv6 address as [addr]:port)",
                param_hint="--address",
            )
        address = pinned
    try:
        public_key = key_file.read_text(encoding="utf-8")
        info = scan_public_key(public_key)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {key_file}: {exc}")
    except KeyringError as exc:
        fail(f"{key_file}: {exc}")
    if not info.can_sign:
        fail(f"{key_file}: key {info.fingerprint} cannot sign; the handshake needs a signing key")
    chosen: uuid.UUID | None = None
    if worker_uuid is not None:
        try:
            chosen = uuid.UUID(worker_uuid)
        except ValueError:
            raise click.BadParameter(
                f"{worker_uuid!r} is not a UUID", param_hint="--uuid"
            ) from None
    with _registry(config_path, state_dir) as pool:
        existing = get_worker_by_name(pool, name)
        if (
            existing is not None
            and existing.gpg_fingerprint
            and (existing.gpg_fingerprint.upper() != info.fingerprint)
        ):
            fail(
                f"worker {name} is registered with another key ({existing.gpg_fingerprint}); "
                f"`pt workers remove {name}` first to replace it"
            )
        new_uuid = chosen or (existing.uuid if existing is not None else uuid.uuid4())
        if existing is not None:  # an update without --region / --address keeps them
            region = region if region is not None else existing.region
            address = address if address is not None else existing.address
        missing = [
            option
            for option, value in (("--address HOST:PORT", address), ("--region R", region))
            if value is None
        ]
        if missing:
            fail(
                f"worker {name} needs {' and '.join(missing)}: the master admits a worker only "
                "with the address and region it was registered with"
            )
        try:
            register_worker(
                pool, name, new_uuid, region, public_key, info.fingerprint, cidrs, address
            )
        except WorkerConflict as exc:
            fail(str(exc))
    url_path = _provision_redis_user(config_path, state_dir, name, redis_url_file)
    document = {
        "name": name,
        "uuid": str(new_uuid),
        "fingerprint": info.fingerprint,
        "allowed_ips": cidrs,
        "region": region,
        "address": address,
        "created": existing is None,
        "redis_user": worker_user(name),
        "redis_url_file": str(url_path),
    }
    if as_json:
        print_json(document)
        return
    click.echo(str(new_uuid))
    click.echo(
        f"{'registered' if existing is None else 'updated'} worker {name} (key "
        f"{info.fingerprint}, from {', '.join(cidrs)}, region {region}, clients use {address})."
        f" Its Redis user {worker_user(name)}: URL in {url_path} (0600; copy it to the worker"
        f" host as its redis_url_file). Start it with PT_WORKER_UUID={new_uuid} "
        "and PT_MASTER_FINGERPRINT=<`pt master keygen` on this host prints it>.",
        err=True,
    )


@workers.command("redis-user")
@config_option
@state_dir_option
@click.argument("name")
@click.option(
    "--redis-url-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the worker's Redis URL (0600). "
    "Default: <state dir>/redis-users/pt-worker-NAME.url",
)
@json_option
def redis_user(
    config_path: Path | None,
    state_dir: Path | None,
    name: str,
    redis_url_file: Path | None,
    as_json: bool,
) -> None:
    """Make (or bring up to date) the Redis user of the worker NAME, as `register` does,
    and write its URL to a 0600 file; the password already in that file is kept.

    For deployments moving to the per-role Redis users, and Ansible. The Redis
    URL this command uses must be the admin user's.
    """
    from papertrader.store import redis_users

    user, rules = redis_users.worker_user(name), redis_users.WORKER_RULES
    path, created = provision_redis_user(config_path, state_dir, user, rules, redis_url_file)
    if as_json:
        print_json({"user": user, "redis_url_file": str(path), "created": created})
        return
    click.echo(f"Redis user {user} {'made' if created else 'up to date'}; its URL is in {path}")


# -- looking -------------------------------------------------------------------------
@workers.command(name="list")
@config_option
@state_dir_option
@json_option
def list_workers(config_path: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Every registered worker, and whether it is linked to the master now."""
    from papertrader.store.worker_control import ControlError
    from papertrader.store.workers import list_workers as registered

    with _registry(config_path, state_dir) as pool:
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

    with _registry(config_path, state_dir) as pool:
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
    with _registry(config_path, state_dir) as pool:
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

    with _registry(config_path, state_dir) as pool:
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

    with _registry(config_path, state_dir) as pool:
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

    with _registry(config_path, state_dir) as pool:
        record = _record(pool, name)
        remove_worker(pool, name)
    users = _redis_users(config_path, state_dir, "remove", name)
    click.echo(f"worker {name} removed; {users}; {_boot(config_path, state_dir, record)}")
