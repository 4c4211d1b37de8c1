"""The worker as clients see it, without a master: quotes, states, sessions, bad clients, orders.

Each test runs a real worker process against the test's Redis and talks to it
over TCP with a client built on the protocol's Connection.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from test_worker_support import (
    Client,
    WorkerProcess,
    keyed_worker,
    running_worker,
    signed_sessions,
    wait_for,
)

from papertrader.market.quote import Quote
from papertrader.protocol import (
    HEADER_SIZE,
    NIL,
    ErrorCode,
    Instruction,
    Message,
    encode_message,
)
from papertrader.protocol.records import from_record
from papertrader.store.order_queue import Order, OrderQueue, Outcome
from papertrader.store.quotes import QuoteStore
from papertrader.store.sessions import SessionStore

COMMAND, DATA = 0, 1
NOW = datetime(2024, 5, 6, 14, 30, tzinfo=timezone.utc)


def quote(symbol: str, close: str) -> Quote:
    price = Decimal(close)
    return Quote(symbol, price - 1, price + 1, price - 2, price, 12345, NOW)


@pytest.fixture
def worker(tmp_path: Path, redis_url: str) -> Iterator[WorkerProcess]:
    with keyed_worker(tmp_path, redis_url) as process:
        yield process


@pytest.fixture
def sessions(redis_client: redis.Redis) -> SessionStore:
    return signed_sessions(redis_client, 3600, 86400)  # type: ignore[no-any-return]


@pytest.fixture
def session_id(sessions: SessionStore) -> uuid.UUID:
    return sessions.create(7, "alice", "127.0.0.1", remember=False).session_id


def fail_args(message: Message) -> tuple[int, str]:
    code, reason = message.args[0], message.args[1]
    assert isinstance(code, int) and isinstance(reason, str)
    return code, reason


def test_quotes_come_from_the_cache_after_publishing(
    worker: WorkerProcess, redis_client: redis.Redis, session_id: uuid.UUID
) -> None:
    QuoteStore(redis_client).publish({"AAPL": quote("AAPL", "189.25")}, NOW)
    with Client(worker.port) as client:
        assert client.switch(DATA, session_id).instruction is Instruction.STATE_SWITCH_SUCCESS

        def current() -> Message | None:
            packets, value = client.fetch(
                Instruction.GET_ASSET_VALUE_CURRENT, "AAPL", session=session_id
            )
            if isinstance(value, Message):  # not refreshed yet: the fail returned us to command
                assert client.switch(DATA, session_id).instruction is (
                    Instruction.STATE_SWITCH_SUCCESS
                )
                return None
            return value  # type: ignore[return-value]

        record = from_record(wait_for(current, timeout=5))
        assert record == {
            "symbol": "AAPL",
            "open": Decimal("188.25"),
            "high": Decimal("190.25"),
            "low": Decimal("187.25"),
            "close": Decimal("189.25"),
            "volume": 12345,
            "time": NOW,
        }
        # The last packet put the connection back in the command state: a data request
        # is refused until the next switchState, a command is accepted.
        assert client.conn.state.value == "command"
        client.send_raw(
            encode_message(
                Message(Instruction.GET_ASSET_VALUE_CURRENT, ("AAPL",), session_id=session_id)
            )
        )
        refused = client.receive()
        assert refused.instruction is Instruction.DATA_FAIL
        assert fail_args(refused)[0] == ErrorCode.WRONG_STATE
        # Asset info, with a lower-case symbol; the quote is nested in the record.
        assert client.switch(DATA, session_id).instruction is Instruction.STATE_SWITCH_SUCCESS
        _, info = client.fetch(Instruction.GET_ASSET_INFO, "aapl", session=session_id)
        fields = from_record(info)  # type: ignore[arg-type]
        assert (fields["symbol"], fields["currency"]) == ("AAPL", "USD")
        assert from_record(fields["quote"])["close"] == Decimal("189.25")
        assert fields["updated_at"] == NOW


def test_unknown_asset_and_history_fail_with_reasons(
    worker: WorkerProcess, session_id: uuid.UUID
) -> None:
    with Client(worker.port) as client:
        client.switch(DATA, session_id)
        _, fail = client.fetch(Instruction.GET_ASSET_VALUE_CURRENT, "XYZ", session=session_id)
        assert isinstance(fail, Message) and fail.instruction is Instruction.DATA_FAIL
        code, reason = fail_args(fail)
        assert code == ErrorCode.UNKNOWN_ASSET
        assert reason == "unknown asset XYZ; known: AAPL, MSFT, GOOG"
        # A configured asset without a quote yet.
        client.switch(DATA, session_id)
        _, fail = client.fetch(Instruction.GET_ASSET_VALUE_CURRENT, "MSFT", session=session_id)
        assert isinstance(fail, Message) and fail_args(fail)[0] == ErrorCode.NO_DATA
        client.switch(DATA, session_id)
        _, fail = client.fetch(
            Instruction.GET_ASSET_VALUE_DAY, "AAPL", NOW.date(), session=session_id
        )
        assert isinstance(fail, Message)
        # History comes from the master: its answer is relayed.
        assert fail_args(fail) == (ErrorCode.NO_DATA, "no data for that range")


def test_wrong_state_instructions_fail_and_the_connection_stays_usable(
    worker: WorkerProcess, session_id: uuid.UUID
) -> None:
    with Client(worker.port) as client:
        # A data request in the command state.
        client.send_raw(
            encode_message(
                Message(Instruction.GET_ASSET_INFO, ("AAPL",), session_id=session_id, request_id=5)
            )
        )
        reply = client.receive()
        assert (reply.instruction, reply.request_id) == (Instruction.DATA_FAIL, 5)
        code, reason = fail_args(reply)
        assert code == ErrorCode.WRONG_STATE and "switchState(1) first" in reason
        # switchState(0) while already in the command state.
        to_command = Message(Instruction.SWITCH_STATE, (0,), session_id=session_id)
        client.send_raw(encode_message(to_command))
        assert client.receive().instruction is Instruction.STATE_SWITCH_FAIL
        # An instruction only the master may receive.
        client.send_raw(encode_message(Message(Instruction.LINK_HELLO, ("x", "y", "z"))))
        reply = client.receive()
        assert reply.instruction is Instruction.ERROR
        assert fail_args(reply)[0] == ErrorCode.TYPE_MISMATCH
        # A command in the data transfer state.
        assert client.switch(DATA, session_id).instruction is Instruction.STATE_SWITCH_SUCCESS
        client.send_raw(
            encode_message(Message(Instruction.PURCHASE_ASSET, ("AAPL", 1), session_id=session_id))
        )
        reply = client.receive()
        assert reply.instruction is Instruction.PURCHASE_FAIL
        assert fail_args(reply)[0] == ErrorCode.WRONG_STATE
        # An argument of the wrong type, still framed: refused, connection kept.
        frame = encode_message(
            Message(Instruction.GET_ASSET_INFO, ("AAPL",), session_id=session_id)
        )
        int_one = b"\x02" + (1).to_bytes(8, "little")  # an INT where a STR belongs, same size
        assert len(int_one) == len(frame) - HEADER_SIZE
        client.send_raw(frame[:HEADER_SIZE] + int_one)
        reply = client.receive()
        assert reply.instruction is Instruction.DATA_FAIL
        assert fail_args(reply)[0] == ErrorCode.BAD_ARGUMENT
        # Still usable: the failure ended the transfer, a command is served.
        resumed = client.call(Instruction.LOGIN_SESSION, session=session_id)
        assert resumed.instruction is Instruction.SESSION_ID
        assert resumed.args[0] == session_id and resumed.args[2] == "alice"


def test_garbage_closes_only_that_client(worker: WorkerProcess, session_id: uuid.UUID) -> None:
    with Client(worker.port) as good, Client(worker.port) as bad:
        bad.send_raw(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n" + b"x" * HEADER_SIZE)
        farewell = bad.receive()
        assert farewell.instruction is Instruction.ERROR
        assert fail_args(farewell)[0] == ErrorCode.BAD_MAGIC
        assert bad.closed_by_peer()
        reply = good.call(Instruction.LOGIN_SESSION, session=session_id)
        assert reply.instruction is Instruction.SESSION_ID
    # Logged to the default log file, <state_dir>/logs/<worker_name>.log.
    log_file = Path(worker.env["PT_STATE_DIR"]) / "logs" / "worker-1.log"
    wait_for(lambda: log_file.exists() and "unreadable bytes (BAD_MAGIC)" in log_file.read_text())


def test_oversized_frame_closes_the_client(worker: WorkerProcess) -> None:
    with Client(worker.port) as client:
        header = bytearray(encode_message(Message(Instruction.LOGIN, ("a", "b", False))))
        header[20:24] = (10 * 1024 * 1024).to_bytes(4, "little")  # data size field
        client.send_raw(bytes(header[:HEADER_SIZE]))
        reply = client.receive()
        assert fail_args(reply)[0] == ErrorCode.FRAME_TOO_LARGE
        assert client.closed_by_peer()


def test_idle_and_stuck_clients_are_closed(tmp_path: Path, redis_url: str) -> None:
    with running_worker(tmp_path, redis_url, client_idle_timeout=1) as worker:
        with Client(worker.port) as idle, Client(worker.port) as stuck:
            stuck.send_raw(b"PT\x01")  # three bytes of a header, then nothing
            started = time.monotonic()
            farewell = idle.receive()
            assert farewell.instruction is Instruction.ERROR
            code, reason = fail_args(farewell)
            assert code == ErrorCode.TIMEOUT and "idle for 1 s" in reason
            assert idle.closed_by_peer()
            assert stuck.closed_by_peer()
            assert 0.8 < time.monotonic() - started < 30  # generous: a busy machine
            # The worker itself goes on serving.
            with Client(worker.port) as fresh:
                reply = fresh.call(Instruction.LOGIN_SESSION, session=uuid.uuid4())
                assert reply.instruction is Instruction.LOGIN_FAIL


def test_unknown_expired_and_foreign_sessions_are_refused(
    worker: WorkerProcess, redis_client: redis.Redis, sessions: SessionStore
) -> None:
    short = signed_sessions(redis_client, 1, 1)
    expiring = short.create(1, "bob", "127.0.0.1", remember=False).session_id
    mine = sessions.create(2, "carol", "127.0.0.1", remember=False).session_id
    with Client(worker.port) as client:
        for session in (NIL, uuid.uuid4()):
            reply = client.switch(DATA, session)
            assert reply.instruction is Instruction.STATE_SWITCH_FAIL
            assert fail_args(reply)[0] == ErrorCode.INVALID_SESSION
        assert client.switch(DATA, expiring).instruction is Instruction.STATE_SWITCH_SUCCESS
        client.switch(COMMAND, expiring)
        time.sleep(1.3)
        reply = client.switch(DATA, expiring)
        assert fail_args(reply) == (
            ErrorCode.INVALID_SESSION,
            "session is unknown or expired: log in again",
        )
        reply = client.call(Instruction.PURCHASE_ASSET, "AAPL", 1, session=expiring)
        assert reply.instruction is Instruction.PURCHASE_FAIL
        assert fail_args(reply)[0] == ErrorCode.INVALID_SESSION and reply.args[2] == NIL
    # carol's session used from another address of this machine.
    with Client(worker.port, source_ip="127.0.0.2") as thief:
        for instruction in (Instruction.LOGIN_SESSION, Instruction.LOGOUT):
            reply = thief.call(instruction, session=mine)
            assert fail_args(reply)[0] == ErrorCode.SESSION_IP_MISMATCH
        reply = thief.switch(DATA, mine)
        assert reply.instruction is Instruction.STATE_SWITCH_FAIL
        assert fail_args(reply)[0] == ErrorCode.SESSION_IP_MISMATCH
    assert sessions.get(mine, "127.0.0.1").username == "carol"  # untouched by the attempts


def test_logout_ends_the_session_everywhere(
    tmp_path: Path, redis_url: str, sessions: SessionStore, session_id: uuid.UUID
) -> None:
    with (
        keyed_worker(tmp_path, redis_url) as first,
        keyed_worker(tmp_path, redis_url, worker_name="worker-2") as second,
    ):
        with Client(first.port) as a, Client(second.port) as b, Client(second.port) as c:
            assert b.call(Instruction.LOGIN_SESSION, session=session_id).args[0] == session_id
            for _ in range(2):  # c's connection now trusts the session it verified
                assert c.switch(DATA, session_id).instruction is Instruction.STATE_SWITCH_SUCCESS
                assert c.switch(COMMAND, session_id).instruction is Instruction.STATE_SWITCH_SUCCESS
            assert a.call(Instruction.LOGOUT, session=session_id).instruction is (
                Instruction.LOGOUT_SUCCESS
            )
            reply = b.call(Instruction.LOGIN_SESSION, session=session_id)
            assert reply.instruction is Instruction.LOGIN_FAIL
            assert fail_args(reply)[0] == ErrorCode.INVALID_SESSION

            def refused() -> bool:  # once the announcement reached the second worker
                reply = c.switch(DATA, session_id)
                if reply.instruction is Instruction.STATE_SWITCH_SUCCESS:
                    c.switch(COMMAND, session_id)
                    return False
                assert fail_args(reply)[0] == ErrorCode.INVALID_SESSION
                return True

            wait_for(refused)


def drain_once(queue: OrderQueue, decide: Callable[[Order], Outcome]) -> list[Order]:
    """What the master does once per interval, reduced to the queue: read, decide, complete."""
    entries = wait_for(lambda: queue.read_batch(100), timeout=5)
    queue.complete([(entry, decide(entry.order)) for entry in entries if entry.order])
    return [entry.order for entry in entries if entry.order is not None]


def test_orders_are_queued_stamped_and_answered_with_the_outcome(
    worker: WorkerProcess, redis_client: redis.Redis, session_id: uuid.UUID
) -> None:
    queue = OrderQueue(redis_client)
    queue.ensure_group()
    QuoteStore(redis_client).publish({"AAPL": quote("AAPL", "100.00")}, NOW)
    replies: list[Message] = []

    def order(instruction: Instruction, symbol: str, quantity: int) -> threading.Thread:
        def run() -> None:
            with Client(worker.port) as client:
                replies.append(client.call(instruction, symbol, quantity, session=session_id))

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def fill(order: Order) -> Outcome:
        price = Decimal("100.00")
        return Outcome(
            order.order_id, "filled", 0, "", order.side, order.symbol, order.quantity, price, NOW
        )

    def reject(order: Order) -> Outcome:
        reason = "you hold 3 AAPL, cannot sell 5"
        code = int(ErrorCode.INSUFFICIENT_POSITION)
        return Outcome(
            order.order_id, "rejected", code, reason, order.side, order.symbol, 5, None, None
        )

    before = datetime.now(timezone.utc)
    buying = order(Instruction.PURCHASE_ASSET, "aapl", 3)
    (placed,) = drain_once(queue, fill)
    buying.join(10)
    after = datetime.now(timezone.utc)
    assert (placed.side, placed.symbol, placed.quantity) == ("buy", "AAPL", 3)
    assert (placed.account_id, placed.client_ip, placed.worker) == (7, "127.0.0.1", "worker-1")
    assert before <= placed.received_at <= after
    (reply,) = replies
    assert reply.instruction is Instruction.PURCHASE_SUCCESS
    assert reply.args == (placed.order_id, "AAPL", 3, Decimal("100.00"), NOW)

    replies.clear()
    selling = order(Instruction.SELL_ASSET, "AAPL", 5)
    (placed,) = drain_once(queue, reject)
    selling.join(10)
    (reply,) = replies
    assert reply.instruction is Instruction.SELL_FAIL
    assert reply.args == (
        int(ErrorCode.INSUFFICIENT_POSITION),
        "you hold 3 AAPL, cannot sell 5",
        placed.order_id,
    )


def test_orders_the_worker_can_judge_are_refused_without_queuing(
    worker: WorkerProcess, redis_client: redis.Redis, session_id: uuid.UUID
) -> None:
    with Client(worker.port) as client:
        reply = client.call(Instruction.PURCHASE_ASSET, "NOPE", 1, session=session_id)
        assert reply.instruction is Instruction.PURCHASE_FAIL
        assert fail_args(reply)[0] == ErrorCode.UNKNOWN_ASSET and reply.args[2] == NIL
        for quantity in (0, -4):
            reply = client.call(Instruction.SELL_ASSET, "AAPL", quantity, session=session_id)
            assert reply.instruction is Instruction.SELL_FAIL
            assert fail_args(reply)[0] == ErrorCode.INVALID_QUANTITY
    assert OrderQueue(redis_client).pending_count() == 0


def test_an_order_decided_after_several_seconds_is_still_answered(
    worker: WorkerProcess, redis_client: redis.Redis, session_id: uuid.UUID
) -> None:
    """Longer than redis-py's 5 s socket timeout: the wait must not end in an error."""
    queue = OrderQueue(redis_client)
    queue.ensure_group()
    with Client(worker.port) as client:
        request = client.message(Instruction.PURCHASE_ASSET, "MSFT", 1, session=session_id)
        client.send(request)
        (entry,) = wait_for(lambda: queue.read_batch(10), timeout=5)
        assert entry.order is not None
        time.sleep(6)
        price = Decimal("420.00")
        outcome = Outcome(entry.order.order_id, "filled", 0, "", "buy", "MSFT", 1, price, NOW)
        queue.complete([(entry, outcome)])
        reply = client.receive()
    assert reply.instruction is Instruction.PURCHASE_SUCCESS
    assert reply.args == (entry.order.order_id, "MSFT", 1, price, NOW)
