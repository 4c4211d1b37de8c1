"""One blocking TCP conversation with a PaperTrader server, driven by the sans-IO protocol.

The protocol package knows the frames and the state machine; this module adds
the socket: connect, send a message, read until the next whole message
arrives, and collect the packets of a data transfer. Plain blocking sockets
keep the client usable from any program (threads included) without gevent.

Anything that leaves the conversation in an unknown state (a timeout, a
frame the state machine refuses, the peer closing) closes the socket, so the
next request starts on a fresh connection instead of reading a stale answer.
"""

from __future__ import annotations

import select
import socket
import ssl
import uuid
from pathlib import Path

from papertrader.client.address import format_address
from papertrader.client.errors import ClientError, ServerUnreachable, TlsError
from papertrader.protocol import (
    NIL,
    ConnectionStateCode,
    ErrorCode,
    FrameDecoder,
    Instruction,
    Message,
    NeedData,
    ProtocolError,
    Reassembler,
    Role,
    State,
    encode_message,
)
from papertrader.protocol import Connection as ProtocolConnection
from papertrader.protocol.values import Value
from papertrader.tls.contexts import TlsConfigError, client_context, describe_handshake_error

#: Largest data field we accept from a server: the highest max_data_size a
#: deployment may configure, so any server's frames fit.
CLIENT_MAX_DATA_SIZE = 16 * 1024 * 1024
_RECV_SIZE = 256 * 1024


def failure_error(message: Message) -> ClientError:
    """The ClientError for a failure return (any ``*_FAIL`` or ERROR)."""
    code_value, reason = message.args[0], message.args[1]
    assert isinstance(code_value, int) and isinstance(reason, str)
    try:
        code = ErrorCode(code_value)
    except ValueError:
        code = ErrorCode.INTERNAL
        reason = f"{reason} (error code {code_value})"
    order_id: uuid.UUID | None = None
    if len(message.args) > 2 and isinstance(message.args[2], uuid.UUID) and message.args[2] != NIL:
        order_id = message.args[2]
    return ClientError(code, reason, order_id=order_id)


def tls_context(
    tls: bool = True, ssl_context: ssl.SSLContext | None = None, ca: str | Path | None = None
) -> ssl.SSLContext | None:
    """The context a client connects with: ``ssl_context`` as given, else one trusting
    the CA file ``ca``, else the system's trust store; None when ``tls`` is False
    (plaintext, for a server run with ``tls = false`` on loopback)."""
    if not tls:
        return None
    if ssl_context is not None:
        return ssl_context
    try:
        return client_context(ca)
    except TlsConfigError as exc:
        raise TlsError(str(exc)) from None


class BlockingConnection:
    """A socket (in TLS unless ``ssl_context`` is None) plus the protocol state machine
    in the client role. The server's certificate is verified for ``host``."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = 30.0,
        max_data_size: int = CLIENT_MAX_DATA_SIZE,
        source_address: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.timeout = timeout
        #: Local address to connect from (a multi-homed client); None: the system's choice.
        self.source_address = source_address
        self.max_data_size = max_data_size
        self.address = format_address(host, port)
        self._sock: socket.socket | None = None
        self._protocol = ProtocolConnection(Role.CLIENT, max_data_size)
        #: Whether this connection has read anything yet (a TLS port's refusal comes first).
        self._received = False

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self) -> None:
        """Connect if not connected; ServerUnreachable when nothing answers."""
        if self._sock is not None:
            return
        try:
            source = (self.source_address, 0) if self.source_address else None
            sock = socket.create_connection(
                (self.host, self.port), timeout=self.timeout, source_address=source
            )
        except OSError as exc:
            raise ServerUnreachable(self.address, _describe(exc)) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._received = False
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            except TimeoutError:
                sock.close()
                raise ServerUnreachable(self.address, "TLS handshake timed out") from None
            except OSError as exc:
                sock.close()
                reason = describe_handshake_error(exc, self.host)
                raise TlsError(f"{reason} ({self.address})") from None
        self._sock = sock
        self._protocol = ProtocolConnection(Role.CLIENT, self.max_data_size)

    def peer_closed(self) -> bool:
        """True if the server has closed this connection while we were not looking
        (checked without blocking), so a request sent now would be lost."""
        sock = self._sock
        if sock is None:
            return False
        try:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return False
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            if isinstance(sock, ssl.SSLSocket):
                return self._tls_closed(sock)
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _tls_closed(self, sock: ssl.SSLSocket) -> bool:
        """TLS has no MSG_PEEK: read without blocking. Records that carry no data (a
        session ticket) are taken; bytes of the stream go to the protocol, as a later
        read would have given them; b"" is the end."""
        sock.setblocking(False)
        try:
            data = sock.recv(_RECV_SIZE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False
        finally:
            sock.settimeout(self.timeout)
        if not data:
            return True
        self._protocol.receive_data(data)
        return False

    def _refused_plaintext(self, data: bytes) -> None:
        """TlsError if the first bytes a plaintext connection reads are a TLS port's
        refusal (ERROR with TLS_REQUIRED), whatever state the request left us in."""
        decoder = FrameDecoder(self.max_data_size)
        decoder.receive_data(data)
        try:
            first = decoder.next_message()
        except ProtocolError:
            return
        if (
            isinstance(first, Message)
            and first.instruction is Instruction.ERROR
            and first.args[:1] == (int(ErrorCode.TLS_REQUIRED),)
        ):
            self.close()
            raise TlsError(
                f"the server speaks TLS; connect with TLS (drop --no-tls / tls = false) "
                f"({self.address})"
            )

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # -- one message each way -------------------------------------------------
    def send(self, message: Message, then: bytes = b"") -> None:
        """Send ``message`` (and ``then``, bytes pipelined behind it)."""
        self.open()
        assert self._sock is not None
        data = self._protocol.send(message)  # LocalProtocolError = our bug: let it show
        try:
            self._sock.sendall(data + then)
        except OSError as exc:
            self.close()
            raise ServerUnreachable(self.address, _describe(exc), lost=True) from None

    def receive(self) -> Message:
        """The server's next message; raises ClientError if none can be read."""
        sock = self._sock
        if sock is None:
            raise ServerUnreachable(self.address, "not connected", lost=True)
        while True:
            try:
                message = self._protocol.next_message()
            except ProtocolError as exc:
                self.close()
                raise ClientError(
                    exc.code, f"bad answer from {self.address}: {exc.reason}"
                ) from None
            if not isinstance(message, NeedData):
                return message
            try:
                data = sock.recv(_RECV_SIZE)
            except TimeoutError:
                self.close()
                raise ClientError(
                    ErrorCode.TIMEOUT, f"no answer from {self.address} within {self.timeout:g} s"
                ) from None
            except OSError as exc:
                self.close()
                raise ServerUnreachable(self.address, _describe(exc), lost=True) from None
            if not data:
                self.close()
                raise ServerUnreachable(self.address, "the server closed the connection", lost=True)
            if self.ssl_context is None and not self._received:
                self._refused_plaintext(data)
            self._received = True
            self._protocol.receive_data(data)

    def request(self, message: Message) -> Message:
        """Send a command and return its answer (a failure return included)."""
        self.send(message)
        return self.receive()

    # -- data transfers ---------------------------------------------------------
    def transfer(self, message: Message) -> Value:
        """Packets 1..max answering ``message`` (already in the right state), as one value.

        DATA_FAIL becomes ClientError with the server's code and reason.
        """
        self.send(message)
        return self._transferred(message)

    def _transferred(self, message: Message) -> Value:
        """The answer to ``message``, sent already: its packets as one value."""
        reassembler = Reassembler(max_payload=64 * 1024 * 1024)
        while True:
            reply = self.receive()
            if reply.instruction is not Instruction.DATA:
                if reply.is_failure:
                    if self._protocol.state is not State.COMMAND:
                        self.close()  # e.g. ERROR left us in the data state: start afresh
                    raise failure_error(reply)
                self.close()
                raise ClientError(
                    ErrorCode.TYPE_MISMATCH,
                    f"{self.address} answered {message.instruction.name} "
                    f"with {reply.instruction.name}",
                )
            try:
                done, value = reassembler.finish_value(reply)
            except ProtocolError as exc:
                self.close()
                raise ClientError(
                    exc.code, f"bad transfer from {self.address}: {exc.reason}"
                ) from None
            if done:
                assert value is not None
                return value

    def data_request(self, message: Message, session_id: uuid.UUID) -> Value:
        """switchState(1), then the request: what a session-bound data read takes.

        The request is pipelined behind the switch (docs/PROTOCOL.md 14.4): one round
        trip, not two. If the switch fails the server refuses the request too, in the
        command state (dataFail, WRONG_STATE): that refusal is read, so the
        connection stays in step, and the switch's failure is raised.
        """
        switch = Message(
            Instruction.SWITCH_STATE,
            (int(ConnectionStateCode.DATA_TRANSFER),),
            session_id=session_id,
        )
        self.send(switch, then=encode_message(message, self.max_data_size))
        reply = self.receive()
        if reply.instruction is not Instruction.STATE_SWITCH_SUCCESS:
            if reply.is_failure:
                self._read_refusal()
                raise failure_error(reply)
            self.close()
            raise ClientError(
                ErrorCode.TYPE_MISMATCH,
                f"{self.address} answered switchState with {reply.instruction.name}",
            )
        self._protocol.send(message)  # sent already: move our state machine past it
        return self._transferred(message)

    def _read_refusal(self) -> None:
        """Read the dataFail of a request sent behind a switchState that failed; anything
        else (or nothing) and the connection starts afresh on the next request."""
        try:
            refusal = self.receive()
        except ClientError:
            return  # receive() has closed the connection
        if refusal.instruction is not Instruction.DATA_FAIL:
            self.close()


def _describe(exc: OSError) -> str:
    """A short human reason for a socket error ("connection refused", not errno soup)."""
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})" if exc.strerror else "unknown host"
    if exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__
