"""``pt workers keygen``, ``register`` and ``redis-user``: a worker's identity and rights.

``keygen`` (on the worker's host) makes its GPG key pair; ``register`` (on the
master's host) records the worker in the registry with its public key, the
addresses it may link from, its region and client address, and makes its own
Redis user; ``redis-user`` makes or brings up to date that user alone (after an
upgrade, and for Ansible). Seeing and acting on registered workers is
``cli/workers.py``.
"""

from __future__ import annotations

import ipaddress
import uuid
from pathlib import Path

import click

from .common import (
    config_option,
    database_pool,
    fail,
    json_option,
    print_json,
    provision_redis_user,
    state_dir_option,
)
from .workers import workers


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
    with database_pool(config_path, state_dir) as pool:
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


def _provision_redis_user(
    config_path: Path | None, state_dir: Path | None, name: str, url_path: Path | None
) -> Path:
    from papertrader.store import redis_users

    user, rules = redis_users.worker_user(name), redis_users.WORKER_RULES
    return provision_redis_user(config_path, state_dir, user, rules, url_path)[0]


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
