"""The master's port (spec 4.3.1): worker links, and getWorkerList for clients.

One greenlet per TCP connection. Its first frame decides what it is:

* ``LINK_START`` from a worker: the GPG handshake (``master/handshake.py``);
  a worker that passes it gets LINK_PROOF, and from then on every frame both
  ways is sealed with the link keys (``protocol/link_seal.py``): the sealed
  LINK_HELLO, LINK_WELCOME, then requests. A record that does not open
  (tampered, replayed, reordered, injected) drops the link. A refused worker
  gets one generic LINK_REFUSED; the reason is in our log only.
  Requests on a link are handled concurrently (a greenlet each, bounded per
  link), so a slow bcrypt login never holds up the requests behind it; writes
  are serialised so frames never interleave. Every frame after the hello must
  carry the worker's UUID; one that does not is dropped, not answered.
* another link frame without the handshake: refused, the connection closed.
* anything else is a client: ``GET_WORKER_LIST`` gets DATA packets listing
  the connected workers, as often as it asks; any other request, or a frame
  the protocol refuses without losing the framing, gets its failure return
  (NOT_ALLOWED: clients talk to workers) and the connection stays open
  (docs/PROTOCOL.md section 8, rule 4) while the client keeps sending whole
  requests (below). Only a fatal error (bad magic or version, a frame over
  the size limit) closes it, after an ERROR.

Deadlines (``limits/deadlines.py``): the first frame, each handshake frame
and LINK_HELLO must arrive whole within HANDSHAKE_SECONDS (a byte now and
then does not keep a connection open); a getWorkerList client must send its
next whole request within ``client_preauth_idle_timeout``; a link is
dropped after ``link_silence_window`` without a frame. Frames before the
handshake may carry at most ``max_request_size`` bytes of data.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.pool
from loguru import logger

from papertrader import metrics
from papertrader.keyring import KeyringError
from papertrader.limits.connections import ConnectionLimits
from papertrader.limits.deadlines import (
    HANDSHAKE_SECONDS,
    DeadlineExceeded,
    link_silence_window,
    recv_before,
)
from papertrader.master.admission import hello_problem, web_origin_refusal
from papertrader.master.bcrypt_pool import Job
from papertrader.master.context import MasterContext
from papertrader.master.deadlines import LinkClock, set_current_job
from papertrader.master.handshake import (
    Admitted,
    HandshakeRefused,
    HandshakeUnavailable,
    MasterHandshake,
)
from papertrader.master.router import route
from papertrader.master.workers import LinkedWorker, handle_worker_list
from papertrader.protocol import (
    ErrorCode,
    FrameDecoder,
    Instruction,
    LocalProtocolError,
    Message,
    MessageType,
    NeedData,
    ProtocolError,
    encode_message,
    failure_reply,
)
from papertrader.protocol.link_seal import Direction, LinkKeys, Opener, Sealer, SealError
from papertrader.protocol.records import from_record
from papertrader.protocol.values import decode_payload

FIRST_FRAME_TIMEOUT = HANDSHAKE_SECONDS
REQUESTS_PER_LINK = 200
REQUEST_DRAIN_SECONDS = 10.0
#: Instruction types a worker may send as requests; returns from a worker are not answered.
_REQUEST_TYPES = frozenset({MessageType.COMMAND, MessageType.DATA_TRANSFER, MessageType.CONTROL})
#: All a refused worker learns: the reason is in the master's log, not on the wire.
REFUSED_REASON = "refused by the master (its log says why)"
_U32 = 0xFFFFFFFF


class ConnectionClosed(Exception):
    """The peer closed the connection, or it timed out."""


class LinkTampered(ConnectionClosed):
    """A sealed record did not open: the link cannot be trusted any more."""


class FramedSocket:
    """A socket that reads whole messages and writes whole answers, one writer at a time."""

    def __init__(
        self, sock: socket.socket, max_data_size: int, receive_limit: int | None = None
    ) -> None:
        self.sock = sock
        self.max_data_size = max_data_size
        #: Frames from the peer may be smaller than ours until the link is sealed.
        self.decoder = FrameDecoder(receive_limit or max_data_size)
        self._write_lock = gevent.lock.Semaphore()
        self.closed_because: str | None = None
        self._sealer: Sealer | None = None
        self._opener: Opener | None = None

    def start_sealing(self, keys: LinkKeys, worker_uuid: uuid.UUID) -> None:
        """From now on every frame both ways is sealed with its direction's link key."""
        if self.decoder.buffered:
            raise ConnectionClosed("the worker sent frames before the handshake finished")
        self.decoder = FrameDecoder(self.max_data_size)  # a sealed worker may send full frames
        out, into = Direction.MASTER_TO_WORKER, Direction.WORKER_TO_MASTER
        self._sealer = Sealer(keys.key(out), worker_uuid, out)
        self._opener = Opener(keys.key(into), worker_uuid, into, self.max_data_size)

    def read(self, deadline: float | None = None, what: str = "a whole frame") -> Message:
        """The next message; ProtocolError for a bad frame, ConnectionClosed at the end.

        ``deadline`` (time.monotonic): the whole message must have arrived by then.
        """
        while True:
            message = self.decoder.next_message()
            if not isinstance(message, NeedData):
                return message
            try:
                if deadline is None:
                    data = self.sock.recv(self.decoder.max_frame_size)
                else:
                    data = recv_before(self.sock, self.decoder.max_frame_size, deadline, what)
            except DeadlineExceeded as exc:
                raise ConnectionClosed(f"did not send {exc} in time") from None
            except OSError as exc:  # includes socket.timeout
                why = self.closed_because or str(exc) or type(exc).__name__
                raise ConnectionClosed(why) from None
            if not data:
                raise ConnectionClosed("closed by the peer")
            if self._opener is None:
                self.decoder.receive_data(data)
                continue
            self._opener.receive_data(data)
            try:
                while (frame := self._opener.next_frame()) is not None:
                    self.decoder.receive_data(frame)
            except SealError as exc:
                raise LinkTampered(str(exc)) from None

    def send(self, messages: Sequence[Message]) -> None:
        """Encode every message first, then write them in one piece (atomic per answer).

        A large answer (a day of minute bars is several packets) yields to the event
        loop between packets, so encoding it never stalls heartbeats and other links.
        """
        frames = []
        for index, message in enumerate(messages):
            frames.append(encode_message(message, self.max_data_size))
            if index % 4 == 3:
                gevent.sleep(0)
        with self._write_lock:
            sealer = self._sealer
            payload = b"".join(frames if sealer is None else [sealer.seal(f) for f in frames])
            self.sock.sendall(payload)

    def shutdown(self, reason: str = "closed by the master") -> None:
        """Make the reading greenlet see the end of the stream (safe to call twice)."""
        self.closed_because = self.closed_because or reason
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _peer_ip(address: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if isinstance(address, tuple) and address:
        try:
            ip = ipaddress.ip_address(address[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip
    return None


def _error(code: ErrorCode, reason: str, request_id: int = 0) -> Message:
    return failure_reply(None, code, reason, request_id)


def _failure_for(error: ProtocolError) -> Message:
    """The failure return of the refused frame's instruction (ERROR when it has none)."""
    header = error.header
    return failure_reply(
        header.instruction if header else None,
        error.code,
        error.reason,
        header.request_id if header else 0,
    )


def _refuse(conn: FramedSocket, peer: str, reason: str) -> None:
    """Log why; tell the peer only that it was refused."""
    metrics.HANDSHAKES.labels("refused").inc()
    logger.warning("worker link from {} refused: {}", peer, reason)
    try:
        conn.send([Message(Instruction.LINK_REFUSED, (int(ErrorCode.NOT_ALLOWED), REFUSED_REASON))])
    except OSError:
        pass


class LinkServer:
    """The connection handler given to gevent's StreamServer."""

    def __init__(self, ctx: MasterContext, handshake: MasterHandshake) -> None:
        self.ctx = ctx
        self.handshake = handshake
        settings = ctx.settings
        self.limits = ConnectionLimits(
            settings.max_connections, settings.max_connections_per_address
        )

    def handle(self, sock: socket.socket, address: object) -> None:
        ip = _peer_ip(address)
        subject, refusal = self.limits.admit(str(ip) if ip is not None else "?")
        if refusal is not None:
            logger.info("connection from {} refused: {}", _peer(address), refusal.reason)
            conn = FramedSocket(sock, self.ctx.settings.max_data_size)
            sock.settimeout(2.0)
            self._try_send(conn, [_error(refusal.code, refusal.reason)])
            sock.close()
            return
        try:
            self._handle(sock, address)
        finally:
            self.limits.release(subject)

    def _handle(self, sock: socket.socket, address: object) -> None:
        peer = _peer(address)
        settings = self.ctx.settings
        conn = FramedSocket(sock, settings.max_data_size, settings.max_request_size)
        try:
            try:
                first: Message | ProtocolError = conn.read(
                    time.monotonic() + FIRST_FRAME_TIMEOUT, "its first frame"
                )
            except ProtocolError as exc:
                if exc.fatal:  # the frame boundaries are lost: nothing else can be read
                    logger.info("connection from {} refused: bad first frame ({})", peer, exc)
                    request_id = exc.header.request_id if exc.header is not None else 0
                    self._try_send(conn, [_error(exc.code, exc.reason, request_id)])
                    return
                first = exc  # a client's mistake: its failure return, and the connection stays
            if isinstance(first, Message) and first.instruction is Instruction.LINK_START:
                self._serve_worker(conn, address, peer)
            elif isinstance(first, Message) and first.message_type is MessageType.LINK:
                _refuse(
                    conn, peer, f"{first.instruction.name} without the GPG handshake (LINK_START)"
                )
            else:
                self._serve_client(conn, peer, first)
        except ConnectionClosed as exc:
            logger.info("connection from {} closed: {}", peer, exc)
        except Exception:
            logger.exception("connection from {} failed", peer)
        finally:
            conn.shutdown()
            sock.close()

    @staticmethod
    def _try_send(conn: FramedSocket, messages: Sequence[Message]) -> bool:
        try:
            conn.send(messages)
            return True
        except OSError:
            return False

    def _serve_worker(self, conn: FramedSocket, address: object, peer: str) -> None:
        """The handshake, then the sealed link of an admitted worker."""
        challenge, frame = self.handshake.challenge()
        conn.send([frame])
        try:
            answer = conn.read(time.monotonic() + HANDSHAKE_SECONDS, "its handshake")
        except ProtocolError as exc:
            _refuse(conn, peer, f"unreadable answer to the challenge ({exc.reason})")
            return
        try:
            admitted = self.handshake.check(answer, challenge, _peer_ip(address))
        except HandshakeRefused as exc:
            _refuse(conn, peer, str(exc))
            return
        except HandshakeUnavailable as exc:
            logger.warning("worker link from {} put off: {}", peer, exc)
            unavailable = Message(
                Instruction.LINK_REFUSED,
                (int(ErrorCode.UNAVAILABLE), "the master cannot check workers now; retry"),
            )
            self._try_send(conn, [unavailable])
            return
        except KeyringError as exc:
            logger.error("gpg failed in the handshake with {}: {}", peer, exc)
            _refuse(conn, peer, "gpg failed on the master")
            return
        worker_uuid = admitted.record.uuid
        metrics.HANDSHAKES.labels("accepted").inc()
        conn.send([Message(Instruction.LINK_PROOF, (admitted.proof,), worker_uuid=worker_uuid)])
        conn.start_sealing(admitted.link_keys, worker_uuid)
        try:
            hello = conn.read(time.monotonic() + HANDSHAKE_SECONDS, "LINK_HELLO")
        except ProtocolError as exc:
            logger.warning("worker {} sent a bad LINK_HELLO: {}", admitted.record.name, exc)
            return
        WorkerLink(self.ctx, conn, address, peer, admitted).serve(hello)

    def _serve_client(self, conn: FramedSocket, peer: str, first: Message | ProtocolError) -> None:
        """getWorkerList, as many times as the client asks. Anything else gets its
        failure return (NOT_ALLOWED, or the protocol error) and the connection stays
        open (docs/PROTOCOL.md section 8, rule 4). Each next request must arrive whole
        within client_preauth_idle_timeout."""
        idle = self.ctx.settings.client_preauth_idle_timeout
        request: Message | None = first if isinstance(first, Message) else None
        if isinstance(first, ProtocolError) and not self._try_send(conn, [_failure_for(first)]):
            return
        while True:
            if request is not None:
                if request.instruction is Instruction.GET_WORKER_LIST:
                    answer = handle_worker_list(self.ctx, request)
                    logger.debug("worker list to {}", peer)
                else:
                    answer = [
                        failure_reply(
                            request.instruction,
                            ErrorCode.NOT_ALLOWED,
                            "a client may only ask the master for getWorkerList; "
                            "connect to a worker for everything else",
                            request.request_id,
                        )
                    ]
                if not self._try_send(conn, answer):
                    return
            try:
                request = conn.read(time.monotonic() + idle, f"a whole request in {idle:g} s")
            except ConnectionClosed as exc:
                logger.info("closing client connection {}: {}", peer, exc)
                return
            except ProtocolError as exc:
                if exc.fatal:
                    logger.info("closing client connection {}: {}", peer, exc)
                    self._try_send(conn, [_error(exc.code, exc.reason)])
                    return
                if not self._try_send(conn, [_failure_for(exc)]):
                    return
                request = None


class WorkerLink:
    """One worker's sealed link, from its hello to its end."""

    def __init__(
        self, ctx: MasterContext, conn: FramedSocket, address: object, peer: str, admitted: Admitted
    ) -> None:
        self.ctx = ctx
        self.conn = conn
        self.address = address
        self.peer = peer
        self.record = admitted.record
        self.uuid = admitted.record.uuid
        self.worker: LinkedWorker | None = None
        self._status_waiters: dict[int, gevent.event.AsyncResult] = {}
        self._status_ids = itertools.count(1)
        #: The worker's clock seen from ours, and the work of its requests in flight.
        self.clock = LinkClock()
        self._jobs: dict[int, Job] = {}

    def _stamp(self, message: Message) -> Message:
        return dataclasses.replace(message, worker_uuid=self.uuid)

    def _refuse(self, code: ErrorCode, reason: str, hello: Message, why: str | None = None) -> None:
        """Refuse the link with ``reason``; the log gets ``why`` (the details) if given."""
        logger.warning(
            "worker link of {} from {} refused: {}", self.record.name, self.peer, why or reason
        )
        refused = Message(
            Instruction.LINK_REFUSED, (int(code), reason), request_id=hello.request_id
        )
        try:
            self.conn.send([self._stamp(refused)])
        except OSError:
            pass

    def _admit(self, hello: Message) -> LinkedWorker | None:
        """Check the (sealed) hello of a worker the handshake admitted; refuse if wrong."""
        if hello.instruction is not Instruction.LINK_HELLO or hello.worker_uuid != self.uuid:
            self._refuse(
                ErrorCode.BAD_ARGUMENT,
                "the first sealed frame must be LINK_HELLO with the worker's UUID",
                hello,
            )
            return None
        record = self.record
        problem = hello_problem(record, hello)
        if problem is not None:
            self._refuse(
                ErrorCode.NOT_ALLOWED,
                "LINK_HELLO differs from this worker's registration (the master's log says how)",
                hello,
                why=problem,
            )
            return None
        hello_name = str(hello.arg("name"))
        if hello_name != record.name:
            logger.warning(
                "worker {} introduced itself as {!r}; using its registered name",
                record.name, hello_name[:64],
            )  # fmt: skip
        assert record.address is not None
        return LinkedWorker(
            uuid=self.uuid,
            name=record.name,
            region=record.region,
            client_address=record.address,
            peer=self.peer,
            close=self.conn.shutdown,
            refuse=self._kick,
            status=self.request_status,
        )

    def request_status(self, timeout: float) -> dict[str, Any]:
        """The worker's live figures (LINK_STATUS), plus the round trip in milliseconds."""
        request_id = next(self._status_ids) & _U32 or 1
        waiter: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._status_waiters[request_id] = waiter
        started = time.monotonic()
        try:
            self.conn.send(
                [self._stamp(Message(Instruction.LINK_STATUS_REQUEST, request_id=request_id))]
            )
            answer: Message = waiter.get(timeout=timeout)
        finally:
            self._status_waiters.pop(request_id, None)
        latency_ms = (time.monotonic() - started) * 1000
        raw = answer.arg("status")
        figures = from_record(decode_payload(raw)) if isinstance(raw, bytes) else {}
        figures["link_latency_ms"] = round(latency_ms, 2)
        return figures

    def serve(self, hello: Message) -> None:
        worker = self._admit(hello)
        if worker is None:
            return
        leadership = self.ctx.leadership
        if leadership is not None and not leadership.active:
            # Sealed, after the handshake: the worker can trust where it is sent.
            self._refuse(ErrorCode.MASTER_STANDBY, leadership.refusal(), hello)
            return
        registry = self.ctx.workers
        holder = registry.claim(worker)
        if holder is not None:
            self._refuse(
                ErrorCode.ALREADY_LINKED,
                "this worker is already linked to the master; retry later",
                hello,
                why=f"it is already linked from {holder.peer} (since "
                f"{holder.connected_at.isoformat()}) and that link is alive; "
                f"`pt workers boot {worker.name}` replaces it",
            )
            return
        try:
            self.clock.observe(hello.timestamp)
            welcome = Message(
                Instruction.LINK_WELCOME,
                (
                    worker.name,
                    round(registry.heartbeat * 1000),
                    round(self.ctx.settings.request_deadline_seconds * 1000),
                ),
                request_id=hello.request_id,
            )
            self.conn.send([self._stamp(welcome)])
            verifier = self.ctx.sessions.verifier
            if verifier is not None:  # what the worker checks every session record with
                key = Message(Instruction.LINK_SESSION_KEY, (verifier.raw(),))
                self.conn.send([self._stamp(key)])
            self.conn.sock.settimeout(link_silence_window(registry.heartbeat) + 1)
            self.worker = worker
            registry.add(worker)
        except BaseException:
            registry.remove(worker)
            raise
        requests = gevent.pool.Pool(REQUESTS_PER_LINK)
        beat = gevent.spawn(self._heartbeats, registry.heartbeat)
        try:
            self._read_loop(worker, requests)
        finally:
            beat.kill(block=False)
            registry.remove(worker)
            for job in list(self._jobs.values()):  # nobody is left to answer
                job.cancel()
            # Let requests in flight finish their work (a registration commits or not
            # as a whole either way); their answers have nowhere to go.
            requests.join(timeout=REQUEST_DRAIN_SECONDS)

    def _read_loop(self, worker: LinkedWorker, requests: gevent.pool.Pool) -> None:
        registry = self.ctx.workers
        while True:
            try:
                message = self.conn.read()
            except ConnectionClosed as exc:
                logger.info("link of worker {} ended: {}", worker.name, exc)
                return
            except ProtocolError as exc:
                if exc.fatal:
                    logger.warning("closing link of worker {}: {}", worker.name, exc)
                    return
                header = exc.header
                if header is None or header.worker_uuid != self.uuid:
                    logger.warning("dropped a bad frame on worker {}'s link: {}", worker.name, exc)
                    continue
                registry.touch(worker)
                logger.info("bad frame from worker {}: {}", worker.name, exc)
                reply = failure_reply(header.instruction, exc.code, exc.reason, header.request_id)
                self._send_or_close([reply])
                continue
            if message.worker_uuid != self.uuid:
                logger.warning(
                    "dropped {} on worker {}'s link: it carries UUID {}, not the link's",
                    message.instruction.name, worker.name, message.worker_uuid,
                )  # fmt: skip
                continue
            registry.touch(worker)
            if message.instruction is Instruction.HEARTBEAT:
                self.clock.observe(message.timestamp)
                continue
            if message.instruction is Instruction.LINK_CANCEL:
                job = self._jobs.get(message.request_id)
                if job is not None:
                    job.cancel()
                continue
            if message.instruction is Instruction.LINK_WEB_ORIGIN:
                self._web_origin(worker, str(message.arg("origin")))
                continue
            if message.instruction is Instruction.LINK_STATUS:
                waiter = self._status_waiters.get(message.request_id)
                if waiter is not None:
                    waiter.set(message)
                continue
            if message.message_type not in _REQUEST_TYPES:
                logger.warning(
                    "ignored {} from worker {}: the master answers requests only",
                    message.instruction.name, worker.name,
                )  # fmt: skip
                continue
            requests.spawn(self._answer, message)

    def _web_origin(self, worker: LinkedWorker, origin: str) -> None:
        """Record the worker's page origin for the worker list, if it is on its host."""
        refusal = web_origin_refusal(origin, worker.client_address)
        if refusal is not None:
            logger.warning(
                "worker {} announced web origin {!r}, not listed: {}",
                worker.name, origin[:200], refusal,
            )  # fmt: skip
            return
        worker.web_origin = origin
        self.ctx.workers.refresh(worker)  # standbys list it from the mirror
        logger.info("worker {} serves its web page at {}", worker.name, origin)

    def _answer(self, request: Message) -> None:
        """Route one request under its Job (deadline from its stamp, cancellable),
        counting it and its latency (papertrader/metrics.py)."""
        job = self.clock.job(request.timestamp, self.ctx.settings.request_deadline_seconds)
        rid = request.request_id
        self._jobs[rid] = job
        started = time.perf_counter()
        try:
            if job.expired:
                logger.info(
                    "dropped {} from worker {}: its deadline passed before it was read",
                    request.instruction.name, self.record.name,
                )  # fmt: skip
                return
            set_current_job(job)
            answer = route(self.ctx, request)
        finally:
            if self._jobs.get(rid) is job:
                del self._jobs[rid]
        metrics.observe_link_request(
            request.instruction, time.perf_counter() - started, answer[0] if answer else None
        )
        if not job.cancelled:
            self._send_or_close(answer)

    def _send_or_close(self, messages: Sequence[Message]) -> None:
        try:
            self.conn.send([self._stamp(m) for m in messages])
        except LocalProtocolError as exc:
            logger.error(
                "could not encode the answer to request {}: {}", messages[0].request_id, exc
            )
            fallback = failure_reply(
                None, ErrorCode.INTERNAL, "the master could not encode its answer",
                messages[0].request_id,
            )  # fmt: skip
            self._send_or_close([fallback])
        except OSError as exc:
            logger.info(
                "could not answer worker {}: {}", self.worker.name if self.worker else "?", exc
            )
            self.conn.shutdown()

    def _kick(self, reason: str) -> None:
        """Tell the worker it is no longer allowed, then close (in the background: a
        worker that does not read must not stall the watchdog)."""
        refused = Message(Instruction.LINK_REFUSED, (int(ErrorCode.NOT_ALLOWED), reason))

        def send_and_close() -> None:
            try:
                self.conn.send([self._stamp(refused)])
            except OSError:
                pass
            self.conn.shutdown(reason)

        gevent.spawn(send_and_close)

    def _heartbeats(self, period: float) -> None:
        beat = Message(Instruction.HEARTBEAT, worker_uuid=self.uuid)
        while True:
            gevent.sleep(period)
            try:
                self.conn.send([beat])
            except OSError:
                self.conn.shutdown()
                return
