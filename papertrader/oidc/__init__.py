"""OpenID Connect sign-in (issue 12; spec 3.1.3 "third-party logins such as Google").

* :mod:`.providers`: a configured provider (issuer, client id, display name),
  parsed from the ``oidc_providers`` setting.
* :mod:`.discovery`: the provider's published configuration and signing keys
  (``/.well-known/openid-configuration``, JWKS), fetched with short
  timeouts, cached, the keys refreshed when a token names an unknown ``kid``.
* :mod:`.verify`: the master's check of every ID token: signature, issuer,
  audience, expiry, nonce (joserfc, the JOSE library of Authlib's authors).
* :mod:`.native`: the client side for programs (RFC 8252): authorization
  code with PKCE on a loopback redirect, or the device-code flow; reusable by
  any client, the CLI is one.
"""
