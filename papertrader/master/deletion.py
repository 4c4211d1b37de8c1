"""Deleting one's own account (issue 12).

ACCOUNT_DELETE(password, provider, id_token, nonce) needs the signed-in
session and a proof that its owner is at the keyboard now: the account's
password, or a sign-in with a linked provider made in the last
``oidc_fresh_seconds`` (its ID token's ``iat``; the token is spent).

What happens (documented in the README, "Deleting an account"): every
session ends; the account row, its positions, its transaction history, its
rejected orders, its linked sign-ins and its mailed codes are deleted in one
transaction (nothing is kept in anonymised form: a practice account's trades
are of no use to anyone else); an order still queued for it is rejected by
the drain. The username cannot be registered by anybody for
``username_retirement_days`` (90) days, so no one can pose as the person who
left; the e-mail address is free at once.
"""

from __future__ import annotations

import time

from loguru import logger

from papertrader.master.account_common import done, own_session, refused
from papertrader.master.accounts import AccountError
from papertrader.master.context import MasterContext
from papertrader.master.credentials import require_password
from papertrader.master.signin import spend, verified_token
from papertrader.protocol import ErrorCode, Message
from papertrader.store import accounts as account_store
from papertrader.store import identities
from papertrader.store.accounts import Account


def _prove(ctx: MasterContext, request: Message, account: Account) -> None:
    password = str(request.arg("password"))
    provider = str(request.arg("provider")).strip()
    if password:
        require_password(ctx, account, password)
        return
    if not provider:
        raise AccountError(
            ErrorCode.PROOF_REQUIRED,
            "deleting the account needs its password, or a fresh sign-in with a linked provider",
        )
    token = verified_token(ctx, provider, str(request.arg("id_token")), str(request.arg("nonce")))
    linked = identities.find(ctx.pool, token.provider.issuer, token.subject)
    if linked is None or linked.account_id != account.id:
        raise AccountError(
            ErrorCode.PROOF_REQUIRED,
            f"this {token.provider.title} sign-in is not linked to the account being deleted",
        )
    if time.time() - token.issued_at > ctx.settings.oidc_fresh_seconds:
        raise AccountError(
            ErrorCode.PROOF_REQUIRED,
            f"the {token.provider.title} sign-in is older than "
            f"{ctx.settings.oidc_fresh_seconds} s: sign in again to confirm",
        )
    spend(ctx, token)


def delete(ctx: MasterContext, request: Message) -> str:
    _, account = own_session(ctx, request)
    _prove(ctx, request, account)
    ended = ctx.sessions.end_all(account.id)
    days = ctx.settings.username_retirement_days
    if account_store.delete_account(ctx.pool, account.id, days) is None:
        raise AccountError(ErrorCode.INVALID_SESSION, "the account no longer exists")
    ctx.sessions.end_all(account.id)  # a session made while the row was being deleted
    logger.info(
        "account {} (id {}) deleted by its owner; {} sessions ended",
        account.username,
        account.id,
        ended,
    )
    return (
        f"account {account.username} deleted with its positions and history; "
        f"the username stays reserved for {days} days"
    )


def handle_delete(ctx: MasterContext, request: Message) -> list[Message]:
    try:
        return done(request, delete(ctx, request))
    except AccountError as exc:
        return refused(request, exc)
