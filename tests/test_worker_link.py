"""The worker's link to the master: hello, backoff, failing fast, forwarding, reassembly.

The master side is ``ScriptedMaster``: a real socket that answers as the
contract says the master does, so each behaviour of the link can be provoked
on purpose (a refusal, a drop in the middle of a request, silence).
"""

from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from test_worker_support import (
    Client,
    DropLink,
    ScriptedMaster,
    minted,
    running_worker,
    signed_sessions,
    wait_for,
)

from papertrader.config.settings import derive_worker_uuid
from papertrader.protocol import (
    NIL,
    ErrorCode,
    Instruction,
    Message,
    max_chunk_size,
    packets_for,
    reply_to,
)
from papertrader.protocol.records import from_record, to_record
from papertrader.services.ports import free_port
from papertrader.store.sessions import SessionStore

WORKER_UUID = derive_worker_uuid("worker-1")


def fail_args(message: Message) -> tuple[int, str]:
    code, reason = message.args[0], message.args[1]
    assert isinstance(code, int) and isinstance(reason, str)
    return code, reason


def test_unreachable_master_fails_fast_then_the_link_comes_up(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    master_port = free_port()  # closed until the scripted master starts below
    with running_worker(tmp_path, redis_url, master_port=master_port) as worker:
        with Client(worker.port) as client:
            started = time.monotonic()
            reply = client.call(Instruction.LOGIN, "alice", "secret password", False)
            assert time.monotonic() - started < 1.0
            assert reply.instruction is Instruction.LOGIN_FAIL
            code, reason = fail_args(reply)
            assert code == ErrorCode.UNAVAILABLE and "master unreachable" in reason

            def login(request: Message) -> list[Message]:
                assert request.instruction is Instruction.LOGIN
                return [minted(redis_url, request, 41, "Alice")]

            with ScriptedMaster(master_port, answer=login) as master:
                wait_for(lambda: master.links and master.links[0].hello, timeout=10)
                hello = master.links[0].hello
                assert hello is not None and hello.instruction is Instruction.LINK_HELLO
                assert hello.args == ("worker-1", "local", f"127.0.0.1:{worker.port}")
                assert hello.worker_uuid == WORKER_UUID
                wait_for(lambda: "linked to master" in worker.log(), timeout=5)

                before = time.time_ns() // 1000
                reply = client.call(Instruction.LOGIN, "alice", "secret password", True)
                after = time.time_ns() // 1000
                assert reply.instruction is Instruction.SESSION_ID
                session_id, expires_at, username = reply.args
                assert username == "Alice"
                (forwarded,) = [m for m in master.requests() if m.instruction is Instruction.LOGIN]
                assert forwarded.args == ("alice", "secret password", True)
                assert forwarded.worker_uuid == WORKER_UUID
                assert forwarded.client_address == ipaddress.ip_address("127.0.0.1")
                assert before <= forwarded.timestamp <= after
                assert forwarded.session_id == NIL and forwarded.request_id != 0
    assert isinstance(session_id, uuid.UUID)
    session = SessionStore(redis_client, 3600, 86400).get(session_id, "127.0.0.1")
    assert (session.account_id, session.username, session.remember) == (41, "Alice", True)
    assert session.expires_at == expires_at
    assert "secret password" not in worker.log()
    assert session_id.hex not in worker.log()


def test_link_retry_delays_double_up_to_the_cap_with_bounded_jitter() -> None:
    from itertools import islice

    from papertrader.worker.master_link import BACKOFF_MAX, backoff_delays

    exact = list(islice(backoff_delays(0.2, 5.0, jitter=lambda: 0.5), 7))
    assert exact == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    low = list(islice(backoff_delays(jitter=lambda: 0.0), 3))
    high = list(islice(backoff_delays(jitter=lambda: 1.0), 3))
    assert low == pytest.approx([0.16, 0.32, 0.64]) and high == pytest.approx([0.24, 0.48, 0.96])
    assert max(islice(backoff_delays(), 40)) <= BACKOFF_MAX * 1.2


def test_a_refused_link_is_retried_with_growing_delays(tmp_path: Path, redis_url: str) -> None:
    with ScriptedMaster(refuse=(int(ErrorCode.NOT_ALLOWED), "unknown worker uuid")) as master:
        with running_worker(tmp_path, redis_url, master_port=master.port) as worker:
            wait_for(lambda: len(master.attempts) >= 4, timeout=60)
            attempts = list(master.attempts)
            log = worker.log()
    # The schedule itself is unit-tested (test_link_retry_delays_double_up_to_the_cap);
    # here only lower bounds, which a slow machine cannot break: each retry waits at least
    # the shortest delay it may draw (0.8 x 0.2 s doubling), so the worker never spins.
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert all(gap >= 0.8 * min(5.0, 0.2 * 2**i) * 0.95 for i, gap in enumerate(gaps)), gaps
    assert "the master refused the link: unknown worker uuid" in log


def test_a_link_dropped_mid_request_fails_that_request_at_once(
    tmp_path: Path, redis_url: str
) -> None:
    def drop(request: Message) -> list[Message]:
        raise DropLink

    with ScriptedMaster(answer=drop) as master:
        with running_worker(tmp_path, redis_url, master_port=master.port) as worker:
            wait_for(lambda: "linked to master" in worker.log())
            with Client(worker.port) as client:
                started = time.monotonic()
                reply = client.call(Instruction.REGISTER, "bob", "bob@example.com", "long password")
                assert time.monotonic() - started < 2.0
                assert reply.instruction is Instruction.REGISTER_FAIL
                code, reason = fail_args(reply)
                assert code == ErrorCode.UNAVAILABLE and "master unreachable" in reason
                # ...and the link comes back by itself.
                wait_for(lambda: len(master.attempts) >= 2, timeout=5)


def test_register_answers_are_relayed(tmp_path: Path, redis_url: str) -> None:
    def register(request: Message) -> list[Message]:
        if request.args[0] == "taken":
            code = int(ErrorCode.USERNAME_TAKEN)
            return [reply_to(request, Instruction.REGISTER_FAIL, code, "username is taken")]
        return [reply_to(request, Instruction.REGISTER_SUCCESS, request.args[0])]

    with ScriptedMaster(answer=register) as master:
        with running_worker(tmp_path, redis_url, master_port=master.port) as worker:
            wait_for(lambda: "linked to master" in worker.log())
            with Client(worker.port) as client:
                ok = client.call(Instruction.REGISTER, "dora", "d@example.com", "long password")
                assert ok.instruction is Instruction.REGISTER_SUCCESS and ok.args == ("dora",)
                taken = client.call(Instruction.REGISTER, "taken", "t@example.com", "long pass")
                assert taken.instruction is Instruction.REGISTER_FAIL
                assert fail_args(taken) == (ErrorCode.USERNAME_TAKEN, "username is taken")


def test_user_data_travels_as_packets_both_ways(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    max_data_size = 1024
    positions = [
        {"symbol": f"S{i:03d}", "quantity": i, "price": Decimal(f"{i}.25")} for i in range(60)
    ]
    portfolio = {"username": "erin", "cash": Decimal("1234.50"), "positions": positions}

    def answer(request: Message) -> list[Message]:
        if request.args[0] == "nobody":
            code = int(ErrorCode.UNKNOWN_USER)
            return [reply_to(request, Instruction.DATA_FAIL, code, "unknown user nobody")]
        return packets_for(
            to_record(portfolio),
            max_chunk_size(max_data_size),
            request_id=request.request_id,
            worker_uuid=request.worker_uuid,
        )

    session_id = signed_sessions(redis_client, 3600, 86400).create(9, "erin", "127.0.0.1", False)
    sid = session_id.session_id
    with ScriptedMaster(answer=answer, max_data_size=max_data_size) as master:
        with running_worker(
            tmp_path, redis_url, master_port=master.port, max_data_size=max_data_size
        ) as worker:
            wait_for(lambda: "linked to master" in worker.log())
            with Client(worker.port, max_data_size=max_data_size) as client:
                client.switch(1, sid)
                packets, value = client.fetch(Instruction.GET_USER_PORTFOLIO, "", session=sid)
                assert len(packets) > 3
                assert not isinstance(value, Message), value
                record = from_record(value)
                assert record["cash"] == Decimal("1234.50")
                assert [from_record(p) for p in record["positions"]] == positions
                (forwarded,) = master.requests()
                assert forwarded.session_id == sid and forwarded.args == ("",)
                assert forwarded.client_address == ipaddress.ip_address("127.0.0.1")

                client.switch(1, sid)
                _, fail = client.fetch(Instruction.GET_USER_INFO, "nobody", session=sid)
                assert isinstance(fail, Message) and fail.instruction is Instruction.DATA_FAIL
                assert fail_args(fail) == (ErrorCode.UNKNOWN_USER, "unknown user nobody")


def test_many_clients_share_the_link_concurrently(tmp_path: Path, redis_url: str) -> None:
    def login(request: Message) -> list[Message] | None:
        name = str(request.args[0])
        time.sleep(0.05)  # a slow master: the requests overlap on the link
        return [minted(redis_url, request, int(name[1:]), name.upper())]

    with ScriptedMaster(answer=login) as master:
        with running_worker(tmp_path, redis_url, master_port=master.port) as worker:
            wait_for(lambda: "linked to master" in worker.log())
            names: dict[str, object] = {}

            def run(name: str) -> None:
                with Client(worker.port) as client:
                    names[name] = client.call(Instruction.LOGIN, name, "pw", False).args[2]

            threads = [threading.Thread(target=run, args=(f"u{i}",)) for i in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
    assert names == {f"u{i}": f"U{i}" for i in range(20)}


def test_a_silent_master_is_dropped_and_redialled(tmp_path: Path, redis_url: str) -> None:
    with ScriptedMaster(heartbeat=None) as master:  # welcomes, then never says a word
        with running_worker(tmp_path, redis_url, master_port=master.port) as worker:
            # Dropped after max(10 s, 5 missed heartbeats), never sooner; generous bound.
            wait_for(lambda: len(master.attempts) >= 2, timeout=40)
            assert master.attempts[1] - master.attempts[0] >= 10
            beats = [m for m in master.links[0].received if m.instruction is Instruction.HEARTBEAT]
            assert len(beats) >= 2 and all(m.worker_uuid == WORKER_UUID for m in beats)
            assert all(m.timestamp > 0 for m in beats)  # stamped: the master learns our clock
            assert "the master was silent for 10 s" in worker.log()
