"""Rate limits shared by every worker: GCRA (the generic cell rate algorithm) in Redis.

Each (rule, subject) pair has one Redis key holding its *theoretical arrival
time* (TAT). A rule ``limit/period`` lets ``limit`` requests through at once,
then one every ``period/limit`` seconds; a refused request learns exactly how
long to wait. Checking and updating is one Lua script, so concurrent workers
can never both take the last slot, and the clock is Redis's own (``TIME``),
so workers whose clocks differ still share one budget. Tests may inject a
clock instead.

Keys: ``pt:rate:<rule>:<subject>`` (``store/keys.py``), expiring as soon as
the budget is full again; an idle subject costs nothing.

If Redis cannot be reached the limiter lets the request through and logs it:
a limiter outage must not lock every user out (the request then fails or
succeeds on its own merits: without Redis no session can be made anyway).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from loguru import logger

from papertrader.limits.rates import Rate
from papertrader.store import keys
from papertrader.store.functions import Function

# KEYS[1] = the key; ARGV = emission interval (ms), burst window (ms), now (ms) or "".
# Returns {1, requests left} or {0, milliseconds until the next one is allowed}.
GCRA = Function(
    "pt_gcra",
    """
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if now < allow_at then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', new_tat - now + 1)
return {1, math.floor((now - allow_at) / interval)}
""",
)


@dataclass(frozen=True)
class Rule:
    """A named limit: ``rate`` requests per subject (an IP address, a username...)."""

    name: str
    rate: Rate

    @property
    def interval_ms(self) -> int:
        return max(1, (self.rate.period * 1000) // self.rate.limit)

    @property
    def window_ms(self) -> int:
        return self.rate.period * 1000


@dataclass(frozen=True)
class Allowed:
    """The request may go ahead; ``remaining`` more would be allowed right now."""

    remaining: int


@dataclass(frozen=True)
class Refused:
    """The request is refused; the same request is allowed after ``retry_after`` seconds."""

    retry_after: float

    @property
    def seconds(self) -> int:
        """Whole seconds to wait, at least 1 (what a client is told)."""
        return max(1, math.ceil(self.retry_after))


def retry_after_text(refused: Refused) -> str:
    """The end of every RATE_LIMITED reason; clients parse it (docs/PROTOCOL.md)."""
    return f"retry after {refused.seconds} s"


class RateLimiter:
    """``check(rule, subject)``: consume one request of the subject's budget, or refuse."""

    def __init__(self, client: redis.Redis, clock: Callable[[], float] | None = None) -> None:
        self._redis = client
        self._script = GCRA.bind(client)
        #: None: Redis's clock (shared by all workers); else seconds, for tests.
        self._clock = clock
        self._warned_at = -math.inf

    def check(self, rule: Rule, subject: str) -> Allowed | Refused:
        now = "" if self._clock is None else str(int(self._clock() * 1000))
        try:
            allowed, value = self._script(
                keys=[keys.rate(rule.name, subject)],
                args=[rule.interval_ms, rule.window_ms, now],
            )
        except redis.RedisError as exc:
            self._unavailable(rule, exc)
            return Allowed(remaining=0)
        if int(allowed):
            return Allowed(remaining=int(value))
        return Refused(retry_after=int(value) / 1000)

    def _unavailable(self, rule: Rule, exc: redis.RedisError) -> None:
        """Let the request through, and say so at most once a minute."""
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            logger.warning(f"rate limit {rule.name} not checked: Redis unavailable ({exc})")
