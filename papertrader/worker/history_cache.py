"""Cache management for price history (spec 3.2.6): past values kept on the workers.

Two levels, both bounded:

1. **Redis** (``pt:history:cache:<kind>:<symbol>:<argument>``), shared by every
   worker: an answer fetched by one worker serves all of them. Every key has a
   TTL: the end of the current update interval while the requested range still
   contains the open period (its last bar can still change), ``CLOSED_TTL``
   for ranges wholly in the past (a closed bar never changes; a backfill
   deletes the keys). The shared level has a **memory ceiling**
   (``history_shared_cache_bytes``) kept by a bounded index in the same Redis:
   every put is one Lua call that records the entry's size in an index and
   deletes the oldest entries until the total is under the ceiling. Only
   history keys are ever evicted: Redis itself runs with ``noeviction``, so a
   session or a queued order can never be pushed out by cached history.
2. **This process**: an LRU of the same entries, bounded in bytes
   (``history_cache_bytes``), each entry with the same deadline as its Redis
   key. A repeated request costs a dict lookup.

A miss goes to the master once per key and interval: concurrent identical
requests on one worker wait for the first one's answer (single flight) rather
than each asking the master. Redis trouble turns the shared level off for that
request (logged once), never the answer.

Entries are the master's answer as it came: ``D`` + the DATA payload, or
``F`` + the DATA_FAIL code and reason (no data, invalid date), so a client
hammering an empty range costs the master one query per interval too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import gevent.event
import redis
from loguru import logger

from papertrader.store import keys
from papertrader.store.functions import Function

#: Lifetime of an answer whose range is wholly in the past.
CLOSED_TTL = 6 * 3600.0
#: Answers larger than this are not put in Redis (a day of minute bars is ~250 KB).
MAX_SHARED_ENTRY = 8 * 1024 * 1024
#: Seconds the shared level is skipped after a Redis error.
REDIS_PAUSE = 5.0
#: Bytes counted per entry beyond its value and key (index, size hash, Redis overhead).
ENTRY_OVERHEAD = 200

# KEYS = entry, index (zset: key -> put time), sizes (hash: key -> bytes), total (string)
# ARGV = blob, ttl ms, ceiling bytes, overhead -> entries evicted
PUT = Function(
    "pt_history_put",
    """
local size = string.len(ARGV[1]) + string.len(KEYS[1]) + tonumber(ARGV[4])
local old = tonumber(redis.call('HGET', KEYS[3], KEYS[1]))
if old then redis.call('DECRBY', KEYS[4], old) end
local t = redis.call('TIME')
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
local total = redis.call('INCRBY', KEYS[4], size)
local ceiling, evicted = tonumber(ARGV[3]), 0
while total > ceiling do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  local victim = oldest[1]
  local victim_size = tonumber(redis.call('HGET', KEYS[3], victim)) or 0
  redis.call('ZREM', KEYS[2], victim)
  redis.call('HDEL', KEYS[3], victim)
  redis.call('DEL', victim)
  total = redis.call('DECRBY', KEYS[4], victim_size)
  evicted = evicted + 1
end
return evicted
""",
)
_DATA = b"D"
_FAIL = b"F"


@dataclass(frozen=True)
class Answer:
    """A cached answer: a payload, or a failure code and reason."""

    payload: bytes | None = None
    code: int = 0
    reason: str = ""

    def encode(self) -> bytes:
        if self.payload is not None:
            return _DATA + self.payload
        return _FAIL + f"{self.code}:{self.reason}".encode()

    @classmethod
    def decode(cls, blob: bytes) -> Answer | None:
        if blob[:1] == _DATA:
            return cls(payload=blob[1:])
        if blob[:1] == _FAIL:
            code, _, reason = blob[1:].decode("utf-8", "replace").partition(":")
            if code.isdigit():
                return cls(code=int(code), reason=reason)
        return None

    @property
    def size(self) -> int:
        return len(self.payload) if self.payload is not None else len(self.reason) + 8


class HistoryCache:
    """The two-level cache; ``get_or_fetch`` is the one call handlers make."""

    def __init__(
        self,
        client: redis.Redis,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        shared_max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._redis = client
        self._put = PUT.bind(client)
        self.max_bytes = max_bytes
        self.shared_max_bytes = shared_max_bytes
        self._clock = clock
        self._local: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[str, gevent.event.AsyncResult] = {}
        self._redis_failing = False
        self._skip_redis_until = 0.0
        #: Counters for logs and tests: where answers came from.
        self.hits_local = 0
        self.hits_shared = 0
        self.misses = 0
        self.evicted_shared = 0

    @property
    def local_bytes(self) -> int:
        return self._bytes

    # the local LRU --------------------------------------------------------------------
    def _local_get(self, key: str) -> Answer | None:
        entry = self._local.get(key)
        if entry is None:
            return None
        deadline, answer = entry
        if self._clock() >= deadline:
            self._drop(key)
            return None
        self._local.move_to_end(key)
        return answer

    def _drop(self, key: str) -> None:
        entry = self._local.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1].size

    def _local_put(self, key: str, answer: Answer, ttl: float) -> None:
        size = answer.size
        if size > self.max_bytes // 4:  # one huge answer must not flush everything else
            return
        self._drop(key)
        self._local[key] = (self._clock() + ttl, answer)
        self._bytes += size
        while self._bytes > self.max_bytes and self._local:
            oldest = next(iter(self._local))
            self._drop(oldest)

    # Redis ------------------------------------------------------------------------------
    def _redis_trouble(self, exc: redis.RedisError) -> None:
        if not self._redis_failing:
            logger.warning(f"history cache: Redis unavailable ({exc}); asking the master")
        self._redis_failing = True
        self._skip_redis_until = self._clock() + REDIS_PAUSE

    def _redis_paused(self) -> bool:
        """After a Redis failure, leave it alone for a few seconds: a down Redis must
        not add its connect timeout to every request."""
        return self._redis_failing and self._clock() < self._skip_redis_until

    def _shared_get(self, key: str) -> tuple[Answer, float] | None:
        if self._redis_paused():
            return None
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            blob, pttl = pipe.execute()
        except redis.RedisError as exc:
            self._redis_trouble(exc)
            return None
        self._redis_failing = False
        if blob is None or pttl is None or pttl <= 0:
            return None
        answer = Answer.decode(blob)
        return None if answer is None else (answer, pttl / 1000.0)

    def _shared_put(self, key: str, answer: Answer, ttl: float) -> None:
        blob = answer.encode()
        if len(blob) > MAX_SHARED_ENTRY or self._redis_paused():
            return
        try:
            self.evicted_shared += int(
                self._put(
                    keys=[
                        key,
                        keys.HISTORY_CACHE_INDEX,
                        keys.HISTORY_CACHE_SIZES,
                        keys.HISTORY_CACHE_BYTES,
                    ],
                    args=[blob, max(1, int(ttl * 1000)), self.shared_max_bytes, ENTRY_OVERHEAD],
                )
            )
        except redis.RedisError as exc:
            self._redis_trouble(exc)

    # the one entry point --------------------------------------------------------------
    def get_or_fetch(self, key: str, fetch: Callable[[], tuple[Answer, float | None]]) -> Answer:
        """The cached answer for ``key``, else ``fetch()`` once. ``fetch`` returns the
        answer and how many seconds it may be kept (None: not at all): the master's
        data for its range's lifetime, its verdict on the request briefly, "master
        unreachable" never."""
        answer = self._local_get(key)
        if answer is not None:
            self.hits_local += 1
            return answer
        waiting = self._inflight.get(key)
        if waiting is not None:
            shared: Answer = waiting.get()
            return shared
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._inflight[key] = result
        try:
            answer = self._fill(key, fetch)
        except BaseException as exc:
            result.set_exception(exc)
            raise
        finally:
            self._inflight.pop(key, None)
        result.set(answer)
        return answer

    def _fill(self, key: str, fetch: Callable[[], tuple[Answer, float | None]]) -> Answer:
        found = self._shared_get(key)
        if found is not None:
            answer, remaining = found
            self.hits_shared += 1
            self._local_put(key, answer, remaining)
            return answer
        self.misses += 1
        fetched, ttl = fetch()
        if ttl is not None and ttl > 0.001:
            self._shared_put(key, fetched, ttl)
            self._local_put(key, fetched, ttl)
        return fetched
