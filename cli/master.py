"""``pt master``: the master server (spec 3.1).

``pt master run`` serves the master port (2048 by default): links from
registered workers, and getWorkerList for clients. It needs Redis and a
migrated PostgreSQL (`pt services up`, `pt db migrate`, or PT_REDIS_URL /
PT_DATABASE_URL).
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    config_option,
    fail,
    json_option,
    print_json,
    provision_redis_user,
    settings_or_fail,
    state_dir_option,
)


@click.group()
def master() -> None:
    """The master server: accounts, market data, the order queue, worker links.

    Run exactly one master per deployment; workers connect to it, clients
    connect to workers.
    """


@master.command()
@config_option
@state_dir_option
@click.option(
    "--host",
    default=None,
    help="Address to listen on (overrides master_host; default 127.0.0.1). "
    "Use 0.0.0.0 to accept workers from other machines.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port to listen on (overrides master_port; default 2048).",
)
@click.option(
    "--advertise",
    metavar="HOST:PORT",
    default=None,
    help="Address workers dial to reach this master, if not --host:--port (overrides "
    "master_advertise; standbys name it when they refuse a worker's link).",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Log file (overrides log_file; default <state-dir>/logs/master.log).",
)
def run(
    config_path: Path | None,
    state_dir: Path | None,
    host: str | None,
    port: int | None,
    advertise: str | None,
    log_file: Path | None,
) -> None:
    """Run the master in the foreground until Ctrl-C or SIGTERM.

    On stop it finishes the market update and order drain in progress, so no
    queued order is lost or applied twice.

    Several masters may run against the same PostgreSQL and Redis: one is
    active (it holds PostgreSQL's leader lock), the others are standbys that
    take over when it stops, is killed, or is frozen past master_lease_seconds.
    A master that loses the active role exits with status 1: run it under a
    supervisor (systemd, `pt up`) and it comes back as a standby.

    \b
    Before the first run:
      pt services up     # private Redis and PostgreSQL (or set PT_REDIS_URL, PT_DATABASE_URL)
      pt db migrate      # create the tables
    Then start workers with `pt worker run` (each registered on the master).
    """
    # gevent first: everything network-related imported below must see the
    # cooperative socket, ssl, threading and time modules.
    import warnings

    from gevent import monkey

    with warnings.catch_warnings():
        # `pt` imported redis (hence ssl) before this command ran; redis only builds
        # SSL contexts when it connects, after this patch, so the warning does not apply.
        warnings.simplefilter("ignore", monkey.MonkeyPatchWarning)
        monkey.patch_all()

    from papertrader.master.main import MasterError, run_master
    from papertrader.services import ServicesError

    settings = settings_or_fail(
        config_path,
        master_host=host,
        master_port=port,
        master_advertise=advertise,
        log_file=log_file,
    )
    try:
        run_master(settings, state_dir)
    except (MasterError, ServicesError) as exc:
        fail(str(exc))


@master.command()
@config_option
@state_dir_option
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="GnuPG home for the master's key pair (default: master_gnupg_home, else "
    "<state-dir>/gnupg-master; created with mode 0700).",
)
def keygen(config_path: Path | None, state_dir: Path | None, home: Path | None) -> None:
    """Make the master's key pair (Ed25519, once) and print its fingerprint.

    Workers pin this fingerprint (master_fingerprint / PT_MASTER_FINGERPRINT)
    and refuse a master with any other key. Running it again prints the
    fingerprint of the key already there.
    """
    from papertrader.config import ConfigError, load_settings
    from papertrader.keyring import Keyring, KeyringError, master_home

    try:
        directory = home if home is not None else master_home(load_settings(config_path), state_dir)
        keyring = Keyring(directory, create=True)
        try:
            existing = keyring.secret_fingerprints()
            fingerprint = existing[0] if existing else keyring.generate("papertrader-master")
        finally:
            keyring.stop_agent()
    except (ConfigError, KeyringError) as exc:
        fail(str(exc))
        return
    click.echo(fingerprint)
    note = "already there" if existing else "made"
    click.echo(f"master key {note} in {keyring.home}; workers pin it:", err=True)
    click.echo(f"  PT_MASTER_FINGERPRINT={fingerprint}", err=True)
    if keyring.gpg_home != keyring.home:
        click.echo(
            f"note: gpg reaches it through the short path {keyring.gpg_home} "
            "(agent sockets need short paths)",
            err=True,
        )


if __name__ == "__main__":  # python -m papertrader_cli.master run ...
    master()


@master.command("redis-user")
@config_option
@state_dir_option
@click.option(
    "--redis-url-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the master's Redis URL (0600). "
    "Default: <state dir>/redis-users/pt-master.url",
)
@json_option
def redis_user(
    config_path: Path | None, state_dir: Path | None, redis_url_file: Path | None, as_json: bool
) -> None:
    """Make (or bring up to date) the master's own Redis user, pt-master (every command
    on pt:* keys but the dangerous ones: docs/REDIS.md), and write its URL to a 0600
    file; the password already in that file is kept.

    The private Redis of `pt services up` has it already; this is for a Redis of
    your own (and Ansible). The Redis URL this command uses must be the admin
    user's.
    """
    from papertrader.store import redis_users

    user, rules = redis_users.MASTER_USER, redis_users.MASTER_RULES
    path, created = provision_redis_user(config_path, state_dir, user, rules, redis_url_file)
    if as_json:
        print_json({"user": user, "redis_url_file": str(path), "created": created})
        return
    click.echo(f"Redis user {user} {'made' if created else 'up to date'}; its URL is in {path}")
