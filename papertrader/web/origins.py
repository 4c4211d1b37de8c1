"""Which pages may open the WebSocket, and where the page may connect: web origins.

A browser sends the ``Origin`` of the page that opens a WebSocket; checking
it is what stops another site's page from using a visitor's browser against
the worker (cross-site WebSocket hijacking). Allowed by default: this
worker's own web origin (``Settings.web_origin``; on a loopback host its
``localhost``/``127.0.0.1``/``[::1]`` spellings too) and the web origins of the
workers the master lists, learned by :class:`WorkerDirectory` and kept for
the worker's life (bounded), so a page loaded from a worker that has since
gone away can still move its WebSocket here: that is failover. The setting
``web_origins`` replaces all of this with a fixed list. The same origins, as
``wss://``, are the page's Content-Security-Policy ``connect-src``.

The page also signs in with the OpenID Connect providers the master offers
(``js/provider_signin.js``): it reads each provider's discovery document and
trades the authorization code at its token endpoint. So ``connect-src`` also
names the origin of each provider's issuer, learned the way the page learns
them (GET_SIGN_IN_OPTIONS, asked of the master with the worker list); the
page refuses a provider whose token endpoint is on another origin. The
worker itself never contacts a provider.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

import gevent
import gevent.event
from loguru import logger

from papertrader.protocol import Instruction, Message, decode_payload
from papertrader.protocol.records import from_records
from papertrader.worker.link import Link, LinkError

#: Origins learned from worker lists, at most (a directory of a region is small).
MAX_LEARNED = 1024
#: Sign-in providers whose issuers the page may fetch from, at most.
MAX_PROVIDERS = 16
#: How old the worker list may be when a page is served or an origin is checked.
FRESH_SECONDS = 5.0
_DEFAULT_PORTS = {"https": 443, "http": 80}
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def normalise_origin(text: str) -> str | None:
    """scheme://host[:port] in lower case, default port dropped; None if not an origin."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def issuer_origin(issuer: str) -> str | None:
    """scheme://host[:port] of a provider's issuer URL (which may have a path), or None."""
    try:
        parts = urlsplit(issuer.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or ":" in parts.hostname:
        return None  # CSP has no syntax for IPv6 literals
    host = parts.hostname.lower()
    return (
        f"{scheme}://{host}"
        if port in (None, _DEFAULT_PORTS[scheme])
        else f"{scheme}://{host}:{port}"
    )


def _loopback_aliases(origin: str) -> set[str]:
    parts = urlsplit(origin)
    host = parts.hostname or ""
    spelled = f"[{host}]" if ":" in host else host
    if spelled not in _LOOPBACK:
        return set()
    port = f":{parts.port}" if parts.port else ""
    return {f"{parts.scheme}://{alias}{port}" for alias in _LOOPBACK}


def websocket_origin(origin: str) -> str:
    """The ws:// or wss:// form of a page origin (for connect-src)."""
    return ("wss" + origin[5:]) if origin.startswith("https") else ("ws" + origin[4:])


class OriginPolicy:
    def __init__(self, own_origin: str, configured: str | None = None) -> None:
        own = normalise_origin(own_origin)
        if own is None:
            raise ValueError(f"{own_origin!r} is not a web origin")
        self.own = own
        self.fixed = configured is not None
        if configured is not None:
            listed = [normalise_origin(item) for item in configured.split(",")]
            self._allowed = {origin for origin in listed if origin is not None}
        else:
            self._allowed = {own} | _loopback_aliases(own)
        #: Origins of the sign-in providers' issuers: the page may fetch from them.
        self._providers: frozenset[str] = frozenset()

    def learn(self, origins: Iterable[str]) -> None:
        """Add the web origins of listed workers (ignored when ``web_origins`` is set)."""
        if self.fixed:
            return
        for text in origins:
            origin = normalise_origin(text)
            if origin is None or origin in self._allowed:
                continue
            if len(self._allowed) >= MAX_LEARNED:
                logger.warning("not learning web origin {}: {} known already", origin, MAX_LEARNED)
                return
            self._allowed.add(origin)
            logger.info("web origin {} (a listed worker) may open WebSockets here", origin)

    def learn_providers(self, issuers: Iterable[str]) -> None:
        """The providers the master offers now (the last answer replaces the one before)."""
        origins = {issuer_origin(issuer) for issuer in issuers}
        known = frozenset(sorted(o for o in origins if o is not None)[:MAX_PROVIDERS])
        if known != self._providers:
            logger.info(
                "the page may fetch from the sign-in providers at {}", sorted(known) or "none"
            )
        self._providers = known

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return False
        normal = normalise_origin(origin)
        return normal is not None and normal in self._allowed

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(self._allowed)

    def connect_sources(self) -> list[str]:
        """For connect-src: the workers' WebSockets and the providers' issuers. CSP has no
        syntax for IPv6 literals (a page on one uses 'self')."""
        sockets = {websocket_origin(o) for o in self._allowed if "://[" not in o}
        return sorted(sockets | self._providers)


class WorkerDirectory:
    """Asks the master for its worker list now and then; teaches the policy their origins."""

    def __init__(self, link: Link, policy: OriginPolicy, period: float = 10.0) -> None:
        self.link = link
        self.policy = policy
        self.period = period
        self._asked_at = -math.inf

    def fresh(self, max_age: float = FRESH_SECONDS, timeout: float = 1.0) -> None:
        """Refresh now unless done within ``max_age`` seconds: before a page is served
        and before an unknown origin is refused, so a worker that joined a moment ago
        is known to the page and to the check."""
        if time.monotonic() - self._asked_at > max_age:
            self.refresh(timeout)

    def refresh(self, timeout: float = 5.0) -> bool:
        """One round; False (and the old knowledge kept) when the master cannot answer."""
        self._asked_at = time.monotonic()
        try:
            answer = self.link.request(Message(Instruction.GET_WORKER_LIST), timeout)
        except LinkError as exc:
            logger.debug("worker list not refreshed: {}", exc.reason)
            return False
        if not isinstance(answer, bytes):
            logger.debug("worker list not refreshed: the master answered {}", answer.instruction)
            return False
        workers = from_records(decode_payload(answer))
        self.policy.learn(str(w["web_url"]) for w in workers if w.get("web_url"))
        self._refresh_providers(timeout)
        return True

    def _refresh_providers(self, timeout: float) -> None:
        try:
            answer = self.link.request(Message(Instruction.GET_SIGN_IN_OPTIONS), timeout)
        except LinkError as exc:
            logger.debug("sign-in providers not refreshed: {}", exc.reason)
            return
        if not isinstance(answer, Message) or answer.instruction is not Instruction.SIGN_IN_OPTIONS:
            logger.debug("sign-in providers not refreshed: the master answered {}", answer)
            return
        providers = from_records(answer.arg("providers"))
        self.policy.learn_providers(str(p["issuer"]) for p in providers if p.get("issuer"))

    def run(self, stop: gevent.event.Event) -> None:
        """Greenlet body: refresh every ``period`` seconds (sooner after a failure) until set."""
        while not stop.is_set():
            self.link.wait_connected(timeout=self.period)
            try:
                done = self.refresh()
            except Exception:
                logger.exception("refreshing the worker list failed")
                done = False
            if stop.wait(timeout=self.period if done else min(self.period, 3.0)):
                return
