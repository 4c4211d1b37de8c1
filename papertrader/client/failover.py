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
* orders are not: an order is re-sent elsewhere only when it provably never
  reached a worker (the connection was already closed before sending, or the
  worker turned it away as out of service). An order sent whose answer was
  lost raises :class:`OrderOutcomeUnknown`: it may have been queued, and
  sending it again could buy twice. Check the history before retrying.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from papertrader.client.address import format_address, parse_address
from papertrader.client.client import DEFAULT_TIMEOUT, PaperTraderClient, get_worker_list
from papertrader.client.errors import ClientError, ServerUnreachable
from papertrader.client.models import Fill, SessionInfo
from papertrader.market.quote import Quote
from papertrader.protocol import ErrorCode

T = TypeVar("T")

#: How many workers one request may try before giving up.
MAX_ATTEMPTS = 4
#: Seconds to wait for the master's worker list.
LIST_TIMEOUT = 10.0


class OrderOutcomeUnknown(ClientError):
    """The order was sent but its worker went away before answering.

    It may or may not have been queued (``order_id`` is set when the worker had
    numbered it); look at the transaction history before sending it again.
    """

    def __init__(self, reason: str, order_id: uuid.UUID | None = None) -> None:
        super().__init__(ErrorCode.UNAVAILABLE, reason, order_id=order_id)


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
    ) -> None:
        self.master_host = master_host
        self.master_port = master_port
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
        """The master's current worker list (ServerUnreachable if the master is down)."""
        return get_worker_list(self.master_host, self.master_port, min(self.timeout, LIST_TIMEOUT))

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
            client = PaperTraderClient(host, port, self.timeout, session_id=self.session_id)
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
            except ServerUnreachable as exc:
                avoid.add(client.address)
                self.close()
                if not idempotent and exc.lost:
                    raise OrderOutcomeUnknown(
                        f"the order's outcome is unknown: {exc.reason}. It may have been "
                        "queued; check the history before sending it again"
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

    def asset_info(self, symbol: str) -> dict[str, Any]:
        return self._call(lambda c: c.asset_info(symbol))

    def portfolio(self, username: str = "") -> dict[str, Any]:
        return self._call(lambda c: c.portfolio(username))

    def history(self, username: str = "") -> list[dict[str, Any]]:
        return self._call(lambda c: c.history(username))

    def user_info(self, username: str = "") -> dict[str, Any]:
        return self._call(lambda c: c.user_info(username))

    def buy(self, symbol: str, quantity: int) -> Fill:
        return self._call(lambda c: c.buy(symbol, quantity), idempotent=False)

    def sell(self, symbol: str, quantity: int) -> Fill:
        return self._call(lambda c: c.sell(symbol, quantity), idempotent=False)
