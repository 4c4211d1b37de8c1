"""``ClientBase``: one connection to a worker, the session, and how a request goes.

Every call of ``PaperTraderClient`` is made of these few steps: put the
session in the header (``_session``), send one instruction and read its
answer (``_command``, or ``_data_args`` for a data transfer), turn a failure
return into ``ClientError`` and any other unexpected answer into a mismatch
(``_expect``). An order is sent with ``_order_request``: once it may have
left, whatever ends the wait is ``OrderOutcomeUnknown``, never a refusal.
The calls themselves are grouped by what they are about, in
``account_calls.py``, ``competition_calls.py`` and ``client.py``.
"""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from papertrader.client.connection import (
    CLIENT_MAX_DATA_SIZE,
    BlockingConnection,
    failure_error,
    tls_context,
)
from papertrader.client.errors import ClientError, OrderOutcomeUnknown, ServerUnreachable
from papertrader.client.models import SessionInfo
from papertrader.protocol import ErrorCode, Instruction, Message, ProtocolError
from papertrader.protocol.records import from_records
from papertrader.protocol.values import Value

_Client = TypeVar("_Client", bound="ClientBase")

DEFAULT_TIMEOUT = 90.0  # longer than the worker waits for an order outcome (60 s)


class ClientBase:
    """A blocking connection to one worker (default port 2049), and its session."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2049,
        timeout: float = DEFAULT_TIMEOUT,
        max_data_size: int = CLIENT_MAX_DATA_SIZE,
        session_id: uuid.UUID | None = None,
        source_address: str | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        ca: str | Path | None = None,
        tls: bool = True,
    ) -> None:
        """TLS by default: ``ssl_context`` as given, else one trusting the CA file ``ca``
        (a private deployment's, e.g. ``pt up``'s <state_dir>/tls/ca.pem), else the
        system's trust store. ``tls=False`` only for a server run with tls = false."""
        context = tls_context(tls, ssl_context, ca)
        self._conn = BlockingConnection(
            host, port, timeout, max_data_size, source_address, ssl_context=context
        )
        #: The session sent with requests; set by login/resume, cleared by logout.
        self.session_id = session_id
        self.session: SessionInfo | None = None

    @property
    def address(self) -> str:
        return self._conn.address

    def connect(self) -> None:
        """Connect now rather than on the first request (ServerUnreachable if nothing answers)."""
        self._conn.open()

    def close(self) -> None:
        self._conn.close()

    def connection_lost(self) -> bool:
        """True if the worker closed the connection since the last answer."""
        return self._conn.peer_closed()

    def __enter__(self: _Client) -> _Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- sending requests ------------------------------------------------------------
    def _session(self) -> uuid.UUID:
        if self.session_id is None:
            raise ClientError(ErrorCode.INVALID_SESSION, "not logged in")
        return self.session_id

    def _command(self, message: Message) -> Message:
        return self._conn.request(message)

    def _expect(self, reply: Message, success: Instruction) -> None:
        """Raise the server's failure, or a mismatch if the answer is something else."""
        if reply.instruction is success:
            return
        if reply.is_failure:
            raise failure_error(reply)
        self._conn.close()
        raise ClientError(
            ErrorCode.TYPE_MISMATCH,
            f"{self.address} answered with {reply.instruction.name}, expected {success.name}",
        )

    def _take_session(self, reply: Message) -> SessionInfo:
        self._expect(reply, Instruction.SESSION_ID)
        session_id, expires_at, username = reply.args
        assert isinstance(session_id, uuid.UUID) and isinstance(username, str)
        info = SessionInfo(session_id, expires_at, username)  # type: ignore[arg-type]
        self.session_id = session_id
        self.session = info
        return info

    def _data(self, instruction: Instruction, argument: str) -> Value:
        return self._data_args(instruction, argument)

    def _data_args(self, instruction: Instruction, *arguments: Value) -> Value:
        session_id = self._session()
        request = Message(instruction, arguments, session_id=session_id)
        return self._conn.data_request(request, session_id)

    def _account(self, instruction: Instruction, *args: Value, session: bool = True) -> str:
        session_id = self._session() if session else None
        message = (
            Message(instruction, args, session_id=session_id)
            if session_id is not None
            else Message(instruction, args)
        )
        reply = self._command(message)
        self._expect(reply, Instruction.ACCOUNT_SUCCESS)
        return answer_str(reply.arg("message"))

    def _forget_session(self) -> None:
        self.session_id = None
        self.session = None

    def _order_request(self, message: Message, order_id: uuid.UUID | None) -> Message:
        """Send an order (or a cancel) and read its answer. Once it may have left,
        anything that ends the wait is OrderOutcomeUnknown: it may have happened."""
        try:
            self._conn.send(message)
        except ServerUnreachable as exc:
            if not exc.lost:
                raise  # never connected: nothing was sent
            raise OrderOutcomeUnknown(
                f"the connection broke while sending: {exc.reason}", order_id, lost=True
            ) from None
        except BaseException as exc:  # Ctrl-C: part of it, or all, may have left
            self._conn.close()
            raise OrderOutcomeUnknown(f"interrupted ({type(exc).__name__})", order_id) from exc
        try:
            return self._conn.receive()
        except ClientError as exc:
            raise OrderOutcomeUnknown(f"no answer: {exc.reason}", order_id, lost=True) from None
        except BaseException as exc:  # KeyboardInterrupt, SystemExit...
            self._conn.close()
            raise OrderOutcomeUnknown(f"interrupted ({type(exc).__name__})", order_id) from exc


def answer_records(value: Any) -> list[dict[str, Any]]:
    """A list of records; an empty list travels as the null record and comes back as None."""
    if value is None or value == ():
        return []
    try:
        return from_records(value)
    except ProtocolError as exc:
        raise ClientError(exc.code, f"malformed answer: {exc.reason}") from None


def answer_str(value: Value) -> str:
    assert isinstance(value, str)
    return value
