"""``FailoverClient``: a client that finds its worker through the master and changes
worker when its worker goes away (the connectionless model of NOTES.md).

It asks the master for the workers (getWorkerList), connects to one (same
region first when asked), and when that worker stops answering — it crashed,
was booted off, or is out of service — it moves to another one and resumes
the same session there (login(sessionID)), so the user never logs in again.

What is retried where:

* reads (quotes, portfolio, history, user info) and session calls are
  idempotent: a request whose answer was lost is simply sent again on the
  next worker;
* orders carry the client's own order id, so an order whose answer was lost
  is never simply sent again as a new order: the client moves to another
  worker and asks for that order's state (getOrder). Decided (filled, open,
  rejected...): that is the answer. Still queued: it asks again until the
  master decides, within the timeout. Unknown to the master: the order never
  reached the stream, so it is sent again with the same client order id,
  which can never make a second order (the master applies an order id once).
  Only when none of that gives an answer is :class:`OrderOutcomeUnknown`
  raised, with the client order id to check later. Cancels are resolved the
  same way.
"""

from __future__ import annotations

import random
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from papertrader.client.address import format_address, parse_address
from papertrader.client.base import DEFAULT_TIMEOUT
from papertrader.client.client import PaperTraderClient, get_worker_list
from papertrader.client.connection import tls_context
from papertrader.client.errors import ClientError, OrderOutcomeUnknown, ServerUnreachable
from papertrader.client.models import (
    AssetInfo,
    Competition,
    Fill,
    OrderStatus,
    Portfolio,
    SessionInfo,
    Side,
    Trade,
    UserInfo,
)
from papertrader.market.quote import Quote
from papertrader.protocol import ErrorCode

T = TypeVar("T")

#: How many workers one request may try before giving up.
MAX_ATTEMPTS = 4
#: Seconds to wait for the master's worker list.
LIST_TIMEOUT = 10.0
#: How often a client recovering a lost order answer asks for the order's state.
RECOVER_POLL_SECONDS = 0.5


def _turned_away(exc: ClientError) -> bool:
    """The worker refused the request without acting on it (it is out of service)."""
    return exc.code is ErrorCode.UNAVAILABLE and "out of service" in exc.reason


class FailoverClient:
    """PaperTraderClient's calls, on whichever worker the master lists and answers."""

    def __init__(
        self,
        master_host: str,
        master_port: int = 2048,
        region: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        session_id: uuid.UUID | None = None,
        standbys: Sequence[tuple[str, int]] = (),
        *,
        ssl_context: ssl.SSLContext | None = None,
        ca: str | Path | None = None,
        tls: bool = True,
    ) -> None:
        """TLS to the master and to every worker, verified with one context:
        ``ssl_context``, else one trusting ``ca``, else the system's trust store."""
        #: Verifies the master (its worker list cannot be spoofed) and each worker.
        self.ssl_context = tls_context(tls, ssl_context, ca)
        self.master_host = master_host
        self.master_port = master_port
        #: Other masters (standbys) asked for the list when this one does not answer:
        #: every master gives the same list.
        self.standbys = list(standbys)
        self.region = region
        self.timeout = timeout
        self.session_id = session_id
        self.session: SessionInfo | None = None
        self._client: PaperTraderClient | None = None
        #: The worker in use, as the master listed it ({name, region, address}).
        self.worker: dict[str, Any] | None = None
        #: How many times this client moved to another worker.
        self.failovers = 0

    @property
    def master(self) -> str:
        return format_address(self.master_host, self.master_port)

    # -- lifecycle ----------------------------------------------------------------
    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> FailoverClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- choosing a worker ----------------------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        """The master's current worker list, from the first master that answers
        (ServerUnreachable if none does); over TLS, each master verified."""
        masters = [(self.master_host, self.master_port), *self.standbys]
        for host, port in masters[:-1]:
            try:
                return self._worker_list(host, port)
            except ServerUnreachable:
                continue
        host, port = masters[-1]
        return self._worker_list(host, port)

    def _worker_list(self, host: str, port: int) -> list[dict[str, Any]]:
        return get_worker_list(
            host,
            port,
            min(self.timeout, LIST_TIMEOUT),
            ssl_context=self.ssl_context,
            tls=self.ssl_context is not None,
        )

    def _ordered(self, avoid: set[str]) -> list[dict[str, Any]]:
        """Same region first, others after, each group shuffled; avoided ones last."""
        listed = self.workers()
        random.shuffle(listed)
        listed.sort(key=lambda w: 0 if self.region and w.get("region") == self.region else 1)
        fresh = [w for w in listed if str(w.get("address")) not in avoid]
        return fresh + [w for w in listed if str(w.get("address")) in avoid]

    def _connect(self, avoid: set[str]) -> PaperTraderClient:
        """A connected client on a listed worker, with our session resumed there."""
        candidates = self._ordered(avoid)
        if not candidates:
            raise ServerUnreachable(self.master, "the master lists no worker")
        last: ClientError | None = None
        for worker in candidates:
            address = str(worker.get("address"))
            try:
                host, port = parse_address(address)
            except ValueError:
                continue
            client = PaperTraderClient(
                host,
                port,
                self.timeout,
                session_id=self.session_id,
                ssl_context=self.ssl_context,
                tls=self.ssl_context is not None,
            )
            try:
                client.connect()
                if self.session_id is not None:
                    self.session = client.resume(self.session_id)
            except ClientError as exc:
                client.close()
                if exc.session_problem:
                    raise
                avoid.add(address)
                last = exc
                continue
            if self.worker is not None and self.worker.get("address") != address:
                self.failovers += 1
            self.worker = worker
            return client
        assert last is not None
        raise ServerUnreachable(self.master, f"no listed worker answered ({last.reason})")

    def _current(self, avoid: set[str]) -> PaperTraderClient:
        client = self._client
        if client is not None and client.connection_lost():
            avoid.add(client.address)
            self.close()
            client = None
        if client is None:
            client = self._client = self._connect(avoid)
        return client

    def _call(self, operation: Callable[[PaperTraderClient], T], idempotent: bool = True) -> T:
        """Run ``operation`` on the current worker, moving to another when it goes away."""
        avoid: set[str] = set()
        for attempt in range(MAX_ATTEMPTS):
            client = self._current(avoid)
            try:
                result = operation(client)
            except OrderOutcomeUnknown as exc:
                if not exc.lost:
                    raise
                avoid.add(client.address)  # that worker went away: go elsewhere
                self.close()
                if not idempotent or attempt + 1 == MAX_ATTEMPTS:
                    raise
                continue
            except ServerUnreachable as exc:
                avoid.add(client.address)
                self.close()
                if not idempotent and exc.lost:
                    raise OrderOutcomeUnknown(
                        f"the order's outcome is unknown: {exc.reason}", lost=True
                    ) from None
                if attempt + 1 == MAX_ATTEMPTS:
                    raise
                continue
            except ClientError as exc:
                if _turned_away(exc) and attempt + 1 < MAX_ATTEMPTS:
                    avoid.add(client.address)
                    self.close()
                    continue
                raise
            self.session_id = client.session_id
            self.session = client.session or self.session
            return result
        raise ServerUnreachable(self.master, "no worker could serve the request")  # unreachable

    # -- the calls -------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        """Any other PaperTraderClient call (a read: idempotent), with failover."""
        method = getattr(PaperTraderClient, name, None)
        if name.startswith("_") or not callable(method):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(lambda c: getattr(c, name)(*args, **kwargs))

        return call

    def register(self, username: str, email: str, password: str) -> str:
        # Not idempotent either, but harmless to repeat: a second try says "taken".
        return self._call(lambda c: c.register(username, email, password))

    def login(self, username: str, password: str, remember: bool = False) -> SessionInfo:
        return self._call(lambda c: c.login(username, password, remember))

    def resume(self, session_id: uuid.UUID) -> SessionInfo:
        self.session_id = session_id
        return self._call(lambda c: c.resume(session_id))

    def logout(self) -> None:
        self._call(lambda c: c.logout())
        self.session_id = None
        self.session = None

    def quote(self, symbol: str) -> Quote:
        return self._call(lambda c: c.quote(symbol))

    def asset_info(self, symbol: str) -> AssetInfo:
        return self._call(lambda c: c.asset_info(symbol))

    def portfolio(self, username: str = "") -> Portfolio:
        return self._call(lambda c: c.portfolio(username))

    def history(self, username: str = "") -> list[Trade]:
        return self._call(lambda c: c.history(username))

    def user_info(self, username: str = "") -> UserInfo:
        return self._call(lambda c: c.user_info(username))

    # -- orders: never lost, never doubled --------------------------------------------
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
        """PaperTraderClient.place_order; an answer lost with its worker is recovered
        from another worker by the order's client order id (see the module doc)."""
        cid = client_order_id or uuid.uuid4()

        def send(client: PaperTraderClient) -> OrderStatus:
            return client.place_order(
                side, symbol, quantity, order_type=order_type, limit_price=limit_price,
                stop_price=stop_price, time_in_force=time_in_force, client_order_id=cid,
                competition=competition,
            )  # fmt: skip

        try:
            return self._call(send, idempotent=False)
        except OrderOutcomeUnknown as exc:
            if not exc.lost:
                raise
            return self._recover(cid, send, exc.reason)

    def set_profile(self, public: bool) -> str:
        return self._call(lambda c: c.set_profile(public))  # harmless to repeat

    def create_competition(self, name: str, ends_at: datetime, **terms: Any) -> Competition:
        """Not repeated on another worker: a second try would say the name is taken."""
        return self._call(lambda c: c.create_competition(name, ends_at, **terms), idempotent=False)

    def buy(self, symbol: str, quantity: int, client_order_id: uuid.UUID | None = None) -> Fill:
        return _filled(self.place_order("buy", symbol, quantity, client_order_id=client_order_id))

    def sell(self, symbol: str, quantity: int, client_order_id: uuid.UUID | None = None) -> Fill:
        return _filled(self.place_order("sell", symbol, quantity, client_order_id=client_order_id))

    def cancel(self, order_id: uuid.UUID) -> OrderStatus:
        """PaperTraderClient.cancel; a lost answer is recovered by asking the order's state."""
        try:
            return self._call(lambda c: c.cancel(order_id), idempotent=False)
        except OrderOutcomeUnknown as exc:
            if not exc.lost:
                raise
            first = exc.reason
        try:
            state = self._call(lambda c: c.order(order_id))
        except ClientError as exc:
            raise OrderOutcomeUnknown(
                f"{first}; then its state could not be read ({exc.reason})", order_id
            ) from None
        if state.status == "canceled":
            return state
        if state.is_open:  # the cancel did not get there: send it again
            return self._call(lambda c: c.cancel(order_id), idempotent=False)
        raise ClientError(
            ErrorCode.ORDER_NOT_OPEN,
            f"order {order_id} is {state.status}, so it cannot be canceled any more",
            order_id=order_id,
        )

    def _recover(
        self, cid: uuid.UUID, send: Callable[[PaperTraderClient], OrderStatus], first: str
    ) -> OrderStatus:
        """The state of order ``cid`` whose answer was lost: asked of another worker until
        the master has decided it; sent again (same id) if it never got there."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                state = self._call(lambda c: c.order(cid))
            except ClientError as exc:
                if exc.code is ErrorCode.UNKNOWN_ORDER:  # it never reached the master
                    return self._call(send, idempotent=False)
                raise OrderOutcomeUnknown(
                    f"{first}; then its state could not be read ({exc.reason})", cid
                ) from None
            if state.status == "rejected":
                raise ClientError(ErrorCode(state.code) if state.code in _CODES else
                                  ErrorCode.INTERNAL, state.reason, order_id=cid)  # fmt: skip
            if state.status != "queued":
                return state
            if time.monotonic() >= deadline:
                raise OrderOutcomeUnknown(
                    f"{first}; the order is still queued after {self.timeout:g} s", cid
                )
            time.sleep(RECOVER_POLL_SECONDS)


_CODES = frozenset(int(code) for code in ErrorCode)


def _filled(state: OrderStatus) -> Fill:
    fill = state.fill
    if fill is None:
        raise ClientError(
            ErrorCode.ORDER_NOT_OPEN,
            f"order {state.client_order_id} was {state.status}, not filled",
            order_id=state.client_order_id,
        )
    return fill
