"""The security headers of every answer from the web port.

* **Content-Security-Policy**: scripts, styles and images from this origin
  only, no inline script or style, no eval; the page may open WebSockets to
  itself and to the other workers' web origins (failover) and fetch from the
  sign-in providers' issuer origins (``origins.py``); it may not be
  framed by anyone (``frame-ancestors 'none'``), forms post nowhere else.
  The page's one defence-critical secret, the session id, is only reachable
  by script, so the policy is what keeps a script injection from reading it.
* **Strict-Transport-Security** when the port speaks TLS: a year.
* ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` (for
  browsers older than frame-ancestors), ``Referrer-Policy: no-referrer``,
  same-origin opener and resource policies, and no camera, microphone or
  location.
"""

from __future__ import annotations

from collections.abc import Iterable

HSTS_SECONDS = 365 * 86400


def content_security_policy(connect_sources: Iterable[str]) -> str:
    sources = " ".join(["'self'", *sorted(set(connect_sources))])
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src {sources}",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def security_headers(tls: bool, connect_sources: Iterable[str]) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-security-policy", content_security_policy(connect_sources).encode("ascii")),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    ]
    if tls:
        headers.append((b"strict-transport-security", f"max-age={HSTS_SECONDS}".encode("ascii")))
    return headers
