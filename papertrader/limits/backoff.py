"""Exponential back-off per username after failed logins, without a permanent lockout.

After ``free`` failed logins for one username (from any address), each
further attempt must wait 1 s, then 2, 4, 8 ... up to ``cap`` seconds after
the last failure. A correct password once the wait is over logs in and
clears the count; failures are forgotten ``FAILURE_MEMORY`` seconds after
the last one. The wait applies to existing and unknown usernames alike, so
it reveals nothing about which exist.

A stranger who knows a username could keep it waiting by failing on
purpose. Addresses that logged in to the account successfully before (kept
``KNOWN_ADDRESS_SECONDS``, at most ``KNOWN_ADDRESSES``) are therefore exempt
from the per-username wait: the owner keeps signing in from home while a
guesser elsewhere waits. A known address is not a free pass, though: its
failures are counted for it as well, and it gets a wait of its own by the
same rule, so a guesser behind the owner's address (the same office NAT, or
a compromised worker claiming it) waits like any other, while strangers
elsewhere still cannot make the owner wait at home. (Every address also has
its own per-address rate limit, :class:`~papertrader.limits.limiter.RateLimiter`.)

Who does what: the master counts. It asks ``wait`` before each password
check it makes and reports each outcome (``failed``/``succeeded``), so the
wait holds for every login that reaches bcrypt, whichever worker sent it: a
compromised worker that skipped its own check, or cleared the count, gains
nothing. A worker asks ``wait`` too, before forwarding (a guesser's flood
stops there, never reaching the master); its Redis user may only read the
keys, through the read-only ``pt_login_wait``.

State in Redis (``store/keys.py``): ``pt:login:fail:<user>`` (hash: ``n``
failures, ``until`` ms), ``pt:login:known:<user>`` (set of address
subjects) and ``pt:login:known-fail:<user>:<address>`` (hash, as the first,
for one known address). Everything is one Lua call per event, timed by Redis's clock
unless a test injects one; a Redis outage lets logins through.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis
from loguru import logger

from papertrader.limits.limiter import Refused, retry_after_text
from papertrader.store import keys
from papertrader.store.functions import Function

FAILURE_MEMORY = 3600
#: The reason of a refusal while a username waits (then "retry after N s").
WAITING = "too many failed logins for this username"
KNOWN_ADDRESS_SECONDS = 30 * 86400
KNOWN_ADDRESSES = 32

_NOW = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""
# The third key (a known address's own failures) is optional in every function: callers
# from before it (a worker or master not yet updated) pass two keys, or one, and get the
# behaviour they had.
# KEYS = fail hash, known set[, known-fail hash]; ARGV = now or "", address -> ms to wait
WAIT = Function(
    "pt_login_wait",
    _NOW
    + """
local wait_key = KEYS[1]
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then
  if not KEYS[3] then return 0 end
  wait_key = KEYS[3]
end
local until_ms = tonumber(redis.call('HGET', wait_key, 'until')) or 0
if until_ms > now then return until_ms - now end
return 0
""",
    read_only=True,
)
# KEYS = fail hash[, known set, known-fail hash]; ARGV = now or "", free, cap ms,
# memory ms[, address] -> ms the caller's address must now wait
FAILED = Function(
    "pt_login_failed",
    _NOW
    + """
local free, cap, memory = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function count(key)
  local n = redis.call('HINCRBY', key, 'n', 1)
  local wait = 0
  if n > free then
    wait = math.min(cap, 1000 * 2 ^ math.min(n - free - 1, 40))
    redis.call('HSET', key, 'until', string.format('%d', now + wait))
  end
  redis.call('PEXPIRE', key, math.max(memory, wait))
  return wait
end
local wait = count(KEYS[1])
if KEYS[3] and ARGV[5] and redis.call('SISMEMBER', KEYS[2], ARGV[5]) == 1 then
  wait = count(KEYS[3])
end
return wait
""",
)
# KEYS = fail hash, known set[, known-fail hash]; ARGV = address, keep ms, most addresses
SUCCEEDED = Function(
    "pt_login_succeeded",
    """
redis.call('DEL', KEYS[1])
if KEYS[3] then redis.call('DEL', KEYS[3]) end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
while redis.call('SCARD', KEYS[2]) > tonumber(ARGV[3]) do
  local other = redis.call('SRANDMEMBER', KEYS[2])
  if other == ARGV[1] then break end
  redis.call('SREM', KEYS[2], other)
end
return 1
""",
)


class LoginBackoff:
    """``wait`` before forwarding a login, ``failed``/``succeeded`` after its answer."""

    def __init__(
        self,
        client: redis.Redis,
        free_failures: int,
        cap_seconds: int,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.free_failures = free_failures
        self.cap_seconds = cap_seconds
        self._wait = WAIT.bind(client)
        self._failed = FAILED.bind(client)
        self._succeeded = SUCCEEDED.bind(client)
        self._clock = clock
        self._warned_at = -math.inf

    def _now(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))

    @staticmethod
    def _keys(user: str, address: str) -> list[str]:
        return [
            keys.login_failures(user),
            keys.login_known_addresses(user),
            keys.login_known_failures(user, address),
        ]

    def wait(self, user: str, address: str) -> Refused | None:
        """A refusal while this username must wait (for a known ``address``: while that
        address must wait)."""
        try:
            ms = int(self._wait(keys=self._keys(user, address), args=[self._now(), address]))
        except redis.RedisError as exc:
            self._unavailable(exc)
            return None
        return Refused(ms / 1000) if ms > 0 else None

    def failed(self, user: str, address: str = "") -> Refused | None:
        """Count a failed login from ``address``; the wait it now imposes there, if any
        (the username's, or for a known address its own)."""
        try:
            ms = int(
                self._failed(
                    keys=self._keys(user, address),
                    args=[
                        self._now(),
                        self.free_failures,
                        self.cap_seconds * 1000,
                        FAILURE_MEMORY * 1000,
                        address,
                    ],
                )
            )
        except redis.RedisError as exc:
            self._unavailable(exc)
            return None
        return Refused(ms / 1000) if ms > 0 else None

    def succeeded(self, user: str, address: str) -> None:
        """A correct password: forget the failures, remember the address as the owner's."""
        try:
            self._succeeded(
                keys=self._keys(user, address),
                args=[address, KNOWN_ADDRESS_SECONDS * 1000, KNOWN_ADDRESSES],
            )
        except redis.RedisError as exc:
            self._unavailable(exc)

    @staticmethod
    def refusal(waiting: Refused) -> str:
        """The reason given to a login refused while its username waits."""
        return f"{WAITING}: {retry_after_text(waiting)}"

    @staticmethod
    def imposed(reason: str, waiting: Refused | None) -> str:
        """A wrong password's reason, saying the wait it now imposes, if any."""
        if waiting is None:
            return reason
        wait = retry_after_text(waiting)
        return f"{reason}; the next attempt for this username must wait ({wait})"

    def _unavailable(self, exc: redis.RedisError) -> None:
        now = time.monotonic()
        if now - self._warned_at < 60:
            return
        self._warned_at = now
        if isinstance(exc, redis.exceptions.NoPermissionError):
            # A worker whose Redis user predates pt:login:* (the master still enforces it).
            logger.warning(
                "login back-off not checked here: this process's Redis user may not read it "
                f"({exc}); bring the user up to date: `pt workers redis-user NAME`"
            )
        else:
            logger.warning(f"login back-off not applied: Redis unavailable ({exc})")
