"""Forgotten passwords and e-mail verification: codes mailed to the owner (issue 12).

PASSWORD_FORGOT(who) takes a username or an e-mail address and always gets
the same answer, whether or not an account matches, and in the same time:
the code is issued and mailed from a greenlet of its own after the answer
has gone, so neither the words nor the timing tell whether the account
exists. At most ``forgot_rate_per_account`` mails go to one account (more
requests are answered the same and mail nothing); the worker limits
requests per address and per name before they get here.

A code (:mod:`papertrader.store.account_codes`) is stored only as its
SHA-256, works once, for ``reset_code_minutes`` (30) minutes, and asking for
a new one withdraws the older. PASSWORD_RESET(code, new) sets the new
password (the password policy applies), marks the e-mail address verified
(the code proved the mailbox) and ends every session of the account.

With ``email_verification`` on, a new password account is mailed a
``verify`` code (EMAIL_VERIFY(code) confirms it) and cannot log in until it
has confirmed its address, by that code or by a password reset.
"""

from __future__ import annotations

from datetime import timedelta

import gevent
from loguru import logger

from papertrader.limits.limiter import RateLimiter, Refused, Rule
from papertrader.mail.messages import reset_mail, verify_mail
from papertrader.mail.smtp import MailError, masked
from papertrader.master import accounts
from papertrader.master.account_common import done, new_password_hash, refused, where
from papertrader.master.accounts import AccountError
from papertrader.master.context import MasterContext
from papertrader.protocol import ErrorCode, Instruction, Message
from papertrader.store import account_codes
from papertrader.store import accounts as account_store
from papertrader.store.accounts import Account

CODE_INVALID = (
    "this code is unknown, already used or expired: ask for a new one with "
    "`pt client password forgot USERNAME`"
)


def forgot_answer(minutes: int) -> str:
    return (
        "if an account matches, a reset code is on its way to its e-mail address; "
        f"it works once, for {minutes} minutes"
    )


def _mail(ctx: MasterContext, account: Account, purpose: str) -> None:
    """Issue a code of ``purpose`` and mail it (runs in its own greenlet: logs, never raises)."""
    minutes = ctx.settings.reset_code_minutes
    try:
        if ctx.mailer is None or not ctx.mailer.configured:
            logger.warning(
                "a {} code for {} was asked for, but no mail server is configured (smtp_host)",
                purpose,
                account.username,
            )
            return
        code = account_codes.issue(
            ctx.pool, account.id, purpose, account.email, timedelta(minutes=minutes)
        )
        writer = reset_mail if purpose == "reset" else verify_mail
        subject, body = writer(account.username, code, minutes)
        ctx.mailer.send(account.email, subject, body)
    except MailError as exc:
        logger.warning("{} mail for {} not sent: {}", purpose, account.username, exc)
    except Exception:
        logger.exception("{} mail for {} failed", purpose, account.username)


def _find(ctx: MasterContext, who: str) -> Account | None:
    who = who.strip()
    if not who or len(who) > accounts.MAX_EMAIL_LENGTH:
        return None
    if "@" in who:
        return account_store.find_account_by_email(ctx.pool, who)
    if not accounts.USERNAME_RE.fullmatch(who):
        return None
    return account_store.find_account_by_username(ctx.pool, who)


def handle_forgot(ctx: MasterContext, request: Message) -> list[Message]:
    who = str(request.arg("who"))
    account = _find(ctx, who)
    if account is not None:
        rule = Rule("forgot-account", ctx.settings.forgot_rate_per_account)
        if isinstance(RateLimiter(ctx.redis).check(rule, str(account.id)), Refused):
            logger.info("reset for {} asked again too soon: not mailed", account.username)
        else:
            logger.info("password reset asked for {} from {}", account.username, where(request))
            gevent.spawn(_mail, ctx, account, "reset")
    else:
        logger.info("password reset asked from {} for no account", where(request))
    return done(request, forgot_answer(ctx.settings.reset_code_minutes))


def reset(ctx: MasterContext, request: Message) -> str:
    code, new = str(request.arg("code")), str(request.arg("new"))
    if not code.strip() or len(code) > 256:
        raise AccountError(ErrorCode.RESET_CODE_INVALID, CODE_INVALID)
    owner = account_codes.peek(ctx.pool, code, "reset")
    account = None if owner is None else account_store.get_account(ctx.pool, owner)
    if account is None:
        raise AccountError(ErrorCode.RESET_CODE_INVALID, CODE_INVALID)
    password_hash = new_password_hash(ctx, account, new)  # the code is not spent on a bad one
    used = account_codes.use(ctx.pool, code, "reset")
    if used is None or used.account_id != account.id:  # spent by a concurrent request
        raise AccountError(ErrorCode.RESET_CODE_INVALID, CODE_INVALID)
    if not account_store.set_password_hash(ctx.pool, used.account_id, password_hash):
        raise AccountError(ErrorCode.RESET_CODE_INVALID, CODE_INVALID)  # deleted meanwhile
    account_store.mark_email_verified(ctx.pool, used.account_id, used.email)
    ended = ctx.sessions.end_all(used.account_id)
    logger.info(
        "password reset with a mailed code for account {} ({}); {} sessions ended",
        used.account_id,
        masked(used.email),
        ended,
    )
    return f"password changed; {ended} session(s) signed out: log in with the new password"


def verify_email(ctx: MasterContext, request: Message) -> str:
    code = str(request.arg("code"))
    used = account_codes.use(ctx.pool, code, "verify") if 0 < len(code) <= 256 else None
    if used is None or not account_store.mark_email_verified(ctx.pool, used.account_id, used.email):
        raise AccountError(
            ErrorCode.RESET_CODE_INVALID,
            "this code is unknown, already used or expired (a password reset also confirms "
            "the address: `pt client password forgot USERNAME`)",
        )
    logger.info("e-mail address of account {} confirmed", used.account_id)
    return "e-mail address confirmed"


_CHANGES = {Instruction.PASSWORD_RESET: reset, Instruction.EMAIL_VERIFY: verify_email}


def handle_change(ctx: MasterContext, request: Message) -> list[Message]:
    try:
        return done(request, _CHANGES[request.instruction](ctx, request))
    except AccountError as exc:
        return refused(request, exc)


def handle_register(ctx: MasterContext, request: Message) -> list[Message]:
    """REGISTER as ``accounts.handle_register`` answers it, then the verification mail."""
    answer = accounts.handle_register(ctx, request)
    if ctx.settings.email_verification and answer[0].instruction is Instruction.REGISTER_SUCCESS:
        account = account_store.find_account_by_username(ctx.pool, str(answer[0].arg("username")))
        if account is not None:
            gevent.spawn(_mail, ctx, account, "verify")
    return answer
