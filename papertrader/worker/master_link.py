"""Master server communication (spec 3.2.2): one persistent link shared by every client.

The worker keeps exactly one TCP connection to the master. Client greenlets
call :meth:`MasterLink.request` concurrently; each request gets a fresh
request id, one reader greenlet routes every answer back by that id (putting
multi-packet DATA transfers back together), and writes are serialised by a
lock so frames never interleave.

When the link is down, or drops while requests wait, those requests fail at
once with :class:`LinkError` (``UNAVAILABLE``, "master unreachable") instead of
hanging until their timeout: a client learns within milliseconds that it
should try again. The link itself reconnects in the background with
exponential backoff and jitter, and never spins on a refusing master.

Every connection starts with the GPG handshake (``worker/handshake.py``,
given as ``authenticate``), which yields the link key; from then on every
frame both ways is sealed with it (``protocol/link_seal.py``), LINK_HELLO
included. A sealed record from the master that does not open drops the link.
A LINK_REFUSED (a refused handshake, or the worker booted off or disabled)
calls ``on_refused``: the worker then stops serving clients until it is
linked again.

With several masters (an active one and standbys, ``master_connect``), the
link goes to the next address whenever a connection fails or ends, and at
once (without growing the backoff past ``STANDBY_RETRY``) when a master
answers ``MASTER_STANDBY``: the worker ends up linked to whichever master is
active, and moves when that changes.

The master's LINK_WELCOME sets the link's terms: its heartbeat period (we
beat at that period and drop a link silent for ``link_silence_window`` of
it) and how long a forwarded request may wait (``request_timeout``). A
request given up (timed out, or its client left) is cancelled with
LINK_CANCEL, so the master drops its work. LINK_HELLO and HEARTBEATs carry
our clock in the header timestamp: the master converts request stamps to
its own clock with them.
"""

from __future__ import annotations

import itertools
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.socket
from loguru import logger

from papertrader import metrics
from papertrader.config.settings import join_host_port
from papertrader.limits.deadlines import link_silence_window
from papertrader.protocol import (
    DEFAULT_MAX_DATA_SIZE,
    HEADER_SIZE,
    NIL,
    ErrorCode,
    FrameDecoder,
    Instruction,
    Message,
    NeedData,
    ProtocolError,
    Reassembler,
    encode_message,
)
from papertrader.protocol.link_seal import Direction, LinkKeys, Opener, Sealer, SealError
from papertrader.protocol.records import to_record
from papertrader.protocol.values import encode_payload
from papertrader.tls.contexts import describe_handshake_error
from papertrader.worker.link import LinkDropped, LinkError, LinkIdentity, LinkRefused

BACKOFF_START = 0.2
BACKOFF_MAX = 5.0
CONNECT_TIMEOUT = 5.0
#: Seconds the master may take to answer LINK_HELLO (and, later, the handshake).
HELLO_TIMEOUT = 10.0
#: How long a request waits for a link that is in the middle of its handshake.
CONNECTING_GRACE = 3.0
#: A link that stayed up this long was healthy: the next reconnect starts fast again.
STABLE_LINK_SECONDS = 10.0
#: A repeated connection failure is logged again at most this often (no log flood).
REPEAT_LOG_SECONDS = 60.0
#: Added to the master's request deadline before a request is given up here.
REQUEST_MARGIN = 1.0
#: Waiting for a forwarded answer before the master has said how long it may take.
DEFAULT_REQUEST_TIMEOUT = 30.0
#: Longest wait before trying the next master after a standby refused us.
STANDBY_RETRY = 0.5

_U32 = 0xFFFFFFFF


def backoff_delays(
    start: float = BACKOFF_START,
    cap: float = BACKOFF_MAX,
    jitter: Callable[[], float] = random.random,
) -> Iterator[float]:
    """0.2, 0.4, 0.8 ... 5, 5, ... seconds, each scaled by a random 0.8-1.2.

    The jitter keeps a fleet of workers from reconnecting in lock-step after a
    master restart.
    """
    delay = start
    while True:
        yield delay * (0.8 + 0.4 * jitter())
        delay = min(cap, delay * 2)


def _now_micros() -> int:
    return time.time_ns() // 1000


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _code_and_reason(message: Message) -> tuple[int, str]:
    """The (code, reason) arguments of a failure message."""
    code, reason = message.arg("code"), message.arg("reason")
    return (code if isinstance(code, int) else 0), str(reason)


class _Channel:
    """One connection's socket and its sealer: frames go out sealed, in sequence order."""

    def __init__(self, sock: socket.socket, sealer: Sealer) -> None:
        self.sock = sock
        self.sealer = sealer
        self.lock = gevent.lock.Semaphore()

    def send(self, frame: bytes) -> None:
        with self.lock:  # sealing numbers the frame: seal and write in one step
            self.sock.sendall(self.sealer.seal(frame))


#: Given a fresh connection, runs the handshake and returns the link key.
Authenticate = Callable[[socket.socket], LinkKeys]


class _Pending:
    """One request waiting for its answer (a message, or DATA packets to reassemble)."""

    __slots__ = ("reassembler", "result")

    def __init__(self) -> None:
        self.result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self.reassembler = Reassembler()


class MasterLink:
    """The worker's persistent link to the master; see the module docstring."""

    def __init__(
        self,
        address: tuple[str, int] | list[tuple[str, int]],
        identity: LinkIdentity,
        heartbeat_interval: float,
        max_data_size: int = DEFAULT_MAX_DATA_SIZE,
        *,
        authenticate: Authenticate,
        status: Callable[[], dict[str, Any]] | None = None,
        on_refused: Callable[[str], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_session_key: Callable[[bytes], None] | None = None,
    ) -> None:
        #: Every master, in the order tried; ``address`` is the one tried now.
        self.addresses = list(address) if isinstance(address, list) else [address]
        self.address = self.addresses[0]
        #: TLS with the master (verified: chain and name); None with ``tls = false``.
        self.ssl_context = ssl_context
        self.identity = identity
        #: Until the master's welcome says otherwise (then: the master's period).
        self.heartbeat_interval = heartbeat_interval
        #: How long a forwarded request may wait (the master's deadline + a margin).
        self.request_timeout = DEFAULT_REQUEST_TIMEOUT
        self.max_data_size = max_data_size
        self.authenticate = authenticate
        self.status = status
        self.on_refused = on_refused
        #: Called with the master's session-signing public key (LINK_SESSION_KEY).
        self.on_session_key = on_session_key
        #: That key, as last received (the link relay hands it to the other processes).
        self.session_key: bytes | None = None
        self._sock: socket.socket | None = None
        self._channel: _Channel | None = None
        #: Why the master refused us (booted, disabled, unknown); None while welcome.
        self.out_of_service: str | None = None
        self._up = gevent.event.Event()
        self._connecting = False  # connected, handshake not finished yet
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._runner: gevent.Greenlet | None = None
        self._stopping = False
        #: How many times the link came up; tests and status output read it.
        self.connections = 0

    @property
    def where(self) -> str:
        return join_host_port(*self.address)

    # lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        if self._runner is None:
            self._stopping = False
            self._runner = gevent.spawn(self._run)

    def stop(self) -> None:
        """Close the link for good; waiting requests fail with UNAVAILABLE."""
        self._stopping = True
        self._close_socket()
        if self._runner is not None:
            self._runner.kill(block=True, timeout=5)
            self._runner = None
        self._fail_pending("the worker is shutting down")

    @property
    def connected(self) -> bool:
        return bool(self._up.is_set())

    def wait_connected(self, timeout: float | None = None) -> bool:
        """True once the master has welcomed us (within ``timeout`` seconds)."""
        ready: bool = self._up.wait(timeout)
        return ready

    # requests ------------------------------------------------------------
    def request(self, message: Message, timeout: float | None = None) -> Message | bytes:
        """Send ``message`` to the master and wait for its answer.

        Returns the answering message, or the whole payload (bytes) when the
        master answers with DATA packets. Raises :class:`LinkError` when the
        link is down, drops before the answer, or ``timeout`` seconds pass
        (None: the master's deadline, ``request_timeout``). A request given up
        (timeout, or the waiting greenlet killed) is cancelled on the master.
        """
        if timeout is None:
            timeout = self.request_timeout
        channel = self._channel
        if channel is None or not self._up.is_set():
            # A link in the middle of its handshake is moments from up: wait for it
            # rather than turn the client away; a link that is down fails at once.
            if not (self._connecting and self._up.wait(min(timeout, CONNECTING_GRACE))):
                raise LinkError("master unreachable: try again shortly", sent=False)
            channel = self._channel
            if channel is None:
                raise LinkError("master unreachable: try again shortly", sent=False)
        request_id = self._new_request_id()
        pending = _Pending()
        self._pending[request_id] = pending
        sent = False
        try:
            outgoing = replace(
                message, request_id=request_id, worker_uuid=self.identity.worker_uuid
            )
            self._send(channel, encode_message(outgoing, self.max_data_size))
            sent = True
            answer: Message | bytes = pending.result.get(timeout=timeout)
            return answer
        except gevent.Timeout:
            raise LinkError(f"master did not answer within {timeout:g} s: try again") from None
        finally:
            self._pending.pop(request_id, None)
            if sent and not pending.result.ready():
                gevent.spawn(self._cancel, channel, request_id)

    def _cancel(self, channel: _Channel, request_id: int) -> None:
        """Tell the master we gave up on a request (best effort): it drops the work."""
        cancel = Message(
            Instruction.LINK_CANCEL, request_id=request_id, worker_uuid=self.identity.worker_uuid
        )
        try:
            self._send(channel, encode_message(cancel, self.max_data_size))
        except LinkError:
            pass

    def _new_request_id(self) -> int:
        """A u32 id, never 0 (unsolicited frames) and unique among requests in flight."""
        while True:
            candidate = next(self._ids) & _U32
            if candidate and candidate not in self._pending:
                return candidate

    def _send(self, channel: _Channel, frame: bytes) -> None:
        try:
            channel.send(frame)
        except OSError as exc:  # includes the socket timeout: a master that stopped reading
            if channel is self._channel:
                self._close_socket()
            raise LinkError("master unreachable: the link dropped") from exc

    # the link ------------------------------------------------------------
    def _run(self) -> None:
        delays = backoff_delays()
        last_problem = ""
        last_logged = 0.0
        while not self._stopping:
            started = time.monotonic()
            standby = False
            try:
                self._session()
                problem = "the master closed the link"
            except LinkRefused as exc:
                problem = f"the master refused the link: {exc.reason} (code {exc.code})"
                standby = exc.code == ErrorCode.MASTER_STANDBY
                if exc.code == ErrorCode.NOT_ALLOWED:
                    first = self.out_of_service is None
                    self.out_of_service = exc.reason
                    if first and self.on_refused is not None:
                        self.on_refused(exc.reason)
            except LinkDropped as exc:
                problem = f"link lost: {exc}"
            except (OSError, ProtocolError) as exc:
                problem = f"cannot reach the master: {_describe(exc)}"
            except Exception as exc:  # a bug: log it, but keep the worker trying to link
                logger.exception("the master link failed unexpectedly")
                problem = f"internal error: {type(exc).__name__}"
            finally:
                self._connecting = False
                self._up.clear()
                self._close_socket()
                self._fail_pending("master unreachable: the link dropped")
            if self._stopping:
                break
            if time.monotonic() - started >= STABLE_LINK_SECONDS:
                delays = backoff_delays()
            delay = next(delays)
            if standby:
                delay = min(delay, STANDBY_RETRY)
            where = self.where
            self._next_address()
            then = "retrying" if self.where == where else f"trying {self.where}"
            now = time.monotonic()
            if problem != last_problem or now - last_logged >= REPEAT_LOG_SECONDS:
                logger.warning(f"master {where}: {problem}; {then} in {delay:.1f} s")
                last_problem, last_logged = problem, now
            else:
                logger.debug(f"master {where}: {problem}; {then} in {delay:.1f} s")
            gevent.sleep(delay)

    def _next_address(self) -> None:
        """Move on to the next master (the link failed, or a standby refused it)."""
        index = self.addresses.index(self.address) if self.address in self.addresses else -1
        self.address = self.addresses[(index + 1) % len(self.addresses)]

    def _session(self) -> None:
        """Connect, introduce ourselves, then serve the link until it drops."""
        sock = gevent.socket.create_connection(self.address, timeout=CONNECT_TIMEOUT)
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.address[0])
            except OSError as exc:
                sock.close()
                raise LinkDropped(describe_handshake_error(exc, self.address[0])) from None
        self._sock = sock
        self._connecting = True
        sock.settimeout(HELLO_TIMEOUT)
        keys = self.authenticate(sock)
        worker_uuid = self.identity.worker_uuid
        out, into = Direction.WORKER_TO_MASTER, Direction.MASTER_TO_WORKER
        channel = _Channel(sock, Sealer(keys.key(out), worker_uuid, out))
        opener = Opener(keys.key(into), worker_uuid, into, self.max_data_size)
        decoder = FrameDecoder(self.max_data_size)
        hello = Message(
            Instruction.LINK_HELLO,
            (self.identity.name, self.identity.region, self.identity.client_address),
            worker_uuid=worker_uuid,
            timestamp=_now_micros(),
        )
        channel.send(encode_message(hello, self.max_data_size))
        reply = self._read_message(sock, decoder, opener)
        if reply.instruction is Instruction.LINK_REFUSED:
            raise LinkRefused(*_code_and_reason(reply))
        if reply.instruction is not Instruction.LINK_WELCOME:
            raise LinkDropped(f"the master answered LINK_HELLO with {reply.instruction.name}")
        if self.identity.web_origin:  # for the worker list browsers fail over with
            origin = Message(
                Instruction.LINK_WEB_ORIGIN, (self.identity.web_origin,), worker_uuid=worker_uuid
            )
            channel.send(encode_message(origin, self.max_data_size))
        heartbeat_ms, deadline_ms = reply.arg("heartbeat_ms"), reply.arg("request_deadline_ms")
        if isinstance(heartbeat_ms, int) and heartbeat_ms > 0:
            self.heartbeat_interval = heartbeat_ms / 1000
        if isinstance(deadline_ms, int) and deadline_ms > 0:
            self.request_timeout = deadline_ms / 1000 + REQUEST_MARGIN
        # From now on a silent link is a dead one (several missed heartbeats, >= 10 s).
        sock.settimeout(link_silence_window(self.heartbeat_interval))
        self.connections += 1
        metrics.MASTER_LINK_CONNECTS.inc()
        self._channel = channel
        self.out_of_service = None
        self._up.set()
        self._connecting = False
        logger.info(
            f"linked to master {self.where} as {self.identity.name} "
            f"(uuid {self.identity.worker_uuid}, region {self.identity.region})"
        )
        beats = gevent.spawn(self._heartbeats, channel)
        try:
            while True:
                self._dispatch(self._read_message(sock, decoder, opener), channel)
        except OSError as exc:  # reset by the master, or closed by a failed heartbeat
            raise LinkDropped(_describe(exc)) from None
        finally:
            beats.kill(block=False)

    def _read_message(self, sock: socket.socket, decoder: FrameDecoder, opener: Opener) -> Message:
        """The next frame from the master; a non-fatal bad frame is logged and skipped."""
        while True:
            try:
                message = decoder.next_message()
            except ProtocolError as exc:
                if exc.fatal:
                    raise LinkDropped(f"unreadable frame from the master: {exc.reason}") from None
                logger.warning(f"dropped a bad frame from the master: {exc.reason}")
                self._fail_request(exc)
                continue
            if not isinstance(message, NeedData):
                return message
            try:
                data = sock.recv(HEADER_SIZE + self.max_data_size)
            except TimeoutError:
                raise LinkDropped(f"the master was silent for {sock.gettimeout():g} s") from None
            if not data:
                raise LinkDropped("the master closed the connection")
            opener.receive_data(data)
            try:
                while (frame := opener.next_frame()) is not None:
                    decoder.receive_data(frame)
            except SealError as exc:
                raise LinkDropped(f"refused a sealed frame from the master: {exc}") from None

    def _heartbeats(self, channel: _Channel) -> None:
        while True:
            gevent.sleep(self.heartbeat_interval)
            beat = Message(
                Instruction.HEARTBEAT,
                worker_uuid=self.identity.worker_uuid,
                timestamp=_now_micros(),  # the master learns our clock from it
            )
            try:
                self._send(channel, encode_message(beat, self.max_data_size))
            except LinkError:
                return

    def _answer_status(self, channel: _Channel, request: Message) -> None:
        """LINK_STATUS: this worker's live figures, for `pt workers info`."""
        figures = self.status() if self.status is not None else {}
        answer = Message(
            Instruction.LINK_STATUS,
            (encode_payload(to_record(figures)),),
            request_id=request.request_id,
            worker_uuid=self.identity.worker_uuid,
        )
        try:
            self._send(channel, encode_message(answer, self.max_data_size))
        except LinkError:
            pass

    def _dispatch(self, message: Message, channel: _Channel) -> None:
        """Route one frame from the master to the request waiting for it."""
        if message.worker_uuid not in (self.identity.worker_uuid, NIL):
            logger.warning(
                f"dropped a {message.instruction.name} frame addressed to worker "
                f"{message.worker_uuid}, not to us"
            )
            return
        instruction = message.instruction
        if instruction is Instruction.HEARTBEAT:
            return
        if instruction is Instruction.LINK_REFUSED:  # e.g. the worker was disabled
            raise LinkRefused(*_code_and_reason(message))
        if instruction is Instruction.LINK_STATUS_REQUEST:
            gevent.spawn(self._answer_status, channel, message)
            return
        if instruction is Instruction.LINK_SESSION_KEY:
            raw = message.arg("public_key")
            if isinstance(raw, bytes):
                self.session_key = raw
                if self.on_session_key is not None:
                    self.on_session_key(raw)
            return
        pending = self._pending.get(message.request_id)
        if pending is None:
            logger.debug(
                f"answer {instruction.name} for request {message.request_id}, "
                "which nobody waits for (timed out?)"
            )
            return
        if instruction is not Instruction.DATA:
            pending.result.set(message)
            return
        try:
            payload = pending.reassembler.feed(message)
        except ProtocolError as exc:
            pending.result.set_exception(
                LinkError(f"the master sent a broken transfer: {exc.reason}", ErrorCode.INTERNAL)
            )
            return
        if payload is not None:
            pending.result.set(payload)

    def _fail_request(self, error: ProtocolError) -> None:
        """A frame we could not read answered some request: fail that one, not the link."""
        if error.header is None:
            return
        pending = self._pending.get(error.header.request_id)
        if pending is not None and not pending.result.ready():
            pending.result.set_exception(
                LinkError(f"the master's answer was unreadable: {error.reason}", ErrorCode.INTERNAL)
            )

    def _fail_pending(self, reason: str) -> None:
        for pending in list(self._pending.values()):
            if not pending.result.ready():
                pending.result.set_exception(LinkError(reason))

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        self._channel = None
        self._up.clear()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
