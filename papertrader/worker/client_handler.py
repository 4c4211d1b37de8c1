"""One greenlet per client: bytes in, the protocol state machine, answers out.

Each client connection runs :meth:`ClientConnection.serve` in its own
greenlet (gevent's StreamServer spawns it). The connection is a
``ClientTransport`` (``transport.py``): a TCP socket, a TLS socket, or a
browser's WebSocket (``papertrader/web/carriage.py``), all served by this one
code path, with the same limits. The protocol ``Connection`` does
the framing and the state machine of spec 4.2; this module routes each
message to the module that answers it and sends the answer back.

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

import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.socket
import redis
from loguru import logger

from papertrader import metrics
from papertrader.config import Settings
from papertrader.limits.connections import ConnectionLimits
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
    failure_reply,
    max_chunk_size,
    packets_for,
    reply_to,
    split_payload,
)
from papertrader.protocol.lean import Encoded, LeanConnection, LeanRequest, QuotePair
from papertrader.protocol.records import to_record
from papertrader.store.sessions import Session, SessionError
from papertrader.worker.auth_tunnel import AuthTunnel
from papertrader.worker.cache import QuoteCache
from papertrader.worker.client_management import TOUCH_INTERVAL, ClientInfo, ClientManager
from papertrader.worker.forwarding import Commands, UserData
from papertrader.worker.history import PriceHistory
from papertrader.worker.orders import OrderDesk, normalise_symbol, unknown_asset_reason
from papertrader.worker.transport import ClientTransport, closed_by_peer

#: A client may take at most this long to finish sending one frame.
MID_FRAME_LIMIT = 10.0
#: Seconds allowed for the farewell ERROR to a client being closed.
FAREWELL_TIMEOUT = 2.0
#: Currency of every asset until asset metadata is served (a later issue).
CURRENCY = "USD"

_HISTORY = frozenset(
    {
        Instruction.GET_ASSET_VALUE_DAY,
        Instruction.GET_ASSET_VALUE_WEEK,
        Instruction.GET_ASSET_VALUE_MONTH,
        Instruction.GET_ASSET_VALUE_YEAR,
        Instruction.GET_ASSET_VALUE_ALL_TIME,
        Instruction.GET_ASSET_VALUE_PREDICTED,
    }
)
_USER_DATA = frozenset(
    {
        Instruction.GET_USER_INFO,
        Instruction.GET_USER_PORTFOLIO,
        Instruction.GET_USER_TRANSACTION_HISTORY,
        Instruction.GET_SESSIONS,
        Instruction.GET_SIGN_IN_METHODS,
        Instruction.GET_ORDER,
        Instruction.GET_ORDERS,
        Instruction.GET_EQUITY_HISTORY,
        Instruction.GET_COMPETITIONS,
        Instruction.GET_COMPETITION,
        Instruction.GET_LEADERBOARD,
        Instruction.GET_ACCOUNT_EQUITY_HISTORY,
    }
)
#: Account requests of issue 12, answered by the master through the auth tunnel.
_ACCOUNT = frozenset(
    {
        Instruction.GET_SIGN_IN_OPTIONS,
        Instruction.PASSWORD_SET,
        Instruction.PASSWORD_REMOVE,
        Instruction.PROVIDER_LINK,
        Instruction.PROVIDER_UNLINK,
        Instruction.PASSWORD_FORGOT,
        Instruction.PASSWORD_RESET,
        Instruction.EMAIL_VERIFY,
        Instruction.SESSION_REVOKE,
        Instruction.LOGOUT_ALL,
        Instruction.ACCOUNT_DELETE,
    }
)
#: Commands the master answers (the worker relays its return).
_MASTER_COMMANDS = frozenset(
    {
        Instruction.CANCEL_ORDER,
        Instruction.CANCEL_ALL_ORDERS,
        Instruction.SET_PROFILE_VISIBILITY,
        Instruction.CREATE_COMPETITION,
        Instruction.JOIN_COMPETITION,
        Instruction.LEAVE_COMPETITION,
    }
)


_NAMES = {instruction: instruction.name for instruction in Instruction}
_PAIR_NAMES = (Instruction.SWITCH_STATE.name, Instruction.GET_ASSET_VALUE_CURRENT.name)
_TO_DATA = int(ConnectionStateCode.DATA_TRANSFER)


class _ClientGone(ConnectionResetError):
    """The client closed its connection while we waited for the master on its behalf
    (an OSError: wherever it lands, the connection ends as a lost one)."""


class _Deadline(BaseException):
    """Thrown into a connection's greenlet by its timer while a read waits past its
    deadline (a BaseException, like gevent.Timeout: no ``except Exception`` takes it)."""


class _Closing(Exception):
    """The connection must end; ``reason`` is logged, ``farewell`` sent first if set."""

    def __init__(self, reason: str, farewell: Message | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.farewell = farewell


class _Verified:
    """A session a connection checked, and what lets its next requests skip the check."""

    __slots__ = ("session", "session_id", "expires", "epoch", "touch_due")

    def __init__(self, session: Session, epoch: int) -> None:
        self.session = session
        self.session_id = session.session_id.bytes  # as the header carries it
        self.expires = session.expires_at.timestamp()
        self.epoch = epoch  # the session cache's, when the session was held there
        self.touch_due = time.monotonic() + TOUCH_INTERVAL  # check_session just touched it


def now_micros() -> int:
    """The worker's stamp: microseconds since the epoch."""
    return time.time_ns() // 1000


class ClientHandler:
    """What every client connection shares; the StreamServer calls it per connection."""

    def __init__(
        self,
        settings: Settings,
        clients: ClientManager,
        cache: QuoteCache,
        tunnel: AuthTunnel,
        orders: OrderDesk,
        user_data: UserData,
        history: PriceHistory | None = None,
        commands: Commands | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.cache = cache
        self.tunnel = tunnel
        self.orders = orders
        self.user_data = user_data
        self.history = history
        self.commands = commands
        self.chunk_size = max_chunk_size(settings.max_data_size)
        #: stateSwitchSuccess for each state, encoded once (the lean path's answer).
        self.switched = {
            int(state): Encoded(
                [Message(Instruction.STATE_SWITCH_SUCCESS, (int(state),))], settings.max_data_size
            )
            for state in ConnectionStateCode
        }
        #: Why this worker may not serve now (the master refused or booted it), or None.
        self.out_of_service: Callable[[], str | None] = lambda: None
        self._sockets: dict[int, ClientTransport] = {}
        self.limits = ConnectionLimits(
            settings.max_connections, settings.max_connections_per_address
        )

    def shed(self, reason: str) -> None:
        """Close every client connection once its request in progress is answered (the
        read side only is shut: answers still go out, then the client sees the end)."""
        if self._sockets:
            logger.warning(f"out of service ({reason}): closing {len(self._sockets)} clients")
        for index, sock in enumerate(list(self._sockets.values())):
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
            if index % 256 == 255:
                gevent.sleep(0)  # thousands of clients: let heartbeats and others run

    def _turn_away(
        self,
        sock: ClientTransport,
        host: str,
        port: int,
        reason: str,
        code: ErrorCode = ErrorCode.UNAVAILABLE,
        told: str = "this worker is out of service (the master refused it): "
        "connect to another worker (getWorkerList on the master)",
    ) -> None:
        """Tell a new client why it cannot be served here, then close."""
        farewell = Message(Instruction.ERROR, (int(code), told))
        try:
            with gevent.Timeout(FAREWELL_TIMEOUT, False):
                sock.sendall(encode_message(farewell, self.settings.max_data_size))
        except OSError:
            pass
        finally:
            sock.close()
        metrics.CLIENTS_TURNED_AWAY.inc()
        logger.info(f"turned away client {host}:{port}: {reason}")

    def __call__(self, sock: ClientTransport, address: Any) -> None:
        """StreamServer handle: serve one client until it leaves; never raises."""
        host, port = str(address[0]), int(address[1])
        refused = self.out_of_service()
        if refused is not None:
            self._turn_away(sock, host, port, f"out of service ({refused})")
            return
        subject, refusal = self.limits.admit(host)
        if refusal is not None:
            self._turn_away(sock, host, port, refusal.reason, refusal.code, refusal.reason)
            return
        try:
            self._serve(sock, host, port)
        finally:
            self.limits.release(subject)

    def _serve(self, sock: ClientTransport, host: str, port: int) -> None:
        client = self.clients.connect(host, port)
        metrics.CLIENT_CONNECTIONS.inc()
        self._sockets[client.client_id] = sock
        logger.info(f"{client.label}: connected ({self.clients.count} clients)")
        try:  # answers are small frames: do not let Nagle hold them for the client's ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        connection = ClientConnection(self, sock, client)
        try:
            connection.serve()
        except Exception:  # a bug: this client's loss only, logged once
            logger.exception(f"{client.label}: handler failed")
        finally:
            self._sockets.pop(client.client_id, None)
            try:
                sock.close()
            except OSError:
                pass
            self.clients.disconnect(client)
            logger.info(
                f"{client.label}: disconnected ({connection.close_reason}; "
                f"{self.clients.count} clients)"
            )


class ClientConnection:
    """The read loop and message routing of one client."""

    def __init__(self, shared: ClientHandler, sock: ClientTransport, client: ClientInfo) -> None:
        self.shared = shared
        self.sock = sock
        self.client = client
        settings = shared.settings
        self.conn = LeanConnection(
            Role.SERVER, settings.max_data_size, receive_limit=settings.max_request_size
        )
        #: The session this connection last verified from the session cache.
        self._verified: _Verified | None = None
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
        self._routes: dict[Instruction, Callable[[Message, int], list[Message]]] = {
            Instruction.LOGIN: self._login,
            Instruction.REGISTER: self._register,
            Instruction.LOGIN_SESSION: self._login_session,
            Instruction.LOGOUT: self._logout,
            Instruction.LOGIN_OIDC: self._login_oidc,
            **{instruction: self._account for instruction in _ACCOUNT},
            Instruction.PURCHASE_ASSET: self._order,
            Instruction.SELL_ASSET: self._order,
            Instruction.PLACE_ORDER: self._place_order,
            **{instruction: self._master_command for instruction in _MASTER_COMMANDS},
            Instruction.SWITCH_STATE: self._switch_state,
            Instruction.GET_ASSET_VALUE_CURRENT: self._asset_value_current,
            Instruction.GET_ASSET_INFO: self._asset_info,
            Instruction.GET_WORKER_LIST: self._worker_list,
            **{instruction: self._history for instruction in _HISTORY},
            **{instruction: self._user_data for instruction in _USER_DATA},
        }

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
        except _Closing as closing:
            self.close_reason = closing.reason
            if closing.farewell is not None:
                self._farewell(closing.farewell)
        except (OSError, gevent.Timeout) as exc:
            self.close_reason = f"connection lost ({exc.__class__.__name__})"
        finally:
            self._disarm()

    def _recv(self) -> bytes:
        """The next bytes, or _Closing when the client is idle or stuck mid-frame too long.

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
        raise _Closing(why, Message(Instruction.ERROR, (int(ErrorCode.TIMEOUT), f"{why}: closing")))

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
                        raise _Closing(f"unreadable bytes ({exc.code.name})", farewell) from None
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

    def _answer(self, message: Message, stamp: int) -> list[Message]:
        """Route one message, counting it and its latency (papertrader/metrics.py)."""
        started = time.perf_counter()
        replies = self._route(message, stamp)
        metrics.observe_request(message.instruction, time.perf_counter() - started, replies)
        return replies

    def _route(self, message: Message, stamp: int) -> list[Message]:
        """Answer one message; expected failures become its failure return."""
        instruction = message.instruction
        try:
            return self._routes[instruction](message, stamp)
        except (_Closing, _ClientGone):
            raise
        except SessionError as exc:
            return [failure_reply(instruction, exc.code, exc.reason, message.request_id)]
        except redis.RedisError as exc:
            logger.warning(f"{self.client.label}: {instruction.name}: Redis unavailable ({exc})")
            reason = "the session and order store is unreachable: try again shortly"
            return [failure_reply(instruction, ErrorCode.UNAVAILABLE, reason, message.request_id)]
        except Exception:
            logger.exception(f"{self.client.label}: {instruction.name} failed")
            reason = f"internal error while answering {instruction.name}"
            return [failure_reply(instruction, ErrorCode.INTERNAL, reason, message.request_id)]

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
            raise _Closing(
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

    # sessions ------------------------------------------------------------------------
    def _session(self, message: Message, fresh: bool = False) -> Session:
        """The live session of the request, checked against the client's IP (SessionError)."""
        self._verified = None
        clients = self.shared.clients
        session = clients.check_session(self.client, message.session_id, fresh)
        epoch = None if fresh else clients.sessions.epoch_holding(session)
        if epoch is not None:  # held by the session cache: later quotes may skip the check
            self._verified = _Verified(session, epoch)
        return session

    # command state -------------------------------------------------------------------
    def _login(self, message: Message, stamp: int) -> list[Message]:
        return [self._watching(lambda: self.shared.tunnel.login(message, self.client, stamp))]

    def _register(self, message: Message, stamp: int) -> list[Message]:
        return [self._watching(lambda: self.shared.tunnel.register(message, self.client, stamp))]

    def _watching(self, call: Callable[[], Message]) -> Message:
        """``call()`` (a bcrypt request to the master), given up if the client closes its
        connection meanwhile: the link then cancels the request, and the master drops
        the password check instead of computing it for nobody."""
        waiting = gevent.getcurrent()
        sock = self.sock

        def watch() -> None:
            try:
                gevent.socket.wait_read(sock.fileno())
                if closed_by_peer(sock) and isinstance(waiting, gevent.Greenlet):
                    waiting.kill(_ClientGone(), block=False)
            except (OSError, ValueError):
                pass  # closed under us, or data pipelined behind the request: stop watching

        watcher = gevent.spawn(watch)
        try:
            return call()
        except _ClientGone:
            raise _Closing("closed by the client while the master checked its password") from None
        finally:
            watcher.kill(block=False)

    def _login_oidc(self, message: Message, stamp: int) -> list[Message]:
        return [self.shared.tunnel.login_oidc(message, self.client, stamp)]

    def _account(self, message: Message, stamp: int) -> list[Message]:
        return [self.shared.tunnel.account(message, self.client, stamp)]

    def _login_session(self, message: Message, stamp: int) -> list[Message]:
        return [self.shared.tunnel.login_session(message, self.client)]

    def _logout(self, message: Message, stamp: int) -> list[Message]:
        return [self.shared.tunnel.logout(message, self.client, stamp)]

    def _order_session(self, message: Message) -> Session:
        """An order's session, from this connection's or the session cache's verified
        answer like a quote's (no Redis read per order): the master's drain checks every
        order's session again in Redis (``master/order_sessions.py``: live, the account's,
        bound to the stamped address), so an order whose session ended meanwhile (a
        logout not yet announced here) is refused there with a reason, never filled."""
        verified = self._verified
        if verified is not None and self._still_verified(message.session_id.bytes):
            return verified.session
        return self._session(message)

    def _order(self, message: Message, stamp: int) -> list[Message]:
        session = self._order_session(message)
        return [self.shared.orders.place(message, self.client, session, stamp)]

    def _place_order(self, message: Message, stamp: int) -> list[Message]:
        session = self._order_session(message)
        return [self.shared.orders.place_ticket(message, self.client, session, stamp)]

    def _master_command(self, message: Message, stamp: int) -> list[Message]:
        self._session(message, fresh=True)
        if self.shared.commands is None:
            reason = f"{message.instruction.name} is not served by this worker"
            return [
                failure_reply(
                    message.instruction, ErrorCode.UNAVAILABLE, reason, message.request_id
                )
            ]
        return [self.shared.commands.forward(message, self.client, stamp)]

    # control -------------------------------------------------------------------------
    def _switch_state(self, message: Message, stamp: int) -> list[Message]:
        """switchState(1) needs a valid session; switchState(0) is always granted.

        Going back to the command state reveals nothing and is the way out for
        a client whose session expired while in the data transfer state (it
        must reach the command state to log in again).
        """
        target = message.arg("state")
        if target == ConnectionStateCode.DATA_TRANSFER:
            self._session(message)
        return [reply_to(message, Instruction.STATE_SWITCH_SUCCESS, target)]

    def _worker_list(self, message: Message, stamp: int) -> list[Message]:
        """The master's worker list, through the link (a browser cannot reach the master)."""
        return self.shared.user_data.fetch(message, self.client, stamp, with_session=False)

    # data transfer state -------------------------------------------------------------
    def _packets(self, message: Message, value: Any) -> list[Message]:
        return packets_for(
            to_record(value) if isinstance(value, dict) else value,
            chunk_size=self.shared.chunk_size,
            request_id=message.request_id,
        )

    def _unknown_asset(self, message: Message, symbol: str) -> list[Message]:
        reason = unknown_asset_reason(symbol, self.shared.cache.known_symbols)
        return [reply_to(message, Instruction.DATA_FAIL, int(ErrorCode.UNKNOWN_ASSET), reason)]

    def _asset_value_current(self, message: Message, stamp: int) -> list[Message]:
        self._session(message)
        symbol = normalise_symbol(str(message.arg("asset")))
        cache = self.shared.cache
        if not cache.is_known(symbol):
            return self._unknown_asset(message, symbol)
        payload = cache.payload(symbol)
        if payload is None:
            return [
                reply_to(
                    message,
                    Instruction.DATA_FAIL,
                    int(ErrorCode.NO_DATA),
                    f"no quote for {symbol} yet: the first market update is still to come",
                )
            ]
        return split_payload(payload, self.shared.chunk_size, request_id=message.request_id)

    def _asset_info(self, message: Message, stamp: int) -> list[Message]:
        self._session(message)
        symbol = normalise_symbol(str(message.arg("asset")))
        cache = self.shared.cache
        if not cache.is_known(symbol):
            return self._unknown_asset(message, symbol)
        quote = cache.get(symbol)
        record = {
            "symbol": symbol,
            "name": None,  # asset names are not configured yet
            "currency": CURRENCY,
            "quote": quote.as_record() if quote is not None else None,
            "updated_at": cache.updated_at,
            # The master keeps the last good prices when its provider fails: say so.
            "stale": cache.is_stale(),
        }
        return self._packets(message, record)

    def _history(self, message: Message, stamp: int) -> list[Message]:
        self._session(message)
        if self.shared.history is not None:
            return self.shared.history.fetch(message, self.client, stamp)
        return [
            reply_to(
                message,
                Instruction.DATA_FAIL,
                int(ErrorCode.UNAVAILABLE),
                "price history is not served yet",
            )
        ]

    def _user_data(self, message: Message, stamp: int) -> list[Message]:
        self._session(message, fresh=True)
        return self.shared.user_data.fetch(message, self.client, stamp)
