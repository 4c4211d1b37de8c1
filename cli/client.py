"""``pt client``: trade from the terminal against a running worker.

``login`` stores the session in a file (mode 0600) and every later command
sends it, so a shell session feels like a logged-in app. Tables for people,
``--json`` (exactly one document, money as strings; errors as
``{"error": {...}}``) for scripts. Market data commands (quote, bars,
forecast) are in ``client_market.py``, the portfolio and trades in
``client_portfolio.py``, the formatting in ``client_format.py``.

The client library and the protocol are imported when a command runs, not
when ``pt`` starts: ``pt --help`` stays quick.

Exit status: 0 done, 1 the server said no (rejected order, wrong password,
expired session) or could not be reached, 2 the command line was wrong, 3 the
outcome of an order (or a cancel) is unknown: it may still go through, so it
must not be placed again as a new order; `pt client order ID` tells what
became of it (cli/client_orders.py).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import client_format as fmt
from .common import config_option, fail, json_option, print_json, settings_or_fail

if TYPE_CHECKING:
    import ssl

    from papertrader.client import ClientError, FailoverClient, PaperTraderClient
    from papertrader.client.session_file import StoredSession

DEFAULT_WORKER = "127.0.0.1:2049"


@dataclass
class ClientOptions:
    """The group's options, handed to every command through click's context."""

    host: str
    port: int
    worker: str
    session_file: Path
    timeout: float
    as_json: bool
    #: With --master: find a worker through the master and fail over between workers.
    master: tuple[str, int] | None = None
    #: More masters after --master (standbys), asked for the list when it does not answer.
    standbys: tuple[tuple[str, int], ...] = ()
    region: str | None = None
    #: TLS (verified) unless the settings or --no-tls say tls = false.
    tls: bool = True
    #: The CA file given (--ca / PT_CA), else None: the system's trust store plus
    #: ``local_ca``, the CA of the state directory's stack (`pt up`'s), when it exists.
    ca: Path | None = None
    local_ca: Path | None = None

    def connect(self, session_id: uuid.UUID | None = None) -> PaperTraderClient | FailoverClient:
        from papertrader.client import FailoverClient, PaperTraderClient

        context = self.ssl_context()
        tls = context is not None
        if self.master is not None:
            host, port = self.master
            return FailoverClient(
                host, port, self.region, self.timeout, session_id=session_id,
                standbys=self.standbys, ssl_context=context, tls=tls,
            )  # fmt: skip
        return PaperTraderClient(
            self.host, self.port, self.timeout, session_id=session_id, ssl_context=context,
            tls=tls,
        )  # fmt: skip

    def ssl_context(self) -> ssl.SSLContext | None:
        """How servers are verified (exit 1 with the reason if a CA file is unusable)."""
        from papertrader.tls.contexts import TlsConfigError, client_context

        if not self.tls:
            return None
        try:
            extra = [self.local_ca] if self.local_ca is not None else []
            return client_context(self.ca, extra_cas=extra)
        except TlsConfigError as exc:
            fail(str(exc))


def worker_in_use(conn: PaperTraderClient | FailoverClient) -> str:
    """host:port of the worker a connection actually talks to (failover picks one)."""
    from papertrader.client import FailoverClient

    if isinstance(conn, FailoverClient):
        return str((conn.worker or {}).get("address") or "-")
    return conn.address


def _address(default_port: int) -> Callable[..., tuple[str, int] | None]:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        from papertrader.client import parse_address

        try:
            return parse_address(value, default_port=default_port)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return parse


def _addresses(default_port: int) -> Callable[..., list[tuple[str, int]] | None]:
    """HOST:PORT, or several separated by commas."""
    one = _address(default_port)

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        return [one(ctx, param, item.strip()) for item in value.split(",")]

    return parse


@click.group()
@config_option
@click.option(
    "--worker",
    "worker",
    envvar="PT_WORKER",
    default=None,
    callback=_address(2049),
    metavar="HOST:PORT",
    help="The worker to talk to (also PT_WORKER; default: the worker of the settings, "
    f"worker_advertise or worker_host:worker_port, {DEFAULT_WORKER} unless set). "
    "Any worker serves any session.",
)
@click.option(
    "--master",
    "master",
    envvar="PT_CLIENT_MASTER",
    default=None,
    callback=_addresses(2048),
    metavar="HOST:PORT[,HOST:PORT]",
    help="Ask this master for its workers instead of using --worker, and move to "
    "another worker (same session) when one goes away (also PT_CLIENT_MASTER). "
    "Name every master, comma-separated, and the next is asked when one is down.",
)
@click.option(
    "--region",
    default=None,
    help="With --master: prefer workers of this region.",
)
@click.option(
    "--session-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PT_SESSION_FILE",
    default=None,
    help="Where `login` keeps the session (also PT_SESSION_FILE; default: "
    "session.json in the user's config directory). Created with mode 0600.",
)
@click.option(
    "--ca",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PT_CA",
    default=None,
    help="Trust only the CA certificates of this PEM file (also PT_CA; default: the "
    "system's trust store, plus the private CA of `pt up` in the state directory).",
)
@click.option(
    "--no-tls",
    is_flag=True,
    help="Speak plaintext, to a server run with tls = false on loopback (also tls = false "
    "in the settings).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=90.0,
    show_default=True,
    help="Seconds to wait for an answer (orders wait for the next update interval).",
)
@json_option
@click.pass_context
def client(
    ctx: click.Context,
    config_path: Path | None,
    worker: tuple[str, int] | None,
    master: list[tuple[str, int]] | None,
    region: str | None,
    session_file: Path | None,
    ca: Path | None,
    no_tls: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Register, log in, look at quotes, buy and sell, from the terminal.

    Start with `pt client register USER --email E`, then `pt client login USER`.
    The worker is --worker, else PT_WORKER, else the one your settings name
    (papertrader.toml, PT_WORKER_PORT...), so `pt up` and `pt client` with the
    same settings meet.
    """
    from papertrader.client import parse_address
    from papertrader.client.session_file import default_session_file
    from papertrader.services import resolve_state_dir
    from papertrader.tls.local import ca_file

    # The same settings the servers read (config file, PT_* variables): a copied
    # `pt up` and `pt client` meet on the same port, with the same TLS and CA.
    settings = settings_or_fail(config_path)
    if worker is None:
        worker = parse_address(settings.worker_client_address, default_port=2049)
    host, port = worker
    ctx.obj = ClientOptions(
        host=host,
        port=port,
        worker=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        session_file=session_file or default_session_file(),
        timeout=timeout,
        as_json=as_json,
        master=master[0] if master else None,
        standbys=tuple(master[1:]) if master else (),
        region=region,
        tls=settings.tls and not no_tls,
        ca=ca or settings.tls_ca,
        local_ca=ca_file(resolve_state_dir(settings.state_dir)),
    )


# -- shared plumbing ---------------------------------------------
def options() -> ClientOptions:
    found = click.get_current_context().find_object(ClientOptions)
    assert found is not None
    return found


def wants_json(as_json: bool) -> bool:
    return as_json or options().as_json


def _error_details(exc: ClientError) -> dict[str, Any]:
    details: dict[str, Any] = {"code": exc.code.name if exc.code is not None else None}
    if exc.retry_after is not None:
        details["retry_after"] = exc.retry_after
    if exc.order_id is not None:
        details["order_id"] = str(exc.order_id)
    return details


@contextmanager
def server_errors(opts: ClientOptions, hint: Callable[[str], str] | None = None) -> Iterator[None]:
    """Turn every expected ClientError into one error (stderr, or JSON) and exit status 1.

    ``hint`` may add advice to a server's refusal (e.g. a missing user that is
    probably a symbol).
    """
    from papertrader.client import ClientError, ServerUnreachable
    from papertrader.client.session_file import delete_session

    try:
        yield
    except ServerUnreachable as exc:
        details = _error_details(exc)
        if opts.master is not None:  # the address is the master's, or several workers'
            fail(f"{exc.reason} (is the master running? `pt workers list` on its host)", **details)
        running = " (is the worker running? `pt up`)"
        advice = "" if exc.reason.startswith("connection to") else running
        where = exc.reason.replace("cannot reach ", "cannot reach the worker at ", 1)
        fail(f"{where}{advice}", **details)
    except ClientError as exc:
        details = _error_details(exc)
        if exc.session_problem:
            delete_session(opts.session_file)
            advice = exc.reason if "log in again" in exc.reason else f"{exc.reason}: log in again"
            fail(f"{advice} (`pt client login USER`)", **details)
        if exc.retry_after is not None:
            fail(
                f"refused by an abuse limit: {exc.reason} (wait, then run the same command again)",
                **details,
            )
        fail(hint(exc.reason) if hint is not None else exc.reason, **details)


def stored_session(opts: ClientOptions) -> StoredSession:
    from papertrader.client.session_file import SessionFileError, load_session

    try:
        stored = load_session(opts.session_file)
    except SessionFileError as exc:
        fail(str(exc))
    if stored is None:
        fail("not logged in: run `pt client login USER` first")
    return stored


def _read_password(from_stdin: bool, confirm: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin: no password on standard input")
        return password
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=confirm, err=True)
    return value


password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of prompting.",
)


# -- accounts ---------------------------------------------
@client.command()
@click.argument("username")
@click.option("--email", required=True, help="E-mail address of the new account.")
@password_stdin_option
@json_option
def register(username: str, email: str, password_stdin: bool, as_json: bool) -> None:
    """Create the account USERNAME (the password is asked twice, hidden)."""
    opts = options()
    password = _read_password(password_stdin, confirm=True)
    with server_errors(opts), opts.connect() as conn:
        stored_name = conn.register(username, email, password)
    if wants_json(as_json):
        print_json({"username": stored_name})
    else:
        click.echo(f"Registered {stored_name}. Log in with `pt client login {stored_name}`.")


@client.command()
@click.argument("username", required=False)
@click.option("--remember", is_flag=True, help="Keep the session for weeks instead of an hour.")
@click.option(
    "--with",
    "provider",
    metavar="PROVIDER",
    default=None,
    help="Sign in with this provider (e.g. google) instead of a password; the first time, "
    "USERNAME (or --username) names the new account.",
)
@click.option("--username", "new_username", default=None, help="With --with: the same as USERNAME.")
@click.option("--device", is_flag=True, help="With --with: approve on another device with a code.")
@click.option("--paste", is_flag=True, help="With --with: the browser runs on another machine.")
@click.option("--no-browser", is_flag=True, help="With --with: print the address, open nothing.")
@password_stdin_option
@json_option
def login(
    username: str | None,
    remember: bool,
    provider: str | None,
    new_username: str | None,
    device: bool,
    paste: bool,
    no_browser: bool,
    password_stdin: bool,
    as_json: bool,
) -> None:
    """Log in as USERNAME (or with a provider) and keep the session for the next commands.

    `pt client login alice` asks for the password; `pt client login --with google`
    opens the provider's sign-in in a browser (see `pt client password --help` to
    add a password to such an account).
    """
    if provider is not None:
        from .client_account import login_with

        login_with(provider, new_username or username, remember, device, paste, no_browser, as_json)
        return
    if username is None:
        raise click.UsageError("name the USERNAME, or sign in with --with PROVIDER")
    from papertrader.client.session_file import StoredSession, save_session

    opts = options()
    password = _read_password(password_stdin, confirm=False)
    with server_errors(opts), opts.connect() as conn:
        info = conn.login(username, password, remember)
        worker = worker_in_use(conn)
    save_session(
        opts.session_file,
        StoredSession(info.session_id, info.username, info.expires_at, worker),
    )
    if wants_json(as_json):
        print_json(
            {"username": info.username, "expires_at": fmt.text(info.expires_at), "worker": worker}
        )
    else:
        click.echo(
            f"Logged in as {info.username} on {worker}; the session lasts until "
            f"{fmt.when(info.expires_at)}."
        )


@client.command()
@json_option
def logout(as_json: bool) -> None:
    """End the session on every worker and forget it here."""
    from papertrader.client import ClientError, ServerUnreachable
    from papertrader.client.session_file import SessionFileError, delete_session, load_session

    opts = options()
    try:
        stored = load_session(opts.session_file)
    except SessionFileError:
        stored = None  # unreadable: nothing we could end; the file goes below
    ended = False
    if stored is not None:
        try:
            with opts.connect(stored.session_id) as conn:
                conn.logout()
            ended = True
        except ServerUnreachable as exc:
            fail(f"{exc.reason}; the session is still valid, try again when the worker is back")
        except ClientError as exc:
            if not exc.session_problem:
                fail(exc.reason, **_error_details(exc))
    delete_session(opts.session_file)
    if wants_json(as_json):
        print_json({"logged_out": ended})
    elif stored is not None:
        click.echo(f"Logged out {stored.username}.")
    else:
        click.echo("Not logged in.")


@client.command()
@json_option
def whoami(as_json: bool) -> None:
    """Who the stored session belongs to, checked with the worker (named)."""
    opts = options()
    stored = stored_session(opts)
    with server_errors(opts), opts.connect() as conn:
        info = conn.resume(stored.session_id)
        worker = worker_in_use(conn)
    if wants_json(as_json):
        print_json(
            {"username": info.username, "expires_at": fmt.text(info.expires_at), "worker": worker}
        )
    else:
        click.echo(
            f"{info.username} on worker {worker} (session valid until {fmt.when(info.expires_at)})"
        )


# The market data, account, portfolio, order and profile commands join the group (they
# import this module's plumbing).
from . import (  # noqa: E402, F401
    client_account,
    client_competitions,
    client_market,
    client_orders,
    client_portfolio,
    client_profile,
)
