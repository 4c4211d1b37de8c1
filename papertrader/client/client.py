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
"""

from __future__ import annotations

import datetime
import ssl
import uuid
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from papertrader.client.connection import (
    CLIENT_MAX_DATA_SIZE,
    BlockingConnection,
    failure_error,
    tls_context,
)
from papertrader.client.errors import ClientError, OrderOutcomeUnknown, ServerUnreachable
from papertrader.client.models import (
    AccountSession,
    AssetInfo,
    Bar,
    Competition,
    EquityPoint,
    Fill,
    Forecast,
    Leaderboard,
    LeaderboardEntry,
    OrderStatus,
    Portfolio,
    SessionInfo,
    Side,
    SignInMethods,
    Trade,
    UserInfo,
)
from papertrader.market.quote import Quote
from papertrader.protocol import ErrorCode, Instruction, Message, ProtocolError
from papertrader.protocol.records import from_record, from_records, to_record
from papertrader.protocol.values import Value

if TYPE_CHECKING:
    from papertrader.oidc.native import ProviderOptions

_RANGES: dict[str, Instruction] = {
    "day": Instruction.GET_ASSET_VALUE_DAY,
    "week": Instruction.GET_ASSET_VALUE_WEEK,
    "month": Instruction.GET_ASSET_VALUE_MONTH,
    "year": Instruction.GET_ASSET_VALUE_YEAR,
    "all": Instruction.GET_ASSET_VALUE_ALL_TIME,
}

DEFAULT_TIMEOUT = 90.0  # longer than the worker waits for an order outcome (60 s)


class PaperTraderClient:
    """A blocking connection to one worker (default port 2049)."""

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

    # -- lifecycle ---------------------------------------------------------------
    def connect(self) -> None:
        """Connect now rather than on the first request (ServerUnreachable if nothing answers)."""
        self._conn.open()

    def close(self) -> None:
        self._conn.close()

    def connection_lost(self) -> bool:
        """True if the worker closed the connection since the last answer."""
        return self._conn.peer_closed()

    def __enter__(self) -> PaperTraderClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- accounts and sessions -------------------------------------------------------
    def register(self, username: str, email: str, password: str) -> str:
        """Create an account; returns the username as stored."""
        reply = self._command(Message(Instruction.REGISTER, (username, email, password)))
        self._expect(reply, Instruction.REGISTER_SUCCESS)
        return _str(reply.arg("username"))

    def login(self, username: str, password: str, remember: bool = False) -> SessionInfo:
        """Log in; the session is kept for the following requests and returned."""
        reply = self._command(Message(Instruction.LOGIN, (username, password, remember)))
        return self._take_session(reply)

    def resume(self, session_id: uuid.UUID) -> SessionInfo:
        """Continue a session made earlier, maybe on another worker (login(sessionID))."""
        reply = self._command(Message(Instruction.LOGIN_SESSION, session_id=session_id))
        return self._take_session(reply)

    def logout(self) -> None:
        """End the session on every worker."""
        session_id = self._session()
        reply = self._command(Message(Instruction.LOGOUT, session_id=session_id))
        self._expect(reply, Instruction.LOGOUT_SUCCESS)
        self.session_id = None
        self.session = None

    # -- accounts a person can live with (docs/PROTOCOL.md section 12) ----------------
    def sign_in_options(self) -> list[ProviderOptions]:
        """The providers this server offers: name, display_name, issuer, client_id,
        client_secret (of an installed-app client, or None) and scopes."""
        from papertrader.oidc.native import ProviderOptions

        reply = self._command(Message(Instruction.GET_SIGN_IN_OPTIONS))
        self._expect(reply, Instruction.SIGN_IN_OPTIONS)
        return [ProviderOptions.from_record(r) for r in _records(reply.arg("providers"))]

    def login_oidc(
        self,
        provider: str,
        id_token: str,
        nonce: str,
        remember: bool = False,
        username: str = "",
    ) -> SessionInfo:
        """Sign in with a provider's ID token (``papertrader.oidc.native`` obtains one).

        ``username`` names the new account on a first sign-in (USERNAME_NEEDED
        without it); it is ignored for an account already linked.
        """
        reply = self._command(
            Message(Instruction.LOGIN_OIDC, (provider, id_token, nonce, remember, username))
        )
        return self._take_session(reply)

    def set_password(self, new: str, current: str = "") -> str:
        """Add a password (``current`` empty), or change it; other sessions are signed out."""
        return self._account(Instruction.PASSWORD_SET, current, new)

    def remove_password(self, current: str) -> str:
        """Remove the password (only while a provider stays linked)."""
        return self._account(Instruction.PASSWORD_REMOVE, current)

    def link_provider(self, provider: str, id_token: str, nonce: str) -> str:
        """Link a provider sign-in to the account of this session."""
        return self._account(Instruction.PROVIDER_LINK, provider, id_token, nonce)

    def unlink_provider(self, provider: str) -> str:
        """Unlink a provider (only while another way in remains)."""
        return self._account(Instruction.PROVIDER_UNLINK, provider)

    def forgot_password(self, who: str) -> str:
        """Ask for a reset code by username or e-mail; the answer is the same either way."""
        return self._account(Instruction.PASSWORD_FORGOT, who, session=False)

    def reset_password(self, code: str, new: str) -> str:
        """Set a new password with a mailed code; every session of the account ends."""
        return self._account(Instruction.PASSWORD_RESET, code, new, session=False)

    def verify_email(self, code: str) -> str:
        """Confirm the account's e-mail address with a mailed code."""
        return self._account(Instruction.EMAIL_VERIFY, code, session=False)

    def sessions(self) -> list[AccountSession]:
        """This account's live sessions, newest first (``current`` marks this one)."""
        value = self._data_args(Instruction.GET_SESSIONS)
        return [AccountSession.from_record(fields) for fields in _records(value)]

    def sign_in_methods(self) -> SignInMethods:
        """Whether the account has a password, its e-mail, and its linked providers."""
        result = from_record(self._data_args(Instruction.GET_SIGN_IN_METHODS))
        return SignInMethods.from_record(result, _records(result.get("providers")))

    def revoke_session(self, handle: str) -> str:
        """End one of this account's sessions, by the handle ``sessions()`` shows."""
        answer = self._account(Instruction.SESSION_REVOKE, handle)
        if "(this one)" in answer:
            self._forget_session()
        return answer

    def logout_all(self, keep_this: bool = True) -> str:
        """End every session of the account (this one too unless ``keep_this``)."""
        answer = self._account(Instruction.LOGOUT_ALL, keep_this)
        if not keep_this:
            self._forget_session()
        return answer

    def delete_account(
        self, password: str = "", provider: str = "", id_token: str = "", nonce: str = ""
    ) -> str:
        """Delete the account: with its password, or a fresh sign-in with a linked provider."""
        answer = self._account(Instruction.ACCOUNT_DELETE, password, provider, id_token, nonce)
        self._forget_session()
        return answer

    def _account(self, instruction: Instruction, *args: Value, session: bool = True) -> str:
        session_id = self._session() if session else None
        message = (
            Message(instruction, args, session_id=session_id)
            if session_id is not None
            else Message(instruction, args)
        )
        reply = self._command(message)
        self._expect(reply, Instruction.ACCOUNT_SUCCESS)
        return _str(reply.arg("message"))

    def _forget_session(self) -> None:
        self.session_id = None
        self.session = None

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
        return [Bar.from_record(fields) for fields in _records(value)]

    def forecast(self, symbol: str, horizon: int) -> Forecast:
        """A naive forecast of the next ``horizon`` update intervals (practice, not advice)."""
        value = self._data_args(Instruction.GET_ASSET_VALUE_PREDICTED, symbol, horizon)
        result = from_record(value)
        return Forecast.from_record(result, _records(result.get("points")))

    # -- orders --------------------------------------------------------------------------
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
        return [OrderStatus.from_record(fields) for fields in _records(value)]

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

    def set_profile(self, public: bool) -> str:
        """Make your profile public (others see your positions and trades, not your cash)
        or private (the default: others cannot tell you exist); returns the server's
        confirmation."""
        message = Message(Instruction.SET_PROFILE_VISIBILITY, (public,), session_id=self._session())
        reply = self._command(message)
        self._expect(reply, Instruction.ACCOUNT_SUCCESS)
        return _str(reply.arg("message"))

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

    # -- competitions (docs/PROTOCOL.md section 16) ------------------------------------------
    def create_competition(
        self,
        name: str,
        ends_at: datetime.datetime,
        *,
        starts_at: datetime.datetime | None = None,
        starting_cash: Decimal | None = None,
        symbols: Sequence[str] = (),
        private: bool = False,
    ) -> Competition:
        """Create a competition (you are not a member until you join it); a private
        one comes back with its ``join_code`` for the members."""
        terms: dict[str, Any] = {
            "name": name,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "starting_cash": starting_cash,
            "symbols": list(symbols) or None,
            "private": private,
        }
        record = to_record({k: v for k, v in terms.items() if v is not None})
        return self._competition_command(Instruction.CREATE_COMPETITION, record)

    def join_competition(self, name: str = "", join_code: str = "") -> Competition:
        """Join a public competition by name, or a private one by its join code; joining
        again changes nothing."""
        return self._competition_command(Instruction.JOIN_COMPETITION, name, join_code)

    def leave_competition(self, name: str) -> str:
        """Leave a competition: your account in it, its positions and orders, are closed."""
        message = Message(Instruction.LEAVE_COMPETITION, (name,), session_id=self._session())
        reply = self._command(message)
        self._expect(reply, Instruction.COMPETITION_SUCCESS)
        return _str(reply.arg("message"))

    def competitions(self) -> list[Competition]:
        """The competitions you may see: public ones, private ones you joined or created."""
        value = self._data_args(Instruction.GET_COMPETITIONS)
        return [Competition.from_record(fields) for fields in _records(value)]

    def competition(self, name: str) -> Competition:
        """One competition, with your own account in it (``account``) if you joined."""
        fields = from_record(self._data_args(Instruction.GET_COMPETITION, name))
        account = fields.get("account")
        if account is not None:
            account = from_record(account)
            account["positions"] = _records(account.get("positions"))
            fields["account"] = account
        return Competition.from_record(fields)

    def leaderboard(self, name: str, limit: int = 0) -> Leaderboard:
        """The competition's members ranked by return, best first (``limit`` 0: 100)."""
        fields = from_record(self._data_args(Instruction.GET_LEADERBOARD, name, limit))
        entries = tuple(LeaderboardEntry.from_record(e) for e in _records(fields.get("entries")))
        return Leaderboard(
            competition=fields["competition"],
            status=fields["status"],
            starting_cash=fields["starting_cash"],
            members=fields["members"],
            priced_at=fields.get("priced_at"),
            your_rank=fields.get("your_rank"),
            entries=entries,
        )

    def _competition_command(self, instruction: Instruction, *args: Value) -> Competition:
        reply = self._command(Message(instruction, args, session_id=self._session()))
        self._expect(reply, Instruction.COMPETITION)
        return Competition.from_record(from_record(reply.arg("competition")))

    # -- account data ---------------------------------------------------------------------
    def portfolio(self, username: str = "") -> Portfolio:
        """Cash, positions, values and P&L (own); another user's positions only."""
        result = from_record(self._data(Instruction.GET_USER_PORTFOLIO, username))
        return Portfolio.from_record(result, _records(result.get("positions")))

    def history(self, username: str = "") -> list[Trade]:
        """Executed orders, oldest first."""
        value = self._data(Instruction.GET_USER_TRANSACTION_HISTORY, username)
        return [Trade.from_record(fields) for fields in _records(value)]

    def equity_history(self, range_: str = "week", competition: str = "") -> list[EquityPoint]:
        """Your equity over ``range_`` (day, week, month, year, all), oldest first, ending
        with its value now; that of your account in ``competition`` if it is set."""
        if competition:
            value = self._data_args(Instruction.GET_ACCOUNT_EQUITY_HISTORY, competition, range_)
        else:  # the request every server version answers
            value = self._data_args(Instruction.GET_EQUITY_HISTORY, range_)
        return [EquityPoint(r["time"], r["equity"], r["cash"]) for r in _records(value)]

    def user_info(self, username: str = "") -> UserInfo:
        """Account details (own: e-mail, cash and the profile's visibility too)."""
        return UserInfo.from_record(from_record(self._data(Instruction.GET_USER_INFO, username)))

    # -- internals -------------------------------------------------------------------------
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
        return _records(conn.transfer(Message(Instruction.GET_WORKER_LIST)))
    finally:
        conn.close()


def _records(value: Any) -> list[dict[str, Any]]:
    """A list of records; an empty list travels as the null record and comes back as None."""
    if value is None or value == ():
        return []
    try:
        return from_records(value)
    except ProtocolError as exc:
        raise ClientError(exc.code, f"malformed answer: {exc.reason}") from None


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


def _str(value: Value) -> str:
    assert isinstance(value, str)
    return value
