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

    def __init__(self, answer: Answer, cacheable: bool = True) -> None:
        self.answer = answer
        self.cacheable = cacheable
        self.asked = 0

    def __call__(self) -> tuple[Answer, bool]:
        self.asked += 1
        return self.answer, self.cacheable


def test_an_answer_is_fetched_once_and_shared_by_every_worker(
    redis_client: redis.Redis,
) -> None:
    master = Master(Answer(payload=b"\x09\x00\x00\x00\x00"))
    one, two = HistoryCache(redis_client, 1 << 20), HistoryCache(redis_client, 1 << 20)
    assert one.get_or_fetch(KEY, 60, master).payload == b"\x09\x00\x00\x00\x00"
    assert one.get_or_fetch(KEY, 60, master).payload == b"\x09\x00\x00\x00\x00"
    assert two.get_or_fetch(KEY, 60, master).payload == b"\x09\x00\x00\x00\x00"
    assert master.asked == 1
    assert (one.misses, one.hits_local, two.hits_shared) == (1, 1, 1)
    assert 0 < redis_client.pttl(KEY) <= 60_000


def test_failures_are_cached_too_but_an_unreachable_master_is_not(
    redis_client: redis.Redis,
) -> None:
    cache = HistoryCache(redis_client, 1 << 20)
    verdict = Master(Answer(code=113, reason="no bars for AAPL in the week of 2026-03-18"))
    for _ in range(3):
        answer = cache.get_or_fetch(KEY, 60, verdict)
    assert verdict.asked == 1 and answer.code == 113 and "no bars" in answer.reason
    away = Master(Answer(code=115, reason="master unreachable"), cacheable=False)
    other = keys.history_cache("day", "MSFT", "2026-03-18")
    cache.get_or_fetch(other, 60, away)
    cache.get_or_fetch(other, 60, away)
    assert away.asked == 2 and redis_client.exists(other) == 0


def test_entries_expire_with_their_interval(redis_client: redis.Redis) -> None:
    now = [100.0]
    cache = HistoryCache(redis_client, 1 << 20, clock=lambda: now[0])
    master = Master(Answer(payload=b"x"))
    cache.get_or_fetch(KEY, 0.15, master)
    cache.get_or_fetch(KEY, 0.15, master)
    assert master.asked == 1
    now[0] += 0.2  # the interval ended: the local copy is gone...
    time.sleep(0.25)  # ...and Redis dropped its key
    cache.get_or_fetch(KEY, 0.15, master)
    assert master.asked == 2


def test_the_local_copy_is_bounded_in_bytes(redis_client: redis.Redis) -> None:
    cache = HistoryCache(redis_client, max_bytes=1000)
    for i in range(20):
        key = keys.history_cache("day", "AAPL", f"2026-03-{i + 1:02d}")
        cache.get_or_fetch(key, 60, Master(Answer(payload=bytes(200))))
    assert 0 < cache.local_bytes <= 1000
    # the oldest left this worker's memory but is still shared through Redis
    first = keys.history_cache("day", "AAPL", "2026-03-01")
    again = Master(Answer(payload=b"never asked"))
    assert cache.get_or_fetch(first, 60, again).payload == bytes(200)
    assert again.asked == 0 and cache.hits_shared == 1


def test_without_redis_answers_still_flow() -> None:
    broken = redis.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    cache = HistoryCache(broken, 1 << 20)
    master = Master(Answer(payload=b"bars"))
    assert cache.get_or_fetch(KEY, 60, master).payload == b"bars"
    assert cache.get_or_fetch(KEY, 60, master).payload == b"bars"  # the local copy
    assert master.asked == 1
