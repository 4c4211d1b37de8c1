"""Account registration and login on the master (spec 3.1.3), against a real PostgreSQL."""

from __future__ import annotations

import hashlib
import time
from decimal import Decimal
from typing import TYPE_CHECKING

import gevent
import pytest

from papertrader.config import Settings
from papertrader.master.accounts import LOGIN_FAILED, AccountError, login, register
from papertrader.master.bcrypt_pool import BcryptPool, Busy, Expired, Job
from papertrader.protocol import ErrorCode
from papertrader.store import accounts as account_store
from papertrader.store.pool import ConnectionPool

if TYPE_CHECKING:
    from typing_extensions import Unpack

SETTINGS = Settings(bcrypt_cost=4)
GOOD = "paper trading practice 7"  # passes the password policy
LONG = hashlib.sha256(b"a long random password").hexdigest() * 4  # 256 characters


def refused(pool: ConnectionPool, *args: Unpack[tuple[str, str, str]]) -> AccountError:
    with pytest.raises(AccountError) as info:
        register(pool, SETTINGS, *args)
    return info.value


def test_new_account_gets_exact_starting_cash_and_can_log_in(pool: ConnectionPool) -> None:
    account = register(pool, SETTINGS, "Alice", "alice@example.com", "correct horse")
    assert account.cash == Decimal("100000.00")
    assert str(account.cash) == "100000.00"
    assert account.is_password
    assert account.password_hash.startswith("$2b$04$")  # bcrypt, never the password
    assert "correct horse" not in repr(account)

    # Usernames are case-insensitive; the answer carries the name as registered.
    assert login(pool, SETTINGS, "alice", "correct horse").id == account.id
    assert login(pool, SETTINGS, "ALICE", "correct horse").username == "Alice"


def test_starting_cash_comes_from_the_settings(pool: ConnectionPool) -> None:
    rich = Settings(bcrypt_cost=4, starting_cash=Decimal("250000.50"))
    account = register(pool, rich, "bob", "bob@example.com", GOOD)
    stored = account_store.get_account(pool, account.id)
    assert stored is not None and stored.cash == Decimal("250000.50")


def test_taken_username_and_email_are_refused_case_insensitively(pool: ConnectionPool) -> None:
    register(pool, SETTINGS, "alice", "alice@example.com", GOOD)
    assert refused(pool, "ALICE", "other@example.com", GOOD).code is ErrorCode.USERNAME_TAKEN
    assert refused(pool, "alice2", "Alice@Example.COM", GOOD).code is ErrorCode.EMAIL_TAKEN


@pytest.mark.parametrize(
    "username", ["", "a" * 25, "has space", "semi;colon", "émile", "tab\tname"]
)
def test_invalid_usernames_are_refused(pool: ConnectionPool, username: str) -> None:
    error = refused(pool, username, "x@example.com", GOOD)
    assert error.code is ErrorCode.INVALID_USERNAME
    assert "24 characters" in error.reason


def test_username_of_24_allowed_characters_is_accepted(pool: ConnectionPool) -> None:
    name = "A_b.c-9" + "x" * 17
    assert register(pool, SETTINGS, name, "x@example.com", GOOD).username == name


@pytest.mark.parametrize(
    "email",
    [
        "no-at-sign.example.com",
        "two@@example.com",
        "a@b@example.com",
        "@example.com",
        "user@localhost",
        "user@.com",
        "user@example.",
        "with space@example.com",
        "x" * 65 + "@example.com",
        "x@" + "d" * 320 + ".com",
    ],
)
def test_invalid_emails_are_refused(pool: ConnectionPool, email: str) -> None:
    assert refused(pool, "carol", email, GOOD).code is ErrorCode.INVALID_EMAIL


def test_short_and_huge_passwords_are_refused(pool: ConnectionPool) -> None:
    short = refused(pool, "dave", "dave@example.com", "Xq7#vL9!")
    assert short.code is ErrorCode.INVALID_PASSWORD
    assert "at least 10" in short.reason
    assert refused(pool, "dave", "dave@example.com", "p" * 1025).code is ErrorCode.INVALID_PASSWORD
    assert account_store.find_account_by_username(pool, "dave") is None


def test_unknown_user_and_wrong_password_look_the_same(pool: ConnectionPool) -> None:
    register(pool, SETTINGS, "erin", "erin@example.com", GOOD)
    with pytest.raises(AccountError) as wrong:
        login(pool, SETTINGS, "erin", "wrong password 123")
    with pytest.raises(AccountError) as unknown:
        login(pool, SETTINGS, "nobody", GOOD)
    assert (wrong.value.code, wrong.value.reason) == (unknown.value.code, unknown.value.reason)
    assert wrong.value.code is ErrorCode.INVALID_CREDENTIALS
    assert wrong.value.reason == LOGIN_FAILED


def test_long_passwords_keep_every_character(pool: ConnectionPool) -> None:
    """bcrypt alone reads 72 bytes; a difference after that must still matter."""
    register(pool, SETTINGS, "frank", "frank@example.com", LONG)
    assert login(pool, SETTINGS, "frank", LONG).username == "frank"
    with pytest.raises(AccountError):
        login(pool, SETTINGS, "frank", LONG[:-1] + ("0" if LONG[-1] != "0" else "1"))


def test_third_party_account_cannot_log_in_with_a_password(
    pool: ConnectionPool, database_url: str
) -> None:
    with pool.transaction() as cur:
        cur.execute(
            "INSERT INTO accounts (username, email, is_password, password_hash, cash)"
            " VALUES ('gina', 'gina@example.com', FALSE, '', 100000)"
        )
    with pytest.raises(AccountError) as info:
        login(pool, SETTINGS, "gina", "")
    assert info.value.code is ErrorCode.INVALID_CREDENTIALS
    assert "third-party" in info.value.reason


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("          ", "only spaces"),
        ("password123456", "common"),
        ("aaaaaaaaaaaa", "too easy"),
        ("qwertyuiop", "common"),
        ("zxcvbnm,./as", "too easy"),  # a keyboard walk
        ("hank-hank-hank", "too easy"),  # the username three times
        ("tab\there and there", "control characters"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(
    pool: ConnectionPool, password: str, why: str
) -> None:
    error = refused(pool, "hank", "hank@example.com", password)
    assert error.code is ErrorCode.INVALID_PASSWORD
    assert why in error.reason, error.reason
    assert account_store.find_account_by_username(pool, "hank") is None


def test_passwords_are_nfkc_normalised_before_checking_and_hashing(pool: ConnectionPool) -> None:
    fullwidth = "ｐａｐｅｒ ｔｒａｄｉｎｇ ｐｒａｃｔｉｃｅ ７"  # the same text as GOOD, full width
    register(pool, SETTINGS, "ivy", "ivy@example.com", fullwidth)
    assert login(pool, SETTINGS, "ivy", GOOD).username == "ivy"


def test_one_bcrypt_check_runs_on_every_login_path_whatever_the_length(
    pool: ConnectionPool,
) -> None:
    """Equal timing by construction: unknown user, wrong password, a password longer
    than any allowed, each costs exactly one bcrypt check of the same kind."""
    register(pool, SETTINGS, "jack", "jack@example.com", GOOD)
    bcrypt_pool = BcryptPool(threads=1)
    for username, password in [
        ("jack", "wrong password 123"),
        ("nobody", "wrong password 123"),
        ("jack", "x" * 5000),
        ("nobody", "x" * 5000),
        ("not a valid name!", "x"),
    ]:
        before = bcrypt_pool.completed
        with pytest.raises(AccountError) as info:
            login(pool, SETTINGS, username, password, bcrypt_pool)
        assert info.value.reason == LOGIN_FAILED
        assert bcrypt_pool.completed == before + 1, (username, len(password))


def _slow(flag: list[str], seconds: float) -> str:
    time.sleep(seconds)  # a real thread: blocks only its bcrypt thread
    flag.append("ran")
    return "done"


def test_a_full_bcrypt_pool_refuses_at_once_and_given_up_work_is_dropped() -> None:
    bcrypt_pool = BcryptPool(threads=1, queue=1)
    ran: list[str] = []
    first = gevent.spawn(bcrypt_pool.run, Job(), _slow, ran, 2.0)
    queued_job = Job()
    queued = gevent.spawn(bcrypt_pool.run, queued_job, _slow, ran, 0.0)
    gevent.sleep(0.05)
    assert bcrypt_pool.accepted == 2
    with pytest.raises(Busy):
        bcrypt_pool.run(Job(), _slow, ran, 0.0)
    assert ran == []  # refused while the busy thread still ran: nothing waited for it
    queued_job.cancel()  # its worker gave up while it waited for the thread
    assert first.get(timeout=30) == "done"
    with pytest.raises(Expired):
        queued.get(timeout=30)
    assert ran == ["ran"] and bcrypt_pool.dropped == 1
    with pytest.raises(Expired):  # a deadline already passed: never even queued
        bcrypt_pool.run(Job(deadline=time.monotonic() - 1), _slow, ran, 0.0)
    assert ran == ["ran"]
    bcrypt_pool.close()


def test_a_full_pool_is_unavailable_for_a_login(pool: ConnectionPool) -> None:
    bcrypt_pool = BcryptPool(threads=1, queue=0)
    blocker = gevent.spawn(bcrypt_pool.run, Job(), _slow, [], 1.0)
    gevent.sleep(0.05)
    with pytest.raises(AccountError) as info:
        login(pool, SETTINGS, "nobody", GOOD, bcrypt_pool)
    assert info.value.code is ErrorCode.UNAVAILABLE and "busy" in info.value.reason
    blocker.get(timeout=30)
    bcrypt_pool.close()
