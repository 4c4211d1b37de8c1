"""Account registration and login on the master (spec 3.1.3), against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from papertrader.config import Settings
from papertrader.master.accounts import LOGIN_FAILED, AccountError, login, register
from papertrader.protocol import ErrorCode
from papertrader.store import accounts as account_store
from papertrader.store.pool import ConnectionPool

SETTINGS = Settings(bcrypt_cost=4, min_password_length=8)


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(database_url, size=4)
    try:
        yield pool
    finally:
        pool.close()


def refused(pool: ConnectionPool, *args: str) -> AccountError:
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
    account = register(pool, rich, "bob", "bob@example.com", "password1")
    stored = account_store.get_account(pool, account.id)
    assert stored is not None and stored.cash == Decimal("250000.50")


def test_taken_username_and_email_are_refused_case_insensitively(pool: ConnectionPool) -> None:
    register(pool, SETTINGS, "alice", "alice@example.com", "password1")
    assert refused(pool, "ALICE", "other@example.com", "password1").code is ErrorCode.USERNAME_TAKEN
    assert refused(pool, "alice2", "Alice@Example.COM", "password1").code is ErrorCode.EMAIL_TAKEN


@pytest.mark.parametrize(
    "username", ["", "a" * 25, "has space", "semi;colon", "émile", "tab\tname"]
)
def test_invalid_usernames_are_refused(pool: ConnectionPool, username: str) -> None:
    error = refused(pool, username, "x@example.com", "password1")
    assert error.code is ErrorCode.INVALID_USERNAME
    assert "24 characters" in error.reason


def test_username_of_24_allowed_characters_is_accepted(pool: ConnectionPool) -> None:
    name = "A_b.c-9" + "x" * 17
    assert register(pool, SETTINGS, name, "x@example.com", "password1").username == name


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
    assert refused(pool, "carol", email, "password1").code is ErrorCode.INVALID_EMAIL


def test_short_and_huge_passwords_are_refused(pool: ConnectionPool) -> None:
    short = refused(pool, "dave", "dave@example.com", "1234567")
    assert short.code is ErrorCode.INVALID_PASSWORD
    assert "at least 8" in short.reason
    assert refused(pool, "dave", "dave@example.com", "p" * 1025).code is ErrorCode.INVALID_PASSWORD
    assert account_store.find_account_by_username(pool, "dave") is None


def test_unknown_user_and_wrong_password_look_the_same(pool: ConnectionPool) -> None:
    register(pool, SETTINGS, "erin", "erin@example.com", "right password")
    with pytest.raises(AccountError) as wrong:
        login(pool, SETTINGS, "erin", "wrong password")
    with pytest.raises(AccountError) as unknown:
        login(pool, SETTINGS, "nobody", "right password")
    assert (wrong.value.code, wrong.value.reason) == (unknown.value.code, unknown.value.reason)
    assert wrong.value.code is ErrorCode.INVALID_CREDENTIALS
    assert wrong.value.reason == LOGIN_FAILED


def test_long_passwords_keep_every_character(pool: ConnectionPool) -> None:
    """bcrypt alone reads 72 bytes; a difference after that must still matter."""
    password = "p" * 200
    register(pool, SETTINGS, "frank", "frank@example.com", password)
    assert login(pool, SETTINGS, "frank", password).username == "frank"
    with pytest.raises(AccountError):
        login(pool, SETTINGS, "frank", "p" * 199 + "q")


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
