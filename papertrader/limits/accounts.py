"""The limits in front of the account requests of issue 12, beside ``auth.py``'s.

* sign-in with a provider (LOGIN_OIDC): per client address
  (``oidc_rate_per_address``); each costs the master a signature check and
  maybe a fetch of the provider's keys;
* password-reset requests (PASSWORD_FORGOT): per client address and per
  name asked about (username or e-mail, hashed), so one address cannot fill
  a stranger's mailbox and many addresses cannot either; the master adds a
  per-account limit on mails sent (``master/recovery.py``);
* uses of a reset or verification code (PASSWORD_RESET, EMAIL_VERIFY): per
  client address, so codes cannot be guessed (they have 256 bits anyway).

Same machinery and same answer as ``auth.py``: a refusal is the request's
failure return with RATE_LIMITED and a reason ending in ``retry after N s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from papertrader.config import Settings
from papertrader.limits.limiter import RateLimiter, Refused, Rule, retry_after_text
from papertrader.limits.subjects import address_subject, name_subject


@dataclass(frozen=True)
class AccountRules:
    oidc_address: Rule
    forgot_address: Rule
    forgot_name: Rule
    code_address: Rule

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountRules:
        return cls(
            oidc_address=Rule("oidc-ip", settings.oidc_rate_per_address),
            forgot_address=Rule("forgot-ip", settings.forgot_rate_per_address),
            forgot_name=Rule("forgot-name", settings.forgot_rate_per_account),
            code_address=Rule("code-ip", settings.reset_rate_per_address),
        )


class AccountGate:
    """Each ``before_*`` returns None (go ahead) or the reason of a RATE_LIMITED refusal."""

    def __init__(self, limiter: RateLimiter, rules: AccountRules) -> None:
        self.limiter = limiter
        self.rules = rules

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> AccountGate:
        return cls(RateLimiter(client), AccountRules.from_settings(settings))

    def _check(self, rule: Rule, subject: str, what: str) -> str | None:
        verdict = self.limiter.check(rule, subject)
        if isinstance(verdict, Refused):
            return f"{what}: {retry_after_text(verdict)}"
        return None

    def before_oidc(self, ip: str) -> str | None:
        return self._check(
            self.rules.oidc_address, address_subject(ip), "too many sign-ins from your address"
        )

    def before_forgot(self, ip: str, who: str) -> str | None:
        return self._check(
            self.rules.forgot_address,
            address_subject(ip),
            "too many password-reset requests from your address",
        ) or self._check(
            self.rules.forgot_name,
            name_subject(who.strip()),
            "too many password-reset requests for this account",
        )

    def before_code(self, ip: str) -> str | None:
        return self._check(
            self.rules.code_address, address_subject(ip), "too many codes tried from your address"
        )
