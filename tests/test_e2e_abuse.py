"""Abuse limits end to end: a real master and worker, real sockets, floods kept short.

The flooding client connects from 127.0.0.3 and the ordinary user from
127.0.0.2 (both loopback; the fixture's own probe uses 127.0.0.1), so
per-address limits can be seen hitting one and sparing the other. Every
bound here is generous: nothing depends on the machine's speed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_e2e_support import PASSWORD, Servers, running
from tls_support import connect

from papertrader.client import ClientError, PaperTraderClient
from papertrader.protocol import ErrorCode

#: What an ordinary user's request may take while a flood runs (documented in README).
ORDINARY_BOUND = 10.0


def ordinary(servers: Servers) -> PaperTraderClient:
    return servers.client(timeout=60, source_address="127.0.0.2")


def flooder(servers: Servers) -> PaperTraderClient:
    return servers.client(timeout=60, source_address="127.0.0.3")


@pytest.fixture
def servers(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Servers]:
    limits = {
        "PT_LOGIN_RATE_PER_ADDRESS": "6/minute",
        "PT_REGISTER_RATE_PER_ADDRESS": "3/hour",
        "PT_REGISTER_RATE_PER_EMAIL": "100/hour",
        "PT_RESUME_RATE_PER_ADDRESS": "5/minute",
        "PT_LOGIN_FAILURES_BEFORE_BACKOFF": "3",
        "PT_LOGIN_BACKOFF_MAX_SECONDS": "2",
    }
    with running(Servers(tmp_path, redis_url, database_url, env_extra=limits)) as started:
        started.wait_quotes()
        yield started


def refusal(call: object) -> ClientError:
    assert callable(call)
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


def test_a_login_flood_from_one_address_is_refused_while_others_log_in(servers: Servers) -> None:
    with ordinary(servers) as user:
        user.register("carol", "carol@example.org", PASSWORD)
    with flooder(servers) as attacker:
        codes = []
        for _ in range(12):
            try:
                attacker.login("carol", "not her password at all")
            except ClientError as exc:
                codes.append(exc.code)
        assert codes[:3] == [ErrorCode.INVALID_CREDENTIALS] * 3
        assert codes.count(ErrorCode.RATE_LIMITED) >= 6
        limited = refusal(lambda: attacker.login("carol", PASSWORD))
        assert limited.code is ErrorCode.RATE_LIMITED
        assert limited.retry_after is not None and 1 <= limited.retry_after <= 60
        assert limited.reason.endswith(f"retry after {limited.retry_after} s")
    # The owner, from an address of their own, waits out at most the username's
    # back-off (capped at 2 s here), then the right password works.
    started = time.monotonic()
    with ordinary(servers) as user:
        while True:
            try:
                session = user.login("carol", PASSWORD)
                break
            except ClientError as exc:
                assert exc.code is ErrorCode.RATE_LIMITED and exc.retry_after is not None
                assert time.monotonic() - started < 30
                time.sleep(exc.retry_after)
        assert session.username == "carol"
        quote_started = time.monotonic()
        user.quote("AAPL")
        assert time.monotonic() - quote_started < ORDINARY_BOUND


def test_registrations_per_address_are_limited(servers: Servers) -> None:
    with flooder(servers) as attacker:
        for index in range(3):
            attacker.register(f"reg{index}", f"reg{index}@example.org", PASSWORD)
        limited = refusal(lambda: attacker.register("reg9", "reg9@example.org", PASSWORD))
        assert limited.code is ErrorCode.RATE_LIMITED
        assert "registrations from your address" in limited.reason
        assert limited.retry_after is not None and limited.retry_after > 60
    with ordinary(servers) as user:
        assert user.register("dave", "dave@example.org", PASSWORD) == "dave"


def test_session_resumes_per_address_are_limited(servers: Servers) -> None:
    with ordinary(servers) as user:
        user.register("erin", "erin@example.org", PASSWORD)
        session = user.login("erin", PASSWORD)
    with flooder(servers) as attacker:
        codes: list[ErrorCode | None] = []
        for _ in range(8):
            try:
                attacker.resume(session.session_id)
                codes.append(None)
            except ClientError as exc:
                codes.append(exc.code)
        # The session belongs to 127.0.0.2: the first five are refused for that,
        # then the address's resume budget is spent.
        assert codes[:5] == [ErrorCode.SESSION_IP_MISMATCH] * 5
        assert codes[5:] == [ErrorCode.RATE_LIMITED] * 3
    with ordinary(servers) as user:
        assert user.resume(session.session_id).username == "erin"


@pytest.fixture
def slow_bcrypt(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Servers]:
    """A master whose bcrypt is slow (cost 13) and has one thread and one waiting place."""
    settings = {
        "PT_BCRYPT_COST": "13",
        "PT_BCRYPT_THREADS": "1",
        "PT_BCRYPT_QUEUE": "1",
        "PT_REQUEST_DEADLINE_SECONDS": "20",
    }
    with running(Servers(tmp_path, redis_url, database_url, env_extra=settings)) as started:
        started.wait_quotes(timeout=120)
        yield started


def test_a_full_bcrypt_queue_answers_unavailable_at_once(slow_bcrypt: Servers) -> None:
    import threading

    outcomes: list[tuple[ErrorCode | None, float]] = []
    lock = threading.Lock()

    def log_in(index: int) -> None:
        client = slow_bcrypt.client(timeout=120, source_address=f"127.0.1.{index}")
        started = time.monotonic()
        code: ErrorCode | None = None
        try:
            with client:
                client.login("nobody", "some password here")
        except ClientError as exc:
            code = exc.code
        with lock:
            outcomes.append((code, time.monotonic() - started))

    threads = [threading.Thread(target=log_in, args=(i,)) for i in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    codes = [code for code, _ in outcomes]
    assert len(codes) == 6
    # One thread and one waiting place: at most two are checked, the others are turned
    # away at once instead of queuing (each check of cost 13 takes a good fraction of a
    # second; "at once" is bounded generously but far under 4 such checks).
    assert codes.count(ErrorCode.INVALID_CREDENTIALS) >= 1
    busy = [elapsed for code, elapsed in outcomes if code is ErrorCode.UNAVAILABLE]
    assert len(busy) >= 3, outcomes


def test_a_login_whose_client_left_is_not_computed(slow_bcrypt: Servers) -> None:
    from papertrader.protocol import Instruction, Message, encode_message

    def login_frame(name: str) -> bytes:
        return encode_message(Message(Instruction.LOGIN, (name, "some password here", False)))

    # One login keeps the single bcrypt thread busy; another client sends its login
    # and leaves while it waits.
    busy = slow_bcrypt.client(timeout=120)
    waiting = connect(slow_bcrypt.worker_port(), timeout=None)
    import threading

    answered = threading.Thread(target=lambda: refusal(lambda: busy.login("nobody-busy", "x" * 12)))
    answered.start()
    time.sleep(0.3)
    waiting.sendall(login_frame("nobody-leaver"))
    time.sleep(0.3)
    waiting.close()
    answered.join(timeout=120)
    busy.close()
    # The pool runs checks in order: once a later login is answered, the leaver's
    # would have been computed before it, had it not been dropped.
    with slow_bcrypt.client(timeout=120) as later:
        assert refusal(lambda: later.login("nobody-after", "x" * 12)).code in (
            ErrorCode.INVALID_CREDENTIALS,
        )
    logs = slow_bcrypt.logs(400)
    assert "closed by the client while the master checked its password" in logs
    # Never checked: at most dropped, unchecked, when its turn came.
    assert "login refused for 'nobody-leaver' from 127.0.0.1: INVALID_CREDENTIALS" not in logs
    assert "login refused for 'nobody-after' from 127.0.0.1: INVALID_CREDENTIALS" in logs


def test_every_date_edge_is_invalid_date_before_anything_is_built(
    servers: Servers, redis_url: str
) -> None:
    import datetime as dt

    import redis as redis_lib

    from papertrader.store import keys

    today = dt.datetime.now(dt.timezone.utc).date()
    edges = [
        dt.date(9999, 12, 31),
        dt.date(1, 1, 1),
        dt.date(1969, 12, 31),
        today + dt.timedelta(days=1),
    ]
    with ordinary(servers) as user:
        user.register("fiona", "fiona@example.org", PASSWORD)
        user.login("fiona", PASSWORD)
        for day in edges:
            for range_ in ("day", "week", "month", "year"):
                error = refusal(lambda r=range_, d=day: user.price_history("AAPL", r, d))
                assert error.code is ErrorCode.INVALID_DATE, (range_, day, error)
                assert f"from 1970-01-01 to {today.isoformat()}" in error.reason
        user.price_history("AAPL", "week", today)  # the worker serves on, unharmed
    client = redis_lib.Redis.from_url(redis_url)
    try:  # nothing was cached for the refused dates
        cached = [k.decode() for k in client.scan_iter(match="pt:history:cache:*:AAPL:*")]
        assert not [k for k in cached if any(d.isoformat() in k for d in edges)], cached
        assert keys.HISTORY_CACHE_PATTERN
    finally:
        client.close()
    assert "Traceback" not in servers.logs(400)


def test_orders_waiting_for_the_drain_are_capped_per_account(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    import threading

    settings = {"PT_UPDATE_INTERVAL": "3", "PT_MAX_PENDING_ORDERS_PER_ACCOUNT": "2"}
    with running(Servers(tmp_path, redis_url, database_url, env_extra=settings)) as servers:
        servers.wait_quotes(timeout=120)
        with servers.client() as client:
            client.register("gus", "gus@example.org", PASSWORD)
            session = client.login("gus", PASSWORD)
        outcomes: list[object] = []
        lock = threading.Lock()

        def buy() -> None:
            with servers.client(timeout=120) as trader:
                trader.resume(session.session_id)
                try:
                    result: object = trader.buy("AAPL", 1)
                except ClientError as exc:
                    result = exc
                with lock:
                    outcomes.append(result)

        threads = [threading.Thread(target=buy) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        refused = [o for o in outcomes if isinstance(o, ClientError)]
        filled = [o for o in outcomes if not isinstance(o, ClientError)]
        # Six at once, two may wait per drain: some are refused at once, never queued;
        # nothing else fails, and every answer is true.
        assert len(outcomes) == 6 and filled and refused, outcomes
        for error in refused:
            assert error.code is ErrorCode.RATE_LIMITED, error
            assert "orders waiting for the next market update" in error.reason
            assert error.order_id is None or error.order_id.int == 0
        with servers.client() as client:
            client.resume(session.session_id)
            history = client.history()
            assert len([row for row in history if row.side == "buy"]) == len(filled)
            client.buy("AAPL", 1)  # the drain released the places


def test_an_ordinary_client_is_served_within_the_bound_during_a_flood(servers: Servers) -> None:
    import threading

    stop = threading.Event()
    answered = [0]

    def flood(index: int) -> None:
        source = f"127.0.0.{10 + index}"
        while not stop.is_set():
            client = servers.client(timeout=60, source_address=source)
            try:
                with client:
                    for _ in range(20):
                        try:
                            client.login(f"victim{index}", "not the password 1234")
                        except ClientError:
                            answered[0] += 1
            except ClientError:
                pass

    threads = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)  # the flood is on
        with ordinary(servers) as user:
            for step, call in (
                ("register", lambda: user.register("hana", "hana@example.org", PASSWORD)),
                ("login", lambda: user.login("hana", PASSWORD)),
                ("quote", lambda: user.quote("AAPL")),
                ("order", lambda: user.buy("AAPL", 1)),
            ):
                started = time.monotonic()
                call()
                took = time.monotonic() - started
                # An order waits for the next drain (0.3 s here): within the same bound.
                assert took < ORDINARY_BOUND, (step, took)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert answered[0] > 50  # the flood was answered (refused), not ignored
