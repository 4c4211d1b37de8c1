"""Order status, order lists and cancels, answered by the master (spec 3.1.7).

The master is the one place an order's fate is decided, so it answers for
every order: from PostgreSQL once the drain has seen it, from its intake
(the orders read from the stream and not yet drained: state ``queued``)
before. A cancel is decided here too, under the lock the drain takes: an open
order is canceled and its reservation released; a queued one is recorded as
canceled so the drain, finding its id known, leaves it so and tells its
worker. Whichever of the cancel and the drain comes second sees what the
first decided: an order is canceled or filled, never both, never neither.

A user sees only their own orders: an id of another account's order is
answered exactly like an id nobody used (UNKNOWN_ORDER).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import uuid
from datetime import datetime, timezone

from papertrader import competitions as competition_rules
from papertrader.competitions import CompetitionError
from papertrader.master.competition_orders import competition_account
from papertrader.master.context import MasterContext
from papertrader.protocol import (
    NIL,
    ErrorCode,
    Instruction,
    Message,
    max_chunk_size,
    packets_for,
    reply_to,
)
from papertrader.protocol.records import to_record
from papertrader.store import competitions as competition_store
from papertrader.store import order_book
from papertrader.store.order_queue import Order
from papertrader.store.order_state import OrderState, order_id_for
from papertrader.store.sessions import SessionError

#: Orders a list returns unless the request asks for fewer.
DEFAULT_LIST = 100
_STATUS_FILTERS = ("all", "open")


class OrderRequestError(Exception):
    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def stamped_ip(request: Message) -> str | None:
    """The client address the worker stamped on a forwarded request (None: unset)."""
    return str(request.client_address) if request.client_address is not None else None


def _owner(ctx: MasterContext, request: Message) -> int:
    """The session's own account. The session is checked against the client address
    the worker stamped, as the worker itself checked it."""
    try:
        session = ctx.sessions.get(request.session_id, stamped_ip(request))
    except SessionError as exc:
        raise OrderRequestError(exc.code, exc.reason) from None
    return session.account_id


def acting_account(ctx: MasterContext, request: Message, account: str = "") -> tuple[int, int, str]:
    """The account a request acts on, as (user's account, account, competition): the
    practice account for an empty ``account``, else the user's account in the
    competition of that name (docs/PROTOCOL.md section 16)."""
    owner = _owner(ctx, request)
    name = account.strip()
    if not name:
        return owner, owner, ""
    try:
        competition = competition_rules.find(ctx.pool, name, owner)
    except CompetitionError as exc:
        raise OrderRequestError(exc.code, exc.reason) from None
    account_id = competition_store.member_account(ctx.pool, competition.id, owner)
    if account_id is None:
        raise OrderRequestError(
            ErrorCode.NOT_A_MEMBER, f"you have not joined competition {competition.name!r}"
        )
    return owner, account_id, name.lower()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _queued(ctx: MasterContext, account_id: int, some_id: uuid.UUID) -> Order | None:
    if ctx.intake is None:
        return None
    for candidate in order_book.order_ids(account_id, some_id):
        order = ctx.intake.find(candidate)
        if order is not None and order.account_id == account_id:
            return order
    return None


def find(ctx: MasterContext, account_id: int, some_id: uuid.UUID) -> OrderState | None:
    """The account's order by client order id or order id: decided, or queued."""
    state = order_book.find_order(ctx.pool, account_id, some_id)
    if state is not None:
        return state
    queued = _queued(ctx, account_id, some_id)
    if queued is not None:
        return order_book.queued_state(queued)
    # The drain may have taken it from the intake between the two looks.
    return order_book.find_order(ctx.pool, account_id, some_id)


def _data(ctx: MasterContext, request: Message, value: object) -> list[Message]:
    return packets_for(
        value,  # type: ignore[arg-type]
        max_chunk_size(ctx.settings.max_data_size),
        request_id=request.request_id,
    )


def _data_fail(request: Message, code: ErrorCode, reason: str) -> list[Message]:
    return [reply_to(request, Instruction.DATA_FAIL, int(code), reason)]


def _unknown(some_id: object) -> str:
    return f"you have no order {some_id}"


def handle_get_order(ctx: MasterContext, request: Message) -> list[Message]:
    """GET_ORDER(order_id): one record, or DATA_FAIL(UNKNOWN_ORDER)."""
    some_id = request.arg("order_id")
    assert isinstance(some_id, uuid.UUID)
    try:
        account_id = _owner(ctx, request)
    except OrderRequestError as exc:
        return _data_fail(request, exc.code, exc.reason)
    state = find(ctx, account_id, some_id)
    if state is None:
        return _data_fail(request, ErrorCode.UNKNOWN_ORDER, _unknown(some_id))
    return _data(ctx, request, to_record(state.as_record()))


def handle_get_orders(ctx: MasterContext, request: Message) -> list[Message]:
    """GET_ORDERS(account, status, limit): a list of records, newest first (queued first)."""
    status, limit = request.arg("status"), request.arg("limit")
    assert isinstance(status, str) and isinstance(limit, int)
    if status not in _STATUS_FILTERS:
        return _data_fail(
            request, ErrorCode.BAD_ARGUMENT, f"status must be all or open, not {status[:12]!r}"
        )
    try:
        owner, account_id, competition = acting_account(ctx, request, str(request.arg("account")))
    except OrderRequestError as exc:
        return _data_fail(request, exc.code, exc.reason)
    wanted = min(max(limit, 0) or DEFAULT_LIST, order_book.MAX_LIST)
    queued = [] if ctx.intake is None else ctx.intake.queued_for(owner, competition)
    states = [order_book.queued_state(order) for order in reversed(queued)]
    if status == "all":
        states += order_book.list_orders(ctx.pool, account_id, open_only=False, limit=wanted)
    else:
        states += order_book.list_orders(ctx.pool, account_id, open_only=True, limit=wanted)
    return _data(ctx, request, tuple(to_record(s.as_record()) for s in states[:wanted]))


def _order_fail(request: Message, code: ErrorCode, reason: str, order_id: uuid.UUID) -> Message:
    return reply_to(request, Instruction.ORDER_FAIL, int(code), reason, order_id)


def _cancel_queued(ctx: MasterContext, order: Order) -> OrderState | None:
    if order.quantity < 1 or order.side not in ("buy", "sell"):
        return order_book.queued_state(order)  # the drain will reject it anyway
    try:
        ip = None if order.client_ip is None else str(ipaddress.ip_address(order.client_ip))
    except ValueError:
        ip = None
    account_id = order.account_id
    if order.competition:  # recorded under the competition account the drain would use
        account_id = (
            competition_account(ctx.pool, order.account_id, order.competition) or account_id
        )
    return order_book.cancel_queued(
        ctx.pool, dataclasses.replace(order, client_ip=ip, account_id=account_id), _now()
    )


def handle_cancel_order(ctx: MasterContext, request: Message) -> list[Message]:
    """CANCEL_ORDER(order_id): ORDER_STATUS (canceled) or ORDER_FAIL saying why not."""
    some_id = request.arg("order_id")
    assert isinstance(some_id, uuid.UUID)
    try:
        account_id = _owner(ctx, request)
    except OrderRequestError as exc:
        return [_order_fail(request, exc.code, exc.reason, some_id)]
    state = None
    for candidate in order_book.order_ids(account_id, some_id):
        state = order_book.cancel_order(ctx.pool, account_id, candidate, _now())
        if state is not None:
            break
    if state is None:
        queued = _queued(ctx, account_id, some_id)
        if queued is not None:
            state = _cancel_queued(ctx, queued)
    if state is None:
        state = order_book.find_order(ctx.pool, account_id, some_id)
    if state is None:
        return [_order_fail(request, ErrorCode.UNKNOWN_ORDER, _unknown(some_id), some_id)]
    if state.status == "canceled":
        return [reply_to(request, Instruction.ORDER_STATUS, to_record(state.as_record()))]
    if state.status == "queued":
        reason = f"order {some_id} cannot be canceled: it will be rejected at its drain"
    else:
        reason = f"order {some_id} is {state.status}, so it cannot be canceled any more"
    return [_order_fail(request, ErrorCode.ORDER_NOT_OPEN, reason, state.client_order_id or NIL)]


def handle_cancel_all(ctx: MasterContext, request: Message) -> list[Message]:
    """CANCEL_ALL_ORDERS(account): every open and queued order; ORDERS_CANCELED(count)."""
    try:
        owner, account_id, competition = acting_account(ctx, request, str(request.arg("account")))
    except OrderRequestError as exc:
        return [_order_fail(request, exc.code, exc.reason, NIL)]
    canceled = order_book.cancel_all_orders(ctx.pool, account_id, _now())
    for order in [] if ctx.intake is None else ctx.intake.queued_for(owner, competition):
        state = _cancel_queued(ctx, order)
        if state is not None and state.status == "canceled":
            canceled += 1
    return [reply_to(request, Instruction.ORDERS_CANCELED, canceled)]


__all__ = [
    "handle_cancel_all",
    "handle_cancel_order",
    "handle_get_order",
    "handle_get_orders",
    "order_id_for",
]
