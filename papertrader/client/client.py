"""``PaperTraderClient``: the whole client side of the protocol behind plain method calls.

A program (the ``pt client`` CLI, the end-to-end tests, a notebook) should not
have to know about switchState, packet numbering or records to buy a share.
Each method sends one instruction, waits for its answer, and returns a
Python value, or raises ``ClientError`` with the server's code and reason.

The client remembers the session it logged in with and puts it in the header
of every request that needs one. Sessions live in Redis and are shared by all
workers, so a session id obtained from one worker can be given to a client of
another (``resume``) and works there too.

One client is one connection: use one per thread.

Here are the market, order and account-data calls; the account calls are in
``account_calls.py``, the competition calls in ``competition_calls.py``, and
how every request is sent and its answer checked in ``base.py``.
"""

from __future__ import annotations

import datetime
import ssl
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from papertrader.client.account_calls import AccountCalls
from papertrader.client.base import DEFAULT_TIMEOUT, answer_records
from papertrader.client.competition_calls import CompetitionCalls
from papertrader.client.connection import BlockingConnection, failure_error, tls_context
from papertrader.client.errors import ClientError, OrderOutcomeUnknown
from papertrader.client.models import (
    AssetInfo,
    Bar,
    EquityPoint,
    Fill,
    Forecast,
    OrderStatus,
    Portfolio,
    Side,
    Trade,
    UserInfo,
)
from papertrader.market.quote import Quote
from papertrader.protocol import ErrorCode, Instruction, Message, ProtocolError
from papertrader.protocol.records import from_record, to_record

_RANGES: dict[str, Instruction] = {
    "day": Instruction.GET_ASSET_VALUE_DAY,
    "week": Instruction.GET_ASSET_VALUE_WEEK,
    "month": Instruction.GET_ASSET_VALUE_MONTH,
    "year": Instruction.GET_ASSET_VALUE_YEAR,
    "all": Instruction.GET_ASSET_VALUE_ALL_TIME,
}


class PaperTraderClient(AccountCalls, CompetitionCalls):
    """A blocking connection to one worker (default port 2049): every call of the protocol."""

    # -- market data ---------------------------------------------------------------
    def quote(self, symbol: str) -> Quote:
        """The current bar of ``symbol``: orders sent now fill at about its close."""
        fields = from_record(self._data(Instruction.GET_ASSET_VALUE_CURRENT, symbol))
        return _quote(fields)

    def asset_info(self, symbol: str) -> AssetInfo:
        """Currency, current quote (None before the first update) and freshness of
        ``symbol``."""
        info = from_record(self._data(Instruction.GET_ASSET_INFO, symbol))
        if info.get("quote") is not None:
            info["quote"] = _quote(from_record(info["quote"]))
        return AssetInfo.from_record(info)

    def price_history(
        self, symbol: str, range_: str = "day", on: datetime.date | None = None
    ) -> list[Bar]:
        """Bars of ``symbol``: ``range_`` is day (minute bars), week or month (daily bars),
        year or all (monthly bars), ending on the UTC date ``on`` (default: today)."""
        instruction = _RANGES.get(range_)
        if instruction is None:
            raise ValueError(f"range must be one of {', '.join(_RANGES)}, not {range_!r}")
        if instruction is Instruction.GET_ASSET_VALUE_ALL_TIME:
            value = self._data_args(instruction, symbol)
        else:
            day = on or datetime.datetime.now(datetime.timezone.utc).date()
            value = self._data_args(instruction, symbol, day)
        return [Bar.from_record(fields) for fields in answer_records(value)]

    def forecast(self, symbol: str, horizon: int) -> Forecast:
        """A naive forecast of the next ``horizon`` update intervals (practice, not advice)."""
        value = self._data_args(Instruction.GET_ASSET_VALUE_PREDICTED, symbol, horizon)
        result = from_record(value)
        return Forecast.from_record(result, answer_records(result.get("points")))

    # -- orders ----------------------------------------------------------------------
    def place_order(
        self,
        side: Side,
        symbol: str,
        quantity: int,
        *,
        order_type: str = "market",
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        time_in_force: str = "day",
        client_order_id: uuid.UUID | None = None,
        competition: str = "",
    ) -> OrderStatus:
        """Place an order; returns its state after the master's next drain (filled, or
        open in the book for a limit or stop order that has to wait).

        ``client_order_id`` (made up when None) identifies the order: sending the
        same one again never creates a second order, it answers with the first
        one's state. ``competition`` names the competition the order trades in
        (its own account); empty: your practice account. A refusal raises
        ClientError (``order_id`` = the client order id); an answer that cannot say
        what became of the order, or one
        that never came (timeout, closed connection, Ctrl-C), raises
        OrderOutcomeUnknown: ask ``order(client_order_id)``, never re-send it
        with a new id.
        """
        cid = client_order_id or uuid.uuid4()
        ticket: dict[str, Any] = {
            "client_order_id": cid,
            "side": side,
            "symbol": symbol,
            "quantity": quantity,
            "type": order_type,
            "limit_price": limit_price,
            "stop_price": stop_price,
            "time_in_force": time_in_force,
            "competition": competition or None,
        }
        message = Message(
            Instruction.PLACE_ORDER,
            (to_record({k: v for k, v in ticket.items() if v is not None}),),
            session_id=self._session(),
        )
        reply = self._order_request(message, cid)
        if reply.instruction is Instruction.ORDER_FAIL:
            error = failure_error(reply)
            if error.code is ErrorCode.OUTCOME_UNKNOWN:
                raise OrderOutcomeUnknown(error.reason, cid)
            raise error  # order_id: the order's id if it was queued (and rejected)
        self._expect(reply, Instruction.ORDER_STATUS)
        return _order_status(reply.arg("order"))

    def buy(self, symbol: str, quantity: int, client_order_id: uuid.UUID | None = None) -> Fill:
        """A market buy, filled when the master next drains the queue.

        A refusal (not enough cash, unknown symbol, bad quantity...) raises
        ClientError with ``order_id`` set; see ``place_order`` for the rest.
        """
        return self._market("buy", symbol, quantity, client_order_id)

    def sell(self, symbol: str, quantity: int, client_order_id: uuid.UUID | None = None) -> Fill:
        """A market sell; see ``buy``."""
        return self._market("sell", symbol, quantity, client_order_id)

    def order(self, order_id: uuid.UUID) -> OrderStatus:
        """One of your orders, by its client order id (or the order id the history shows)."""
        return _order_status(self._data_args(Instruction.GET_ORDER, order_id))

    def orders(
        self, open_only: bool = False, limit: int = 100, competition: str = ""
    ) -> list[OrderStatus]:
        """Your orders, newest first (queued ones first); only waiting ones if ``open_only``;
        those of your account in ``competition`` if it is set."""
        status = "open" if open_only else "all"
        value = self._data_args(Instruction.GET_ORDERS, competition, status, limit)
        return [OrderStatus.from_record(fields) for fields in answer_records(value)]

    def cancel(self, order_id: uuid.UUID) -> OrderStatus:
        """Cancel an order still waiting (queued, or open in the book); returns its
        canceled state. ClientError(ORDER_NOT_OPEN) if it filled or ended first."""
        message = Message(Instruction.CANCEL_ORDER, (order_id,), session_id=self._session())
        reply = self._order_request(message, order_id)
        if reply.instruction is Instruction.ORDER_FAIL:
            error = failure_error(reply)
            if error.code is ErrorCode.OUTCOME_UNKNOWN:
                raise OrderOutcomeUnknown(error.reason, order_id)
            raise ClientError(error.code, error.reason, order_id=order_id)
        self._expect(reply, Instruction.ORDER_STATUS)
        return _order_status(reply.arg("order"))

    def cancel_all(self, competition: str = "") -> int:
        """Cancel every waiting order of yours (of your account in ``competition`` if
        set); returns how many were canceled."""
        message = Message(Instruction.CANCEL_ALL_ORDERS, (competition,), session_id=self._session())
        reply = self._order_request(message, None)
        if reply.instruction is Instruction.ORDER_FAIL:
            error = failure_error(reply)
            if error.code is ErrorCode.OUTCOME_UNKNOWN:
                raise OrderOutcomeUnknown(error.reason)
            raise error
        self._expect(reply, Instruction.ORDERS_CANCELED)
        return int(reply.arg("canceled"))  # type: ignore[arg-type]

    # -- account data ------------------------------------------------------------------
    def portfolio(self, username: str = "") -> Portfolio:
        """Cash, positions, values and P&L (own); another user's positions only."""
        result = from_record(self._data(Instruction.GET_USER_PORTFOLIO, username))
        return Portfolio.from_record(result, answer_records(result.get("positions")))

    def history(self, username: str = "") -> list[Trade]:
        """Executed orders, oldest first."""
        value = self._data(Instruction.GET_USER_TRANSACTION_HISTORY, username)
        return [Trade.from_record(fields) for fields in answer_records(value)]

    def equity_history(self, range_: str = "week", competition: str = "") -> list[EquityPoint]:
        """Your equity over ``range_`` (day, week, month, year, all), oldest first, ending
        with its value now; that of your account in ``competition`` if it is set."""
        if competition:
            value = self._data_args(Instruction.GET_ACCOUNT_EQUITY_HISTORY, competition, range_)
        else:  # the request every server version answers
            value = self._data_args(Instruction.GET_EQUITY_HISTORY, range_)
        return [EquityPoint(r["time"], r["equity"], r["cash"]) for r in answer_records(value)]

    def user_info(self, username: str = "") -> UserInfo:
        """Account details (own: e-mail, cash and the profile's visibility too)."""
        return UserInfo.from_record(from_record(self._data(Instruction.GET_USER_INFO, username)))

    def _market(
        self, side: Side, symbol: str, quantity: int, client_order_id: uuid.UUID | None
    ) -> Fill:
        state = self.place_order(side, symbol, quantity, client_order_id=client_order_id)
        fill = state.fill
        if fill is None:
            raise ClientError(
                ErrorCode.ORDER_NOT_OPEN,
                f"order {state.client_order_id} was {state.status}, not filled",
                order_id=state.client_order_id,
            )
        return fill


def get_worker_list(
    master_host: str,
    master_port: int,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    ssl_context: ssl.SSLContext | None = None,
    ca: str | Path | None = None,
    tls: bool = True,
) -> list[dict[str, Any]]:
    """The workers the master has connected now (getWorkerList: the only client-master
    call), asked over TLS with the master's certificate verified (so nobody on the path
    can hand out other addresses); ``ssl_context``/``ca``/``tls`` as for the client."""
    context = tls_context(tls, ssl_context, ca)
    conn = BlockingConnection(master_host, master_port, timeout, ssl_context=context)
    try:
        return answer_records(conn.transfer(Message(Instruction.GET_WORKER_LIST)))
    finally:
        conn.close()


def _order_status(value: Any) -> OrderStatus:
    try:
        return OrderStatus.from_record(from_record(value))
    except (ProtocolError, TypeError) as exc:
        raise ClientError(ErrorCode.BAD_ARGUMENT, f"malformed order record: {exc}") from None


def _quote(fields: dict[str, Any]) -> Quote:
    try:
        return Quote(
            symbol=fields["symbol"],
            open=fields["open"],
            high=fields["high"],
            low=fields["low"],
            close=fields["close"],
            volume=fields["volume"],
            time=fields["time"],
        )
    except KeyError as exc:
        raise ClientError(ErrorCode.BAD_ARGUMENT, f"quote without field {exc}") from None
