"""The master's check of an ID token (OpenID Connect Core 1.0, section 3.1.3.7).

A token is accepted only if every one of these holds, in this order:

1. it is a compact JWS of reasonable size whose ``alg`` is an asymmetric
   signature algorithm (never ``none``, never an HMAC keyed with something
   public);
2. its ``kid`` is in the provider's published key set (fetched again once
   when it is not: the provider may have rotated its keys) and the signature
   verifies with that key;
3. ``iss`` is the configured issuer, ``aud`` contains one of our client ids
   (``client_id``, or the web page's ``web_client_id``; if it names other
   audiences too, ``azp`` is one of ours), ``exp`` is in the
   future and ``iat`` not in the future (both with ``clock_skew`` seconds of
   leeway), ``sub`` is present;
4. ``nonce`` equals the nonce the client generated for this sign-in.
   The device-code flow (RFC 8628) has no nonce: its tokens are sent with an
   empty nonce, must then carry none, and must have been issued within
   ``fresh_seconds``; the token itself takes the nonce's place below.

:meth:`IdTokenVerifier.consume` then spends the nonce (for a device-flow
token, the token's SHA-256): it is recorded in Redis until the token
expires, so the same token (or another with the same nonce) cannot sign in
twice. It is called only when the token grants
something (a session, a link, a deletion); a refusal such as "choose a
username first" lets the user try again with the same token.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError, JoseError
from joserfc.jwt import ClaimsOption

from papertrader.oidc.discovery import ProviderDirectory
from papertrader.oidc.providers import OidcProvider
from papertrader.store import keys

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
MAX_TOKEN_LENGTH = 16 * 1024
MIN_NONCE_LENGTH = 16
MAX_NONCE_LENGTH = 256


class TokenRefused(Exception):
    """The ID token is not acceptable; ``reason`` says why, for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedToken:
    """What a verified ID token says about the person who signed in."""

    provider: OidcProvider
    subject: str
    email: str
    email_verified: bool
    issued_at: int
    expires_at: int
    #: What makes this sign-in unique: the nonce, or for a device-flow token the token's hash.
    nonce: str


def _claim_bool(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


class IdTokenVerifier:
    """Verifies ID tokens of the providers of a :class:`ProviderDirectory`."""

    def __init__(
        self,
        directory: ProviderDirectory,
        client: redis.Redis,
        clock_skew: int = 60,
        clock: Callable[[], float] = time.time,
        fresh_seconds: int = 300,
    ) -> None:
        self.directory = directory
        self._redis = client
        self.clock_skew = clock_skew
        self.fresh_seconds = fresh_seconds
        self._clock = clock

    def verify(self, provider: OidcProvider, id_token: str, nonce: str) -> VerifiedToken:
        """The token's identity, or TokenRefused; ProviderUnavailable if keys cannot be had."""
        if nonce and not MIN_NONCE_LENGTH <= len(nonce) <= MAX_NONCE_LENGTH:
            raise TokenRefused(
                f"the nonce must be {MIN_NONCE_LENGTH} to {MAX_NONCE_LENGTH} characters"
            )
        if not id_token or len(id_token) > MAX_TOKEN_LENGTH:
            raise TokenRefused("the ID token is empty or too long")
        try:
            header = jws.extract_compact(id_token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeEncodeError):
            raise TokenRefused("the ID token is not a signed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise TokenRefused(f"the ID token's signature algorithm {alg!r} is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise TokenRefused("the ID token's key id is malformed")
        key_set = self.directory.keys(provider, kid)
        if kid is not None and not self.directory.knows_kid(provider, kid):
            raise TokenRefused(
                f"the ID token is signed with a key {provider.title} does not publish"
            )
        try:
            token = jwt.decode(id_token, key_set, algorithms=ALGORITHMS)
        except BadSignatureError:
            raise TokenRefused("the ID token's signature is not valid") from None
        except (JoseError, ValueError) as exc:
            raise TokenRefused(f"the ID token cannot be read ({exc.__class__.__name__})") from None
        claims = token.claims
        self._check_claims(provider, claims, nonce)
        email = claims.get("email")
        if not nonce:  # device flow: the token is its own nonce
            nonce = "token:" + hashlib.sha256(id_token.encode("ascii")).hexdigest()
        return VerifiedToken(
            provider=provider,
            subject=str(claims["sub"]),
            email=email if isinstance(email, str) else "",
            email_verified=_claim_bool(claims.get("email_verified")),
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            nonce=nonce,
        )

    def _check_claims(self, provider: OidcProvider, claims: dict[str, Any], nonce: str) -> None:
        options: dict[str, ClaimsOption] = {
            "iss": {"essential": True, "value": provider.issuer},
            "aud": {"essential": True, "values": list(provider.audiences)},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
        }
        if nonce:
            options["nonce"] = {"essential": True, "value": nonce}
        registry = jwt.JWTClaimsRegistry(now=int(self._clock()), leeway=self.clock_skew, **options)
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise TokenRefused("the ID token has expired: sign in again") from None
        except ClaimError as exc:
            claim = getattr(exc, "claim", "?")
            what = {
                "iss": f"was not issued by {provider.title} ({provider.issuer})",
                "aud": "was issued for another application (audience)",
                "nonce": "does not carry this sign-in's nonce",
                "iat": "is dated in the future",
                "nbf": "is not valid yet",
            }.get(claim, f"has a missing or invalid claim {claim!r}")
            raise TokenRefused(f"the ID token {what}") from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") not in provider.audiences:
            raise TokenRefused("the ID token was issued for another application (azp)")
        if not isinstance(claims.get("sub"), str) or not 1 <= len(claims["sub"]) <= 255:
            raise TokenRefused("the ID token's subject is malformed")
        if int(claims["iat"]) > self._clock() + self.clock_skew:
            raise TokenRefused("the ID token is dated in the future")
        if not nonce:
            if "nonce" in claims:
                raise TokenRefused("the ID token carries a nonce, but none was sent with it")
            if self._clock() - int(claims["iat"]) > self.fresh_seconds:
                raise TokenRefused("the ID token (without a nonce) is too old: sign in again")

    def consume(self, token: VerifiedToken) -> bool:
        """Spend the token's nonce; False if it was spent before (a replay)."""
        digest = hashlib.sha256(
            f"{token.provider.issuer}\0{token.nonce}".encode("utf-8", "surrogatepass")
        ).hexdigest()
        ttl = max(1, token.expires_at + self.clock_skew - int(self._clock()))
        return bool(self._redis.set(keys.oidc_nonce(digest), token.subject, nx=True, ex=ttl))
