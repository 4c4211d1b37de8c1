"""The master process over real sockets: worker links, getWorkerList, signals.

Each test starts `python -m cli.master run` as a subprocess (gevent-patched as
in production) on a free port, against this test's Redis and PostgreSQL.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import cast

import pytest
import redis
from test_workers_keys import WorkerPeer, keys, master_env, register
from tls_support import connect

from papertrader.limits.backoff import LoginBackoff
from papertrader.limits.subjects import address_subject, name_subject
from papertrader.protocol import (
    ErrorCode,
    FrameDecoder,
    Instruction,
    Message,
    NeedData,
    Reassembler,
    Value,
    encode_message,
)
from papertrader.protocol.records import from_record, from_records
from papertrader.services.ports import free_port
from papertrader.store import keys as redis_keys
from papertrader.store.order_queue import Order, OrderQueue
from papertrader.store.pool import ConnectionPool
from papertrader.store.sessions import SessionStore
from papertrader.store.workers import read_live, set_worker_enabled
from papertrader.worker.link import LinkRefused

GOOD_PASSWORD = "paper trading practice 7"  # passes the password policy

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 0.3


@dataclass
class MasterProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


def start_master(
    tmp_path: Path, redis_url: str, database_url: str, port: int | None = None
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = port or free_port()
    log = tmp_path / "master.log"
    environment = {
        **os.environ,
        "PT_REDIS_URL": redis_url,
        "PT_DATABASE_URL": database_url,
        "PT_BCRYPT_COST": "4",
        "PT_UPDATE_INTERVAL": str(INTERVAL),
        "PT_ASSETS": "AAPL,MSFT",
        "PT_LOG_FLUSH_SECONDS": "0.1",
        **master_env(),
    }
    environment.pop("PT_CONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.master", "run", "--state-dir", str(tmp_path / "state"),
         "--port", str(port), "--log-file", str(log)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    return process, port, log


@pytest.fixture
def master(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[MasterProcess]:
    process, port, log = start_master(tmp_path, redis_url, database_url)
    running = MasterProcess(process, port, log)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"master exited with {process.returncode}: {err.decode()[-2000:]}")
        try:
            connect(port, timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("master did not listen within 30 s")
            time.sleep(0.05)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(database_url, size=2)
    try:
        yield pool
    finally:
        pool.close()


class Peer:
    """A blocking test client speaking frames to the master."""

    def __init__(self, port: int, worker_uuid: uuid.UUID | None = None) -> None:
        self.sock = connect(port, timeout=5)
        self.decoder = FrameDecoder()
        self.worker_uuid = worker_uuid or uuid.UUID(int=0)
        self.heartbeats = 0
        self.session_key: object = None  # LINK_SESSION_KEY, sent after the welcome

    def send(
        self, instruction: Instruction, *args: object, request_id: int = 0, **header: object
    ) -> None:
        fields = {"worker_uuid": self.worker_uuid, **header}
        message = Message(instruction, args, request_id=request_id, **fields)  # type: ignore[arg-type]
        self.sock.sendall(encode_message(message))

    def read(self, skip_heartbeats: bool = True) -> Message | None:
        """The next frame, or None when the master closed the connection."""
        while True:
            message = self.decoder.next_message()
            if isinstance(message, NeedData):
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.decoder.receive_data(data)
                continue
            if skip_heartbeats and message.instruction is Instruction.HEARTBEAT:
                self.heartbeats += 1
                continue
            if message.instruction is Instruction.LINK_SESSION_KEY:  # after the welcome
                self.session_key = message.arg("public_key")
                continue
            return message

    def read_data(self) -> Value:
        reassembler = Reassembler()
        while True:
            message = self.read()
            assert message is not None and message.instruction is Instruction.DATA, message
            done, value = reassembler.finish_value(message)
            if done:
                assert value is not None  # a finished transfer decodes to a value
                return value

    def close(self) -> None:
        self.sock.close()


def linked_worker(master: MasterProcess, pool: ConnectionPool, name: str = "w1") -> WorkerPeer:
    worker_uuid = uuid.uuid4()
    key = register(pool, name, worker_uuid, "eu-west", address="worker1.example.com:2049")
    peer = WorkerPeer(master.port, worker_uuid, key)
    peer.handshake()
    welcome = peer.hello(name, "eu-west", "worker1.example.com:2049")
    assert welcome.instruction is Instruction.LINK_WELCOME
    # The master's terms: its heartbeat period and request deadline, in milliseconds.
    assert (
        welcome.args[0] == name and cast(int, welcome.args[1]) >= 1000 and welcome.args[2] == 10_000
    )
    return peer


def wait_logged(master: MasterProcess, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = master.log.read_text() if master.log.exists() else ""
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def answer(peer: Peer | WorkerPeer) -> Message:
    message = peer.read()
    assert message is not None, "the master closed the connection"
    return message


def worker_list(port: int) -> list[dict[str, object]]:
    client = Peer(port)
    try:
        client.send(Instruction.GET_WORKER_LIST, request_id=7)
        return from_records(client.read_data())
    finally:
        client.close()


def test_unregistered_worker_is_refused_and_disconnected(master: MasterProcess) -> None:
    worker_uuid = uuid.uuid4()
    peer = WorkerPeer(master.port, worker_uuid, keys().key("rogue"))
    with pytest.raises(LinkRefused) as refused:
        peer.handshake()
    assert refused.value.code == ErrorCode.NOT_ALLOWED
    assert "registered" not in refused.value.reason  # the peer learns only "refused"
    assert peer.read() is None
    assert f"worker UUID {worker_uuid} is not registered" in wait_logged(master, "not registered")
    assert worker_list(master.port) == []


def test_disabled_worker_is_refused(master: MasterProcess, pool: ConnectionPool) -> None:
    worker_uuid = uuid.uuid4()
    key = register(pool, "off", worker_uuid, None)
    set_worker_enabled(pool, "off", False)
    peer = WorkerPeer(master.port, worker_uuid, key)
    with pytest.raises(LinkRefused) as refused:
        peer.handshake()
    assert "disabled" not in refused.value.reason
    assert "worker off is disabled" in wait_logged(master, "is disabled")


def test_worker_disabled_while_linked_is_booted_off(
    master: MasterProcess, pool: ConnectionPool
) -> None:
    peer = linked_worker(master, pool, "w9")
    set_worker_enabled(pool, "w9", False)
    refused = peer.read()  # within one watchdog round (1 s)
    assert refused is not None and refused.instruction is Instruction.LINK_REFUSED
    assert refused.arg("code") == ErrorCode.NOT_ALLOWED and "disabled" in str(refused.arg("reason"))
    assert peer.read() is None
    assert worker_list(master.port) == []


def test_client_may_ask_for_the_worker_list_repeatedly(
    master: MasterProcess, pool: ConnectionPool
) -> None:
    worker = linked_worker(master, pool, "w2")  # kept open: a closed link is unlisted
    client = Peer(master.port)
    for request_id in (1, 2):
        client.send(Instruction.GET_WORKER_LIST, request_id=request_id)
        assert [w["name"] for w in from_records(client.read_data())] == ["w2"]
    client.send(Instruction.LOGIN, "alice", GOOD_PASSWORD, False, request_id=3)
    refused = answer(client)
    assert refused.instruction is Instruction.LOGIN_FAIL and refused.request_id == 3
    assert refused.arg("code") == ErrorCode.NOT_ALLOWED
    worker.close()


def test_what_the_master_does_not_serve_costs_a_failure_return_not_the_connection(
    master: MasterProcess, pool: ConnectionPool
) -> None:
    worker = linked_worker(master, pool, "w3")
    client = Peer(master.port)
    client.send(Instruction.LOGIN, "alice", GOOD_PASSWORD, False, request_id=3)
    refused = answer(client)
    assert refused.instruction is Instruction.LOGIN_FAIL and refused.request_id == 3
    assert refused.arg("code") == ErrorCode.NOT_ALLOWED
    client.send(Instruction.GET_WORKER_LIST, request_id=4)  # the connection is still good
    assert [w["name"] for w in from_records(client.read_data())] == ["w3"]
    worker.close()


def test_register_and_login_over_a_worker_link(
    master: MasterProcess, pool: ConnectionPool, redis_client: redis.Redis
) -> None:
    peer = linked_worker(master, pool)
    assert worker_list(master.port) == [
        {"name": "w1", "region": "eu-west", "address": "worker1.example.com:2049", "web_url": None}
    ]

    peer.send(Instruction.REGISTER, "Alice", "alice@example.com", GOOD_PASSWORD, request_id=1)
    peer.send(Instruction.REGISTER, "alice", "a2@example.com", GOOD_PASSWORD, request_id=2)
    answers = {m.request_id: m for m in (peer.read(), peer.read()) if m is not None}
    # The two run concurrently (bcrypt and the strength check in thread pools): either
    # may win the name, on a busy machine too; exactly one does.
    names = {1: "Alice", 2: "alice"}
    won = [rid for rid, m in answers.items() if m.instruction is Instruction.REGISTER_SUCCESS]
    assert len(won) == 1 and answers[won[0]].args == (names[won[0]],), answers
    lost = answers[3 - won[0]]
    assert lost.instruction is Instruction.REGISTER_FAIL
    assert lost.arg("code") == ErrorCode.USERNAME_TAKEN

    peer.send(
        Instruction.LOGIN,
        "alice",
        GOOD_PASSWORD,
        True,
        request_id=3,
        client_address=ipaddress.ip_address("198.51.100.7"),
    )
    ok = peer.read()
    assert ok is not None and ok.instruction is Instruction.AUTHENTICATED and ok.request_id == 3
    assert ok.arg("username") == names[won[0]] and isinstance(ok.arg("account_id"), int)
    # The master made the session, bound to the address the worker stamped.
    minted = SessionStore(redis_client, 3600, 86400).fetch(ok.arg("session_id"))  # type: ignore[arg-type]
    assert (minted.account_id, minted.client_ip) == (ok.arg("account_id"), "198.51.100.7")
    assert ok.worker_uuid == peer.worker_uuid

    peer.send(Instruction.LOGIN, "alice", "wrong", False, request_id=4)
    peer.send(Instruction.LOGIN, "nobody", GOOD_PASSWORD, False, request_id=5)
    fails = {m.request_id: m for m in (peer.read(), peer.read()) if m is not None}
    assert fails[4].instruction is fails[5].instruction is Instruction.LOGIN_FAIL
    assert (
        fails[4].args
        == fails[5].args
        == (int(ErrorCode.INVALID_CREDENTIALS), "unknown user or wrong password")
    )

    # A frame with another UUID after the hello is dropped, not answered.
    peer.send(
        Instruction.LOGIN, "alice", GOOD_PASSWORD, False, request_id=6, worker_uuid=uuid.uuid4()
    )
    peer.send(Instruction.REGISTER, "bob", "bob@example.com", "x", request_id=7)
    nxt = peer.read()
    assert nxt is not None and nxt.request_id == 7 and nxt.instruction is Instruction.REGISTER_FAIL
    assert nxt.arg("code") == ErrorCode.INVALID_PASSWORD

    peer.close()
    deadline = time.monotonic() + 5
    while worker_list(master.port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker_list(master.port) == []


def test_the_master_enforces_the_login_back_off_a_worker_skipped(
    master: MasterProcess, pool: ConnectionPool, redis_client: redis.Redis
) -> None:
    """A worker that forwards every LOGIN (it skipped its own back-off check, or was
    compromised) gets no more guesses: the master counts each password it checks and
    refuses a waiting username before checking one, while the owner's address logs in."""
    peer = linked_worker(master, pool)
    home, stranger = ipaddress.ip_address("198.51.100.7"), ipaddress.ip_address("203.0.113.9")

    def login(password: str, address: object, request_id: int) -> Message:
        peer.send(
            Instruction.LOGIN, "carol", password, False, request_id=request_id,
            client_address=address,
        )  # fmt: skip
        return answer(peer)

    peer.send(Instruction.REGISTER, "carol", "carol@example.com", GOOD_PASSWORD, request_id=1)
    assert answer(peer).instruction is Instruction.REGISTER_SUCCESS
    assert login(GOOD_PASSWORD, home, 2).instruction is Instruction.AUTHENTICATED  # known now
    reasons = []
    for n in range(6):  # five free failures (the default), then each imposes a wait
        failed = login(f"guess {n}", stranger, 10 + n)
        assert failed.arg("code") == ErrorCode.INVALID_CREDENTIALS, failed
        reasons.append(str(failed.arg("reason")))
    assert not any("must wait" in reason for reason in reasons[:5]), reasons
    assert reasons[5].endswith("; the next attempt for this username must wait (retry after 1 s)")
    user = name_subject("carol")
    fail_key = redis_keys.login_failures(user)
    assert redis_client.hget(fail_key, "n") == b"6"  # the master counted them, no worker did

    # Six more failures as the master counts them: a wait of 2**6 s, longer than any
    # delay of a busy machine between here and the next request.
    for _ in range(6):
        LoginBackoff(redis_client, free_failures=5, cap_seconds=300).failed(user)
    refused = login(GOOD_PASSWORD, stranger, 20)  # even the right password waits
    assert refused.instruction is Instruction.LOGIN_FAIL
    assert refused.arg("code") == ErrorCode.RATE_LIMITED
    reason = str(refused.arg("reason"))
    waited = re.fullmatch(r"too many failed logins for this username: retry after (\d+) s", reason)
    assert waited is not None and 30 < int(waited.group(1)) <= 64, reason
    assert redis_client.hget(fail_key, "n") == b"12"  # refused before any check: not counted
    # The owner's address skips the wait; the login clears the count.
    assert login(GOOD_PASSWORD, home, 21).instruction is Instruction.AUTHENTICATED
    assert not redis_client.exists(fail_key)

    # A worker claiming the owner's address gets no free guesses either: that address
    # has a wait of its own, counted by the master.
    home_reasons = [str(login(f"guess {n}", home, 30 + n).arg("reason")) for n in range(6)]
    assert not any("must wait" in reason for reason in home_reasons[:5]), home_reasons
    assert home_reasons[5].endswith("must wait (retry after 1 s)"), home_reasons
    home_key = redis_keys.login_known_failures(user, address_subject(str(home)))
    assert redis_client.hget(home_key, "n") == b"6"
    for _ in range(6):  # 2**6 s, as above
        LoginBackoff(redis_client, free_failures=5, cap_seconds=300).failed(
            user, address_subject(str(home))
        )
    refused = login(GOOD_PASSWORD, home, 40)
    assert refused.arg("code") == ErrorCode.RATE_LIMITED, refused
    assert redis_client.hget(home_key, "n") == b"12"  # refused before any check
    peer.close()


def test_user_data_and_orders_through_a_running_master(
    master: MasterProcess, pool: ConnectionPool, redis_client: redis.Redis
) -> None:
    peer = linked_worker(master, pool)
    peer.send(Instruction.REGISTER, "carol", "carol@example.com", GOOD_PASSWORD, request_id=1)
    peer.send(Instruction.REGISTER, "dave", "dave@example.com", GOOD_PASSWORD, request_id=2)
    assert {answer(peer).instruction, answer(peer).instruction} == {Instruction.REGISTER_SUCCESS}
    peer.send(
        Instruction.LOGIN,
        "carol",
        GOOD_PASSWORD,
        False,
        request_id=3,
        client_address=ipaddress.ip_address("198.51.100.4"),
    )
    authenticated = answer(peer)
    carol_id = authenticated.arg("account_id")
    assert isinstance(carol_id, int)
    session = SessionStore(redis_client, 3600, 86400).fetch(authenticated.arg("session_id"))  # type: ignore[arg-type]

    # An order queued by a worker is filled at the master's current price.
    queue = OrderQueue(redis_client)
    placed = Order(
        uuid.uuid4(),
        carol_id,
        "buy",
        "AAPL",
        3,
        datetime.now(timezone.utc),
        "198.51.100.4",
        "w1",
        session=session.session_id.hex,
    )
    queue.submit(placed)
    filled = queue.wait_outcome(placed.order_id, timeout=10)
    assert filled is not None and filled.status == "filled" and filled.price is not None

    peer.send(Instruction.GET_USER_PORTFOLIO, "", request_id=10, session_id=session.session_id)
    own = from_record(peer.read_data())
    assert own["username"] == "carol"
    assert own["cash"] == Decimal("100000.00") - 3 * filled.price
    (position,) = from_records(own["positions"])
    assert position["symbol"] == "AAPL" and position["quantity"] == 3
    assert position["average_price"] == filled.price
    assert position["market_value"] == (3 * position["price"]).quantize(Decimal("0.01"))
    assert own["total_value"] == own["cash"] + position["market_value"]

    peer.send(Instruction.GET_USER_INFO, "dave", request_id=11, session_id=session.session_id)
    private = peer.read()  # dave's profile is private (the default): he looks like nobody
    assert private is not None and private.instruction is Instruction.DATA_FAIL
    assert private.arg("code") == ErrorCode.UNKNOWN_USER
    with pool.transaction() as cur:
        cur.execute("UPDATE accounts SET public_profile = TRUE WHERE username = 'dave'")
    peer.send(Instruction.GET_USER_INFO, "dave", request_id=15, session_id=session.session_id)
    other = from_record(peer.read_data())
    assert set(other) == {"username", "created_at"}  # no e-mail, no cash

    peer.send(
        Instruction.GET_USER_TRANSACTION_HISTORY, "", request_id=12, session_id=session.session_id
    )
    (entry,) = from_records(peer.read_data())
    assert (entry["order_id"], entry["side"], entry["quantity"]) == (placed.order_id, "buy", 3)

    peer.send(Instruction.GET_USER_INFO, "nobody", request_id=13, session_id=session.session_id)
    fail = peer.read()
    assert fail is not None and fail.instruction is Instruction.DATA_FAIL and fail.request_id == 13
    assert fail.arg("code") == ErrorCode.UNKNOWN_USER

    peer.send(Instruction.GET_USER_INFO, "", request_id=14, session_id=uuid.uuid4())
    expired = peer.read()
    assert expired is not None and expired.arg("code") == ErrorCode.INVALID_SESSION


def test_silent_link_is_dropped_and_sigterm_stops_cleanly(
    master: MasterProcess, pool: ConnectionPool
) -> None:
    peer = linked_worker(master, pool)
    started = time.monotonic()
    # We never send a heartbeat: dropped after max(10 s, 5 heartbeats of 1 s), not sooner.
    assert peer.read() is None
    assert 8 < time.monotonic() - started < 60  # not after 3 s as before; generous above
    assert peer.heartbeats >= 2  # the master's own heartbeats kept coming meanwhile
    assert master.stop() == 0
    log = master.log.read_text()
    assert "silent" in log and "worker w1 disconnected" in log and "master stopped" in log


def test_master_refuses_to_start_on_an_unmigrated_database(
    tmp_path: Path, redis_url: str, empty_database_url: str
) -> None:
    process, _port, _log = start_master(tmp_path, redis_url, empty_database_url)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "pt db migrate" in err.decode()
    assert "Traceback" not in err.decode()


def test_second_master_on_the_same_port_says_so(
    master: MasterProcess, tmp_path: Path, redis_url: str, database_url: str
) -> None:
    process, _port, _log = start_master(tmp_path / "second", redis_url, database_url, master.port)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{master.port}" in err.decode()
    assert "--port" in err.decode() and "Traceback" not in err.decode()


def test_garbage_on_a_link_is_answered_then_fatal_garbage_closes_it(
    master: MasterProcess, pool: ConnectionPool, redis_client: redis.Redis
) -> None:
    peer = linked_worker(master, pool)
    deadline = time.monotonic() + 5  # the master lists a worker just after welcoming it
    while not read_live(redis_client) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [w["name"] for w in read_live(redis_client)] == ["w1"]  # visible to `pt` commands

    frame = bytearray(
        encode_message(Message(Instruction.HEARTBEAT, request_id=41, worker_uuid=peer.worker_uuid))
    )
    frame[4:6] = (0x0599).to_bytes(2, "little")  # an instruction that does not exist
    peer.send_frame(bytes(frame))
    error = answer(peer)
    assert error.instruction is Instruction.ERROR and error.request_id == 41
    assert error.arg("code") == ErrorCode.UNKNOWN_INSTRUCTION

    peer.send(Instruction.LOGIN, "nobody", GOOD_PASSWORD, False, request_id=42)
    assert answer(peer).instruction is Instruction.LOGIN_FAIL  # the link still works

    peer.send_frame(b"GET / HTTP/1.1\r\n" + bytes(80))  # the framing is lost
    assert peer.read() is None
    deadline = time.monotonic() + 5
    while read_live(redis_client) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read_live(redis_client) == []


def test_a_slowloris_on_the_master_port_is_closed_by_the_whole_frame_deadline(
    master: MasterProcess,
) -> None:
    """One byte every second used to restart a 10 s clock forever; now the first
    frame must be whole within 10 s, however it trickles in."""
    frame = encode_message(Message(Instruction.GET_WORKER_LIST))
    sock = connect(master.port, timeout=5)
    started = time.monotonic()
    closed_after = None
    try:
        for byte in frame[:60]:
            try:
                sock.sendall(bytes([byte]))
                sock.settimeout(1.0)
                if sock.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    finally:
        sock.close()
    assert closed_after is not None, "the master kept a trickling connection open"
    assert 9.5 <= closed_after < 40
    assert "did not send its first frame in time" in wait_logged(master, "in time", 10)


def test_a_workers_web_page_is_listed_only_on_its_registered_host(
    master: MasterProcess, pool: ConnectionPool
) -> None:
    """LINK_WEB_ORIGIN (docs/PROTOCOL.md section 15) is pinned like the client address."""
    peer = linked_worker(master, pool)
    peer.send(Instruction.LINK_WEB_ORIGIN, "https://evil.example.net:8443")
    peer.send(Instruction.LINK_WEB_ORIGIN, "http://worker1.example.com:8443")  # not https
    assert "must be https" in wait_logged(master, "must be https")
    assert worker_list(master.port)[0]["web_url"] is None
    peer.send(Instruction.LINK_WEB_ORIGIN, "https://worker1.example.com:8443")
    deadline = time.monotonic() + 10
    while worker_list(master.port)[0]["web_url"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_list(master.port)[0]["web_url"] == "https://worker1.example.com:8443"
    assert "not the host of the worker's registered address" in wait_logged(master, "not the host")
