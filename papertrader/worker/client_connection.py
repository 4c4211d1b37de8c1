"""One greenlet per client: bytes in, the protocol state machine, answers out.

Each client connection runs :meth:`ClientConnection.serve` in its own
greenlet (``client_handler.ClientHandler`` admits it and calls it). The connection is a
``ClientTransport`` (``transport.py``): a TCP socket, a TLS socket, or a
browser's WebSocket (``papertrader/web/carriage.py``), all served by this one
code path, with the same limits. The protocol ``Connection`` does
the framing and the state machine of spec 4.2; ``client_requests.py`` routes
each message to the module that answers it, and this module sends the answer
back.

Robustness rules, so one client can never hurt another:

* a message that is wrong but framed (bad argument, wrong state, unknown
  instruction) gets its failure return and the connection goes on;
* bytes that cannot be framed (bad magic, oversized frame) get an ERROR
  return if possible, then the connection is closed;
* connections are capped in all and per address (``limits/connections.py``);
  one over a cap gets an ERROR saying which, and is closed;
* a request may carry at most ``max_request_size`` bytes (the decoder refuses
  a bigger header before reading its body);
* a client idle for ``client_preauth_idle_timeout`` before it presents a valid
  session, or ``client_idle_timeout`` after, or stuck half-way through a frame
  for WHOLE_FRAME_SECONDS, is closed (``limits/deadlines.py``);
* answers for a client that pipelines requests are sent whenever more than
  ``client_send_buffer_bytes`` wait, and a client that does not take them for
  ``client_send_timeout`` is closed: a non-reading client costs a bounded
  amount of memory;
* Redis trouble becomes an UNAVAILABLE failure return, and an unexpected bug
  an INTERNAL one, both logged, never a dropped worker.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import gevent
import gevent.socket
from loguru import logger

from papertrader import metrics
from papertrader.protocol import (
    HEADER_SIZE,
    ConnectionStateCode,
    ErrorCode,
    Instruction,
    LocalProtocolError,
    Message,
    NeedData,
    ProtocolError,
    Role,
    encode_message,
)
from papertrader.protocol.lean import Encoded, LeanConnection, LeanRequest, QuotePair
from papertrader.worker.client_management import TOUCH_INTERVAL, ClientInfo
from papertrader.worker.client_requests import ClientRequests, Closing, Verified
from papertrader.worker.orders import normalise_symbol
from papertrader.worker.transport import ClientTransport

if TYPE_CHECKING:
    from papertrader.worker.client_handler import ClientHandler

#: A client may take at most this long to finish sending one frame.
MID_FRAME_LIMIT = 10.0
#: Seconds allowed for the farewell ERROR to a client being closed.
FAREWELL_TIMEOUT = 2.0
_NAMES = {instruction: instruction.name for instruction in Instruction}
_PAIR_NAMES = (Instruction.SWITCH_STATE.name, Instruction.GET_ASSET_VALUE_CURRENT.name)
_TO_DATA = int(ConnectionStateCode.DATA_TRANSFER)


class _Deadline(BaseException):
    """Thrown into a connection's greenlet by its timer while a read waits past its
    deadline (a BaseException, like gevent.Timeout: no ``except Exception`` takes it)."""


def now_micros() -> int:
    """The worker's stamp: microseconds since the epoch."""
    return time.time_ns() // 1000


class ClientConnection(ClientRequests):
    """The read loop of one client: reading with deadlines, the lean path for quotes,
    buffered answers; the answer of every other request is ``ClientRequests``'s."""

    def __init__(self, shared: ClientHandler, sock: ClientTransport, client: ClientInfo) -> None:
        self.shared = shared
        self.sock = sock
        self.client = client
        settings = shared.settings
        self.conn = LeanConnection(
            Role.SERVER, settings.max_data_size, receive_limit=settings.max_request_size
        )
        #: The session this connection last verified from the session cache.
        self._verified: Verified | None = None
        self.recv_size = HEADER_SIZE + settings.max_data_size
        self.idle_timeout = settings.client_idle_timeout
        self.preauth_idle_timeout = min(settings.client_preauth_idle_timeout, self.idle_timeout)
        self.frame_limit = min(MID_FRAME_LIMIT, settings.client_idle_timeout)
        self.send_timeout = settings.client_send_timeout
        self.send_buffer = settings.client_send_buffer_bytes
        self._frame_deadline: float | None = None
        #: The read deadline (monotonic), its lazy timer, and whether a read waits now.
        self._deadline = 0.0
        self._timer: Any = None
        self._timer_at = 0.0
        self._waiting = False
        self._greenlet: Any = None
        #: What ``settimeout`` last set (None: reads and sends wait without one).
        self._socket_timeout: float | None = -1.0
        self.close_reason = "closed"
        self._routes = self._route_table()

    # the loop ----------------------------------------------------------------------
    def serve(self) -> None:
        self._greenlet = gevent.getcurrent()
        try:
            while True:
                data = self._recv()
                if not data:
                    self.close_reason = "closed by the client"
                    return
                stamp = now_micros()
                self.conn.receive_data(data)
                self._drain(stamp)
        except Closing as closing:
            self.close_reason = closing.reason
            if closing.farewell is not None:
                self._farewell(closing.farewell)
        except (OSError, gevent.Timeout) as exc:
            self.close_reason = f"connection lost ({exc.__class__.__name__})"
        finally:
            self._disarm()

    def _recv(self) -> bytes:
        """The next bytes, or Closing when the client is idle or stuck mid-frame too long.

        The deadline is kept by one lazy timer per connection (``_arm``), not by a
        socket timeout: gevent would arm and cancel a timer object for every read,
        a tenth of a quote's cost. Each read only moves ``_deadline``; the timer,
        when it fires, looks again and throws ``_Deadline`` only into a read that
        is still waiting past it.
        """
        now = time.monotonic()
        if self.conn.mid_frame:
            if self._frame_deadline is None:
                self._frame_deadline = now + self.frame_limit
            timeout = self._frame_deadline - now
            mid_frame = True
        else:
            self._frame_deadline = None
            if self.client.session_id is not None:
                timeout = self.idle_timeout
            else:  # nothing presented yet: a shorter leash
                timeout = self.preauth_idle_timeout
            mid_frame = False
        if timeout > 0:
            self._deadline = now + timeout
            if self._timer is None or self._deadline < self._timer_at:  # sooner: mid-frame
                self._arm(timeout)
            if self._socket_timeout is not None:  # _sendall's: reads wait for the timer
                self.sock.settimeout(None)
                self._socket_timeout = None
            self._waiting = True
            try:
                return bytes(self.sock.recv(self.recv_size))
            except _Deadline:
                pass
            finally:
                self._waiting = False
        if mid_frame:
            why = f"sent part of a frame, then nothing for {self.frame_limit:g} s"
        else:
            why = f"idle for {timeout:g} s"
        raise Closing(why, Message(Instruction.ERROR, (int(ErrorCode.TIMEOUT), f"{why}: closing")))

    def _arm(self, seconds: float) -> None:
        self._disarm()
        timer = gevent.get_hub().loop.timer(max(seconds, 0.001))
        timer.start(self._on_timer)
        self._timer = timer
        self._timer_at = time.monotonic() + seconds

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def _on_timer(self) -> None:
        """In the hub, at the latest deadline this connection was given."""
        self._disarm()
        left = self._deadline - time.monotonic()
        if left > 0:  # bytes came meanwhile: a later deadline
            self._arm(left)
        elif self._waiting and self._greenlet is not None:
            self._greenlet.throw(_Deadline())
        # else busy answering: the next read sets its deadline and arms again

    def _drain(self, stamp: int) -> None:
        """Answer every whole message buffered so far, in order, in as few sends as possible."""
        pending: list[bytes] = []
        try:
            self._answer_buffered(stamp, pending)
        finally:
            if pending:
                self._sendall(b"".join(pending))

    def _answer_buffered(self, stamp: int, out: list[bytes]) -> None:
        waiting = 0  # bytes of answers in ``out``: sent out once over the bound
        conn = self.conn
        while True:
            pair = conn.next_pair()  # a quote's two frames at once: protocol/lean.py
            answered = self._answer_pair(pair) if pair is not None else None
            if answered is not None:
                out.append(answered)
                waiting += len(answered)
            elif (lean := conn.next_lean()) is not None:  # one of them
                waiting += self._answer_lean(lean, stamp, out)
            else:
                try:
                    message = conn.next_message()
                except ProtocolError as exc:
                    if exc.fatal:
                        farewell = Message(
                            Instruction.ERROR,
                            (int(exc.code), f"{exc.reason}: closing the connection"),
                            request_id=exc.header.request_id if exc.header else 0,
                        )
                        raise Closing(f"unreadable bytes ({exc.code.name})", farewell) from None
                    logger.debug(f"{self.client.label}: refused a message: {exc}")
                    out.append(self._failure_bytes(exc))
                    continue
                if isinstance(message, NeedData):
                    return
                waiting += self._send_replies(self._answer(message, stamp), out)
            self._frame_deadline = None  # progress: the next frame gets its own time
            if waiting >= self.send_buffer:  # a pipelining client: let it drain first
                self._sendall(b"".join(out))
                out.clear()
                waiting = 0
            if answered is not None and conn.drained:
                return  # the usual end: nothing more buffered (next_message needs data)

    def _send_replies(self, replies: list[Message], out: list[bytes]) -> int:
        """Encode ``replies`` (through the state machine) into ``out``; their size."""
        size = 0
        for reply in replies:
            data = self.conn.send(reply)
            out.append(data)
            size += len(data)
        return size

    def _answer_lean(self, request: LeanRequest, stamp: int, out: list[bytes]) -> int:
        """A request the lean path took, answered with pre-encoded bytes when its session
        is one this connection verified and the answer is in memory; otherwise by the
        same handler as any message (which says why it cannot be answered)."""
        started = time.perf_counter()
        answer = self._lean_answer(request)
        if answer is None:
            return self._send_replies(self._answer(request.message(), stamp), out)
        data = self.conn.send_encoded(answer, request.request_id)
        out.append(data)
        metrics.REQUEST_FIGURES.observe(
            _NAMES[request.instruction], "ok", time.perf_counter() - started
        )
        return len(data)

    def _answer_pair(self, pair: QuotePair) -> bytes | None:
        """Both frames of a quote answered with pre-encoded bytes, when the lean path
        would answer each of them so (the session verified here, the quote in memory,
        both steps legal now); otherwise None, and they go frame by frame."""
        if not self._still_verified(pair.session):
            return None
        started = time.perf_counter()
        answer = self._quote_answer(pair.symbol)
        if answer is None:
            return None
        data = self.conn.send_pair(pair, self.shared.switched[_TO_DATA], answer)
        if data is not None:
            metrics.REQUEST_FIGURES.observe_each(_PAIR_NAMES, "ok", time.perf_counter() - started)
        return data

    def _lean_answer(self, request: LeanRequest) -> Encoded | None:
        if request.instruction is Instruction.SWITCH_STATE:
            target = int(request.arg)
            if target == ConnectionStateCode.COMMAND or self._still_verified(request.session):
                return self.shared.switched[target]  # switchState(0) is always granted
            return None
        if not self._still_verified(request.session):
            return None
        return self._quote_answer(str(request.arg))

    def _quote_answer(self, symbol: str) -> Encoded | None:
        """The quote's pre-encoded answer, for the symbol as sent or as normalised."""
        cache = self.shared.cache
        return cache.answer(symbol) or cache.answer(normalise_symbol(symbol))

    def _still_verified(self, session_id: bytes) -> bool:
        """True if ``session_id`` is the session this connection last verified from the
        session cache, not expired, and the cache has dropped nothing since (no logout
        announced, still live): then it needs no new check (the address is the same)."""
        verified = self._verified
        if (
            verified is None
            or verified.session_id != session_id
            or verified.epoch != self.shared.clients.sessions.epoch
            or time.time() >= verified.expires
            or self.client.session_id is not verified.session.session_id  # another since
        ):
            return False
        metrics.REQUEST_FIGURES.session_lookups["hit"] += 1
        now = time.monotonic()
        if now >= verified.touch_due:  # "last used", at most once a minute
            self.shared.clients.touch(self.client, verified.session)
            verified.touch_due = now + TOUCH_INTERVAL
        return True

    def _failure_bytes(self, error: ProtocolError) -> bytes:
        try:
            return self.conn.failure_for(error)
        except LocalProtocolError:  # no failure return fits the state: a plain ERROR does
            request_id = error.header.request_id if error.header else 0
            return encode_message(
                Message(Instruction.ERROR, (int(error.code), error.reason), request_id=request_id),
                self.conn.max_data_size,
            )

    def _sendall(self, data: bytes) -> None:
        """Send, closing a client that does not take our answer for ``send_timeout``."""
        if self._socket_timeout != self.send_timeout:  # gevent applies it to the whole sendall
            self.sock.settimeout(self.send_timeout)
            self._socket_timeout = self.send_timeout
        try:
            # One send() takes a small answer whole; sendall() (which asks the kernel
            # for the buffer size first) only for what is left of a large one.
            sent = self.sock.send(data)
            if sent < len(data):
                self.sock.sendall(memoryview(data)[sent:])
        except TimeoutError:
            raise Closing(
                f"did not read our answers for {self.send_timeout:g} s "
                f"({len(data)} bytes or fewer unsent)"
            ) from None

    def _farewell(self, message: Message) -> None:
        """Best effort: tell the client why it is being closed."""
        try:
            data = encode_message(message, self.conn.max_data_size)
            with gevent.Timeout(FAREWELL_TIMEOUT, False):
                self.sock.sendall(data)
        except OSError:
            pass
