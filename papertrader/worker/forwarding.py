"""Client requests as the master receives them: stamped, with the client's address.

The worker's main job (spec 2.1.8) is to stamp commands: every request
forwarded to the master carries the time the worker received it (header
``timestamp``, microseconds) and the client's IP (header ``client_address``),
plus the client's session id where it has one.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone

from papertrader.protocol import (
    NIL,
    ErrorCode,
    Instruction,
    Message,
    failure_reply,
    reply_to,
    split_payload,
)
from papertrader.worker.client_management import ClientInfo
from papertrader.worker.link import Link, LinkError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: Seconds a client waits for the master's answer to a forwarded request before the
#: master's welcome says how long (after it: MasterLink.request_timeout).
FORWARD_TIMEOUT = 30.0


def stamp_time(stamp: int) -> datetime:
    """The aware datetime of a header timestamp (exact: no float in between)."""
    return _EPOCH + timedelta(microseconds=stamp)


def for_master(request: Message, client: ClientInfo, stamp: int, *, with_session: bool) -> Message:
    """``request`` as it travels on the link (the link adds request id and worker UUID)."""
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
            client.ip
        )
    except ValueError:
        address = None
    return Message(
        request.instruction,
        request.args,
        session_id=request.session_id if with_session else NIL,
        timestamp=stamp,
        client_address=address,
    )


class UserData:
    """getUserInfo / getUserPortfolio / getUserTransactionHistory (and getWorkerList, for
    clients such as browsers that cannot reach the master), answered by the master."""

    def __init__(self, link: Link, chunk_size: int, timeout: float | None = None) -> None:
        self._link = link
        self._chunk_size = chunk_size
        self._timeout = timeout

    def fetch(
        self, request: Message, client: ClientInfo, stamp: int, *, with_session: bool = True
    ) -> list[Message]:
        """DATA packets for the client (the master's payload, re-cut) or one DATA_FAIL.

        The payload is passed on as the master encoded it: the worker never
        needs to understand a portfolio to deliver one.
        """
        try:
            answer = self._link.request(
                for_master(request, client, stamp, with_session=with_session), self._timeout
            )
        except LinkError as exc:
            return [reply_to(request, Instruction.DATA_FAIL, int(exc.code), exc.reason)]
        if isinstance(answer, bytes):
            return split_payload(answer, self._chunk_size, request_id=request.request_id)
        if answer.instruction is Instruction.DATA_FAIL:
            return [reply_to(request, Instruction.DATA_FAIL, *answer.args)]
        return [
            reply_to(
                request,
                Instruction.DATA_FAIL,
                int(ErrorCode.INTERNAL),
                f"the master answered {answer.instruction.name}",
            )
        ]


#: Commands whose outcome is unknown when the master's answer is lost (a retry of the
#: others, a profile's visibility, is harmless).
_ORDER_COMMANDS = frozenset({Instruction.CANCEL_ORDER, Instruction.CANCEL_ALL_ORDERS})


class Commands:
    """Commands the master answers (cancelOrder, cancelAllOrders): its return, relayed.

    A cancel sent to the master whose answer never came back may or may not
    have happened, so that answer says the outcome is unknown (and how to find
    out), unless the request never left the worker.
    """

    def __init__(self, link: Link, timeout: float = FORWARD_TIMEOUT) -> None:
        self._link = link
        self._timeout = timeout

    def forward(self, request: Message, client: ClientInfo, stamp: int) -> Message:
        try:
            answer = self._link.request(
                for_master(request, client, stamp, with_session=True), self._timeout
            )
        except LinkError as exc:
            if (
                not exc.sent
                or exc.code is not ErrorCode.UNAVAILABLE
                or request.instruction not in _ORDER_COMMANDS
            ):
                return failure_reply(request.instruction, exc.code, exc.reason, request.request_id)
            check = "pt client orders --open"
            if request.instruction is Instruction.CANCEL_ORDER:
                check = f"pt client order {request.args[0]!s}"
            reason = (
                f"outcome unknown: {exc.reason}; the request may or may not have been carried "
                f"out: check with `{check}`"
            )
            return failure_reply(
                request.instruction, ErrorCode.OUTCOME_UNKNOWN, reason, request.request_id
            )
        if isinstance(answer, bytes):
            return failure_reply(
                request.instruction,
                ErrorCode.INTERNAL,
                "the master answered with data",
                request.request_id,
            )
        return reply_to(request, answer.instruction, *answer.args)
