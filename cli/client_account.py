"""``pt client`` commands for the account itself (issue 12): the ways in, sessions, deletion.

* ``login --with PROVIDER`` (in ``cli/client.py``, carried out here): the
  native-app sign-in of RFC 8252 (a browser, PKCE, the answer on a loopback
  redirect), ``--paste`` for a browser on another machine, ``--device`` for
  the device-code flow;
* ``password add | change | remove | forgot | reset``, ``email verify``;
* ``link PROVIDER``, ``unlink PROVIDER``, ``account show``, ``account delete``;
* ``sessions list | revoke HANDLE | logout-all``.

Same conventions as the rest of ``pt client``: ``--json`` prints one
document, ``--password-stdin`` reads a password from the first line of
standard input, exit status 0 done, 1 refused or unreachable, 2 usage.
The provider steps are the library's (``papertrader.oidc.native``); this
module only talks to the user.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from .client import (
    ClientOptions,
    _read_password,
    client,
    password_stdin_option,
)
from .client import options as _options
from .client import server_errors as _server_errors
from .client import stored_session as _stored_session
from .client import wants_json as _wants_json
from .client_format import table as _table
from .client_format import text as _text
from .client_format import when as _when
from .common import fail, json_option, print_json

if TYPE_CHECKING:  # imported when a command runs: `pt --help` stays quick
    from papertrader.client import FailoverClient, PaperTraderClient
    from papertrader.client.models import AccountSession, SessionInfo, SignInMethods
    from papertrader.oidc.native import Tokens

    Connection = PaperTraderClient | FailoverClient

#: How long `login --with` waits for the browser to come back to the loopback redirect.
BROWSER_WAIT = 300.0

with_option = click.option(
    "--with",
    "provider",
    metavar="PROVIDER",
    default=None,
    help="Sign in with this provider (e.g. google) instead of a password.",
)
device_option = click.option(
    "--device",
    is_flag=True,
    help="Approve the sign-in on another device with a short code (no browser needed here).",
)
paste_option = click.option(
    "--paste",
    is_flag=True,
    help="The browser runs on another machine: paste the address it ended on.",
)
no_browser_option = click.option(
    "--no-browser", is_flag=True, help="Print the sign-in address instead of opening a browser."
)


# -- the provider steps, as a person sees them ---------------------------------------------
def provider_tokens(
    conn: Connection, name: str, *, device: bool, paste: bool, no_browser: bool
) -> Tokens:
    """Run the provider's flow and return its ID token (and nonce); exits on failure."""
    import webbrowser

    from papertrader.oidc.native import DeviceFlow, LoopbackFlow, SignInError

    offered = {p.name: p for p in conn.sign_in_options()}
    options = offered.get(name.lower())
    if options is None:
        names = ", ".join(offered) or "none"
        fail(f"this server offers no sign-in provider called {name!r} (offered: {names})")
    try:
        if device:
            flow = DeviceFlow(options)
            started = flow.start()
            where = started.verification_uri_complete or started.verification_uri
            click.echo(
                f"On any device, open {started.verification_uri} and enter the code "
                f"{started.user_code}\n  ({where})\nWaiting for the approval...",
                err=True,
            )
            return flow.poll(started)
        loopback = LoopbackFlow(options)
        url = loopback.start()
        click.echo(f"Sign in with {options.display_name} at this address:\n\n  {url}\n", err=True)
        if paste:
            pasted = click.prompt(
                "When the browser shows an error page on 127.0.0.1, paste its address here",
                err=True,
            )
            return loopback.exchange(loopback.code_from_redirect(str(pasted)))
        if not no_browser:
            webbrowser.open(url)
        click.echo(
            "Waiting for the browser (on this machine; elsewhere use --paste or --device)...",
            err=True,
        )
        return loopback.exchange(loopback.wait(BROWSER_WAIT))
    except SignInError as exc:
        fail(str(exc))


def _save(options: ClientOptions, info: SessionInfo) -> None:
    from papertrader.client.session_file import StoredSession, save_session

    save_session(
        options.session_file,
        StoredSession(info.session_id, info.username, info.expires_at, options.worker),
    )


def login_with(
    provider: str,
    username: str | None,
    remember: bool,
    device: bool,
    paste: bool,
    no_browser: bool,
    as_json: bool,
) -> None:
    """`pt client login --with PROVIDER`: sign in (or sign up) and keep the session."""
    from papertrader.client import ClientError
    from papertrader.protocol import ErrorCode

    options = _options()
    with _server_errors(options), options.connect() as conn:
        tokens = provider_tokens(conn, provider, device=device, paste=paste, no_browser=no_browser)
        try:
            info = conn.login_oidc(
                provider, tokens.id_token, tokens.nonce, remember, username or ""
            )
        except ClientError as exc:
            if exc.code is not ErrorCode.USERNAME_NEEDED or not sys.stdin.isatty():
                raise
            click.echo(exc.reason, err=True)
            chosen = click.prompt("Username for the new account", err=True)
            info = conn.login_oidc(provider, tokens.id_token, tokens.nonce, remember, chosen)
    _save(options, info)
    if _wants_json(as_json):
        print_json({"username": info.username, "expires_at": _text(info.expires_at)})
    else:
        click.echo(
            f"Signed in as {info.username} with {provider}; "
            f"the session lasts until {_when(info.expires_at)}."
        )


def _session_call(as_json: bool, call: Any, key: str = "message") -> Any:
    """Run ``call(conn)`` with the stored session; print its answer (text or JSON)."""
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        result = call(conn)
    if isinstance(result, str):
        if _wants_json(as_json):
            print_json({key: result})
        else:
            click.echo(result[:1].upper() + result[1:] + ".")
    return result


def _plain_call(as_json: bool, call: Any) -> None:
    options = _options()
    with _server_errors(options), options.connect() as conn:
        result: str = call(conn)
    if _wants_json(as_json):
        print_json({"message": result})
    else:
        click.echo(result[:1].upper() + result[1:] + ".")


# -- passwords -------------------------------------------------------------------------------
@client.group()
def password() -> None:
    """Add, change or remove the password; reset a forgotten one by e-mail."""


@password.command("add")
@password_stdin_option
@json_option
def password_add(password_stdin: bool, as_json: bool) -> None:
    """Add a password to an account that signs in with a provider (both ways work then)."""
    new = _read_password(password_stdin, confirm=True)
    _session_call(as_json, lambda conn: conn.set_password(new))


@password.command("change")
@password_stdin_option
@json_option
def password_change(password_stdin: bool, as_json: bool) -> None:
    """Change the password (current, then new; with --password-stdin: two lines).

    Every other session of the account is signed out.
    """
    if password_stdin:
        current = sys.stdin.readline().rstrip("\r\n")
        new = sys.stdin.readline().rstrip("\r\n")
        if not current or not new:
            raise click.UsageError("--password-stdin: give the current and the new password")
    else:
        current = click.prompt("Current password", hide_input=True, err=True)
        new = click.prompt("New password", hide_input=True, confirmation_prompt=True, err=True)
    _session_call(as_json, lambda conn: conn.set_password(new, current))


@password.command("remove")
@password_stdin_option
@json_option
def password_remove(password_stdin: bool, as_json: bool) -> None:
    """Remove the password (only while a provider stays linked to the account)."""
    current = _read_password(password_stdin, confirm=False)
    _session_call(as_json, lambda conn: conn.remove_password(current))


@password.command("forgot")
@click.argument("who", metavar="USERNAME_OR_EMAIL")
@json_option
def password_forgot(who: str, as_json: bool) -> None:
    """Mail a reset code to the account's e-mail address (the answer never tells
    whether the account exists)."""
    _plain_call(as_json, lambda conn: conn.forgot_password(who))


@password.command("reset")
@click.option("--code", default=None, help="The code from the mail (asked for if omitted).")
@password_stdin_option
@json_option
def password_reset(code: str | None, password_stdin: bool, as_json: bool) -> None:
    """Set a new password with a mailed code; every session of the account ends."""
    if code is None:
        code = str(click.prompt("Reset code from the mail", err=True)).strip()
    new = _read_password(password_stdin, confirm=True)
    given = code
    _plain_call(as_json, lambda conn: conn.reset_password(given, new))


@client.group()
def email() -> None:
    """Confirm the account's e-mail address."""


@email.command("verify")
@click.option("--code", required=True, help="The code from the mail.")
@json_option
def email_verify(code: str, as_json: bool) -> None:
    """Confirm the e-mail address with the mailed code."""
    _plain_call(as_json, lambda conn: conn.verify_email(code))


# -- providers -------------------------------------------------------------------------------
@client.command()
@click.argument("provider")
@device_option
@paste_option
@no_browser_option
@json_option
def link(provider: str, device: bool, paste: bool, no_browser: bool, as_json: bool) -> None:
    """Link a PROVIDER sign-in (e.g. google) to the account you are logged in to."""
    options = _options()
    stored = _stored_session(options)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        tokens = provider_tokens(conn, provider, device=device, paste=paste, no_browser=no_browser)
        result = conn.link_provider(provider, tokens.id_token, tokens.nonce)
    if _wants_json(as_json):
        print_json({"message": result})
    else:
        click.echo(result[:1].upper() + result[1:] + ".")


@client.command()
@click.argument("provider")
@json_option
def unlink(provider: str, as_json: bool) -> None:
    """Unlink PROVIDER (only while a password or another provider remains)."""
    _session_call(as_json, lambda conn: conn.unlink_provider(provider))


# -- the account -----------------------------------------------------------------------------
@client.group()
def account() -> None:
    """How you sign in, and deleting the account."""


@account.command("show")
@json_option
def account_show(as_json: bool) -> None:
    """The account's e-mail, whether it has a password, and its linked providers."""
    result: SignInMethods = _session_call(as_json, lambda conn: conn.sign_in_methods())
    if _wants_json(as_json):
        print_json(_text(result))
        return
    verified = "confirmed" if result.email_verified else "not confirmed"
    click.echo(f"{result.username} <{result.email}> (e-mail {verified})")
    click.echo(f"Password: {'yes' if result.has_password else 'no'}")
    if not result.providers:
        click.echo("Linked providers: none")
    for entry in result.providers:
        click.echo(
            f"Linked: {entry.display_name} ({entry.email or '-'}), since "
            f"{_when(entry.linked_at)}, last sign-in {_when(entry.last_login_at)}"
        )


@account.command("delete")
@with_option
@device_option
@paste_option
@no_browser_option
@password_stdin_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def account_delete(
    provider: str | None,
    device: bool,
    paste: bool,
    no_browser: bool,
    password_stdin: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete the account, its positions and its history, for good.

    Confirm with the password, or with --with PROVIDER (a fresh sign-in). The
    username stays reserved for a while (the answer says how long).
    """
    from papertrader.client.session_file import delete_session

    options = _options()
    stored = _stored_session(options)
    if not yes and not click.confirm(
        f"Delete the account {stored.username} with its positions and history?", err=True
    ):
        fail("nothing deleted")
    password_text = "" if provider else _read_password(password_stdin, confirm=False)
    with _server_errors(options), options.connect(stored.session_id) as conn:
        if provider:
            tokens = provider_tokens(
                conn, provider, device=device, paste=paste, no_browser=no_browser
            )
            result = conn.delete_account(
                provider=provider, id_token=tokens.id_token, nonce=tokens.nonce
            )
        else:
            result = conn.delete_account(password=password_text)
    delete_session(options.session_file)
    if _wants_json(as_json):
        print_json({"deleted": stored.username, "message": result})
    else:
        click.echo(result[:1].upper() + result[1:] + ".")


# -- sessions -------------------------------------------------------------------------------
@client.group()
def sessions() -> None:
    """Your sessions: list them, end one, or sign out everywhere."""


@sessions.command("list")
@json_option
def sessions_list(as_json: bool) -> None:
    """Every live session of the account; * marks this one."""
    rows: list[AccountSession] = _session_call(as_json, lambda conn: conn.sessions())
    if _wants_json(as_json):
        print_json(_text(rows))
        return
    table = [
        [
            ("* " if row.current else "  ") + row.handle,
            _when(row.created_at),
            _when(row.last_used_at),
            str(row.last_ip or row.login_ip or "-"),
            "yes" if row.remember else "no",
            _when(row.expires_at),
        ]
        for row in rows
    ]
    headers = ["  SESSION", "CREATED", "LAST USED", "FROM", "REMEMBER", "EXPIRES"]
    click.echo(_table(headers, table, right=set()))


@sessions.command("revoke")
@click.argument("handle")
@json_option
def sessions_revoke(handle: str, as_json: bool) -> None:
    """End the session HANDLE (as `sessions list` shows it) on every worker."""
    from papertrader.client.session_file import delete_session

    result = _session_call(as_json, lambda conn: conn.revoke_session(handle))
    if "(this one)" in result:
        delete_session(_options().session_file)


@sessions.command("logout-all")
@click.option(
    "--keep-this/--all",
    "keep_this",
    default=True,
    show_default=True,
    help="Keep this session, or end it too.",
)
@json_option
def sessions_logout_all(keep_this: bool, as_json: bool) -> None:
    """Sign out every other session of the account (--all: this one too)."""
    from papertrader.client.session_file import delete_session

    _session_call(as_json, lambda conn: conn.logout_all(keep_this))
    if not keep_this:
        delete_session(_options().session_file)
