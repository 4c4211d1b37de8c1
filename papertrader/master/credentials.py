"""The ways into an account: password and linked providers (issue 12, spec 3.1.3).

An account always keeps at least one way in. Every change here needs the
owner's signed-in session, and changing or removing an existing password
also needs that password:

* PASSWORD_SET(current, new): add a password to an account without one
  (``current`` empty; the session is the proof), or change it (``current``
  must be right). Every other session of the account ends.
* PASSWORD_REMOVE(current): only while a provider stays linked.
* PROVIDER_LINK(provider, id_token, nonce): a fresh provider sign-in,
  proved by its verified ID token, joins the signed-in account. This is the
  only way an existing account gains a provider: a sign-in is never linked
  by e-mail address alone.
* PROVIDER_UNLINK(provider): only while a password or another provider remains.
* GET_SIGN_IN_METHODS: whether the account has a password, and its providers.
"""

from __future__ import annotations

from loguru import logger

from papertrader.master.account_common import (
    done,
    new_password_hash,
    own_session,
    password_matches,
    refused,
)
from papertrader.master.accounts import AccountError
from papertrader.master.context import MasterContext
from papertrader.master.signin import spend, verified_token
from papertrader.protocol import ErrorCode, Instruction, Message, max_chunk_size, packets_for
from papertrader.protocol.records import to_record
from papertrader.store import accounts as account_store
from papertrader.store import identities
from papertrader.store.accounts import Account

WRONG_PASSWORD = "the current password is wrong"


def require_password(ctx: MasterContext, account: Account, password: str) -> None:
    """AccountError unless ``password`` is the account's (bcrypt, off the loop)."""
    if not password_matches(ctx, account, password):
        if not account.is_password:
            raise AccountError(ErrorCode.INVALID_CREDENTIALS, "this account has no password")
        raise AccountError(ErrorCode.INVALID_CREDENTIALS, WRONG_PASSWORD)


def provider_title(ctx: MasterContext, name: str) -> str:
    for provider in ctx.settings.oidc_providers:
        if provider.name == name:
            return provider.title
    return name.capitalize()


def set_password(ctx: MasterContext, request: Message) -> str:
    session, account = own_session(ctx, request)
    current, new = str(request.arg("current")), str(request.arg("new"))
    if account.is_password:
        if not current:
            raise AccountError(
                ErrorCode.INVALID_CREDENTIALS, "give the current password to change it"
            )
        require_password(ctx, account, current)
    password_hash = new_password_hash(ctx, account, new)
    if not account_store.set_password_hash(ctx.pool, account.id, password_hash):
        raise AccountError(ErrorCode.INVALID_SESSION, "the session's account no longer exists")
    ended = ctx.sessions.end_all(account.id, keep=session.session_id)
    verb = "changed" if account.is_password else "added"
    logger.info(
        "password {} for {} (id {}); {} other sessions ended",
        verb,
        account.username,
        account.id,
        ended,
    )
    return f"password {verb}; {ended} other session(s) signed out"


def remove_password(ctx: MasterContext, request: Message) -> str:
    _, account = own_session(ctx, request)
    require_password(ctx, account, str(request.arg("current")))
    if not account_store.remove_password(ctx.pool, account.id):
        raise AccountError(
            ErrorCode.LAST_WAY_IN,
            "the password is this account's only way in: link a provider first "
            "(`pt client link NAME`)",
        )
    logger.info("password removed for {} (id {})", account.username, account.id)
    return "password removed: sign in with your linked provider from now on"


def link_provider(ctx: MasterContext, request: Message) -> str:
    _, account = own_session(ctx, request)
    token = verified_token(
        ctx, str(request.arg("provider")), str(request.arg("id_token")), str(request.arg("nonce"))
    )
    provider = token.provider
    spend(ctx, token)
    try:
        identities.link(
            ctx.pool, account.id, provider.name, provider.issuer, token.subject, token.email
        )
    except identities.IdentityTaken as exc:
        if exc.what == "provider":
            raise AccountError(
                ErrorCode.NOT_ALLOWED,
                f"this account is already linked to a {provider.title} sign-in: unlink it first",
            ) from None
        raise AccountError(
            ErrorCode.NOT_ALLOWED,
            f"this {provider.title} sign-in belongs to another PaperTrader account",
        ) from None
    if token.email_verified and token.email.lower() == account.email.lower():
        account_store.mark_email_verified(ctx.pool, account.id, account.email)
    logger.info("{} linked to {} (id {})", provider.name, account.username, account.id)
    return f"{provider.title} linked: you can sign in with it"


def unlink_provider(ctx: MasterContext, request: Message) -> str:
    _, account = own_session(ctx, request)
    name = str(request.arg("provider")).strip().lower()
    linked = {identity.provider for identity in identities.of_account(ctx.pool, account.id)}
    title = provider_title(ctx, name)
    if name not in linked:
        raise AccountError(ErrorCode.UNKNOWN_PROVIDER, f"{title} is not linked to this account")
    if not identities.unlink(ctx.pool, account.id, name):
        raise AccountError(
            ErrorCode.LAST_WAY_IN,
            f"{title} is this account's only way in: add a password first "
            "(`pt client password add`)",
        )
    logger.info("{} unlinked from {} (id {})", name, account.username, account.id)
    return f"{title} unlinked"


_CHANGES = {
    Instruction.PASSWORD_SET: set_password,
    Instruction.PASSWORD_REMOVE: remove_password,
    Instruction.PROVIDER_LINK: link_provider,
    Instruction.PROVIDER_UNLINK: unlink_provider,
}


def handle_change(ctx: MasterContext, request: Message) -> list[Message]:
    try:
        return done(request, _CHANGES[request.instruction](ctx, request))
    except AccountError as exc:
        return refused(request, exc)


def handle_sign_in_methods(ctx: MasterContext, request: Message) -> list[Message]:
    """DATA: {username, email, email_verified, has_password, providers: [{name, ...}]}."""
    try:
        _, account = own_session(ctx, request)
    except AccountError as exc:
        return [
            Message(
                Instruction.DATA_FAIL, (int(exc.code), exc.reason), request_id=request.request_id
            )
        ]
    linked = identities.of_account(ctx.pool, account.id)
    record = {
        "username": account.username,
        "email": account.email,
        "email_verified": account.email_verified,
        "has_password": account.is_password,
        "providers": tuple(
            to_record(
                {
                    "name": identity.provider,
                    "display_name": provider_title(ctx, identity.provider),
                    "email": identity.email,
                    "linked_at": identity.linked_at,
                    "last_login_at": identity.last_login_at,
                }
            )
            for identity in linked
        ),
    }
    return packets_for(
        to_record(record),
        chunk_size=max_chunk_size(ctx.settings.max_data_size),
        request_id=request.request_id,
    )
