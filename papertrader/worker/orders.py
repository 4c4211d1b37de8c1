"""Purchase and sell orders (spec 3.1.7 seen from the worker): check, queue, wait.

The worker rejects what it can judge alone (unknown symbol, quantity below 1)
without queuing anything. Everything else is given an order id and put on the
Redis order queue with the worker's timestamp; the master fills the queue once
per update interval, in timestamp order, at that interval's price. The client
waits for the outcome on its connection. If the master takes too long the
client is told the order is queued and will still be applied, so a slow master
never makes a client buy twice.
"""

from __future__ import annotations

import uuid

from loguru import logger

from papertrader.protocol import NIL, ErrorCode, Instruction, Message, reply_to
from papertrader.store.order_queue import Order, OrderQueue, Side
from papertrader.store.sessions import Session
from papertrader.worker.cache import QuoteCache
from papertrader.worker.client_management import ClientInfo, shown
from papertrader.worker.forwarding import stamp_time

_SIDES: dict[Instruction, tuple[Side, Instruction, Instruction]] = {
    Instruction.PURCHASE_ASSET: ("buy", Instruction.PURCHASE_SUCCESS, Instruction.PURCHASE_FAIL),
    Instruction.SELL_ASSET: ("sell", Instruction.SELL_SUCCESS, Instruction.SELL_FAIL),
}

#: Unknown symbols are answered with the known ones, up to this many.
SHOWN_SYMBOLS = 20


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


class OrderDesk:
    """Answers PURCHASE_ASSET and SELL_ASSET for one worker."""

    def __init__(
        self, queue: OrderQueue, cache: QuoteCache, worker_name: str, wait_timeout: float
    ) -> None:
        self._queue = queue
        self._cache = cache
        self._worker = worker_name
        self._wait_timeout = wait_timeout

    def place(self, request: Message, client: ClientInfo, session: Session, stamp: int) -> Message:
        """The SUCCESS or FAIL return for a purchase or sell order (session already checked)."""
        side, success, fail = _SIDES[request.instruction]
        raw_symbol, quantity = request.arg("symbol"), request.arg("quantity")
        assert isinstance(raw_symbol, str) and isinstance(quantity, int)
        symbol = normalise_symbol(raw_symbol)
        if not self._cache.is_known(symbol):
            reason = unknown_asset_reason(symbol, self._cache.known_symbols)
            return reply_to(request, fail, int(ErrorCode.UNKNOWN_ASSET), reason, NIL)
        if quantity < 1:
            return reply_to(
                request,
                fail,
                int(ErrorCode.INVALID_QUANTITY),
                f"quantity must be a whole number of at least 1, not {quantity}",
                NIL,
            )
        order = Order(
            order_id=uuid.uuid4(),
            account_id=session.account_id,
            side=side,
            symbol=symbol,
            quantity=quantity,
            received_at=stamp_time(stamp),
            client_ip=client.ip,
            worker=self._worker,
        )
        self._queue.submit(order)
        logger.info(
            f"{client.label}: queued {side} {quantity} {shown(symbol)} as order {order.order_id}"
        )
        outcome = self._queue.wait_outcome(order.order_id, self._wait_timeout)
        if outcome is None:
            logger.warning(
                f"{client.label}: order {order.order_id} not decided within "
                f"{self._wait_timeout:g} s; it stays queued"
            )
            return reply_to(
                request,
                fail,
                int(ErrorCode.UNAVAILABLE),
                f"order {order.order_id} is queued and will still be applied, but the master "
                f"has not processed it within {self._wait_timeout:g} s; check your transaction "
                "history before ordering again",
                order.order_id,
            )
        if outcome.status == "filled" and outcome.price is not None and outcome.executed_at:
            return reply_to(
                request,
                success,
                outcome.order_id,
                outcome.symbol,
                outcome.quantity,
                outcome.price,
                outcome.executed_at,
            )
        code = outcome.code or int(ErrorCode.INTERNAL)
        return reply_to(request, fail, code, outcome.reason, outcome.order_id)
