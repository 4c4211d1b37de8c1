"""The answer each client request gets, by instruction (one routing table).

A ``ClientConnection`` reads a request and hands it to ``_answer``; the
table of ``_route_table`` names the method answering each instruction, and
each method sends the request to the module that answers it: the
authorization tunnel (logins, registrations, account requests), the order
desk, the quote cache, the price history, or the master (user data and the
commands it answers). Expected failures (a bad session, Redis away) become
the request's failure return; a bug an INTERNAL one, logged. Quotes asked
in the lean path (``client_connection.py``) do not come through here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import gevent.socket
import redis
from loguru import logger

from papertrader import metrics
from papertrader.protocol import (
    ConnectionStateCode,
    ErrorCode,
    Instruction,
    Message,
    failure_reply,
    packets_for,
    reply_to,
    split_payload,
)
from papertrader.protocol.records import to_record
from papertrader.store.sessions import Session, SessionError
from papertrader.worker.client_management import TOUCH_INTERVAL, ClientInfo
from papertrader.worker.orders import normalise_symbol, unknown_asset_reason
from papertrader.worker.transport import ClientTransport, closed_by_peer

if TYPE_CHECKING:
    from papertrader.worker.client_handler import ClientHandler

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


class ClientGone(ConnectionResetError):
    """The client closed its connection while we waited for the master on its behalf
    (an OSError: wherever it lands, the connection ends as a lost one)."""


class Closing(Exception):
    """The connection must end; ``reason`` is logged, ``farewell`` sent first if set."""

    def __init__(self, reason: str, farewell: Message | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.farewell = farewell


class Verified:
    """A session a connection checked, and what lets its next requests skip the check."""

    __slots__ = ("session", "session_id", "expires", "epoch", "touch_due")

    def __init__(self, session: Session, epoch: int) -> None:
        self.session = session
        self.session_id = session.session_id.bytes  # as the header carries it
        self.expires = session.expires_at.timestamp()
        self.epoch = epoch  # the session cache's, when the session was held there
        self.touch_due = time.monotonic() + TOUCH_INTERVAL  # check_session just touched it


class ClientRequests:
    """One method per kind of request; ``ClientConnection`` supplies the connection."""

    shared: ClientHandler
    sock: ClientTransport
    client: ClientInfo
    #: The session this connection last verified from the session cache.
    _verified: Verified | None
    #: ``_route_table()``, built once per connection.
    _routes: dict[Instruction, Callable[[Message, int], list[Message]]]

    def _still_verified(self, session_id: bytes) -> bool:
        raise NotImplementedError  # the connection's: it keeps the verified session

    def _route_table(self) -> dict[Instruction, Callable[[Message, int], list[Message]]]:
        """The method answering each instruction (one table: a new instruction is a row)."""
        return {
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
        except (Closing, ClientGone):
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

    # sessions ------------------------------------------------------------------------
    def _session(self, message: Message, fresh: bool = False) -> Session:
        """The live session of the request, checked against the client's IP (SessionError)."""
        self._verified = None
        clients = self.shared.clients
        session = clients.check_session(self.client, message.session_id, fresh)
        epoch = None if fresh else clients.sessions.epoch_holding(session)
        if epoch is not None:  # held by the session cache: later quotes may skip the check
            self._verified = Verified(session, epoch)
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
                    waiting.kill(ClientGone(), block=False)
            except (OSError, ValueError):
                pass  # closed under us, or data pipelined behind the request: stop watching

        watcher = gevent.spawn(watch)
        try:
            return call()
        except ClientGone:
            raise Closing("closed by the client while the master checked its password") from None
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
