"""One worker's sealed link on the master, from its LINK_HELLO to its end.

The handshake (``master/handshake.py``) has admitted the worker when this
starts; ``WorkerLink`` checks the sealed hello against the registration
(``master/admission.py``), refuses a standby's or a second link, welcomes the
worker, then reads its frames: heartbeats, cancels and status answers are
handled inline, requests are answered concurrently (a greenlet each, at most
``REQUESTS_PER_LINK``), each under a Job carrying its deadline, so a slow
bcrypt login never holds up the frames behind it. Every frame after the hello
must carry the worker's UUID; one that does not is dropped, not answered.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event
import gevent.pool
from loguru import logger

from papertrader import metrics
from papertrader.limits.deadlines import link_silence_window
from papertrader.master.admission import hello_problem, web_origin_refusal
from papertrader.master.bcrypt_pool import Job
from papertrader.master.context import MasterContext
from papertrader.master.deadlines import LinkClock, set_current_job
from papertrader.master.framed_socket import ConnectionClosed, FramedSocket
from papertrader.master.handshake import Admitted
from papertrader.master.router import route
from papertrader.master.workers import LinkedWorker
from papertrader.protocol import (
    ErrorCode,
    Instruction,
    LocalProtocolError,
    Message,
    MessageType,
    ProtocolError,
    failure_reply,
)
from papertrader.protocol.records import from_record
from papertrader.protocol.values import decode_payload

REQUESTS_PER_LINK = 200
REQUEST_DRAIN_SECONDS = 10.0
#: Instruction types a worker may send as requests; returns from a worker are not answered.
_REQUEST_TYPES = frozenset({MessageType.COMMAND, MessageType.DATA_TRANSFER, MessageType.CONTROL})
_U32 = 0xFFFFFFFF


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
