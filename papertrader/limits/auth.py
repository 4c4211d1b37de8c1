"""The limits in front of account requests: login, register, session resume.

The worker asks :class:`AuthGate` before it forwards a LOGIN or REGISTER to
the master (so a flood never reaches bcrypt) and before it checks a resumed
session; a refusal is the request's failure return with ``RATE_LIMITED``
and a reason ending in ``retry after N s``. The username's back-off
(``backoff.py``) is read here; the master, which checks the passwords,
counts the failures and enforces it again. Issue-specific flows (password reset,
third-party sign-in) add their own rules beside these.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from papertrader.config import Settings
from papertrader.limits.backoff import LoginBackoff
from papertrader.limits.limiter import RateLimiter, Refused, Rule, retry_after_text
from papertrader.limits.subjects import address_subject, name_subject


@dataclass(frozen=True)
class AuthRules:
    """The rules of the account requests, from the settings of the same names."""

    login_address: Rule
    register_address: Rule
    register_email: Rule
    resume_address: Rule

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthRules:
        return cls(
            login_address=Rule("login-ip", settings.login_rate_per_address),
            register_address=Rule("register-ip", settings.register_rate_per_address),
            register_email=Rule("register-email", settings.register_rate_per_email),
            resume_address=Rule("resume-ip", settings.resume_rate_per_address),
        )


def _reason(what: str, refused: Refused) -> str:
    return f"{what}: {retry_after_text(refused)}"


class AuthGate:
    """Each ``before_*`` returns None (go ahead) or the reason of a RATE_LIMITED refusal."""

    def __init__(self, limiter: RateLimiter, backoff: LoginBackoff, rules: AuthRules) -> None:
        self.limiter = limiter
        self.backoff = backoff
        self.rules = rules

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> AuthGate:
        return cls(
            RateLimiter(client),
            LoginBackoff(
                client, settings.login_failures_before_backoff, settings.login_backoff_max_seconds
            ),
            AuthRules.from_settings(settings),
        )

    def before_login(self, ip: str, username: str) -> str | None:
        address = address_subject(ip)
        verdict = self.limiter.check(self.rules.login_address, address)
        if isinstance(verdict, Refused):
            return _reason("too many login attempts from your address", verdict)
        waiting = self.backoff.wait(name_subject(username), address)
        if waiting is not None:
            return LoginBackoff.refusal(waiting)
        return None

    def before_register(self, ip: str, email: str) -> str | None:
        verdict = self.limiter.check(self.rules.register_address, address_subject(ip))
        if isinstance(verdict, Refused):
            return _reason("too many registrations from your address", verdict)
        verdict = self.limiter.check(self.rules.register_email, name_subject(email))
        if isinstance(verdict, Refused):
            return _reason("too many registrations with this e-mail address", verdict)
        return None

    def before_resume(self, ip: str) -> str | None:
        verdict = self.limiter.check(self.rules.resume_address, address_subject(ip))
        if isinstance(verdict, Refused):
            return _reason("too many session resumes from your address", verdict)
        return None
