"""Sign-in with an OpenID Connect provider (issue 12; spec 3.1.3 third-party logins).

LOGIN_OIDC(provider, id_token, nonce, remember, username) is answered like
LOGIN: AUTHENTICATED(account_id, username), after which the worker gives the
client its session exactly as for a password login (remember-me included),
or LOGIN_FAIL with a reason. The master decides, in this order:

1. the provider is configured, and the ID token verifies
   (:mod:`papertrader.oidc.verify`: signature, issuer, audience, expiry, nonce);
2. an account linked to this (issuer, subject) signs in;
3. otherwise this is a first sign-in. The provider must have verified the
   e-mail address. If an account already has that address, nothing is linked
   (LINK_REQUIRED): its owner must sign in to it and link the provider, so
   controlling a provider account with someone's e-mail never opens their
   PaperTrader account. Otherwise a new account without a password is made
   with the username the user chose (USERNAME_NEEDED when none was given).

The token's nonce is spent only when the token grants something, so a
"choose a username" refusal lets the client retry with the same token,
while a token that signed in once never signs in again.
"""

from __future__ import annotations

from loguru import logger

from papertrader.mail.smtp import masked
from papertrader.master.account_common import where
from papertrader.master.accounts import AccountError, check_username, signed_in
from papertrader.master.context import MasterContext
from papertrader.oidc.discovery import ProviderUnavailable
from papertrader.oidc.verify import TokenRefused, VerifiedToken
from papertrader.protocol import ErrorCode, Instruction, Message, reply_to
from papertrader.protocol.records import to_record
from papertrader.store import accounts as account_store
from papertrader.store import identities

REPLAYED = "this sign-in was already used (a token works once): sign in again"


def provider_names(ctx: MasterContext) -> str:
    names = [provider.name for provider in ctx.settings.oidc_providers]
    return ", ".join(names) if names else "none (this server has only password accounts)"


def verified_token(ctx: MasterContext, name: str, id_token: str, nonce: str) -> VerifiedToken:
    """The verified token of provider ``name``, or AccountError saying why not."""
    if ctx.oidc is None:
        raise AccountError(ErrorCode.UNKNOWN_PROVIDER, "this server offers no third-party sign-in")
    provider = ctx.oidc.directory.get(name)
    if provider is None:
        raise AccountError(
            ErrorCode.UNKNOWN_PROVIDER,
            f"no sign-in provider is called {name[:32]!r}; offered: {provider_names(ctx)}",
        )
    try:
        return ctx.oidc.verify(provider, id_token, nonce)
    except TokenRefused as exc:
        raise AccountError(ErrorCode.SIGN_IN_REFUSED, exc.reason) from None
    except ProviderUnavailable as exc:
        logger.warning("sign-in with {} not checked: {}", provider.name, exc)
        raise AccountError(
            ErrorCode.UNAVAILABLE,
            f"{provider.title}'s signing keys cannot be fetched right now: try again shortly",
        ) from None


def spend(ctx: MasterContext, token: VerifiedToken) -> None:
    """Spend the token's nonce, or AccountError if it was spent before (a replay)."""
    assert ctx.oidc is not None
    if not ctx.oidc.consume(token):
        raise AccountError(ErrorCode.SIGN_IN_REFUSED, REPLAYED)


def sign_in(
    ctx: MasterContext, name: str, id_token: str, nonce: str, username: str
) -> account_store.Account:
    """The account this provider sign-in opens (maybe a new one), or AccountError."""
    token = verified_token(ctx, name, id_token, nonce)
    provider = token.provider
    linked = identities.find(ctx.pool, provider.issuer, token.subject)
    if linked is not None:
        account = account_store.get_account(ctx.pool, linked.account_id)
        if account is None:  # deleted between the two reads
            raise AccountError(ErrorCode.UNKNOWN_USER, "the linked account no longer exists")
        spend(ctx, token)
        identities.touch(ctx.pool, provider.issuer, token.subject, token.email)
        return account
    if not token.email:
        raise AccountError(
            ErrorCode.SIGN_IN_REFUSED,
            f"{provider.title} did not share an e-mail address (the sign-in needs the email scope)",
        )
    if not token.email_verified:
        raise AccountError(
            ErrorCode.EMAIL_UNVERIFIED,
            f"{provider.title} has not verified the e-mail address {masked(token.email)}: "
            "verify it there first, or register with a password",
        )
    if account_store.find_account_by_email(ctx.pool, token.email) is not None:
        raise AccountError(
            ErrorCode.LINK_REQUIRED,
            f"an account with the e-mail address {masked(token.email)} already exists: sign in "
            f"to it (with its password) and link {provider.title} with "
            f"`pt client link {provider.name}`",
        )
    username = username.strip()
    if not username:
        raise AccountError(
            ErrorCode.USERNAME_NEEDED,
            f"first sign-in with {provider.title}: choose a username for your new account "
            f"(`pt client login --with {provider.name} --username NAME`)",
        )
    check_username(username)
    username_taken, email_taken = account_store.taken(ctx.pool, username, token.email)
    if username_taken:
        raise AccountError(ErrorCode.USERNAME_TAKEN, f"the username {username} is taken")
    if email_taken:  # appeared since the check above
        raise AccountError(ErrorCode.LINK_REQUIRED, "an account with this e-mail address exists")
    spend(ctx, token)
    try:
        account = account_store.create_account(
            ctx.pool,
            username,
            token.email,
            "",
            ctx.settings.starting_cash,
            email_verified=True,
            identity=account_store.NewIdentity(provider.name, provider.issuer, token.subject),
        )
    except account_store.AccountTaken as exc:
        if exc.what == "username":
            raise AccountError(
                ErrorCode.USERNAME_TAKEN, f"the username {username} is taken"
            ) from None
        raise AccountError(
            ErrorCode.SIGN_IN_REFUSED, "this sign-in was linked a moment ago: sign in again"
        ) from None
    logger.info(
        "registered account {} (id {}) with {}", account.username, account.id, provider.name
    )
    return account


def handle_login_oidc(ctx: MasterContext, request: Message) -> list[Message]:
    name = str(request.arg("provider"))
    try:
        account = sign_in(
            ctx,
            name,
            str(request.arg("id_token")),
            str(request.arg("nonce")),
            str(request.arg("username")),
        )
    except AccountError as exc:
        logger.info(
            "sign-in with {!r} refused from {}: {}", name[:32], where(request), exc.code.name
        )
        return [reply_to(request, Instruction.LOGIN_FAIL, int(exc.code), exc.reason)]
    logger.info(
        "sign-in of {} (id {}) with {} from {}", account.username, account.id, name, where(request)
    )
    return signed_in(ctx, request, account)


def handle_sign_in_options(ctx: MasterContext, request: Message) -> list[Message]:
    """The providers a client may offer, with what it needs to run their flow."""
    providers = tuple(to_record(p.public()) for p in ctx.settings.oidc_providers)
    return [reply_to(request, Instruction.SIGN_IN_OPTIONS, providers)]
