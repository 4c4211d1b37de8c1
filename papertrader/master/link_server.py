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
  The link from its hello on is ``master/worker_link.py``; both kinds of peer
  read and write through ``master/framed_socket.py``.
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

import ipaddress
import socket
import time
from collections.abc import Sequence

from loguru import logger

from papertrader import metrics
from papertrader.keyring import KeyringError
from papertrader.limits.connections import ConnectionLimits
from papertrader.limits.deadlines import HANDSHAKE_SECONDS
from papertrader.master.context import MasterContext
from papertrader.master.framed_socket import ConnectionClosed, FramedSocket
from papertrader.master.handshake import HandshakeRefused, HandshakeUnavailable, MasterHandshake
from papertrader.master.worker_link import WorkerLink
from papertrader.master.workers import handle_worker_list
from papertrader.protocol import (
    ErrorCode,
    Instruction,
    Message,
    MessageType,
    ProtocolError,
    failure_reply,
)

FIRST_FRAME_TIMEOUT = HANDSHAKE_SECONDS
#: All a refused worker learns: the reason is in the master's log, not on the wire.
REFUSED_REASON = "refused by the master (its log says why)"


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
