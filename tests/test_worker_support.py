"""Helpers for the worker tests (no tests here): a worker process, a client, a scripted master.

The worker runs as a real subprocess (`pt worker run`'s command function,
monkey-patched as in production) against the test's Redis. The client is a
small blocking one built on ``papertrader.protocol.Connection``. Where a
master is needed, ``ScriptedMaster`` speaks the link protocol over a real
socket and answers the way the contract says the master does, so the worker
is exercised without waiting for the master server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from test_workers_keys import keys
from test_workers_keys import worker_env as key_env
from tls_support import connect, server_context

from papertrader.protocol import (
    HEADER_SIZE,
    NIL,
    Connection,
    FrameDecoder,
    Instruction,
    Message,
    NeedData,
    Reassembler,
    Role,
    Value,
    decode_payload,
    encode_message,
    packets_for,
    reply_to,
)
from papertrader.protocol.link_seal import (
    Direction,
    EphemeralShare,
    Opener,
    Sealer,
    derive_link_keys,
    proof_transcript,
)
from papertrader.protocol.link_seal import auth_transcript as transcript_of
from papertrader.protocol.values import timestamp_micros
from papertrader.services.ports import free_port
from papertrader.store.session_signing import SessionSigner

ROOT = Path(__file__).resolve().parents[1]
#: The scripted master's session-signing key: it sends the public half to every worker
#: (LINK_SESSION_KEY), and sessions the tests make are signed with it, as the master does.
SESSION_SIGNER = SessionSigner.generate()
DEFAULT_ASSETS = "AAPL,MSFT,GOOG"


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 10.0,
    step: float = 0.02,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Poll until ``condition()`` is truthy; its value, or AssertionError after ``timeout``.
    ``sleep``: ``gevent.sleep`` when a greenlet of the test must run meanwhile (the
    tests are not monkey-patched)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        sleep(step)


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def started(self) -> bool:
        """Whether it said it listens for clients (on its own port: it exits if taken)."""
        return "listening for clients" in self.log()

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def worker_env(
    tmp_path: Path, redis_url: str, port: int, master_port: int, **settings: Any
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PT_")}
    env.update(
        {
            "PT_REDIS_URL": redis_url,
            "PT_STATE_DIR": str(tmp_path / "state"),
            "PT_WORKER_HOST": "127.0.0.1",
            "PT_WORKER_PORT": str(port),
            "PT_WEB_PORT": "0",  # the web page on any free port: tests run side by side
            "PT_WORKER_PROCESSES": "1",  # one process per worker unless a test asks for more
            "PT_MASTER_CONNECT": f"127.0.0.1:{master_port}",
            "PT_UPDATE_INTERVAL": "0.3",
            "PT_ASSETS": DEFAULT_ASSETS,
            "PT_LOG_FLUSH_SECONDS": "0.1",
            "PT_LOGIN_RATE_PER_ADDRESS": "100000/minute",
            "PT_REGISTER_RATE_PER_ADDRESS": "100000/minute",
            "PT_RESUME_RATE_PER_ADDRESS": "100000/minute",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(key_env(str(settings.get("worker_name", "worker-1"))))
    env.update({f"PT_{key.upper()}": str(value) for key, value in settings.items()})
    return env


@contextmanager
def running_worker(
    tmp_path: Path,
    redis_url: str,
    master_port: int | None = None,
    args: tuple[str, ...] = (),
    **settings: Any,
) -> Iterator[WorkerProcess]:
    """A worker subprocess listening on a free port; SIGTERM at the end must exit 0.
    Started again on a new port if another process took its port before it could
    listen (the test machine's race, not a behaviour under test)."""
    master_port = master_port or free_port()  # nobody listens there unless the test does
    for attempt in range(3):
        worker = _start_worker(tmp_path, redis_url, free_port(), master_port, args, settings)
        if worker.started() or attempt == 2 or "Address already in use" not in worker.log():
            break
        worker.stop()
    try:
        if not worker.started():
            raise AssertionError(f"worker did not start:\n{worker.log()}")
        yield worker
    finally:
        code = worker.stop()
    assert code == 0, f"worker exited with {code}:\n{worker.log()}"
    assert "Traceback" not in worker.log(), worker.log()


def _start_worker(
    tmp_path: Path,
    redis_url: str,
    port: int,
    master_port: int,
    args: tuple[str, ...],
    settings: dict[str, Any],
) -> WorkerProcess:
    """Launch a worker on ``port`` and wait until it listens or exits (or 20 s pass)."""
    env = worker_env(tmp_path, redis_url, port, master_port, **settings)
    log_path = tmp_path / f"worker-{port}.stderr"
    with log_path.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from papertrader_cli.worker import worker; worker()",
                "run",
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    worker = WorkerProcess(process, port, log_path, env)
    deadline = time.monotonic() + 20
    while not worker.started() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return worker


class Client:
    """A blocking test client: protocol Connection(Role.CLIENT) over TLS (test CA)."""

    def __init__(
        self,
        port: int,
        source_ip: str = "127.0.0.1",
        timeout: float = 10.0,
        max_data_size: int = 65536,
    ) -> None:
        self.sock = connect(port, timeout=timeout, source_address=(source_ip, 0))
        self.conn = Connection(Role.CLIENT, max_data_size)
        self._request_ids = iter(range(1, 1 << 32))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, message: Message) -> None:
        self.sock.sendall(self.conn.send(message))

    def send_raw(self, data: bytes) -> None:
        """Bytes the client state machine would refuse to produce."""
        self.sock.sendall(data)

    def receive(self) -> Message:
        while True:
            message = self.conn.next_message()
            if not isinstance(message, NeedData):
                return message
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the worker closed the connection")
            self.conn.receive_data(data)

    def message(self, instruction: Instruction, *args: Value, session: uuid.UUID = NIL) -> Message:
        return Message(instruction, args, session_id=session, request_id=next(self._request_ids))

    def call(self, instruction: Instruction, *args: Value, session: uuid.UUID = NIL) -> Message:
        request = self.message(instruction, *args, session=session)
        self.send(request)
        reply = self.receive()
        assert reply.request_id == request.request_id
        return reply

    def fetch(
        self, instruction: Instruction, *args: Value, session: uuid.UUID = NIL
    ) -> tuple[list[Message], Value | Message]:
        """A data request: (packets, decoded value), or (packets, DATA_FAIL message)."""
        request = self.message(instruction, *args, session=session)
        self.send(request)
        reassembler = Reassembler()
        packets: list[Message] = []
        while True:
            reply = self.receive()
            assert reply.request_id == request.request_id
            if reply.instruction is not Instruction.DATA:
                return packets, reply
            packets.append(reply)
            payload = reassembler.feed(reply)
            if payload is not None:
                return packets, decode_payload(payload)

    def switch(self, state: int, session: uuid.UUID) -> Message:
        return self.call(Instruction.SWITCH_STATE, state, session=session)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the worker closes the connection (messages before that are skipped)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return True


# -- a scripted master -------------------------------------------------------------------

Answer = Callable[[Message], list[Message] | None]


@dataclass
class LinkConnection:
    sock: socket.socket
    hello: Message | None = None
    received: list[Message] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sealer: Sealer | None = None

    def send(self, messages: list[Message], max_data_size: int) -> None:
        with self.lock:
            frames = [encode_message(m, max_data_size) for m in messages]
            if self.sealer is not None:
                frames = [self.sealer.seal(frame) for frame in frames]
            self.sock.sendall(b"".join(frames))


class ScriptedMaster:
    """The master side of the link on a real socket: welcomes or refuses, then answers.

    ``answer`` maps each request to the frames sent back (None: no answer);
    it raises ``DropLink`` to close the link instead.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        refuse: tuple[int, str] | None = None,
        answer: Answer | None = None,
        heartbeat: float | None = 0.3,
        max_data_size: int = 65536,
        request_deadline: float = 10.0,
    ) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self.listener.getsockname()[1])
        self.refuse = refuse
        self.answer = answer
        self.heartbeat = heartbeat
        self.max_data_size = max_data_size
        self.request_deadline = request_deadline
        self.attempts: list[float] = []
        self.links: list[LinkConnection] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for link in self.links:
            try:
                link.sock.close()
            except OSError:
                pass

    def __enter__(self) -> ScriptedMaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def requests(self) -> list[Message]:
        """What the workers asked (heartbeats and web origins are not requests)."""
        return [m for link in self.links for m in link.received if m.instruction not in _UNANSWERED]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.attempts.append(time.monotonic())
            try:  # the worker's link is TLS: the test certificate, verified by the worker
                sock.settimeout(10)
                sock = server_context().wrap_socket(sock, server_side=True)
                sock.settimeout(None)
            except OSError:
                sock.close()
                continue
            link = LinkConnection(sock)
            self.links.append(link)
            threading.Thread(target=self._serve, args=(link,), daemon=True).start()

    def _handshake(self, link: LinkConnection, decoder: FrameDecoder) -> Opener | None:
        """The master side of the GPG handshake with the test master key; None if refused."""
        master = keys().master
        keyring = master.keyring()
        start = self._next(link, decoder, None)
        if start is None:  # the worker went away
            return None
        assert start.instruction is Instruction.LINK_START, start
        challenge = os.urandom(32)
        ephemeral = EphemeralShare()
        public = keyring.export_public(master.fingerprint, armor=False)
        link.send(
            [Message(Instruction.LINK_CHALLENGE, (challenge, public, ephemeral.public))],
            self.max_data_size,
        )
        auth = self._next(link, decoder, None)
        if auth is None:
            return None
        assert auth.instruction is Instruction.LINK_AUTH, auth
        if self.refuse is not None:
            link.send([Message(Instruction.LINK_REFUSED, self.refuse)], self.max_data_size)
            return None
        signed_at, nonce, worker_share, sealed_key, _signature = auth.args
        assert isinstance(signed_at, datetime) and isinstance(nonce, bytes)
        assert isinstance(sealed_key, bytes) and isinstance(worker_share, bytes)
        transcript = transcript_of(
            challenge, ephemeral.public, auth.worker_uuid, timestamp_micros(signed_at), nonce,
            worker_share, sealed_key,
        )  # fmt: skip
        secret = keyring.decrypt(sealed_key)
        assert secret is not None
        link_keys = derive_link_keys(ephemeral.exchange(worker_share), secret, transcript)
        proof = keyring.sign(proof_transcript(transcript), master.fingerprint)
        link.send(
            [Message(Instruction.LINK_PROOF, (proof,), worker_uuid=auth.worker_uuid)],
            self.max_data_size,
        )
        out, into = Direction.MASTER_TO_WORKER, Direction.WORKER_TO_MASTER
        link.sealer = Sealer(link_keys.key(out), auth.worker_uuid, out)
        return Opener(link_keys.key(into), auth.worker_uuid, into, self.max_data_size)

    def _next(
        self, link: LinkConnection, decoder: FrameDecoder, opener: Opener | None
    ) -> Message | None:
        while True:
            message = decoder.next_message()
            if not isinstance(message, NeedData):
                return message
            data = link.sock.recv(HEADER_SIZE + self.max_data_size)
            if not data:
                return None
            if opener is None:
                decoder.receive_data(data)
                continue
            opener.receive_data(data)
            while (frame := opener.next_frame()) is not None:
                decoder.receive_data(frame)

    def _serve(self, link: LinkConnection) -> None:
        decoder = FrameDecoder(self.max_data_size)
        try:
            opener = self._handshake(link, decoder)
            if opener is None:
                return
            while not self._stop.is_set():
                message = self._next(link, decoder, opener)
                if message is None:
                    return
                if link.hello is None:
                    link.hello = message
                    if self.refuse is not None:
                        refusal = Message(Instruction.LINK_REFUSED, self.refuse)
                        link.send([refusal], self.max_data_size)
                        return
                    welcome = Message(
                        Instruction.LINK_WELCOME,
                        (
                            str(message.args[0]),
                            round((self.heartbeat or 1.0) * 1000),
                            round(self.request_deadline * 1000),
                        ),
                        worker_uuid=message.worker_uuid,
                    )
                    key = Message(
                        Instruction.LINK_SESSION_KEY,
                        (SESSION_SIGNER.verifier.raw(),),
                        worker_uuid=message.worker_uuid,
                    )
                    link.send([welcome, key], self.max_data_size)
                    if self.heartbeat:
                        threading.Thread(
                            target=self._beat, args=(link, message.worker_uuid), daemon=True
                        ).start()
                    continue
                if message.instruction is Instruction.GET_WORKER_LIST:  # a worker's web page asks
                    link.send(packets_for((), request_id=message.request_id), self.max_data_size)
                    continue
                if message.instruction is Instruction.GET_SIGN_IN_OPTIONS:  # ... and this too
                    options = reply_to(message, Instruction.SIGN_IN_OPTIONS, ())  # no provider
                    link.send([options], self.max_data_size)
                    continue
                link.received.append(message)
                if message.instruction in _UNANSWERED or self.answer is None:
                    continue
                try:
                    replies = self.answer(message)
                except DropLink:
                    return
                if replies:
                    link.send(replies, self.max_data_size)
        except OSError:
            return
        finally:
            link.closed.set()
            link.sock.close()

    def _beat(self, link: LinkConnection, worker_uuid: uuid.UUID) -> None:
        assert self.heartbeat is not None
        beat = Message(Instruction.HEARTBEAT, worker_uuid=worker_uuid)
        while not link.closed.wait(self.heartbeat):
            try:
                link.send([beat], self.max_data_size)
            except OSError:
                return


#: What a master never answers: heartbeats, and a worker's web page origin (section 15).
_UNANSWERED = (Instruction.HEARTBEAT, Instruction.LINK_WEB_ORIGIN)


class DropLink(Exception):
    """Raised by an ``answer`` function: the scripted master closes the link instead."""


def signed_sessions(client: Any, ttl: int = 3600, remember_ttl: int = 86400, **options: Any) -> Any:
    """A SessionStore that mints sessions as the master does (signed with SESSION_SIGNER)."""
    from papertrader.store.sessions import SessionStore

    return SessionStore(client, ttl, remember_ttl, signer=SESSION_SIGNER, **options)


def minted(redis_url: str, request: Message, account_id: int, username: str) -> Message:
    """AUTHENTICATED as the master answers a good sign-in: the session made in Redis
    (workers may not write one), bound to the client address the worker stamped."""
    import redis

    from papertrader.protocol import reply_to

    client = redis.Redis.from_url(redis_url)
    try:
        session = signed_sessions(client).create(
            account_id, username, str(request.client_address), bool(request.arg("remember"))
        )
    finally:
        client.close()
    return reply_to(
        request,
        Instruction.AUTHENTICATED,
        account_id,
        username,
        session.session_id,
        session.expires_at,
    )


def master_contract(redis_url: str) -> Answer:
    """A scripted master's answers where the worker tests need the master: LOGOUT ends
    the session as the master does (workers may not delete one); a history request gets
    the master's NO_DATA answer."""
    import redis

    from papertrader.protocol import reply_to
    from papertrader.store.sessions import SessionError

    def answer(request: Message) -> list[Message] | None:
        if request.instruction is Instruction.LOGOUT:
            client = redis.Redis.from_url(redis_url)
            try:
                store = signed_sessions(client)
                store.end(store.get(request.session_id, str(request.client_address)))
            except SessionError as exc:
                return [reply_to(request, Instruction.ERROR, int(exc.code), exc.reason)]
            finally:
                client.close()
            return [reply_to(request, Instruction.LOGOUT_SUCCESS)]
        if request.instruction.name.startswith("GET_ASSET_VALUE_"):
            return [reply_to(request, Instruction.DATA_FAIL, 113, "no data for that range")]
        return None

    return answer


@contextmanager
def keyed_worker(tmp_path: Path, redis_url: str, **settings: Any) -> Iterator[WorkerProcess]:
    """A worker linked to a scripted master that gave it the session key (so the sessions
    tests make with ``signed_sessions`` are accepted) and answers ``master_contract``."""
    with ScriptedMaster(answer=master_contract(redis_url)) as master:
        with running_worker(tmp_path, redis_url, master_port=master.port, **settings) as worker:
            wait_for(lambda: "linked to master" in worker.log(), timeout=20)
            yield worker
