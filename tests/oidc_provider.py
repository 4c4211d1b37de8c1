"""A real OpenID Connect provider for the tests, built on Authlib's server classes.

Run as a process on loopback (``oidc_fixtures.py`` starts it)::

    python tests/oidc_provider.py --port-file F --client-id ID [--client-secret S]
        [--web-client-id WEB_ID]

It serves what a real provider serves, over HTTP on 127.0.0.1 (the
master accepts plain http issuers only on loopback):

* ``/.well-known/openid-configuration`` (discovery);
* ``/jwks`` (the public signing keys; rotated by ``/test/rotate``);
* ``/authorize`` (authorization code, PKCE S256 required, nonce required):
  the "browser" is the test itself (or the test's Chromium), and the person
  signed in at the provider is the one ``/test/user`` chose, so the request
  is approved at once and answered with a redirect to the client's loopback
  ``redirect_uri`` (the CLI's ``http://127.0.0.1:PORT/callback``, or a web
  page's ``http(s)://127.0.0.1:PORT/``);
* ``/token`` (code exchange with the PKCE verifier, and the device-code
  grant), answering signed ID tokens for that person;
* ``/device_authorization`` (RFC 8628) and ``/test/device/approve``;
* with ``--web-client-id``, a second, public client for web pages, which may
  also ask for ``response_type=id_token`` (OpenID Connect's ID-token-only
  response, in the redirect's fragment), as Google's web clients may.

Discovery, keys and the token endpoint answer cross-origin requests
(``Access-Control-Allow-Origin: *``), as real providers do for browser
clients such as the web page.

Test-only controls (under ``/test/``, never part of a real provider):
``user`` (who is signed in: sub, email, email_verified), ``rotate`` (a new
signing key; ``keep`` leaves the old one published), ``mint`` (an ID token
with chosen claims, signed by the current key, a key not published, or a
forged key reusing the current key id), ``stop``.

Authlib does the protocol (grant validation, PKCE, OpenID ID-token
claims); this file supplies storage (dicts) and the signing keys (joserfc).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc8628 import DeviceAuthorizationEndpoint, DeviceCodeGrant
from authlib.oauth2.rfc8628.models import DeviceCredentialDict
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode, OpenIDImplicitGrant, OpenIDToken
from flask import Flask, jsonify, request
from joserfc import jwt
from joserfc.jwk import KeySet, KeySetSerialization, RSAKey
from werkzeug.serving import make_server

CODE_LIFETIME = 300
TOKEN_LIFETIME = 3600


class Keys:
    """The signing keys: the current one signs; ``published`` is what /jwks shows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current = self._new()
        self.published: list[RSAKey] = [self.current]

    @staticmethod
    def _new() -> RSAKey:
        # joserfc's generate_key returns typing.Self, which is Any to mypy's Python 3.10
        key: RSAKey = RSAKey.generate_key(
            2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"}
        )
        return key

    def rotate(self, keep: bool) -> str:
        with self.lock:
            self.current = self._new()
            self.published = [*self.published, self.current] if keep else [self.current]
            return str(self.current.kid)

    def jwks(self) -> KeySetSerialization:
        with self.lock:
            return KeySet(list(self.published)).as_dict(private=False)


class Client(ClientMixin):
    """The one registered client: loopback redirects only (RFC 8252 7.3), of a native app
    or of a web page served on loopback."""

    def __init__(
        self, client_id: str, secret: str | None, response_types: tuple[str, ...] = ("code",)
    ) -> None:
        self.client_id = client_id
        self.secret = secret
        self.response_types = response_types

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        allowed = {"openid", "email", "profile"}
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        parts = urlsplit(redirect_uri)
        loopback = parts.hostname == "127.0.0.1" and bool(parts.port)
        return parts.scheme in ("http", "https") and loopback

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret is None or secrets.compare_digest(client_secret or "", self.secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.secret is None:
            return method == "none"
        return method in ("client_secret_post", "client_secret_basic")

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.response_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", DeviceCodeGrant.GRANT_TYPE)


class Code(dict[str, Any]):
    """A stored authorization code (what Authlib's code grant reads back)."""

    def get_redirect_uri(self) -> str:
        return str(self["redirect_uri"])

    def get_scope(self) -> str:
        return str(self["scope"])

    def get_nonce(self) -> str | None:
        return self.get("nonce")

    def get_auth_time(self) -> int:
        return int(self["auth_time"])

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None

    @property
    def code_challenge(self) -> str | None:
        return self.get("code_challenge")

    @property
    def code_challenge_method(self) -> str | None:
        return self.get("code_challenge_method")

    def is_expired(self) -> bool:
        auth_time: int = self["auth_time"]
        return time.time() > auth_time + CODE_LIFETIME


class Provider:
    """Everything the provider remembers; one instance per process."""

    def __init__(
        self, issuer: str, client_id: str, secret: str | None, web_client_id: str | None = None
    ) -> None:
        self.issuer = issuer
        self.client = Client(client_id, secret)
        self.clients = {client_id: self.client}
        if web_client_id:
            self.clients[web_client_id] = Client(web_client_id, None, ("code", "id_token"))
        self.keys = Keys()
        self.user: dict[str, Any] = {
            "sub": "test-subject-1",
            "email": "tester@example.org",
            "email_verified": True,
        }
        self.codes: dict[str, Code] = {}
        self.devices: dict[str, DeviceCredentialDict] = {}
        self.approved: dict[str, dict[str, Any]] = {}

    def claims_for(self, user: dict[str, Any]) -> dict[str, Any]:
        return {"iss": self.issuer, "aud": [self.client.client_id], **user}


def build_app(provider: Provider) -> Flask:
    app = Flask("papertrader-test-oidc")
    app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"authorization_code": TOKEN_LIFETIME}

    def query_client(client_id: str) -> Client | None:
        return provider.clients.get(client_id)

    server = AuthorizationServer(app, query_client=query_client, save_token=lambda t, r: None)

    class IdTokens:
        """What both grants' OpenID extensions share: our keys, our issuer, our user."""

        def resolve_client_private_key(self, client: Client) -> RSAKey:
            return provider.keys.current

        def get_encode_header(self, client: Client) -> dict[str, str]:
            return {"alg": "RS256", "kid": str(provider.keys.current.kid)}

        def get_client_algorithm(self, client: Client) -> str:
            return "RS256"

        def get_client_claims(self, client: Client) -> dict[str, Any]:
            return {"iss": provider.issuer, "aud": [client.get_client_id()]}

        def generate_user_info(self, user: dict[str, Any], scope: str) -> UserInfo:
            info = UserInfo(sub=user["sub"])
            if "email" in scope.split():
                info["email"] = user["email"]
                info["email_verified"] = user["email_verified"]
            return info

    class OpenIdCode(IdTokens, OpenIDCode):
        def exists_nonce(self, nonce: str, req: Any) -> bool:
            return any(code.get("nonce") == nonce for code in provider.codes.values())

    class OpenIdDevice(IdTokens, OpenIDToken):
        pass

    class IdTokenOnly(IdTokens, OpenIDImplicitGrant):
        def exists_nonce(self, nonce: str, req: Any) -> bool:
            return False  # the relying party (the master) spends nonces

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

        def save_authorization_code(self, code: str, req: Any) -> None:
            provider.codes[code] = Code(
                redirect_uri=req.payload.redirect_uri,
                scope=req.payload.scope,
                nonce=req.payload.data.get("nonce"),
                auth_time=int(time.time()),
                code_challenge=req.payload.data.get("code_challenge"),
                code_challenge_method=req.payload.data.get("code_challenge_method"),
                user=req.user,
            )

        def query_authorization_code(self, code: str, client: Client) -> Code | None:
            found = provider.codes.get(code)
            return None if found is None or found.is_expired() else found

        def delete_authorization_code(self, code: Code) -> None:
            for key, value in list(provider.codes.items()):
                if value is code:
                    del provider.codes[key]

        def authenticate_user(self, code: Code) -> dict[str, Any]:
            return dict(code["user"])

    class DeviceGrant(DeviceCodeGrant):
        def query_device_credential(self, device_code: str) -> DeviceCredentialDict | None:
            return provider.devices.get(device_code)

        def query_user_grant(self, user_code: str) -> tuple[dict[str, Any], bool] | None:
            user = provider.approved.get(user_code)
            return None if user is None else (user, True)

        def should_slow_down(self, credential: Any) -> bool:
            return False

    class DeviceEndpoint(DeviceAuthorizationEndpoint):
        USER_CODE_TYPE = "string"

        def get_verification_uri(self) -> str:
            return provider.issuer + "/device"

        def save_device_credential(self, client_id: str, scope: str, data: dict[str, Any]) -> None:
            provider.devices[data["device_code"]] = DeviceCredentialDict(
                client_id=client_id, scope=scope, **data
            )

    server.register_grant(CodeGrant, [OpenIdCode(require_nonce=True), CodeChallenge(required=True)])
    server.register_grant(DeviceGrant, [OpenIdDevice()])
    server.register_grant(IdTokenOnly)
    server.register_endpoint(DeviceEndpoint)

    @app.after_request
    def cross_origin(response: Any) -> Any:
        if request.path in ("/.well-known/openid-configuration", "/jwks", "/token"):
            response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    @app.get("/.well-known/openid-configuration")
    def discovery() -> Any:
        base = provider.issuer
        return jsonify(
            issuer=base,
            authorization_endpoint=base + "/authorize",
            token_endpoint=base + "/token",
            device_authorization_endpoint=base + "/device_authorization",
            jwks_uri=base + "/jwks",
            response_types_supported=["code", "id_token"],
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=["RS256"],
            code_challenge_methods_supported=["S256"],
            grant_types_supported=["authorization_code", "implicit", DeviceCodeGrant.GRANT_TYPE],
            scopes_supported=["openid", "email", "profile"],
        )

    @app.get("/jwks")
    def jwks() -> Any:
        return jsonify(provider.keys.jwks())

    @app.get("/authorize")
    def authorize() -> Any:
        # The person signed in at the provider approves at once.
        return server.create_authorization_response(grant_user=dict(provider.user))

    @app.post("/token")
    def token() -> Any:
        return server.create_token_response()

    @app.post("/device_authorization")
    def device_authorization() -> Any:
        return server.create_endpoint_response(DeviceEndpoint.ENDPOINT_NAME)

    # -- test-only controls ------------------------------------------------------------
    @app.post("/test/user")
    def set_user() -> Any:
        provider.user = dict(request.get_json())
        return jsonify(provider.user)

    @app.post("/test/rotate")
    def rotate() -> Any:
        keep = bool((request.get_json(silent=True) or {}).get("keep"))
        return jsonify(kid=provider.keys.rotate(keep))

    @app.post("/test/device/approve")
    def approve_device() -> Any:
        provider.approved[str(request.get_json()["user_code"])] = dict(provider.user)
        return jsonify(ok=True)

    @app.post("/test/mint")
    def mint() -> Any:
        body = request.get_json()
        now = int(time.time())
        claims = {
            **provider.claims_for(provider.user),
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            **body.get("claims", {}),
        }
        claims = {key: value for key, value in claims.items() if value is not None}
        key = provider.keys.current
        sign_with = body.get("sign_with", "current")
        if sign_with == "unknown":
            key = Keys._new()
        elif sign_with == "forged":
            kid = provider.keys.current.kid
            assert kid is not None  # every key here is made with one
            key = RSAKey.generate_key(2048, parameters={"kid": kid})
        header = {"alg": "RS256", "kid": str(key.kid)}
        return jsonify(id_token=jwt.encode(header, claims, key))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", default=None)
    parser.add_argument("--web-client-id", default=None)
    args = parser.parse_args()
    # Authlib refuses plain http outside of this switch; the provider lives on loopback only.
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    holder: dict[str, Provider] = {}
    app_ref: dict[str, Flask] = {}

    def dispatch(environ: Any, start_response: Any) -> Any:
        return app_ref["app"](environ, start_response)

    http = make_server("127.0.0.1", 0, dispatch, threaded=True)
    port = http.server_port
    holder["provider"] = Provider(
        f"http://127.0.0.1:{port}", args.client_id, args.client_secret, args.web_client_id
    )
    app_ref["app"] = build_app(holder["provider"])
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(str(port))
    os.replace(tmp, args.port_file)
    print(f"test OpenID provider on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    http.serve_forever()


if __name__ == "__main__":
    main()
