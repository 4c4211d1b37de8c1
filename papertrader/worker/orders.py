"""Orders seen from the worker (spec 3.1.7): check, queue, wait, answer honestly.

PLACE_ORDER carries an order ticket (a record: the client's own order id,
side, symbol, quantity, type, limit and stop prices, time in force); the
original PURCHASE_ASSET and SELL_ASSET are market orders whose client order id
the worker makes up. The worker refuses what it can judge alone (an unknown
symbol, a quantity or price out of range, a malformed ticket) without queuing
anything. Everything else gets the order id derived from the account and the
client order id (``order_id_for``: the same on every worker, so a client order
id sent twice, even through two workers at once, is one order) and goes on
the Redis order stream with the worker's timestamp; the master decides it at
its next drain and the client waits for that outcome on its connection (the
outcomes of every order of this worker process arrive on one list, read by one
greenlet: ``outcome_inbox.py``).

Whenever the worker cannot know the outcome (the master has not decided within
the wait, the order store failed after the order may have been queued), the
answer says so, with the client order id, and never "rejected": the order may
still fill, and asking for its state by that id (or sending it again with the
same id) is always safe.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis
from loguru import logger

from papertrader import metrics
from papertrader.limits.limiter import Refused, retry_after_text
from papertrader.protocol import NIL, ErrorCode, Instruction, Message, ProtocolError, reply_to
from papertrader.protocol.records import from_record, to_record
from papertrader.store.order_queue import Order, Side
from papertrader.store.order_state import (
    ORDER_TYPES,
    TIMES_IN_FORCE,
    OrderState,
    order_id_for,
)
from papertrader.store.sessions import Session
from papertrader.worker.cache import QuoteCache
from papertrader.worker.client_management import ClientInfo, shown
from papertrader.worker.forwarding import stamp_time
from papertrader.worker.order_sender import OrderSender
from papertrader.worker.outcome_inbox import OutcomeInbox

#: The original market orders: instruction -> (side, success return, failure return).
_SIDES: dict[Instruction, tuple[Side, Instruction, Instruction]] = {
    Instruction.PURCHASE_ASSET: ("buy", Instruction.PURCHASE_SUCCESS, Instruction.PURCHASE_FAIL),
    Instruction.SELL_ASSET: ("sell", Instruction.SELL_SUCCESS, Instruction.SELL_FAIL),
}

#: What an order is when the Redis primary took it but no replica confirmed it in time.
_UNCONFIRMED = (
    "reached the order store, but no replica confirmed holding it in time, so a Redis "
    "failover may have lost it"
)
#: Unknown symbols are answered with the known ones, up to this many.
SHOWN_SYMBOLS = 20
#: Limit and stop prices: more than 0, at most this, at most 6 decimal places.
MAX_PRICE = Decimal("1000000000")
PRICE_PLACES = 6

#: The ticket's fields: name -> (type, required). Any other field is refused, so a
#: misspelt "limit_prise" cannot turn a limit order into a market order.
_TICKET: dict[str, tuple[type, bool]] = {
    "client_order_id": (uuid.UUID, True),
    "side": (str, True),
    "symbol": (str, True),
    "quantity": (int, True),
    "type": (str, False),
    "limit_price": (Decimal, False),
    "stop_price": (Decimal, False),
    "time_in_force": (str, False),
    "competition": (str, False),
}
#: Which prices each order type takes: (limit price, stop price).
_PRICES_TAKEN: dict[str, tuple[bool, bool]] = {
    "market": (False, False),
    "limit": (True, False),
    "stop": (False, True),
    "stop_limit": (True, True),
}


def order_wait_timeout(update_interval: float) -> float:
    """How long a client waits for its order: ten drains, and never under a minute."""
    return max(60.0, 10 * update_interval)


def normalise_symbol(text: str) -> str:
    """Symbols are upper-case; a client typing ``aapl`` means AAPL."""
    return text.strip().upper()


def unknown_asset_reason(text: str, known: tuple[str, ...]) -> str:
    """The reason sent for a symbol nobody quotes, listing what can be traded."""
    listed = ", ".join(known[:SHOWN_SYMBOLS])
    if len(known) > SHOWN_SYMBOLS:
        listed += f", ... ({len(known)} in all)"
    return f"unknown asset {text[:24]}; known: {listed or 'none'}"


def outcome_unknown_reason(client_order_id: uuid.UUID, why: str) -> str:
    """The reason of every answer that cannot tell what became of an order."""
    return (
        f"outcome unknown: order {client_order_id} {why}; it may still be filled or "
        f"rejected: check with `pt client order {client_order_id}` (sending it again with "
        "the same client order id is safe)"
    )


class TicketError(Exception):
    """A ticket the worker refuses: ``code`` and ``reason`` go to the client."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Ticket:
    """A checked order ticket."""

    client_order_id: uuid.UUID
    side: Side
    symbol: str
    quantity: int
    order_type: str = "market"
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str = "day"
    competition: str = ""  # the competition it trades in ("": the practice account)


#: A competition's name is at most this long (papertrader/competitions.py).
MAX_COMPETITION_NAME = 48


def _check_price(name: str, value: Decimal) -> Decimal:
    exponent = value.as_tuple().exponent
    if not value.is_finite() or value <= 0 or value > MAX_PRICE:
        raise TicketError(
            ErrorCode.INVALID_PRICE, f"{name.replace('_', ' ')} must be more than 0 and at most "
            f"{MAX_PRICE}, not {value}"
        )  # fmt: skip
    if isinstance(exponent, int) and exponent < -PRICE_PLACES:
        raise TicketError(
            ErrorCode.INVALID_PRICE,
            f"{name.replace('_', ' ')} {value} has more than {PRICE_PLACES} decimal places",
        )
    return value


def parse_ticket(record: Any, max_quantity: int) -> Ticket:
    """The checked ticket of a PLACE_ORDER, or TicketError saying what is wrong."""
    try:
        fields = from_record(record)
    except ProtocolError as exc:
        raise TicketError(
            ErrorCode.INVALID_ORDER, f"the ticket is not a record: {exc.reason}"
        ) from None
    unknown = sorted(set(fields) - set(_TICKET))
    if unknown:
        raise TicketError(
            ErrorCode.INVALID_ORDER,
            f"unknown ticket field {shown(unknown[0])}; the fields are {', '.join(_TICKET)}",
        )
    for name, (kind, required) in _TICKET.items():
        value = fields.get(name)
        if value is None:
            if required:
                raise TicketError(ErrorCode.INVALID_ORDER, f"the ticket has no {name}")
            continue
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise TicketError(
                ErrorCode.INVALID_ORDER, f"ticket field {name} must be {kind.__name__}"
            )
    side = fields["side"]
    if side not in ("buy", "sell"):
        raise TicketError(ErrorCode.INVALID_ORDER, f"side must be buy or sell, not {shown(side)}")
    quantity = fields["quantity"]
    if not 1 <= quantity <= max_quantity:
        raise TicketError(
            ErrorCode.INVALID_QUANTITY,
            f"quantity must be a whole number from 1 to {max_quantity}, not {quantity}",
        )
    order_type = fields.get("type") or "market"
    if order_type not in ORDER_TYPES:
        raise TicketError(
            ErrorCode.INVALID_ORDER,
            f"type must be one of {', '.join(ORDER_TYPES)}, not {shown(order_type)}",
        )
    time_in_force = fields.get("time_in_force") or "day"
    if time_in_force not in TIMES_IN_FORCE:
        raise TicketError(
            ErrorCode.INVALID_ORDER, f"time_in_force must be day or gtc, not {shown(time_in_force)}"
        )
    takes_limit, takes_stop = _PRICES_TAKEN[order_type]
    limit, stop = fields.get("limit_price"), fields.get("stop_price")
    for name, value, takes in (
        ("limit_price", limit, takes_limit),
        ("stop_price", stop, takes_stop),
    ):
        if takes and value is None:
            raise TicketError(ErrorCode.INVALID_ORDER, f"a {order_type} order needs a {name}")
        if not takes and value is not None:
            raise TicketError(ErrorCode.INVALID_ORDER, f"a {order_type} order takes no {name}")
        if value is not None:
            _check_price(name, value)
    competition = (fields.get("competition") or "").strip()
    if len(competition) > MAX_COMPETITION_NAME:
        raise TicketError(
            ErrorCode.UNKNOWN_COMPETITION, f"there is no competition {shown(competition)}"
        )
    client_order_id = fields["client_order_id"]
    if client_order_id == NIL:
        raise TicketError(ErrorCode.INVALID_ORDER, "the client order id must not be all zeros")
    return Ticket(
        client_order_id=client_order_id,
        side=side,
        symbol=normalise_symbol(fields["symbol"]),
        quantity=quantity,
        order_type=order_type,
        limit_price=limit,
        stop_price=stop,
        time_in_force=time_in_force,
        competition=competition,
    )


class OrderDesk:
    """Answers PLACE_ORDER, PURCHASE_ASSET and SELL_ASSET for one worker."""

    def __init__(
        self,
        sender: OrderSender,
        inbox: OutcomeInbox,
        cache: QuoteCache,
        worker_name: str,
        wait_timeout: float,
        max_quantity: int = 1_000_000_000,
        update_interval: float = 5.0,
        pending_cap: int = 0,
    ) -> None:
        #: Queues the orders of every client of this process, a batch per round trip.
        self._sender = sender
        #: Where this process's outcomes arrive (one list, one reading greenlet).
        self._inbox = inbox
        self._cache = cache
        self._worker = worker_name
        self._wait_timeout = wait_timeout
        self._max_quantity = max_quantity
        #: The cap on orders one account may have waiting for the next drain (for its text).
        self._pending_cap = pending_cap
        self._interval = update_interval

    # -- the instructions -----------------------------------------------------
    def place(self, request: Message, client: ClientInfo, session: Session, stamp: int) -> Message:
        """PURCHASE_ASSET / SELL_ASSET: a market order; answered in their own returns."""
        side, success, fail = _SIDES[request.instruction]
        raw_symbol, quantity = request.arg("symbol"), request.arg("quantity")
        assert isinstance(raw_symbol, str) and isinstance(quantity, int)
        symbol = normalise_symbol(raw_symbol)
        if not self._cache.is_known(symbol):
            reason = unknown_asset_reason(symbol, self._cache.known_symbols)
            return reply_to(request, fail, int(ErrorCode.UNKNOWN_ASSET), reason, NIL)
        if not 1 <= quantity <= self._max_quantity:
            return reply_to(
                request,
                fail,
                int(ErrorCode.INVALID_QUANTITY),
                f"quantity must be a whole number from 1 to {self._max_quantity}, not {quantity}",
                NIL,
            )
        ticket = Ticket(uuid.uuid4(), side, symbol, quantity)
        result = self._submit(ticket, client, session, stamp)
        if isinstance(result, TicketError):  # the outcome is unknown, or nothing was queued
            order_id = order_id_for(session.account_id, ticket.client_order_id)
            if result.code is ErrorCode.RATE_LIMITED:
                order_id = NIL
            return reply_to(request, fail, int(result.code), result.reason, order_id)
        if result.status == "filled" and result.price is not None and result.executed_at:
            return reply_to(
                request,
                success,
                result.order_id,
                result.symbol,
                result.quantity,
                result.price,
                result.executed_at,
            )
        if result.status == "rejected":
            code = result.code or int(ErrorCode.INTERNAL)
            return reply_to(request, fail, code, result.reason, result.order_id)
        reason = f"order {result.order_id} was {result.status} before it was executed"
        return reply_to(request, fail, int(ErrorCode.ORDER_NOT_OPEN), reason, result.order_id)

    def place_ticket(
        self, request: Message, client: ClientInfo, session: Session, stamp: int
    ) -> Message:
        """PLACE_ORDER: ORDER_STATUS with the order's state, or ORDER_FAIL."""
        try:
            ticket = parse_ticket(request.arg("ticket"), self._max_quantity)
        except TicketError as exc:
            return reply_to(request, Instruction.ORDER_FAIL, int(exc.code), exc.reason, NIL)
        if not self._cache.is_known(ticket.symbol):
            reason = unknown_asset_reason(ticket.symbol, self._cache.known_symbols)
            return reply_to(
                request, Instruction.ORDER_FAIL, int(ErrorCode.UNKNOWN_ASSET), reason, NIL
            )
        result = self._submit(ticket, client, session, stamp)
        if isinstance(result, TicketError):
            order_id = order_id_for(session.account_id, ticket.client_order_id)
            if result.code is ErrorCode.RATE_LIMITED:  # refused: nothing was queued
                order_id = NIL
            return reply_to(
                request, Instruction.ORDER_FAIL, int(result.code), result.reason, order_id
            )
        if result.status == "rejected":
            code = result.code or int(ErrorCode.INTERNAL)
            return reply_to(request, Instruction.ORDER_FAIL, code, result.reason, result.order_id)
        return reply_to(request, Instruction.ORDER_STATUS, to_record(result.as_record()))

    # -- queue and wait ----------------------------------------------------------
    def _over_pending_cap(self, client: ClientInfo) -> TicketError:
        """The refusal of an order over the per-account cap on orders waiting for the next
        drain (checked, and the order counted and queued, atomically in Redis)."""
        wait = retry_after_text(Refused(max(1.0, math.ceil(self._interval))))
        cap = self._pending_cap
        logger.info(f"{client.label}: order refused: {cap} orders already waiting")
        return TicketError(
            ErrorCode.RATE_LIMITED,
            f"you already have {cap} orders waiting for the next market update "
            f"(the most one account may have); this one was not queued: {wait}",
        )

    def _submit(
        self, ticket: Ticket, client: ClientInfo, session: Session, stamp: int
    ) -> OrderState | TicketError:
        """Queue the order and wait for its outcome; a TicketError(OUTCOME_UNKNOWN)
        when the outcome cannot be known."""
        order = Order(
            order_id=order_id_for(session.account_id, ticket.client_order_id),
            account_id=session.account_id,
            side=ticket.side,
            symbol=ticket.symbol,
            quantity=ticket.quantity,
            received_at=stamp_time(stamp),
            client_ip=client.ip,
            worker=self._worker,
            client_order_id=ticket.client_order_id,
            order_type=ticket.order_type,
            limit_price=ticket.limit_price,
            stop_price=ticket.stop_price,
            time_in_force=ticket.time_in_force,
            reply=self._inbox.reply,
            competition=ticket.competition,
            session=session.session_id.hex,
        )
        cid = ticket.client_order_id
        expected = self._inbox.expect(order.order_id)
        try:
            kept = self._sender.send(order)
        except redis.RedisError as exc:
            expected.cancel()
            logger.warning(f"{client.label}: order {cid}: the order store failed ({exc})")
            return TicketError(
                ErrorCode.OUTCOME_UNKNOWN,
                outcome_unknown_reason(
                    cid, "may not have been queued: the order store failed while queuing it"
                ),
            )
        except BaseException:  # a bug, or this greenlet killed: nobody waits any more
            expected.cancel()
            raise
        if kept is None:  # over the cap: nothing was queued
            expected.cancel()
            return self._over_pending_cap(client)
        metrics.ORDERS_QUEUED.labels(ticket.side).inc()
        logger.info(
            f"{client.label}: queued {ticket.side} {ticket.quantity} {shown(ticket.symbol)} "
            f"({ticket.order_type}) as order {cid}"
        )
        # Not kept: the Redis primary has it but no replica confirmed it, so a failover
        # could lose it; its outcome from the master is still the truth if it comes.
        queued = "is queued" if kept else _UNCONFIRMED
        if not kept:
            logger.warning(
                f"{client.label}: order {cid}: no Redis replica confirmed it "
                f"({self._sender.replicas} wanted); a failover now could lose it"
            )
        try:
            outcome = expected.get(self._wait_timeout)
        except redis.RedisError as exc:
            metrics.ORDER_OUTCOMES.labels(ticket.side, "unknown").inc()
            logger.warning(
                f"{client.label}: order {cid}: lost the order store while waiting ({exc})"
            )
            return TicketError(
                ErrorCode.OUTCOME_UNKNOWN,
                outcome_unknown_reason(
                    cid, f"{queued}, but the order store became unreachable while waiting for it"
                ),
            )
        metrics.ORDER_OUTCOMES.labels(
            ticket.side, "unknown" if outcome is None else outcome.status
        ).inc()
        if outcome is None:
            logger.warning(
                f"{client.label}: order {cid} not decided within {self._wait_timeout:g} s; "
                "it stays queued"
            )
            return TicketError(
                ErrorCode.OUTCOME_UNKNOWN,
                outcome_unknown_reason(
                    cid,
                    f"{queued}, but the master has not processed it within "
                    f"{self._wait_timeout:g} s",
                ),
            )
        return outcome
