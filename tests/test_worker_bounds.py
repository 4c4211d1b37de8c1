"""Connection and buffer bounds of a real worker process: caps, deadlines, slow readers.

Bounds are generous and only one-sided where time is involved, so a busy
machine cannot fail these tests.
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import redis
from test_worker_support import Client, keyed_worker, signed_sessions, wait_for
from tls_support import client_context

from papertrader.market.quote import Quote
from papertrader.protocol import HEADER_SIZE, ErrorCode, Instruction, Message, encode_message
from papertrader.store.quotes import QuoteStore

NOW = datetime(2024, 5, 6, 14, 30, tzinfo=timezone.utc)


def publish_quote(client: redis.Redis) -> None:
    price = Decimal("189.25")
    QuoteStore(client).publish({"AAPL": Quote("AAPL", price, price, price, price, 1, NOW)}, NOW)


def fail_args(message: Message) -> tuple[int, str]:
    code, reason = message.args[0], message.args[1]
    assert isinstance(code, int) and isinstance(reason, str)
    return code, reason


def quote_ok(port: int, session: uuid.UUID, source: str = "127.0.0.1") -> bool:
    with Client(port, source_ip=source, timeout=30) as client:
        assert client.switch(1, session).instruction is Instruction.STATE_SWITCH_SUCCESS
        _packets, value = client.fetch(Instruction.GET_ASSET_VALUE_CURRENT, "AAPL", session=session)
        return not isinstance(value, Message)


def test_connections_are_capped_per_address_and_in_all(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    publish_quote(redis_client)
    store = signed_sessions(redis_client, 3600, 3600, ip_check=False)
    session = store.create(1, "a", "127.0.0.1", False).session_id
    settings = {"max_connections_per_address": 3, "max_connections": 5, "session_ip_check": "false"}
    with keyed_worker(tmp_path, redis_url, **settings) as worker:
        held = [Client(worker.port) for _ in range(3)]
        try:
            wait_for(lambda: "(3 clients)" in worker.log(), timeout=30)
            with Client(worker.port) as fourth:
                refused = fourth.receive()
                assert refused.instruction is Instruction.ERROR
                code, reason = fail_args(refused)
                assert code == ErrorCode.RATE_LIMITED and "from your address (3 open)" in reason
                assert fourth.closed_by_peer(timeout=30)
            # Another address is not affected...
            assert quote_ok(worker.port, session, source="127.0.0.2")
            held += [Client(worker.port, source_ip=f"127.0.0.{i}") for i in (2, 3)]
            wait_for(lambda: "(5 clients)" in worker.log(), timeout=30)
            # ...until the worker is full.
            with Client(worker.port, source_ip="127.0.0.9") as extra:
                code, reason = fail_args(extra.receive())
                assert code == ErrorCode.UNAVAILABLE and "full" in reason
        finally:
            for client in held:
                client.close()
        # Closed connections give their places back.
        wait_for(lambda: quote_ok(worker.port, session), timeout=30)


def test_a_client_without_a_session_gets_a_shorter_idle_time(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    publish_quote(redis_client)
    session = (
        signed_sessions(redis_client, 3600, 3600).create(1, "a", "127.0.0.1", False).session_id
    )
    with keyed_worker(tmp_path, redis_url, client_preauth_idle_timeout=1) as worker:
        with Client(worker.port, timeout=30) as anonymous, Client(worker.port) as member:
            assert member.switch(1, session).instruction is Instruction.STATE_SWITCH_SUCCESS
            started = time.monotonic()
            code, reason = fail_args(anonymous.receive())
            assert code == ErrorCode.TIMEOUT and "idle for 1 s" in reason
            assert time.monotonic() - started >= 0.9
            # The member presented a session: it keeps the ordinary idle time (300 s).
            member.sock.settimeout(0.5)
            try:
                member.sock.recv(1)
                raise AssertionError("the worker closed a client with a session")
            except TimeoutError:
                pass
            assert member.switch(0, session).instruction is Instruction.STATE_SWITCH_SUCCESS


def test_requests_over_max_request_size_close_the_connection(
    tmp_path: Path, redis_url: str
) -> None:
    with keyed_worker(tmp_path, redis_url) as worker:
        with Client(worker.port) as client:
            frame = encode_message(Message(Instruction.LOGIN, ("x" * 9000, "y", False)))
            client.send_raw(frame[:HEADER_SIZE])  # the header alone announces 9 KB
            code, reason = fail_args(client.receive())
            assert code == ErrorCode.FRAME_TOO_LARGE and "8192" in reason
            assert client.closed_by_peer(timeout=30)


def test_a_client_that_does_not_read_is_closed_while_others_are_served(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    publish_quote(redis_client)
    session = (
        signed_sessions(redis_client, 3600, 3600).create(1, "a", "127.0.0.1", False).session_id
    )
    request = b"".join(
        encode_message(message)
        for message in (
            Message(Instruction.SWITCH_STATE, (1,), session_id=session),
            Message(Instruction.GET_ASSET_VALUE_CURRENT, ("AAPL",), session_id=session),
        )
    )
    settings = {"client_send_buffer_bytes": 65536, "client_send_timeout": 2}
    with keyed_worker(tmp_path, redis_url, **settings) as worker:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", worker.port))
        hog = client_context().wrap_socket(raw, server_hostname="127.0.0.1")
        hog.setblocking(False)
        sent, deadline = 0, time.monotonic() + 60
        try:
            while time.monotonic() < deadline:  # pipeline requests, never read an answer
                try:
                    sent += hog.send(request * 200)
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    time.sleep(0.05)
                except OSError:
                    break  # the worker closed it
                if "did not read our answers" in worker.log():
                    break
            assert quote_ok(worker.port, session)  # others are served meanwhile
            wait_for(lambda: "did not read our answers for 2 s" in worker.log(), timeout=60)
        finally:
            hog.close()
        assert sent > 65536
