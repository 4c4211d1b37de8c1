"""The one exception the client library raises, carrying the server's reason.

Callers (the CLI, tests, other programs) catch ``ClientError`` and read
``code`` to decide what to tell the user: a refused order, an expired session
and an unreachable worker all need different advice, but none needs a
traceback. ``ServerUnreachable`` is the subclass for "nothing answered", so a
caller can say which address it tried without parsing text.
"""

from __future__ import annotations

import re
import uuid

from papertrader.protocol.errors import ErrorCode

#: How a RATE_LIMITED reason ends (docs/PROTOCOL.md, section 9).
_RETRY_AFTER = re.compile(r"retry after (\d+) s\b")


class ClientError(Exception):
    """The server refused a request, or the conversation with it failed.

    ``order_id`` is set for a refused order the server had already numbered
    (it was queued and the master rejected it), so the user can find it in
    their history or report it.
    """

    def __init__(self, code: ErrorCode, reason: str, *, order_id: uuid.UUID | None = None) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason
        self.order_id = order_id

    @property
    def session_problem(self) -> bool:
        """True when logging in again is the cure (expired, ended or foreign session)."""
        return self.code in (ErrorCode.INVALID_SESSION, ErrorCode.SESSION_IP_MISMATCH)

    @property
    def retry_after(self) -> int | None:
        """Seconds to wait before trying again, for a RATE_LIMITED refusal; else None."""
        if self.code is not ErrorCode.RATE_LIMITED:
            return None
        match = _RETRY_AFTER.search(self.reason)
        return int(match[1]) if match else None


class ServerUnreachable(ClientError):
    """No connection could be made to the server at ``address``, or it went away mid-request.

    ``lost`` tells the two apart: after a lost connection an order may or may
    not have been queued, so the caller should check the history before
    sending it again.
    """

    def __init__(self, address: str, detail: str, *, lost: bool = False) -> None:
        what = f"connection to {address} lost" if lost else f"cannot reach {address}"
        super().__init__(ErrorCode.UNAVAILABLE, f"{what}: {detail}")
        self.address = address
        self.lost = lost


class TlsError(ClientError):
    """The TLS handshake failed: the certificate is not trusted or not for this name,
    the server does not speak TLS, or a CA file is unusable. The reason says which
    ("certificate not trusted: ..."); nothing was sent to the server."""

    def __init__(self, reason: str) -> None:
        super().__init__(ErrorCode.UNAVAILABLE, reason)


class OrderOutcomeUnknown(ClientError):
    """An order (or a cancel) was sent but what became of it is not known.

    The answer was lost (a timeout, a closed connection, Ctrl-C, a worker gone)
    or the worker itself could not tell (the master had not decided it in time,
    the order store failed). The order may still fill: never send it again as a
    new order. ``order_id`` is the client order id: ask for the order's state
    with it (``PaperTraderClient.order``), or send the same order again with the
    same client order id, which can never create a second order.
    """

    def __init__(
        self, reason: str, order_id: uuid.UUID | None = None, *, lost: bool = False
    ) -> None:
        super().__init__(ErrorCode.OUTCOME_UNKNOWN, reason, order_id=order_id)
        #: The answer was lost on the way (a timeout, a broken connection): another
        #: worker can be asked. False when a server said so, or the user interrupted.
        self.lost = lost
