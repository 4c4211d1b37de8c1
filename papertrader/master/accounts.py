"""Account management & authorization (spec 3.1.3): register and log in.

The master checks credentials and mints the session (``SessionStore.create``,
bound to the client address the worker stamped): workers may read sessions
but not write them (their Redis users, docs/REDIS.md), so a compromised
worker cannot make one for any account. AUTHENTICATED carries the new
session to the worker that asked. Every refusal is
an ``AccountError`` with the ErrorCode and a reason the user can act on.
Login failures give one reason for an unknown user and a wrong password, and
take the same time (a bcrypt check of the same normalised input runs in every
case, whatever the password's length), so neither the answer nor its timing
tells which usernames exist. bcrypt runs in the master's bounded pool with
the request's deadline: a full pool is UNAVAILABLE at once, and a request
given up meanwhile is dropped (``bcrypt_pool.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from loguru import logger

from papertrader.config import Settings
from papertrader.limits.subjects import address_subject, name_subject
from papertrader.master import passwords
from papertrader.master.bcrypt_pool import BcryptPool, Busy, Expired, Job
from papertrader.master.context import MasterContext
from papertrader.master.deadlines import current_job
from papertrader.master.password_policy import (
    MAX_PASSWORD_LENGTH,
    WeakPassword,
    check_new_password,
)
from papertrader.protocol import ErrorCode, Instruction, Message, reply_to
from papertrader.store import accounts as store
from papertrader.store import identities
from papertrader.store.pool import ConnectionPool

T = TypeVar("T")
U = TypeVar("U")
USERNAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,24}")
MAX_EMAIL_LENGTH = 321
MAX_EMAIL_LOCAL_LENGTH = 64
GIVEN_UP = "the request was given up before the master could check it: try again"
BUSY = "the master is busy checking passwords: try again in a few seconds"
LOGIN_FAILED = "unknown user or wrong password"
NO_PASSWORD = (
    "this account signs in with a third-party login and has no password: "
    "use that login, or add a password to the account first"
)


class AccountError(Exception):
    """A refused registration or login; ``code`` and ``reason`` go back to the client."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def check_username(username: str) -> None:
    if not USERNAME_RE.fullmatch(username):
        raise AccountError(
            ErrorCode.INVALID_USERNAME,
            "a username is 1 to 24 characters from A-Z, a-z, 0-9, underscore, dot and hyphen",
        )


def check_email(email: str) -> None:
    """A plausible shape, not RFC 5322 in full: whether mail arrives is not ours to know."""
    problem = None
    if len(email) > MAX_EMAIL_LENGTH:
        problem = f"is longer than {MAX_EMAIL_LENGTH} characters"
    elif any(ch.isspace() or not ch.isprintable() for ch in email):
        problem = "contains spaces or control characters"
    elif email.count("@") != 1:
        problem = "must contain exactly one @"
    else:
        local, domain = email.split("@")
        labels = domain.split(".")
        if not local:
            problem = "has nothing before the @"
        elif len(local) > MAX_EMAIL_LOCAL_LENGTH:
            problem = f"has more than {MAX_EMAIL_LOCAL_LENGTH} characters before the @"
        elif len(labels) < 2 or not all(labels):
            problem = "needs a domain like example.com after the @"
    if problem is not None:
        raise AccountError(ErrorCode.INVALID_EMAIL, f"the e-mail address {problem}")


def check_password(password: str, settings: Settings, username: str = "", email: str = "") -> str:
    """The password policy (``password_policy.py``); the NFKC form to hash."""
    try:
        return check_new_password(
            password,
            username=username,
            email=email,
            min_length=settings.min_password_length,
            min_score=settings.min_password_score,
        )
    except WeakPassword as exc:
        raise AccountError(ErrorCode.INVALID_PASSWORD, str(exc)) from None


def register(
    pool: ConnectionPool,
    settings: Settings,
    username: str,
    email: str,
    password: str,
    bcrypt_pool: BcryptPool | None = None,
    job: Job | None = None,
) -> store.Account:
    """Create a password account with the starting cash, or raise ``AccountError``."""
    check_username(username)
    check_email(email)
    password = check_password(password, settings, username, email)
    username_taken, email_taken = store.taken(pool, username, email)
    if username_taken:
        raise AccountError(ErrorCode.USERNAME_TAKEN, f"the username {username} is taken")
    if email_taken:
        raise AccountError(ErrorCode.EMAIL_TAKEN, "an account with this e-mail address exists")
    password_hash = bcrypt_work(
        bcrypt_pool, job, passwords.hash_password, password, settings.bcrypt_cost
    )
    try:
        account = store.create_account(pool, username, email, password_hash, settings.starting_cash)
    except store.AccountTaken as exc:  # lost a race with another registration
        if exc.what == "username":
            raise AccountError(
                ErrorCode.USERNAME_TAKEN, f"the username {username} is taken"
            ) from None
        raise AccountError(
            ErrorCode.EMAIL_TAKEN, "an account with this e-mail address exists"
        ) from None
    logger.info("registered account {} (id {})", account.username, account.id)
    return account


def no_password_reason(pool: ConnectionPool, settings: Settings, account_id: int) -> str:
    """ "this account signs in with Google: ..." (spec 3.1.3: ask for the third-party login)."""
    titles = {provider.name: provider.title for provider in settings.oidc_providers}
    linked = [identity.provider for identity in identities.of_account(pool, account_id)]
    if not linked:
        return NO_PASSWORD
    names = " or ".join(titles.get(name, name.capitalize()) for name in linked)
    return (
        f"this account signs in with {names}: use `pt client login --with {linked[0]}` "
        "(a password can be added once signed in)"
    )


_default_pool: BcryptPool | None = None


def bcrypt_work(
    bcrypt_pool: BcryptPool | None,
    job: Job | None,
    work: Callable[[BcryptPool, Job, str, U], T],
    password: str,
    extra: U,
) -> T:
    """``work(pool, job, password, extra)`` in the bcrypt pool: a full pool (Busy) or a
    request given up meanwhile (Expired) is UNAVAILABLE at once, never computed."""
    global _default_pool
    if bcrypt_pool is None:  # tools and tests without a master
        _default_pool = _default_pool or BcryptPool()
        bcrypt_pool = _default_pool
    try:
        return work(bcrypt_pool, job or current_job() or Job(), password, extra)
    except Busy:
        raise AccountError(ErrorCode.UNAVAILABLE, BUSY) from None
    except Expired:
        logger.info("a password check was dropped: its request was given up before it ran")
        raise AccountError(ErrorCode.UNAVAILABLE, GIVEN_UP) from None


def login(
    pool: ConnectionPool,
    settings: Settings,
    username: str,
    password: str,
    bcrypt_pool: BcryptPool | None = None,
    job: Job | None = None,
) -> store.Account:
    """The account these credentials open, or ``AccountError(INVALID_CREDENTIALS)``.

    Exactly one bcrypt check runs on every path, over the same normalised input.
    An account without a password is answered "this account signs in with
    <provider>" after the same bcrypt work as a wrong password.
    """
    account = None
    if USERNAME_RE.fullmatch(username):
        account = store.find_account_by_username(pool, username)
    if account is None or not account.is_password:
        reason = LOGIN_FAILED if account is None else no_password_reason(pool, settings, account.id)
        bcrypt_work(bcrypt_pool, job, passwords.burn_check, password, settings.bcrypt_cost)
        raise AccountError(ErrorCode.INVALID_CREDENTIALS, reason)
    matches = bcrypt_work(
        bcrypt_pool, job, passwords.check_password, password, account.password_hash
    )
    if not matches or len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(ErrorCode.INVALID_CREDENTIALS, LOGIN_FAILED)
    if settings.email_verification and not account.email_verified:
        raise AccountError(
            ErrorCode.EMAIL_UNVERIFIED,
            "confirm your e-mail address first with the code we mailed "
            "(`pt client email verify --code CODE`); no mail? "
            f"`pt client password forgot {account.username}` sends a code that also confirms it",
        )
    return account


def _where(request: Message) -> str:
    return str(request.client_address) if request.client_address is not None else "?"


def signed_in(ctx: MasterContext, request: Message, account: store.Account) -> list[Message]:
    """The answer to every successful sign-in, password (LOGIN) or provider (LOGIN_OIDC):
    the one place a sign-in turns into a session, minted here, on the master."""
    if request.client_address is None:
        logger.warning("sign-in of {} forwarded without the client's address", account.username)
        return [
            reply_to(
                request,
                Instruction.LOGIN_FAIL,
                int(ErrorCode.INTERNAL),
                "the worker did not say where you connect from: try again",
            )
        ]
    session = ctx.sessions.create(
        account.id, account.username, str(request.client_address), bool(request.arg("remember"))
    )
    return [
        reply_to(
            request,
            Instruction.AUTHENTICATED,
            account.id,
            account.username,
            session.session_id,
            session.expires_at,
        )
    ]


def handle_register(ctx: MasterContext, request: Message) -> list[Message]:
    username, email, password = (
        str(request.arg("username")),
        str(request.arg("email")),
        str(request.arg("password")),
    )
    try:
        account = register(ctx.pool, ctx.settings, username, email, password, ctx.bcrypt)
    except AccountError as exc:
        logger.info("registration refused from {}: {}", _where(request), exc.code.name)
        return [reply_to(request, Instruction.REGISTER_FAIL, int(exc.code), exc.reason)]
    return [reply_to(request, Instruction.REGISTER_SUCCESS, account.username)]


def handle_login(ctx: MasterContext, request: Message) -> list[Message]:
    """LOGIN: the username's back-off first (enforced here, where the password is checked,
    whatever the worker did), then the password; each outcome is counted in it."""
    username, password = str(request.arg("username")), str(request.arg("password"))
    user = name_subject(username)
    where = request.client_address
    address = address_subject(str(where)) if where is not None else ""
    backoff = ctx.login_backoff
    waiting = backoff.wait(user, address)
    if waiting is not None:
        logger.info("login refused for {!r} from {}: its back-off", username[:40], _where(request))
        reason = backoff.refusal(waiting)
        return [reply_to(request, Instruction.LOGIN_FAIL, int(ErrorCode.RATE_LIMITED), reason)]
    try:
        account = login(ctx.pool, ctx.settings, username, password, ctx.bcrypt)
    except AccountError as exc:
        logger.info(
            "login refused for {!r} from {}: {}", username[:40], _where(request), exc.code.name
        )
        reason = exc.reason
        if exc.code is ErrorCode.INVALID_CREDENTIALS:
            reason = backoff.imposed(reason, backoff.failed(user, address))
        return [reply_to(request, Instruction.LOGIN_FAIL, int(exc.code), reason)]
    logger.info("login of {} (id {}) from {}", account.username, account.id, _where(request))
    answers = signed_in(ctx, request, account)
    if answers[0].instruction is Instruction.AUTHENTICATED:
        backoff.succeeded(user, address)
    return answers
