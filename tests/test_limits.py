"""The abuse-limit library against a real Redis: GCRA rates, login back-off, subjects.

Time is injected (a clock the test moves), so nothing here depends on the
machine's speed; the concurrency test checks that the budget is atomic.
"""

from __future__ import annotations

import threading

import pytest
import redis

from papertrader.config import ConfigError, Settings, load_settings
from papertrader.limits import Allowed, RateLimiter, Refused, Rule, parse_rate
from papertrader.limits.auth import AuthGate, AuthRules
from papertrader.limits.backoff import LoginBackoff
from papertrader.limits.limiter import retry_after_text
from papertrader.limits.rates import Rate
from papertrader.limits.subjects import address_subject, name_subject
from papertrader.store import keys


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rates_parse_the_documented_spellings() -> None:
    assert parse_rate("30/minute") == Rate(30, 60)
    assert parse_rate("10/hour") == Rate(10, 3600)
    assert parse_rate(" 5 / 90s ") == Rate(5, 90)
    assert parse_rate("1/day") == Rate(1, 86400)
    assert parse_rate("3/minutes") == Rate(3, 60)
    assert str(Rate(20, 60)) == "20/minute" and str(Rate(5, 90)) == "5/90s"
    for bad in ("30", "0/minute", "x/hour", "5/fortnight", "5/0s"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_rate_settings_are_validated_with_a_clear_message() -> None:
    settings = load_settings(environ={"PT_LOGIN_RATE_PER_ADDRESS": "7/minute"})
    assert settings.login_rate_per_address == Rate(7, 60)
    with pytest.raises(ConfigError, match="login_rate_per_address .*allowed: N/unit"):
        load_settings(environ={"PT_LOGIN_RATE_PER_ADDRESS": "lots"})
    assert Settings().register_rate_per_address == Rate(10, 3600)


def test_gcra_allows_the_burst_then_one_per_interval(redis_client: redis.Redis) -> None:
    clock = Clock()
    limiter = RateLimiter(redis_client, clock=clock)
    rule = Rule("test", Rate(3, 30))  # 3 at once, then one every 10 s
    assert [isinstance(limiter.check(rule, "a"), Allowed) for _ in range(3)] == [True] * 3
    refused = limiter.check(rule, "a")
    assert isinstance(refused, Refused) and refused.retry_after == pytest.approx(10, abs=0.01)
    assert retry_after_text(refused) == "retry after 10 s"
    assert isinstance(limiter.check(rule, "b"), Allowed)  # another subject has its own budget
    clock.now += 9.9
    assert isinstance(limiter.check(rule, "a"), Refused)
    clock.now += 0.2
    assert isinstance(limiter.check(rule, "a"), Allowed)
    assert isinstance(limiter.check(rule, "a"), Refused)
    clock.now += 30
    assert [isinstance(limiter.check(rule, "a"), Allowed) for _ in range(4)] == [True] * 3 + [False]
    # The key expires once the budget would be full again: idle subjects cost nothing.
    assert 0 < redis_client.pttl(keys.rate("test", "a")) <= 31_000


def test_two_limiters_share_one_budget_atomically(redis_url: str) -> None:
    """Workers are separate processes: the budget lives in Redis, taken atomically."""
    rule = Rule("shared", Rate(25, 3600))
    allowed: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        client = redis.Redis.from_url(redis_url)
        limiter = RateLimiter(client)
        for _ in range(10):
            verdict = limiter.check(rule, "203.0.113.7")
            with lock:
                allowed.append(isinstance(verdict, Allowed))
        client.close()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 80 and allowed.count(True) == 25


def test_a_redis_outage_lets_requests_through() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    limiter = RateLimiter(client)
    assert isinstance(limiter.check(Rule("x", Rate(1, 60)), "s"), Allowed)
    backoff = LoginBackoff(client, 0, 60)
    assert backoff.failed("u") is None and backoff.wait("u", "1.2.3.4") is None


def test_backoff_grows_after_the_free_failures_and_a_right_password_resets_it(
    redis_client: redis.Redis,
) -> None:
    clock = Clock()
    backoff = LoginBackoff(redis_client, free_failures=2, cap_seconds=5, clock=clock)
    user, stranger = name_subject("alice"), "198.51.100.9"
    assert backoff.failed(user) is None and backoff.failed(user) is None
    assert backoff.wait(user, stranger) is None
    waits = []
    for _ in range(5):
        refused = backoff.failed(user)
        assert refused is not None
        waits.append(refused.retry_after)
    assert waits == [1, 2, 4, 5, 5]  # doubling, capped
    refused = backoff.wait(user, stranger)
    assert refused is not None and refused.retry_after == pytest.approx(5)
    clock.now += 5.01  # the wait is over: never a permanent lockout
    assert backoff.wait(user, stranger) is None
    backoff.succeeded(user, "192.0.2.1")
    assert backoff.failed(user) is None  # the count started again
    assert redis_client.exists(keys.login_failures(user))


def test_the_owners_known_address_skips_the_wait(redis_client: redis.Redis) -> None:
    clock = Clock()
    backoff = LoginBackoff(redis_client, free_failures=0, cap_seconds=300, clock=clock)
    user = name_subject("bob")
    backoff.succeeded(user, "192.0.2.1")  # bob logged in from home once
    for _ in range(10):  # a stranger fails on purpose
        backoff.failed(user)
    assert backoff.wait(user, "198.51.100.9") is not None
    assert backoff.wait(user, "192.0.2.1") is None


def test_guesses_from_a_known_address_wait_there_too(redis_client: redis.Redis) -> None:
    """A known address is no free pass: a guesser behind the owner's address (the same
    office NAT, or a compromised worker claiming it) gets a wait of its own, by the same
    rule as the username's; strangers' failures still never make the owner wait there."""
    clock = Clock()
    backoff = LoginBackoff(redis_client, free_failures=2, cap_seconds=60, clock=clock)
    user, home, stranger, other_home = (
        name_subject("erin"),
        "192.0.2.1",
        "198.51.100.9",
        "192.0.2.77",
    )
    backoff.succeeded(user, home)
    backoff.succeeded(user, other_home)
    assert backoff.failed(user, home) is None and backoff.failed(user, home) is None
    waits = []
    for _ in range(4):
        refused = backoff.failed(user, home)
        assert refused is not None
        waits.append(refused.retry_after)
    assert waits == [1, 2, 4, 8]  # the address's own count, doubling as the username's
    waiting = backoff.wait(user, home)
    assert waiting is not None and waiting.retry_after == pytest.approx(8)
    assert backoff.wait(user, other_home) is None  # the owner's other address is untouched
    assert backoff.wait(user, stranger) is not None  # every failure counts for the username
    clock.now += 8.01
    assert backoff.wait(user, home) is None  # never a permanent lockout
    backoff.succeeded(user, home)  # the right password clears both counts
    assert not redis_client.exists(keys.login_known_failures(user, home))
    assert not redis_client.exists(keys.login_failures(user))
    for _ in range(10):  # and strangers failing on purpose do not make home wait
        backoff.failed(user, stranger)
    assert backoff.wait(user, home) is None and backoff.wait(user, stranger) is not None


def test_subjects_fold_names_and_group_ipv6_by_64() -> None:
    assert name_subject("Alice") == name_subject("alice") == name_subject("ＡＬＩＣＥ")
    assert len(name_subject("x" * 5000)) == 32
    assert address_subject("203.0.113.7") == "203.0.113.7"
    assert address_subject("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_subject("2001:db8:1:2:aaaa::1") == address_subject("2001:db8:1:2::ffff")
    assert address_subject("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_subject("2001:db8:1:3::1") != address_subject("2001:db8:1:2::1")


def test_auth_gate_reasons_end_with_the_retry_after(redis_client: redis.Redis) -> None:
    rules = AuthRules(
        login_address=Rule("login-ip", Rate(2, 60)),
        register_address=Rule("register-ip", Rate(1, 3600)),
        register_email=Rule("register-email", Rate(1, 3600)),
        resume_address=Rule("resume-ip", Rate(1, 60)),
    )
    gate = AuthGate(RateLimiter(redis_client), LoginBackoff(redis_client, 1, 60), rules)
    assert gate.before_login("203.0.113.7", "alice") is None
    assert gate.before_login("203.0.113.7", "alice") is None
    reason = gate.before_login("203.0.113.7", "alice")
    assert reason is not None and reason.startswith("too many login attempts from your address")
    assert reason.endswith(" s") and "retry after " in reason
    assert gate.before_register("203.0.113.7", "a@example.org") is None
    assert "from your address" in (gate.before_register("203.0.113.7", "b@example.org") or "")
    assert "e-mail" in (gate.before_register("203.0.113.8", "A@example.org") or "")
    assert gate.before_resume("203.0.113.7") is None
    assert gate.before_resume("203.0.113.7") is not None
