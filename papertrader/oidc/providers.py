"""A configured OpenID Connect provider, as the ``oidc_providers`` setting describes it.

One entry per provider::

    oidc_providers = [
      { name = "google", issuer = "https://accounts.google.com",
        client_id = "1234-abc.apps.googleusercontent.com",
        client_secret = "GOCSPX-...", display_name = "Google" },
    ]

``name`` is what users type (``pt client login --with google``); ``issuer``
must be https (plain http only for a loopback address, for tests and local
providers); ``client_id`` is the audience every ID token must carry.
``client_secret`` is the secret of an *installed-application* client (Google
calls it "Desktop app"): RFC 8252 section 8.5 treats it as public, and the
master hands it to the clients that run the flow. Never configure a
confidential web client's secret here. It is still masked in logs.

The website client (``web/static/js/provider_signin.js``) runs the flow in
the browser, with ``client_id``, or with ``web_client_id`` when the page has
a registration of its own (Google: a *Web application* client; its redirect
URIs are the workers' page origins). ``web_flow`` is how: ``"code"``
(default: authorization code with PKCE, the code traded by the page at the
provider's token endpoint, for providers that accept a public browser
client), or ``"id_token"`` (OpenID Connect's ``response_type=id_token``: the
ID token comes back in the page's fragment, nonce-bound; no access token is
issued, no secret needed: what Google offers a page without a server). The
master accepts ID tokens whose audience is either client id.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_\-]{0,31}")
_KEYS = {
    "name", "issuer", "client_id", "client_secret", "display_name", "scopes",
    "web_client_id", "web_flow",
}  # fmt: skip
DEFAULT_SCOPES = ("openid", "email", "profile")
#: How the web page signs in (see the module's docstring).
WEB_FLOWS = ("code", "id_token")


@dataclass(frozen=True)
class OidcProvider:
    name: str
    issuer: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    display_name: str = ""
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    web_client_id: str | None = None
    web_flow: str = "code"

    @property
    def audiences(self) -> tuple[str, ...]:
        """The client ids an ID token may be issued to: the programs' and the web page's."""
        return (self.client_id, self.web_client_id) if self.web_client_id else (self.client_id,)

    @property
    def title(self) -> str:
        """How users are told about it: "this account signs in with Google"."""
        return self.display_name or self.name.capitalize()

    def public(self) -> dict[str, Any]:
        """What a client needs to run the sign-in flow (GET_SIGN_IN_OPTIONS)."""
        return {
            "name": self.name,
            "display_name": self.title,
            "issuer": self.issuer,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "scopes": " ".join(self.scopes),
            "web_client_id": self.web_client_id,
            "web_flow": self.web_flow,
        }


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_issuer(issuer: str) -> str:
    """The issuer URL without a trailing slash; ValueError if it is not usable."""
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"issuer {issuer!r} is not an https:// URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError(f"issuer {issuer!r} must use https:// (http only on loopback)")
    if parts.query or parts.fragment:
        raise ValueError(f"issuer {issuer!r} must not have a query or fragment")
    return issuer.rstrip("/")


def parse_provider(entry: Mapping[str, Any]) -> OidcProvider:
    """One provider from a TOML table or JSON object; ValueError naming the problem."""
    if not isinstance(entry, Mapping):
        raise ValueError("each provider is a table {name, issuer, client_id, ...}")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ValueError(f"unknown provider keys {sorted(unknown)} (allowed: {sorted(_KEYS)})")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError("a provider name is 1 to 32 characters from a-z 0-9 _ - (e.g. google)")
    issuer = entry.get("issuer")
    if not isinstance(issuer, str):
        raise ValueError(f"provider {name}: issuer is missing")
    client_id = entry.get("client_id")
    if not isinstance(client_id, str) or not client_id.strip():
        raise ValueError(f"provider {name}: client_id is missing")
    secret = entry.get("client_secret")
    if secret is not None and not isinstance(secret, str):
        raise ValueError(f"provider {name}: client_secret must be a string")
    display = entry.get("display_name", "")
    if not isinstance(display, str) or len(display) > 64:
        raise ValueError(f"provider {name}: display_name must be text of at most 64 characters")
    scopes = entry.get("scopes", DEFAULT_SCOPES)
    if isinstance(scopes, str):
        scopes = scopes.split()
    if not isinstance(scopes, (list, tuple)) or "openid" not in scopes:
        raise ValueError(f"provider {name}: scopes must include openid")
    web_client_id = entry.get("web_client_id")
    if web_client_id is not None and (
        not isinstance(web_client_id, str) or not web_client_id.strip()
    ):
        raise ValueError(f"provider {name}: web_client_id must be a client id")
    web_flow = entry.get("web_flow", "code")
    if web_flow not in WEB_FLOWS:
        raise ValueError(f"provider {name}: web_flow is one of {', '.join(WEB_FLOWS)}")
    return OidcProvider(
        name=name,
        issuer=check_issuer(issuer),
        client_id=client_id.strip(),
        client_secret=secret or None,
        display_name=display,
        scopes=tuple(str(scope) for scope in scopes),
        web_client_id=web_client_id.strip() if web_client_id else None,
        web_flow=web_flow,
    )


def parse_providers(value: Any) -> tuple[OidcProvider, ...]:
    """The whole setting: a list of tables, or its JSON text (environment variables)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return ()
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list of providers ({exc.msg})") from None
    if isinstance(value, tuple) and all(isinstance(item, OidcProvider) for item in value):
        return value
    if not isinstance(value, (list, tuple)):
        raise ValueError("a list of providers")
    providers = tuple(
        item if isinstance(item, OidcProvider) else parse_provider(item) for item in value
    )
    names = [provider.name for provider in providers]
    if len(set(names)) != len(names):
        raise ValueError("two providers share a name")
    return providers
