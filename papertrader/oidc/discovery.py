"""A provider's published configuration and signing keys, fetched briefly and cached.

The master reads ``<issuer>/.well-known/openid-configuration`` once (kept
``CONFIG_TTL`` seconds), then the ``jwks_uri`` it names. Keys are kept until
a token names a key id (``kid``) the cached set lacks: the provider has
rotated its keys, so the set is fetched again, at most ``REFRESHES_PER_MINUTE``
times a minute per provider, so that tokens with made-up key ids cannot make
the master hammer the provider (and a real rotation is still picked up at
once).

Every fetch is a ``requests`` call with short connect and read timeouts; in
the gevent-patched servers it waits cooperatively, so a slow provider costs
the request that needs it a few seconds at most and never stalls the event
loop. The discovery document's ``issuer`` must equal the configured issuer
exactly (OpenID Connect Discovery 1.0, section 4.3).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from papertrader.oidc.providers import OidcProvider

#: (connect, read) seconds for each request to a provider.
TIMEOUT = (3.0, 5.0)
CONFIG_TTL = 3600.0
KEYS_TTL = 3600.0
REFRESHES_PER_MINUTE = 10
MAX_DOCUMENT_BYTES = 512 * 1024


class ProviderUnavailable(Exception):
    """The provider's configuration or keys could not be fetched or understood."""


@dataclass
class _Cached:
    config: dict[str, Any] | None = None
    config_at: float = -1e18
    keys: KeySet | None = None
    kids: frozenset[str] = frozenset()
    keys_at: float = -1e18
    #: When the key set was fetched because of an unknown kid, within the last minute.
    refreshes: deque[float] = field(default_factory=deque)


def fetch_json(url: str, session: requests.Session | None = None) -> dict[str, Any]:
    """GET a JSON object with the provider timeouts; ProviderUnavailable on any failure."""
    getter = session or requests
    try:
        response = getter.get(url, timeout=TIMEOUT, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"{url}: {exc.__class__.__name__}") from None
    if response.status_code != 200:
        raise ProviderUnavailable(f"{url}: HTTP {response.status_code}")
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise ProviderUnavailable(f"{url}: the answer is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = response.json()
    except ValueError:
        raise ProviderUnavailable(f"{url}: the answer is not JSON") from None
    if not isinstance(document, dict):
        raise ProviderUnavailable(f"{url}: the answer is not a JSON object")
    return document


class ProviderDirectory:
    """Discovery documents and key sets of the configured providers, cached."""

    def __init__(
        self,
        providers: tuple[OidcProvider, ...],
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
    ) -> None:
        self.providers = {provider.name: provider for provider in providers}
        self._clock = clock
        self._session = session or requests.Session()
        self._cache: dict[str, _Cached] = {name: _Cached() for name in self.providers}
        self._locks: dict[str, threading.Lock] = {name: threading.Lock() for name in self.providers}

    def get(self, name: str) -> OidcProvider | None:
        return self.providers.get(name.strip().lower())

    def config(self, provider: OidcProvider) -> dict[str, Any]:
        """The provider's discovery document (cached ``CONFIG_TTL`` seconds)."""
        cached = self._cache[provider.name]
        with self._locks[provider.name]:
            if cached.config is None or self._clock() - cached.config_at > CONFIG_TTL:
                url = provider.issuer + "/.well-known/openid-configuration"
                document = fetch_json(url, self._session)
                if document.get("issuer", "").rstrip("/") != provider.issuer:
                    raise ProviderUnavailable(
                        f"{url} names the issuer {document.get('issuer')!r}, "
                        f"not {provider.issuer!r}"
                    )
                if not isinstance(document.get("jwks_uri"), str):
                    raise ProviderUnavailable(f"{url} has no jwks_uri")
                cached.config, cached.config_at = document, self._clock()
            return cached.config

    def keys(self, provider: OidcProvider, kid: str | None) -> KeySet:
        """The provider's signing keys, fetched again when ``kid`` is not among them."""
        cached = self._cache[provider.name]
        config = self.config(provider)
        with self._locks[provider.name]:
            now = self._clock()
            stale = cached.keys is None or now - cached.keys_at > KEYS_TTL
            unknown = kid is not None and kid not in cached.kids
            while cached.refreshes and now - cached.refreshes[0] > 60:
                cached.refreshes.popleft()
            may_refresh = len(cached.refreshes) < REFRESHES_PER_MINUTE
            if unknown and not stale and may_refresh:
                cached.refreshes.append(now)
            if stale or (unknown and may_refresh):
                document = fetch_json(str(config["jwks_uri"]), self._session)
                try:
                    key_set = KeySet.import_key_set(document)  # type: ignore[arg-type]
                except (JoseError, ValueError, TypeError, KeyError) as exc:
                    raise ProviderUnavailable(
                        f"the provider's key set is unusable ({exc})"
                    ) from None
                cached.keys = key_set
                cached.kids = frozenset(
                    str(key.get("kid")) for key in document.get("keys", []) if key.get("kid")
                )
                cached.keys_at = now
            assert cached.keys is not None
            return cached.keys

    def knows_kid(self, provider: OidcProvider, kid: str) -> bool:
        return kid in self._cache[provider.name].kids
