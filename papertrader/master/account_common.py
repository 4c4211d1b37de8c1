"""What the account handlers of issue 12 share: the caller's session, the two answers.

Every account change arrives from a worker with the client's session id in
the header (the worker has already checked it against the client's
address). The master looks the session up again in Redis: it is the
authority, and a session ended a moment ago must not change an account.
"""

from __future__ import annotations

from papertrader.master import passwords
from papertrader.master.accounts import AccountError, bcrypt_work, check_password
from papertrader.master.context import MasterContext
from papertrader.master.password_policy import MAX_PASSWORD_LENGTH
from papertrader.protocol import ErrorCode, Instruction, Message, reply_to
from papertrader.store import accounts as account_store
from papertrader.store.accounts import Account
from papertrader.store.sessions import Session, SessionError


def own_session(ctx: MasterContext, request: Message) -> tuple[Session, Account]:
    """The request's live session and its account, or AccountError.

    The session is checked again against the client address the worker
    stamped: a worker is trusted to say where a request came from, not to
    have checked the session.
    """
    client_ip = str(request.client_address) if request.client_address is not None else None
    try:
        session = ctx.sessions.get(request.session_id, client_ip)
    except SessionError as exc:
        raise AccountError(exc.code, exc.reason) from None
    account = account_store.get_account(ctx.pool, session.account_id)
    if account is None:
        raise AccountError(ErrorCode.INVALID_SESSION, "the session's account no longer exists")
    return session, account


def new_password_hash(ctx: MasterContext, account: Account, password: str) -> str:
    """The password policy for this account, then its bcrypt hash (off the event loop).

    The one place the account handlers of issue 12 hash a password, so they
    follow whatever ``accounts.check_password`` and ``passwords`` do for
    registration.
    """
    text = check_password(password, ctx.settings, account.username, account.email)
    return bcrypt_work(ctx.bcrypt, None, passwords.hash_password, text, ctx.settings.bcrypt_cost)


def password_matches(ctx: MasterContext, account: Account, password: str) -> bool:
    """Whether ``password`` is the account's; one bcrypt check of the same normalised
    input either way (an account without a password spends it on a dummy hash), in
    the master's bounded bcrypt pool (a full pool: AccountError UNAVAILABLE)."""
    if not account.is_password or len(password) > MAX_PASSWORD_LENGTH:
        cost = ctx.settings.bcrypt_cost
        bcrypt_work(ctx.bcrypt, None, passwords.burn_check, password, cost)
        return False
    return bcrypt_work(ctx.bcrypt, None, passwords.check_password, password, account.password_hash)


def done(request: Message, message: str) -> list[Message]:
    return [reply_to(request, Instruction.ACCOUNT_SUCCESS, message)]


def refused(request: Message, error: AccountError) -> list[Message]:
    return [reply_to(request, Instruction.ACCOUNT_FAIL, int(error.code), error.reason)]


def where(request: Message) -> str:
    return str(request.client_address) if request.client_address is not None else "?"
