"""Sign-in with a provider from a program (RFC 8252, "OAuth 2.0 for Native Apps").

The steps, reusable by any client (the CLI is one; a desktop app or a test
drives the same objects):

1. ``PaperTraderClient.sign_in_options()`` names the providers and what the
   flow needs (issuer, client id, the installed-app client secret if any).
2. :class:`LoopbackFlow`: ``start()`` listens on ``127.0.0.1`` (a free port)
   and builds the authorization URL: code flow with PKCE (S256), a fresh
   ``state`` and ``nonce``, ``redirect_uri=http://127.0.0.1:PORT/callback``.
   Open it in a browser (on this machine, or anywhere: then paste the address
   the browser ended on into :meth:`LoopbackFlow.code_from_redirect`).
   ``wait()`` receives the code on the loopback redirect and checks ``state``;
   ``exchange(code)`` trades it, with the PKCE verifier, for the ID token.
3. :class:`DeviceFlow` (RFC 8628) for a machine without a browser: show
   ``user_code`` and ``verification_uri``, then ``poll()`` until the user has
   approved on another device. Its ID token carries no nonce (the server
   accepts such a token once, shortly after it was issued).
4. Send ``(provider, id_token, nonce)`` with ``PaperTraderClient.login_oidc``,
   ``link_provider`` or ``delete_account``.

PKCE helpers come from Authlib; the HTTP calls are plain ``requests`` with
timeouts. Nothing here needs gevent.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from papertrader.oidc.discovery import TIMEOUT, ProviderUnavailable, fetch_json

CALLBACK_PATH = "/callback"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
PAGE = (
    "<!doctype html><meta charset=utf-8><title>PaperTrader</title>"
    "<p>{message}</p><p>You can close this window and return to PaperTrader.</p>"
)


class SignInError(Exception):
    """The provider flow failed or was refused; the message is for the user."""


@dataclass(frozen=True)
class ProviderOptions:
    """One entry of ``sign_in_options()``: what a client needs to run the flow."""

    name: str
    display_name: str
    issuer: str
    client_id: str
    client_secret: str | None = None
    scopes: str = "openid email profile"

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ProviderOptions:
        return cls(
            name=str(record["name"]),
            display_name=str(record.get("display_name") or record["name"]),
            issuer=str(record["issuer"]),
            client_id=str(record["client_id"]),
            client_secret=record.get("client_secret") or None,
            scopes=str(record.get("scopes") or "openid email profile"),
        )

    def configuration(self) -> dict[str, Any]:
        """The provider's discovery document."""
        try:
            return fetch_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        except ProviderUnavailable as exc:
            raise SignInError(f"cannot reach {self.display_name}: {exc}") from None


@dataclass(frozen=True)
class Tokens:
    id_token: str
    nonce: str  # "" for the device flow


def _token_request(endpoint: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        response = requests.post(
            endpoint, data=data, timeout=TIMEOUT, headers={"Accept": "application/json"}
        )
    except requests.RequestException as exc:
        raise SignInError(f"the provider's token endpoint is unreachable ({exc})") from None
    try:
        body = response.json()
    except ValueError:
        raise SignInError(f"the token endpoint answered HTTP {response.status_code}") from None
    return response.status_code, body if isinstance(body, dict) else {}


def _client_auth(options: ProviderOptions) -> dict[str, str]:
    auth = {"client_id": options.client_id}
    if options.client_secret:
        auth["client_secret"] = options.client_secret
    return auth


@dataclass
class _Received:
    query: dict[str, str] | None = None
    event: threading.Event = field(default_factory=threading.Event)


class _Callback(BaseHTTPRequestHandler):
    received: _Received  # set on the per-flow subclass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != CALLBACK_PATH:
            self.send_error(404)
            return
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        ok = "code" in query
        message = "Signed in." if ok else f"Sign-in failed: {query.get('error', 'no code')}."
        body = PAGE.format(message=message).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.received.query is None:
            self.received.query = query
            self.received.event.set()

    def log_message(self, format: str, *args: Any) -> None:
        return


class LoopbackFlow:
    """Authorization code + PKCE with the redirect received on 127.0.0.1."""

    def __init__(self, options: ProviderOptions, port: int = 0) -> None:
        self.options = options
        self.port = port
        self.state = secrets.token_urlsafe(24)
        self.nonce = secrets.token_urlsafe(24)
        self.verifier = secrets.token_urlsafe(48)  # 64 characters, RFC 7636 section 4.1
        self._received = _Received()
        self._server: HTTPServer | None = None
        self._bound_port = 0
        self._config: dict[str, Any] | None = None

    @property
    def redirect_uri(self) -> str:
        """``http://127.0.0.1:PORT/callback``: the port is the one ``start()`` listened on."""
        assert self._bound_port, "start() first"
        return f"http://127.0.0.1:{self._bound_port}{CALLBACK_PATH}"

    def start(self) -> str:
        """Listen on the loopback redirect; returns the authorization URL to open."""
        self._config = self.options.configuration()
        endpoint = self._config.get("authorization_endpoint")
        if not isinstance(endpoint, str):
            raise SignInError(f"{self.options.display_name} publishes no authorization endpoint")
        handler = type("Callback", (_Callback,), {"received": self._received})
        self._server = HTTPServer(("127.0.0.1", self.port), handler)
        self._bound_port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        query = {
            "response_type": "code",
            "client_id": self.options.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.options.scopes,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": create_s256_code_challenge(self.verifier),
            "code_challenge_method": "S256",
        }
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _code(self, query: Mapping[str, str]) -> str:
        if query.get("state") != self.state:
            raise SignInError("the answer does not belong to this sign-in (state mismatch)")
        if "error" in query:
            detail = query.get("error_description") or query["error"]
            raise SignInError(f"{self.options.display_name} refused the sign-in: {detail}")
        code = query.get("code")
        if not code:
            raise SignInError("the redirect carries no authorization code")
        return code

    def wait(self, timeout: float = 300.0) -> str:
        """The authorization code from the loopback redirect (SignInError after ``timeout``)."""
        try:
            if not self._received.event.wait(timeout):
                raise SignInError(f"no answer from the browser within {timeout:g} s")
            assert self._received.query is not None
            return self._code(self._received.query)
        finally:
            self.close()

    def code_from_redirect(self, url: str) -> str:
        """The code from the address a browser elsewhere ended on (pasted by the user)."""
        parts = urlsplit(url.strip())
        if parts.path != CALLBACK_PATH:
            raise SignInError(f"that is not the {CALLBACK_PATH} address the browser ended on")
        self.close()
        return self._code({key: values[0] for key, values in parse_qs(parts.query).items()})

    def exchange(self, code: str) -> Tokens:
        """Trade the code (with the PKCE verifier) for the ID token."""
        assert self._config is not None, "start() first"
        status, body = _token_request(
            str(self._config["token_endpoint"]),
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": self.verifier,
                **_client_auth(self.options),
            },
        )
        if status != 200 or not isinstance(body.get("id_token"), str):
            detail = body.get("error_description") or body.get("error") or f"HTTP {status}"
            raise SignInError(f"{self.options.display_name} gave no ID token: {detail}")
        return Tokens(body["id_token"], self.nonce)

    def __enter__(self) -> LoopbackFlow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class DeviceStart:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


class DeviceFlow:
    """RFC 8628: approve the sign-in on another device, poll for the ID token here."""

    def __init__(
        self,
        options: ProviderOptions,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self._sleep = sleep
        self._clock = clock
        self._config: dict[str, Any] | None = None

    def start(self) -> DeviceStart:
        self._config = self.options.configuration()
        endpoint = self._config.get("device_authorization_endpoint")
        if not isinstance(endpoint, str):
            raise SignInError(
                f"{self.options.display_name} does not offer the device-code flow: "
                "use the browser sign-in"
            )
        status, body = _token_request(
            endpoint, {"scope": self.options.scopes, **_client_auth(self.options)}
        )
        if status != 200 or "device_code" not in body:
            detail = body.get("error_description") or body.get("error") or f"HTTP {status}"
            raise SignInError(f"{self.options.display_name} refused the device sign-in: {detail}")
        return DeviceStart(
            device_code=str(body["device_code"]),
            user_code=str(body["user_code"]),
            verification_uri=str(body.get("verification_uri") or body.get("verification_url")),
            verification_uri_complete=body.get("verification_uri_complete"),
            expires_in=int(body.get("expires_in", 600)),
            interval=int(body.get("interval", 5)),
        )

    def poll(self, started: DeviceStart) -> Tokens:
        """Wait until the user approved (or refused, or the code expired)."""
        assert self._config is not None, "start() first"
        deadline = self._clock() + started.expires_in
        interval = max(1, started.interval)
        while self._clock() < deadline:
            self._sleep(interval)
            status, body = _token_request(
                str(self._config["token_endpoint"]),
                {
                    "grant_type": DEVICE_GRANT,
                    "device_code": started.device_code,
                    **_client_auth(self.options),
                },
            )
            if status == 200 and isinstance(body.get("id_token"), str):
                return Tokens(body["id_token"], "")
            error = body.get("error")
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += 5
                continue
            if error == "access_denied":
                raise SignInError("the sign-in was refused on the other device")
            if error == "expired_token":
                break
            detail = body.get("error_description") or error or f"HTTP {status}"
            raise SignInError(f"{self.options.display_name} gave no ID token: {detail}")
        raise SignInError("the device code expired before the sign-in was approved")
