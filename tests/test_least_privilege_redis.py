"""Issue 10, the Redis side: every attack replayed with exactly a worker's Redis user.

The worker's user is made the way `pt workers register` and `pt up` make it
(``redis_users.provision`` with ``WORKER_RULES``) on the test session's real
redis-server, and each test connects with nothing but the URL written to its
0600 file. What a worker legitimately does (read a session and the quotes,
XADD an order, pop its outcome, call the master's FUNCTIONs) must work; each
attack of the issue must fail, as its own test. Orders a worker can still
queue for someone else are refused by the master at the drain (the session
check), never filled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest
import redis
from loguru import logger

from papertrader.limits.backoff import LoginBackoff
from papertrader.limits.pending_orders import PendingOrders
from papertrader.limits.subjects import name_subject
from papertrader.master.order_sessions import SessionCheck, mark_orders_before_sessions
from papertrader.master.transactions import drain_once
from papertrader.protocol import ErrorCode
from papertrader.services import redis_server
from papertrader.services.binaries import find_binary
from papertrader.services.state import RedisRecord
from papertrader.store import keys, redis_users
from papertrader.store.accounts import create_account
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.order_state import order_id_for
from papertrader.store.pool import ConnectionPool
from papertrader.store.sessions import SessionStore

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

    # redis-py types an XRANGE reply as str or bytes, or None: these clients return bytes
    StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]

WORKER = "attacker"
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)


@pytest.fixture
def worker_url(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[str]:
    """The URL of a worker's own Redis user, read back from its 0600 file."""
    user = redis_users.worker_user(WORKER)
    url_file = tmp_path / "redis-users" / f"{user}.url"
    redis_users.provision(redis_client, redis_url, user, redis_users.WORKER_RULES, url_file)
    assert url_file.stat().st_mode & 0o777 == 0o600
    yield redis_users.read_url_file(url_file)
    redis_users.delete_user(redis_client, user)


@pytest.fixture
def worker(worker_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(worker_url)
    yield client
    client.close()


def refused(call: object) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        call()  # type: ignore[operator]


def test_what_a_worker_needs_still_works(worker: redis.Redis, redis_client: redis.Redis) -> None:
    session = SessionStore(redis_client, 3600, 3600).create(7, "alice", "203.0.113.7", False)
    mine = SessionStore(worker, 3600, 3600)
    assert mine.get(session.session_id, "203.0.113.7").account_id == 7
    mine.touch(session, "203.0.113.7")
    redis_client.hset(keys.QUOTES, "AAPL", "{}")
    assert worker.hget(keys.QUOTES, "AAPL") == b"{}"
    assert worker.xadd(keys.ORDERS, {"order_id": "x"})
    redis_client.rpush(keys.order_result("ab" * 16), "done", "and", "more")
    assert worker.blpop([keys.order_result("ab" * 16)], timeout=1) is not None
    assert worker.lpop(keys.order_result("ab" * 16), 512) == [b"and", b"more"]
    assert worker.fcall("pt_gcra", 1, keys.rate("login-ip", "x"), 1000, 10000, "")[0] == 1


def test_scan_of_every_live_session_is_refused(worker: redis.Redis) -> None:
    refused(lambda: worker.scan(match="pt:session:*"))
    refused(lambda: worker.keys("pt:session:*"))
    refused(lambda: worker.smembers(keys.account_sessions(1)))


def test_forging_a_session_record_is_refused(worker: redis.Redis) -> None:
    forged = keys.session(uuid.uuid4().hex)
    fields: dict[FieldT, EncodableT] = {
        "account_id": 1,
        "username": "victim",
        "client_ip": "203.0.113.9",
    }
    refused(lambda: worker.hset(forged, mapping=fields))
    refused(lambda: worker.copy(keys.session("0" * 32), forged))
    # the drain remembers verified records and only asks if they still exist (order_sessions)
    refused(lambda: worker.rename(keys.session("0" * 32), forged))
    refused(lambda: worker.restore(forged, 0, b"\x00"))
    refused(lambda: worker.delete(keys.session("0" * 32)))  # nor log anyone out
    assert worker.exists(forged) == 0


def test_forging_a_session_inside_a_function_is_refused(worker: redis.Redis) -> None:
    """FCALL runs under the caller's ACL: a function's keys are checked too."""
    refused(lambda: worker.fcall("pt_gcra", 1, keys.session("ab" * 16), 1, 1, ""))


def test_xadd_orders_for_another_account_are_rejected_at_the_drain(
    worker: redis.Redis, redis_client: redis.Redis, pool: ConnectionPool
) -> None:
    victim = create_account(pool, "victim", "v@example.com", "$2b$04$x", Decimal("10000.00")).id
    thief = create_account(pool, "thief", "t@example.com", "$2b$04$x", Decimal("10000.00")).id
    sessions = SessionStore(redis_client, 3600, 3600)
    thiefs = sessions.create(thief, "thief", "203.0.113.9", False)
    victims = sessions.create(victim, "victim", "198.51.100.1", False)
    queue = OrderQueue(redis_client)
    queue.ensure_group()
    mark_orders_before_sessions(redis_client)

    def placed(session: str | None, ip: str) -> Order:
        cid = uuid.uuid4()
        order = Order(
            order_id_for(victim, cid), victim, "buy", "AAPL", 5, T0, ip, WORKER,
            client_order_id=cid, reply=uuid.uuid4().hex, session=session,
        )  # fmt: skip
        OrderQueue(worker).submit(order)  # exactly the worker's XADD
        return order

    attacks = [
        placed(None, "198.51.100.1"),  # no session at all
        placed(thiefs.session_id.hex, "203.0.113.9"),  # the attacker's own session
        placed(uuid.uuid4().hex, "198.51.100.1"),  # a made-up session
        placed(victims.session_id.hex, "203.0.113.9"),  # the victim's, another address
    ]
    check = SessionCheck(redis_client, sessions)
    drain_once(queue, pool, {"AAPL": Decimal("100.00")}, now=T0, check=check)
    for order in attacks:
        outcome = queue.wait_outcome(order.order_id, timeout=5, reply=order.reply)
        assert outcome is not None and outcome.status == "rejected"
        assert outcome.code in (ErrorCode.SESSION_MISMATCH, ErrorCode.INVALID_SESSION)
    with pool.transaction() as cur:
        cur.execute("SELECT cash FROM accounts WHERE id = %s", (victim,))
        assert cur.fetchone() == (Decimal("10000.00"),)

    honest = placed(victims.session_id.hex, "198.51.100.1")
    drain_once(queue, pool, {"AAPL": Decimal("100.00")}, now=T0, check=check)
    outcome = queue.wait_outcome(honest.order_id, timeout=5, reply=honest.reply)
    assert outcome is not None and outcome.status == "filled"


def test_a_worker_queues_orders_through_pt_queue_order_and_only_into_the_stream(
    worker: redis.Redis, redis_client: redis.Redis
) -> None:
    """The combined cap-and-XADD function runs under the worker's own rights: it queues
    an order, and the stream it names (an argument) cannot be turned into another key."""
    cid = uuid.uuid4()
    order = Order(order_id_for(7, cid), 7, "buy", "AAPL", 1, T0, "203.0.113.7", WORKER,
                  client_order_id=cid)  # fmt: skip
    pipe = worker.pipeline(transaction=False)
    PendingOrders(worker, cap=5).queue(pipe, order)
    (entry_id,) = pipe.execute()
    assert [
        raw[b"order_id"] for _, raw in cast("StreamEntries", redis_client.xrange(keys.ORDERS))
    ] == [order.order_id.hex.encode()]
    assert cast("StreamEntries", redis_client.xrange(keys.ORDERS))[0][0] == entry_id
    for elsewhere in (keys.QUOTES, keys.session("ab" * 16), "anything"):
        with pytest.raises(redis.ResponseError, match="can.t access"):
            worker.fcall(
                "pt_queue_order", 1, keys.pending_orders(8), uuid.uuid4().hex, 5, 60000,
                elsewhere, "price", "1",
            )  # fmt: skip
        assert not redis_client.exists(elsewhere)
    assert redis_client.zcard(keys.pending_orders(8)) == 0  # refused: nothing reserved


def test_reading_or_acknowledging_the_order_stream_is_refused(worker: redis.Redis) -> None:
    worker.xadd(keys.ORDERS, {"order_id": "x"})
    refused(lambda: worker.xrange(keys.ORDERS))
    refused(lambda: worker.xread({keys.ORDERS: "0"}))
    refused(lambda: worker.xreadgroup(keys.ORDERS_GROUP, "evil", {keys.ORDERS: ">"}))
    refused(lambda: worker.xack(keys.ORDERS, keys.ORDERS_GROUP, "0-1"))
    refused(lambda: worker.xdel(keys.ORDERS, "0-1"))
    refused(lambda: worker.xtrim(keys.ORDERS, maxlen=0))
    refused(lambda: worker.delete(keys.ORDERS))


def test_publishing_control_commands_is_refused(worker: redis.Redis) -> None:
    refused(lambda: worker.publish(keys.WORKERS_CONTROL, '{"action": "boot"}'))
    refused(lambda: worker.publish(keys.SESSIONS_ENDED, "0" * 32))
    refused(lambda: worker.rpush(keys.worker_control_reply("ab"), "{}"))


def test_poisoning_fill_prices_in_the_quotes_is_refused(worker: redis.Redis) -> None:
    refused(lambda: worker.hset(keys.QUOTES, "AAPL", '{"close": "0.01"}'))
    refused(lambda: worker.set(keys.QUOTES_UPDATED, "2099-01-01T00:00:00+00:00"))


def test_clearing_a_login_back_off_is_refused(
    worker: redis.Redis, redis_client: redis.Redis
) -> None:
    """A username waits after failed logins; the master counts them. A worker reads the
    wait (to refuse early) and can neither clear it nor count or forget anything."""
    user, stranger = name_subject("victim"), "198.51.100.9"
    master = LoginBackoff(redis_client, free_failures=0, cap_seconds=300)
    for _ in range(8):
        master.failed(user)  # the eighth imposes 2**7 s, capped at 300
    mine = LoginBackoff(worker, free_failures=0, cap_seconds=300)
    waiting = mine.wait(user, stranger)  # FCALL_RO: reading is what a worker may do
    assert waiting is not None and waiting.seconds > 100
    fail_key, known_key = keys.login_failures(user), keys.login_known_addresses(user)
    refused(lambda: worker.delete(fail_key))
    refused(lambda: worker.hset(fail_key, "until", 0))
    refused(lambda: worker.sadd(known_key, stranger))  # nor make itself a known address
    refused(lambda: worker.delete(keys.login_known_failures(user, stranger)))
    refused(lambda: worker.fcall("pt_login_succeeded", 2, fail_key, known_key, stranger, 1, 1))
    refused(lambda: worker.fcall("pt_login_failed", 1, fail_key, "", 0, 1, 1))
    # pt_login_wait is read only: called to write (FCALL), its keys need write rights.
    refused(lambda: worker.fcall("pt_login_wait", 2, fail_key, known_key, "", stranger))
    assert master.wait(user, stranger) is not None
    assert redis_client.hget(fail_key, "n") == b"8"


def test_a_worker_user_from_before_the_master_counted_logins_is_told_what_to_run(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A worker whose Redis user predates ``pt:login:*`` cannot read the back-off: it lets
    the login through to the master (which enforces it) and its log says how to mend it."""
    user = redis_users.worker_user("old")
    older = tuple(r for r in redis_users.WORKER_RULES if keys.LOGIN_PATTERN not in r)
    url_file = tmp_path / f"{user}.url"
    redis_users.provision(redis_client, redis_url, user, older, url_file)
    client = redis.Redis.from_url(redis_users.read_url_file(url_file))
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="WARNING")
    try:
        assert LoginBackoff(client, 0, 300).wait(name_subject("bob"), "198.51.100.9") is None
    finally:
        logger.remove(sink)
        client.close()
        redis_users.delete_user(redis_client, user)
    assert len(lines) == 1 and "pt workers redis-user NAME" in lines[0], lines


def test_eval_flush_config_and_function_load_are_refused(worker: redis.Redis) -> None:
    refused(lambda: worker.eval("return redis.call('FLUSHALL')", 0))
    refused(lambda: worker.flushdb())
    refused(lambda: worker.flushall())
    refused(lambda: worker.config_get("*"))
    refused(
        lambda: worker.function_load(
            "#!lua name=evil\nredis.register_function('e', function() end)"
        )
    )
    refused(lambda: worker.acl_setuser("evil", enabled=True))


def test_a_disabled_or_removed_worker_can_no_longer_authenticate(
    worker_url: str, redis_client: redis.Redis
) -> None:
    user = redis_users.worker_user(WORKER)
    connected = redis.Redis.from_url(worker_url)
    assert connected.ping()
    assert redis_users.disable_user(redis_client, user)
    with pytest.raises(redis.exceptions.ConnectionError):
        connected.ping()  # its connections are closed, and it cannot log in again
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(worker_url).ping()
    assert redis_users.enable_user(redis_client, user)
    assert redis.Redis.from_url(worker_url).ping()
    assert redis_users.delete_user(redis_client, user)
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(worker_url).ping()


def test_an_install_from_before_the_users_keeps_its_data(tmp_path: Path) -> None:
    """A private Redis run with the old config (``default`` user, requirepass) holding
    sessions and queued orders: the next start moves it to the users, nothing lost,
    and the orders queued before are still drained (without a session check)."""
    record = redis_server.new_record(tmp_path)
    record.master_password = ""  # the record of an older version had none
    data = Path(record.data_dir)
    data.mkdir(mode=0o700)
    Path(record.config_file).write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {record.port}",
                f'requirepass "{record.password}"',
                f'dir "{data}"',
                f'pidfile "{record.pid_file}"',
                f'logfile "{record.log_file}"',
                "daemonize yes",
                "appendonly yes",
                "",
            ]
        )  # fmt: skip
    )
    subprocess.run([str(find_binary("redis-server")), record.config_file], check=True)
    old = redis.Redis(port=record.port, password=record.password)
    for _ in range(200):
        try:
            old.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    old.hset(keys.session("ab" * 16), mapping={"account_id": 3, "username": "u"})
    queued = old.xadd(keys.ORDERS, {"order_id": "cd" * 16, "account_id": 3})
    old.close()
    try:
        moved = redis_server.start(
            tmp_path, RedisRecord(**vars(record)), find_binary("redis-server"), 20
        )
        admin = redis.Redis.from_url(moved.url)
        assert admin.hgetall(keys.session("ab" * 16))[b"username"] == b"u"
        assert [entry_id for entry_id, _ in cast("StreamEntries", admin.xrange(keys.ORDERS))] == [
            queued
        ]
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=moved.port, password=moved.password).ping()  # default: off
        master = redis.Redis.from_url(moved.master_url)
        mark_orders_before_sessions(master)
        assert master.get(keys.ORDERS_BEFORE_SESSIONS) == queued
        admin.close()
        master.close()
    finally:
        redis_server.stop(record, 20)


def test_transactions_in_the_append_only_file_survive_a_restart(tmp_path: Path) -> None:
    """The ``default`` user is off, yet Redis replays the AOF's MULTI/EXEC blocks as it
    (redis/redis#14541): with its rights cut, a restart would silently drop them."""
    binary = find_binary("redis-server")
    record = redis_server.start(tmp_path, None, binary, 20)
    try:
        admin = redis.Redis.from_url(record.url)
        pipe = admin.pipeline(transaction=True)  # as SessionStore.create and the drain do
        pipe.hset(keys.session("ab" * 16), mapping={"account_id": 3})
        pipe.sadd(keys.account_sessions(3), "ab" * 16)
        pipe.execute()
        admin.close()
        redis_server.stop(record, 20)
        record = redis_server.start(tmp_path, record, binary, 20)
        admin = redis.Redis.from_url(record.url)
        assert admin.hget(keys.session("ab" * 16), "account_id") == b"3"
        assert admin.smembers(keys.account_sessions(3)) == {b"ab" * 16}
        admin.close()
    finally:
        redis_server.stop(record, 20)


def test_pt_master_and_workers_redis_user_make_each_own_user_once(
    tmp_path: Path, redis_url: str, database_url: str, redis_client: redis.Redis
) -> None:
    """What Ansible runs on the master host with the admin user's URL: each user made
    once (a re-run keeps the password and reports nothing new), URL files 0600."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
    env.update(PT_REDIS_URL=redis_url, PT_DATABASE_URL=database_url)

    def pt(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [sys.executable, "-m", "papertrader_cli", *args, "--json"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    master_file, worker_file = tmp_path / "master.url", tmp_path / "w9.url"
    try:
        for _ in range(2):
            made = pt("master", "redis-user", "--redis-url-file", str(master_file))
            also = pt("workers", "redis-user", "w9", "--redis-url-file", str(worker_file))
            assert made["created"] is also["created"] is (_ == 0)
        for path in (master_file, worker_file):
            assert path.stat().st_mode & 0o777 == 0o600
        master = redis.Redis.from_url(master_file.read_text().strip())
        assert master.acl_whoami() == "pt-master"
        refused(lambda: master.flushall())
        worker = redis.Redis.from_url(worker_file.read_text().strip())
        assert worker.acl_whoami() == "pt-worker-w9"
        refused(lambda: worker.hset(keys.QUOTES, "AAPL", "{}"))
    finally:
        redis_users.delete_user(redis_client, redis_users.worker_user("w9"))
