"""Accounts a person can live with (issue 12), end to end with real parts only.

One real master and worker (child processes), a real OpenID Connect
provider process (``oidc_provider.py``, Authlib's server classes) and a real
SMTP server (aiosmtpd) on loopback, real Redis and PostgreSQL. The servers
are shared by the tests of this module (starting them is the slow part);
each test uses fresh usernames, e-mail addresses and provider subjects.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
from account_support import MailSink, ProviderProcess
from conftest import _with_path, create_database, drop_database
from test_e2e_support import PASSWORD, ROOT, Servers, running
from test_worker_support import wait_for
from tls_support import pki

from papertrader.client import ClientError, PaperTraderClient
from papertrader.oidc.native import DeviceFlow, LoopbackFlow, ProviderOptions
from papertrader.protocol import ErrorCode
from papertrader.services import ServiceUrls

NEW_PASSWORD = "a much longer new passphrase"
REDIS_DB = 15
#: Reset codes tried per address and hour (the other tests try 7 from 127.0.0.1 in all).
CODE_GUESSES = 12  # this module's own logical database, flushed before and after


@dataclass
class Stack:
    servers: Servers
    idp: ProviderProcess
    mail: MailSink
    database_url: str

    def client(self, source: str = "127.0.0.1") -> PaperTraderClient:
        return self.servers.client(timeout=60, source_address=source)

    def options(self, client: PaperTraderClient) -> ProviderOptions:
        (options,) = client.sign_in_options()
        return options

    def browser_sign_in(self, client: PaperTraderClient) -> tuple[str, str]:
        """The whole native flow: (id_token, nonce) as the client library obtains them."""
        flow = LoopbackFlow(self.options(client))
        url = flow.start()
        self.idp.browse_and_follow(url)
        tokens = flow.exchange(flow.wait(30))
        return tokens.id_token, tokens.nonce

    def sql(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cur:
            cur.execute(query, args)
            rows = cur.fetchall() if cur.description else []
        conn.close()
        return rows


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, service_urls: ServiceUrls, migrated_template: str
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("accounts")
    database_url = create_database(service_urls, template=migrated_template)
    redis_url = _with_path(service_urls.redis_url, str(REDIS_DB))
    redis.Redis.from_url(redis_url).flushdb()
    try:
        with ProviderProcess(tmp) as idp, MailSink() as mail:
            env = {
                "PT_OIDC_PROVIDERS": idp.setting(),
                "PT_USERNAME_RETIREMENT_DAYS": "30",
                # Limits of their own for the rate-limit tests below; the other tests
                # stay well inside them.
                "PT_FORGOT_RATE_PER_ADDRESS": "100/hour",
                "PT_FORGOT_RATE_PER_ACCOUNT": "3/hour",
                "PT_RESET_RATE_PER_ADDRESS": f"{CODE_GUESSES}/hour",
                **mail.env(),
            }
            servers = Servers(tmp, redis_url, database_url, env_extra=env)
            with running(servers):
                servers.wait_quotes()
                yield Stack(servers, idp, mail, database_url)
    finally:
        redis.Redis.from_url(redis_url).flushdb()
        drop_database(service_urls, database_url)


def fresh(prefix: str = "u") -> tuple[str, str]:
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    return name, f"{name}@example.org"


def refusal(call: object) -> ClientError:
    assert callable(call)
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


def quote_refused(client: PaperTraderClient) -> bool:
    """True once the client's session is refused for market data; False while it is served
    (a quote takes the worker's cached session, dropped when the master's announcement
    that the session ended arrives, a moment after the master's answer)."""
    try:
        client.quote("AAPL")
    except ClientError as exc:
        assert exc.code is ErrorCode.INVALID_SESSION, exc
        return True
    return False


def password_user(stack: Stack, client: PaperTraderClient) -> tuple[str, str]:
    name, email = fresh()
    client.register(name, email, PASSWORD)
    client.login(name, PASSWORD)
    return name, email


def provider_user(stack: Stack, client: PaperTraderClient) -> tuple[str, str]:
    """A new account made by a first sign-in with the test provider."""
    name, email = fresh("g")
    stack.idp.sign_in_as(f"sub-{name}", email)
    id_token, nonce = stack.browser_sign_in(client)
    client.login_oidc("testid", id_token, nonce, remember=True, username=name)
    return name, email


# -- sessions a user controls ---------------------------------------------------------------
def test_sessions_are_listed_revoked_and_ended_everywhere(stack: Stack) -> None:
    with stack.client() as phone, stack.client("127.0.0.2") as laptop, stack.client() as tablet:
        name, _ = password_user(stack, phone)
        laptop.login(name, PASSWORD, remember=True)
        tablet.login(name, PASSWORD)
        laptop.quote("AAPL")

        sessions = phone.sessions()
        assert len(sessions) == 3
        mine = [s for s in sessions if s.current]
        assert len(mine) == 1 and mine[0].login_ip == "127.0.0.1"
        laptop_row = next(s for s in sessions if s.login_ip == "127.0.0.2")
        assert laptop_row.remember is True and laptop_row.last_ip == "127.0.0.2"
        assert laptop_row.last_used_at is not None and laptop_row.created_at is not None
        assert all(len(s.handle) == 12 for s in sessions)
        assert str(laptop.session_id) not in repr(sessions)  # ids never leave their client

        phone.revoke_session(laptop_row.handle)
        assert refusal(lambda: laptop.portfolio()).code is ErrorCode.INVALID_SESSION
        assert (
            refusal(lambda: phone.revoke_session("000000000000")).code is ErrorCode.UNKNOWN_SESSION
        )
        assert len(phone.sessions()) == 2

        assert "1 other session" in phone.logout_all(keep_this=True)
        # Market data takes the worker's cached session, dropped when the master's
        # announcement arrives a moment after the answer (worker/session_cache.py).
        wait_for(lambda: quote_refused(tablet), timeout=30.0)
        assert refusal(lambda: tablet.portfolio()).code is ErrorCode.INVALID_SESSION
        assert [s.current for s in phone.sessions()] == [True]
        phone.logout_all(keep_this=False)
        assert phone.session_id is None


def test_another_users_session_cannot_be_revoked(stack: Stack) -> None:
    with stack.client() as alice, stack.client() as mallory:
        password_user(stack, alice)
        password_user(stack, mallory)
        (alice_row,) = alice.sessions()
        error = refusal(lambda: mallory.revoke_session(alice_row.handle))
        assert error.code is ErrorCode.UNKNOWN_SESSION
        alice.quote("AAPL")


# -- passwords -------------------------------------------------------------------------------
def test_a_password_change_needs_the_current_one_and_signs_out_the_others(stack: Stack) -> None:
    with stack.client() as here, stack.client() as elsewhere:
        name, _ = password_user(stack, here)
        elsewhere.login(name, PASSWORD)
        assert (
            refusal(lambda: here.set_password(NEW_PASSWORD)).code is ErrorCode.INVALID_CREDENTIALS
        )
        wrong = refusal(lambda: here.set_password(NEW_PASSWORD, current="not it at all"))
        assert wrong.code is ErrorCode.INVALID_CREDENTIALS
        assert refusal(lambda: here.set_password("short", current=PASSWORD)).code is (
            ErrorCode.INVALID_PASSWORD
        )
        assert "changed" in here.set_password(NEW_PASSWORD, current=PASSWORD)
        here.quote("AAPL")  # this session stays
        wait_for(lambda: quote_refused(elsewhere), timeout=30.0)  # once the worker hears of it
        assert (
            refusal(lambda: elsewhere.login(name, PASSWORD)).code is ErrorCode.INVALID_CREDENTIALS
        )
        elsewhere.login(name, NEW_PASSWORD)


def test_the_only_password_cannot_be_removed(stack: Stack) -> None:
    with stack.client() as client:
        password_user(stack, client)
        error = refusal(lambda: client.remove_password(PASSWORD))
        assert error.code is ErrorCode.LAST_WAY_IN and "link a provider" in error.reason
        assert client.sign_in_methods().has_password is True


# -- forgotten passwords ------------------------------------------------------------------------
def test_a_mailed_reset_code_sets_a_new_password_once_and_ends_every_session(stack: Stack) -> None:
    with stack.client() as asker, stack.client() as logged_in:
        name, email = password_user(stack, logged_in)
        known = asker.forgot_password(name)
        unknown = asker.forgot_password(f"nobody{uuid.uuid4().hex[:8]}")
        by_mail = asker.forgot_password(f"nobody{uuid.uuid4().hex[:8]}@example.org")
        assert known == unknown == by_mail  # no enumeration
        mail = stack.mail.wait_for(email)
        assert mail.message["Subject"] == "PaperTrader: your password reset code"
        assert mail.message.get_content_type() == "text/plain"
        code = mail.code()
        assert f"pt client password reset --code {code}" in mail.body
        stored = stack.sql("SELECT code_hash FROM account_codes WHERE purpose = 'reset'")
        assert code.encode() not in [bytes(row[0]) for row in stored]  # only its hash is kept

        assert "signed out" in asker.reset_password(code, NEW_PASSWORD)
        wait_for(lambda: quote_refused(logged_in), timeout=30.0)  # once the worker hears of it
        again = refusal(lambda: asker.reset_password(code, "yet another passphrase"))
        assert again.code is ErrorCode.RESET_CODE_INVALID
        asker.login(name, NEW_PASSWORD)


def test_only_the_newest_code_works_and_an_expired_one_never(stack: Stack) -> None:
    with stack.client() as client:
        name, email = password_user(stack, client)
        client.forgot_password(email)
        first = stack.mail.wait_for(email, 1).code()
        client.forgot_password(name)
        second = stack.mail.wait_for(email, 2).code()
        assert refusal(lambda: client.reset_password(first, NEW_PASSWORD)).code is (
            ErrorCode.RESET_CODE_INVALID
        )
        stack.sql(
            "UPDATE account_codes SET expires_at = now() - interval '1 second'"
            " WHERE account_id = (SELECT id FROM accounts WHERE username = %s)",
            name,
        )
        expired = refusal(lambda: client.reset_password(second, NEW_PASSWORD))
        assert expired.code is ErrorCode.RESET_CODE_INVALID and "expired" in expired.reason
        client.login(name, PASSWORD)


def test_no_mail_is_sent_for_an_unknown_account(stack: Stack) -> None:
    with stack.client() as client:
        _, email = fresh()
        client.forgot_password(email)
        name, known_email = password_user(stack, client)
        client.forgot_password(name)
        stack.mail.wait_for(known_email)  # sent after the unknown one was asked for
        assert stack.mail.to(email) == []


def test_reset_requests_and_code_guesses_are_rate_limited(stack: Stack) -> None:
    with stack.client() as client, stack.client("127.0.0.7") as guesser:
        name, email = password_user(stack, client)
        for _ in range(3):
            client.forgot_password(name)
        limited = refusal(lambda: client.forgot_password(name))
        assert limited.code is ErrorCode.RATE_LIMITED and limited.retry_after is not None
        client.forgot_password(f"other{uuid.uuid4().hex[:8]}")  # another name is not limited
        for _ in range(CODE_GUESSES):
            wrong = refusal(lambda: guesser.reset_password("not-a-real-code", NEW_PASSWORD))
            assert wrong.code is ErrorCode.RESET_CODE_INVALID
        guessing = refusal(lambda: guesser.reset_password("not-a-real-code", NEW_PASSWORD))
        assert guessing.code is ErrorCode.RATE_LIMITED
        # The real code still works from the owner's address.
        code = stack.mail.wait_for(email, 3).code()
        client.reset_password(code, NEW_PASSWORD)


# -- sign-in with an OpenID Connect provider -----------------------------------------------------
def test_first_sign_in_creates_an_account_without_a_password(stack: Stack) -> None:
    with stack.client() as client, stack.client() as other:
        options = stack.options(client)
        assert options.name == "testid" and options.issuer == stack.idp.issuer
        name, email = fresh("g")
        stack.idp.sign_in_as(f"sub-{name}", email)
        id_token, nonce = stack.browser_sign_in(client)
        needed = refusal(lambda: client.login_oidc("testid", id_token, nonce))
        assert needed.code is ErrorCode.USERNAME_NEEDED
        info = client.login_oidc("testid", id_token, nonce, remember=True, username=name)
        assert info.username == name
        assert client.user_info().email == email
        methods = client.sign_in_methods()
        assert methods.has_password is False and methods.email_verified is True
        assert [p.name for p in methods.providers] == ["testid"]

        replay = refusal(lambda: other.login_oidc("testid", id_token, nonce))
        assert replay.code is ErrorCode.SIGN_IN_REFUSED and "already used" in replay.reason

        # The spec's "account without a password": a password login says how to sign in,
        no_password = refusal(lambda: other.login(name, "whatever it may be"))
        assert no_password.code is ErrorCode.INVALID_CREDENTIALS
        assert "signs in with TestID" in no_password.reason
        # and once a password is added both ways work.
        assert "added" in client.set_password(NEW_PASSWORD)
        other.login(name, NEW_PASSWORD)
        id_token, nonce = stack.browser_sign_in(other)
        assert other.login_oidc("testid", id_token, nonce).username == name


def test_a_provider_cannot_take_over_an_account_by_its_e_mail(stack: Stack) -> None:
    with stack.client() as owner, stack.client() as attacker:
        name, email = password_user(stack, owner)
        stack.idp.sign_in_as(f"attacker-{name}", email)  # same address, another person
        id_token, nonce = stack.browser_sign_in(attacker)
        error = refusal(lambda: attacker.login_oidc("testid", id_token, nonce, username="x" + name))
        assert error.code is ErrorCode.LINK_REQUIRED
        assert stack.sql(
            "SELECT count(*) FROM account_identities i JOIN accounts a ON a.id = i.account_id"
            " WHERE a.username = %s",
            name,
        ) == [(0,)]
        # The owner, signed in with the password, links the provider: that is the proof.
        stack.idp.sign_in_as(f"owner-{name}", email)
        id_token, nonce = stack.browser_sign_in(owner)
        assert "linked" in owner.link_provider("testid", id_token, nonce)
        id_token, nonce = stack.browser_sign_in(attacker)
        assert attacker.login_oidc("testid", id_token, nonce).username == name
        # Both ways in exist now: either may go, not both.
        assert "removed" in owner.remove_password(PASSWORD)
        last = refusal(lambda: owner.unlink_provider("testid"))
        assert last.code is ErrorCode.LAST_WAY_IN


def test_an_unverified_e_mail_cannot_open_an_account(stack: Stack) -> None:
    with stack.client() as client:
        name, email = fresh("g")
        stack.idp.sign_in_as(f"sub-{name}", email, email_verified=False)
        id_token, nonce = stack.browser_sign_in(client)
        error = refusal(lambda: client.login_oidc("testid", id_token, nonce, username=name))
        assert error.code is ErrorCode.EMAIL_UNVERIFIED


@pytest.mark.parametrize(
    ("claims", "sign_with", "words"),
    [
        ({"exp": 1_000_000_000, "iat": 999_999_000}, "current", "expired"),
        ({"aud": ["someone-else"]}, "current", "another application"),
        ({"iss": "https://evil.example"}, "current", "was not issued by TestID"),
        ({}, "forged", "signature is not valid"),
        ({}, "unknown", "does not publish"),
        ({"nonce": "another-nonce-0123456789"}, "current", "nonce"),
        ({"sub": None}, "current", "'sub'"),
    ],
)
def test_bad_id_tokens_are_refused(
    stack: Stack, claims: dict[str, object], sign_with: str, words: str
) -> None:
    nonce = uuid.uuid4().hex
    name, email = fresh("g")
    stack.idp.sign_in_as(f"sub-{name}", email)
    token = stack.idp.mint(sign_with, **{"nonce": nonce, **claims})
    with stack.client() as client:
        error = refusal(lambda: client.login_oidc("testid", token, nonce, username=name))
    assert error.code is ErrorCode.SIGN_IN_REFUSED, error
    assert words in error.reason, error.reason


def test_a_rotated_key_is_fetched_on_its_first_use(stack: Stack) -> None:
    with stack.client() as client:
        name, email = provider_user(stack, client)  # the master has cached the key set now
        stack.idp.rotate(keep=False)
        id_token, nonce = stack.browser_sign_in(client)  # signed with the new key
        assert client.login_oidc("testid", id_token, nonce).username == name


def test_an_unknown_provider_is_named_in_the_refusal(stack: Stack) -> None:
    with stack.client() as client:
        error = refusal(lambda: client.login_oidc("nosuch", "x.y.z", uuid.uuid4().hex))
        assert error.code is ErrorCode.UNKNOWN_PROVIDER and "testid" in error.reason


def test_the_device_code_flow_signs_in(stack: Stack) -> None:
    with stack.client() as client:
        name, email = provider_user(stack, client)
        flow = DeviceFlow(stack.options(client), sleep=lambda seconds: None)
        started = flow.start()
        stack.idp.approve_device(started.user_code)
        tokens = flow.poll(started)
        assert tokens.nonce == ""
        with stack.client() as device:
            assert device.login_oidc("testid", tokens.id_token, "").username == name
            replay = refusal(lambda: device.login_oidc("testid", tokens.id_token, ""))
            assert "already used" in replay.reason


# -- deleting an account -----------------------------------------------------------------------
def test_an_account_is_deleted_with_its_password_and_its_name_is_retired(stack: Stack) -> None:
    with stack.client() as client, stack.client() as other:
        name, email = password_user(stack, client)
        other.login(name, PASSWORD)
        client.buy("AAPL", 1)
        waiting = client.place_order(
            "buy", "AAPL", 1, order_type="limit", limit_price=Decimal("0.01"), time_in_force="gtc"
        )
        assert waiting.status == "open"  # in the book, with cash reserved
        wrong = refusal(lambda: client.delete_account(password="not the password"))
        assert wrong.code is ErrorCode.INVALID_CREDENTIALS
        none = refusal(lambda: client.delete_account())
        assert none.code is ErrorCode.PROOF_REQUIRED
        assert "30 days" in client.delete_account(password=PASSWORD)
        wait_for(lambda: quote_refused(other), timeout=30.0)  # once the worker hears of it
        assert stack.sql("SELECT count(*) FROM accounts WHERE username = %s", name) == [(0,)]
        assert stack.sql(
            "SELECT count(*) FROM orders o LEFT JOIN accounts a ON a.id = o.account_id"
            " WHERE a.id IS NULL AND o.status IN ('open', 'filled')"
        ) == [(0,)]
        taken = refusal(lambda: other.register(name, f"new-{email}", PASSWORD))
        assert taken.code is ErrorCode.USERNAME_TAKEN
        other.register(f"n{name[1:]}", email, PASSWORD)  # the e-mail address is free again


def test_a_passwordless_account_is_deleted_with_a_fresh_sign_in(stack: Stack) -> None:
    with stack.client() as client:
        name, _ = provider_user(stack, client)
        stale = stack.idp.mint(nonce="n" * 20, iat=1_000_000)
        old = refusal(
            lambda: client.delete_account(provider="testid", id_token=stale, nonce="n" * 20)
        )
        assert old.code in (ErrorCode.SIGN_IN_REFUSED, ErrorCode.PROOF_REQUIRED)
        id_token, nonce = stack.browser_sign_in(client)
        client.delete_account(provider="testid", id_token=id_token, nonce=nonce)
        assert stack.sql("SELECT count(*) FROM accounts WHERE username = %s", name) == [(0,)]


# -- the pt client commands -------------------------------------------------------------------
class Pt:
    """``pt client`` in a subprocess, with this stack's worker and its own session file."""

    def __init__(self, stack: Stack, session_file: Path) -> None:
        self.stack = stack
        self.session_file = session_file
        env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
        env["PYTHONPATH"] = str(ROOT)
        env["PT_WORKER"] = f"127.0.0.1:{stack.servers.worker_port()}"
        env["PT_CA"] = str(pki().ca)
        self.env = env

    def args(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "papertrader_cli",
            "client",
            "--session-file",
            str(self.session_file),
            *args,
        ]

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.args(*args),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=str(ROOT),
            timeout=120,
            check=False,
        )

    def with_browser(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a command that prints a sign-in address; act as the browser for it."""
        proc = subprocess.Popen(
            self.args(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=str(ROOT),
        )
        assert proc.stderr is not None and proc.stdout is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if line.strip().startswith("http://127.0.0.1:") and "/authorize?" in line:
                self.stack.idp.browse_and_follow(line.strip())
                break
            if "enter the code" in line:
                self.stack.idp.approve_device(line.rsplit(" ", 1)[1].strip())
                break
        stdout, stderr = proc.communicate(timeout=120)
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, stdout, "".join(seen) + stderr
        )


def test_the_cli_signs_up_with_a_provider_and_manages_the_account(
    stack: Stack, tmp_path: Path
) -> None:
    pt = Pt(stack, tmp_path / "session.json")
    name, email = fresh("c")
    stack.idp.sign_in_as(f"sub-{name}", email)
    done = pt.with_browser(
        "login", "--with", "testid", "--username", name, "--no-browser", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["username"] == name
    assert stat.S_IMODE(pt.session_file.stat().st_mode) == 0o600

    listed = pt("sessions", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["current"] is True and len(row["handle"]) == 12

    again = pt.with_browser("login", "--with", "testid", "--device")  # the device-code flow
    assert again.returncode == 0, again.stderr
    assert f"Signed in as {name}" in again.stdout

    added = pt("password", "add", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    shown = json.loads(pt("account", "show", "--json").stdout)
    assert shown["has_password"] is True and shown["providers"][0]["name"] == "testid"

    assert pt("login", name, "--password-stdin", stdin=NEW_PASSWORD + "\n").returncode == 0
    # Adding the password (from the device-flow session) signed out the browser one.
    handles = [r["handle"] for r in json.loads(pt("sessions", "list", "--json").stdout)]
    assert len(handles) == 2 and row["handle"] not in handles

    refused = pt("account", "delete", "--yes", "--password-stdin", stdin="wrong password here\n")
    assert refused.returncode == 1 and "current password is wrong" in refused.stderr
    deleted = pt(
        "account", "delete", "--yes", "--password-stdin", "--json", stdin=NEW_PASSWORD + "\n"
    )
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["deleted"] == name
    assert not pt.session_file.exists()


def test_the_cli_resets_a_forgotten_password(stack: Stack, tmp_path: Path) -> None:
    pt = Pt(stack, tmp_path / "session.json")
    with stack.client() as client:
        name, email = password_user(stack, client)
    asked = pt("password", "forgot", name)
    assert asked.returncode == 0 and "If an account matches" in asked.stdout
    code = stack.mail.wait_for(email).code()
    reset = pt("password", "reset", "--code", code, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert reset.returncode == 0, reset.stderr
    reused = pt("password", "reset", "--code", code, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert reused.returncode == 1 and "already used or expired" in reused.stderr
    assert pt("login", name, "--password-stdin", stdin=NEW_PASSWORD + "\n").returncode == 0
    assert pt("sessions", "logout-all", "--all").returncode == 0
    assert not pt.session_file.exists()
