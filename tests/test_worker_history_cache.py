"""The workers' history cache (spec 3.2.6) against a real Redis."""

from __future__ import annotations

import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from papertrader.services.ports import free_port
from papertrader.store import keys
from papertrader.worker.history_cache import Answer, HistoryCache

KEY = keys.history_cache("week", "AAPL", "2026-03-18")


class Master:
    """Stands for the master: counts how often it is asked."""

    def __init__(self, answer: Answer, ttl: float | None = 60) -> None:
        self.answer = answer
        self.ttl = ttl
        self.asked = 0

    def __call__(self) -> tuple[Answer, float | None]:
        self.asked += 1
        return self.answer, self.ttl


def test_an_answer_is_fetched_once_and_shared_by_every_worker(
    redis_client: redis.Redis,
) -> None:
    master = Master(Answer(payload=b"\x09\x00\x00\x00\x00"))
    one, two = HistoryCache(redis_client, 1 << 20), HistoryCache(redis_client, 1 << 20)
    assert one.get_or_fetch(KEY, master).payload == b"\x09\x00\x00\x00\x00"
    assert one.get_or_fetch(KEY, master).payload == b"\x09\x00\x00\x00\x00"
    assert two.get_or_fetch(KEY, master).payload == b"\x09\x00\x00\x00\x00"
    assert master.asked == 1
    assert (one.misses, one.hits_local, two.hits_shared) == (1, 1, 1)
    assert 0 < redis_client.pttl(KEY) <= 60_000


def test_failures_are_cached_too_but_an_unreachable_master_is_not(
    redis_client: redis.Redis,
) -> None:
    cache = HistoryCache(redis_client, 1 << 20)
    verdict = Master(Answer(code=113, reason="no bars for AAPL in the week of 2026-03-18"))
    for _ in range(3):
        answer = cache.get_or_fetch(KEY, verdict)
    assert verdict.asked == 1 and answer.code == 113 and "no bars" in answer.reason
    away = Master(Answer(code=115, reason="master unreachable"), ttl=None)
    other = keys.history_cache("day", "MSFT", "2026-03-18")
    cache.get_or_fetch(other, away)
    cache.get_or_fetch(other, away)
    assert away.asked == 2 and redis_client.exists(other) == 0


def test_entries_expire_with_their_interval(redis_client: redis.Redis) -> None:
    now = [100.0]
    cache = HistoryCache(redis_client, 1 << 20, clock=lambda: now[0])
    master = Master(Answer(payload=b"x"), ttl=0.15)
    cache.get_or_fetch(KEY, master)
    cache.get_or_fetch(KEY, master)
    assert master.asked == 1
    now[0] += 0.2  # the interval ended: the local copy is gone...
    time.sleep(0.25)  # ...and Redis dropped its key
    cache.get_or_fetch(KEY, master)
    assert master.asked == 2


def test_the_local_copy_is_bounded_in_bytes(redis_client: redis.Redis) -> None:
    cache = HistoryCache(redis_client, max_bytes=1000)
    for i in range(20):
        key = keys.history_cache("day", "AAPL", f"2026-03-{i + 1:02d}")
        cache.get_or_fetch(key, Master(Answer(payload=bytes(200))))
    assert 0 < cache.local_bytes <= 1000
    # the oldest left this worker's memory but is still shared through Redis
    first = keys.history_cache("day", "AAPL", "2026-03-01")
    again = Master(Answer(payload=b"never asked"))
    assert cache.get_or_fetch(first, again).payload == bytes(200)
    assert again.asked == 0 and cache.hits_shared == 1


def test_without_redis_answers_still_flow() -> None:
    broken = redis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    cache = HistoryCache(broken, 1 << 20)
    master = Master(Answer(payload=b"bars"))
    assert cache.get_or_fetch(KEY, master).payload == b"bars"
    assert cache.get_or_fetch(KEY, master).payload == b"bars"  # the local copy
    assert master.asked == 1


def test_the_shared_level_has_a_ceiling_and_evicts_only_history(
    redis_client: redis.Redis,
) -> None:
    redis_client.set("pt:session:" + "0" * 32, "a session")  # must never be evicted
    redis_client.xadd(keys.ORDERS, {"order_id": "1"})
    cache = HistoryCache(redis_client, max_bytes=0, shared_max_bytes=20_000)
    for day in range(1, 29):  # 28 distinct dates of 1 KB each: far over 20 KB
        key = keys.history_cache("day", "AAPL", f"2026-02-{day:02d}")
        cache.get_or_fetch(key, Master(Answer(payload=bytes(1000)), ttl=3600))
    total = int(redis_client.get(keys.HISTORY_CACHE_BYTES) or 0)
    assert 0 < total <= 20_000
    assert cache.evicted_shared > 0
    kept = [k for k in redis_client.scan_iter(match="pt:history:cache:day:*")]
    assert 0 < len(kept) < 28
    assert redis_client.zcard(keys.HISTORY_CACHE_INDEX) == len(kept)
    # the newest survive, the oldest went first
    assert redis_client.exists(keys.history_cache("day", "AAPL", "2026-02-28"))
    assert not redis_client.exists(keys.history_cache("day", "AAPL", "2026-02-01"))
    assert redis_client.get("pt:session:" + "0" * 32) == b"a session"
    assert redis_client.xlen(keys.ORDERS) == 1
