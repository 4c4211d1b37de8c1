"""End to end through real processes: a master, workers, Redis, PostgreSQL, the client library.

Each test starts its own master and workers (``Servers``) against its own
Redis database and PostgreSQL database, and talks to them over TCP exactly
as a user's client would.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
import redis
from test_e2e_support import (
    PASSWORD,
    STARTING_CASH,
    Servers,
    account_id,
    expected_holdings,
    new_user,
    queue_orders,
    running,
)

from papertrader.client import ClientError, Fill, PaperTraderClient, Portfolio, Trade
from papertrader.market.quote import Quote
from papertrader.protocol import ErrorCode
from papertrader.store import keys
from papertrader.store.order_queue import Order


@pytest.fixture
def servers(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Servers]:
    with running(Servers(tmp_path, redis_url, database_url, workers=2)) as started:
        started.wait_quotes()
        yield started


@pytest.fixture
def trader(servers: Servers) -> Iterator[PaperTraderClient]:
    with servers.client(0) as client:
        new_user(client)
        yield client


def test_register_login_quote_buy_sell_portfolio_history(servers: Servers) -> None:
    with servers.client(0) as client:
        assert client.register("Alice_1", "alice@example.org", PASSWORD) == "Alice_1"
        session = client.login("alice_1", PASSWORD)
        assert session.username == "Alice_1"
        assert session.expires_at > datetime.now(session.expires_at.tzinfo)

        quote = client.quote("AAPL")
        assert isinstance(quote, Quote) and quote.symbol == "AAPL"
        assert quote.low <= quote.close <= quote.high and isinstance(quote.close, Decimal)
        info = client.asset_info("MSFT")
        assert info.symbol == "MSFT" and isinstance(info.quote, Quote) and not info.stale

        bought = client.buy("AAPL", 10)
        assert isinstance(bought, Fill)
        assert (bought.side, bought.symbol, bought.quantity) == ("buy", "AAPL", 10)
        sold = client.sell("AAPL", 4)
        assert (sold.side, sold.quantity) == ("sell", 4)

        history = client.history()
        assert [(h.order_id, h.side, h.quantity, h.price) for h in history] == [
            (bought.order_id, "buy", 10, bought.price),
            (sold.order_id, "sell", 4, sold.price),
        ]
        cash, positions = expected_holdings(history)
        assert cash == STARTING_CASH - (bought.price * 10).quantize(Decimal("0.01")) + (
            sold.price * 4
        ).quantize(Decimal("0.01"))

        portfolio = client.portfolio()
        assert portfolio.username == "Alice_1" and portfolio.own
        assert portfolio.cash == cash
        assert {p.symbol: p.quantity for p in portfolio.positions} == positions == {"AAPL": 6}
        (position,) = portfolio.positions
        assert position.average_price == bought.price and position.market_value is not None
        assert portfolio.total_value == cash + position.market_value

        me = client.user_info()
        assert me.username == "Alice_1" and me.email == "alice@example.org"
        assert me.cash == cash


def test_a_private_profile_looks_like_nobody_and_a_public_one_shows_positions_not_cash(
    servers: Servers,
) -> None:
    with servers.client(0) as alice, servers.client(1) as bob:
        alice_name = new_user(alice, "alice")
        new_user(bob, "bob")
        alice.buy("MSFT", 2)
        # Private by default: to Bob, Alice does not exist, whatever he asks for.
        nobody = "nobody_" + uuid.uuid4().hex[:6]
        for ask in (bob.portfolio, bob.history, bob.user_info):
            for name in (alice_name, nobody):
                with pytest.raises(ClientError) as hidden:
                    ask(name)
                assert hidden.value.code is ErrorCode.UNKNOWN_USER
                assert hidden.value.reason == f"there is no user {name}"
        assert alice.user_info().public_profile is False
        assert "public" in alice.set_profile(True)
        assert alice.user_info().public_profile is True
        seen = bob.portfolio(alice_name)
        assert seen.username == alice_name and not seen.own
        assert seen.cash is None and seen.positions[0].average_price is None
        assert [(p.symbol, p.quantity) for p in seen.positions] == [("MSFT", 2)]
        assert [(h.side, h.order_id) for h in bob.history(alice_name)] == [("buy", None)]
        assert bob.user_info(alice_name).email is None
        assert "private" in alice.set_profile(False)  # and hidden again
        with pytest.raises(ClientError) as caught:
            bob.portfolio(alice_name)
        assert caught.value.code is ErrorCode.UNKNOWN_USER


def test_registration_and_login_failures(servers: Servers) -> None:
    with servers.client(0) as client:
        name = new_user(client)
        with pytest.raises(ClientError) as taken:
            client.register(name.upper(), "other@example.org", PASSWORD)
        assert taken.value.code is ErrorCode.USERNAME_TAKEN
        with pytest.raises(ClientError) as wrong:
            client.login(name, "not the password")
        with pytest.raises(ClientError) as unknown:
            client.login("nobody" + name, PASSWORD)
        assert wrong.value.code is unknown.value.code is ErrorCode.INVALID_CREDENTIALS
        assert wrong.value.reason == unknown.value.reason  # no hint which one was wrong


def test_not_enough_cash_is_rejected_with_its_order_id(trader: PaperTraderClient) -> None:
    before = trader.portfolio()
    with pytest.raises(ClientError) as caught:
        trader.buy("AAPL", 1_000_000)
    assert caught.value.code is ErrorCode.INSUFFICIENT_CASH
    assert caught.value.order_id is not None
    assert "cash" in caught.value.reason
    after = trader.portfolio()
    assert after.cash == before.cash == STARTING_CASH
    assert after.positions == () and trader.history() == []


def test_selling_more_than_held_is_rejected(trader: PaperTraderClient) -> None:
    trader.buy("GOOG", 3)
    with pytest.raises(ClientError) as caught:
        trader.sell("GOOG", 4)
    assert caught.value.code is ErrorCode.INSUFFICIENT_POSITION
    with pytest.raises(ClientError) as never_held:
        trader.sell("TSLA", 1)
    assert never_held.value.code is ErrorCode.INSUFFICIENT_POSITION
    assert [(p.symbol, p.quantity) for p in trader.portfolio().positions] == [("GOOG", 3)]


def test_unknown_symbol(trader: PaperTraderClient) -> None:
    for call in (trader.buy, trader.sell):
        with pytest.raises(ClientError) as caught:
            call("NOPE", 1)
        assert caught.value.code is ErrorCode.UNKNOWN_ASSET
        assert caught.value.order_id is None  # refused by the worker, never queued
        assert "AAPL" in caught.value.reason  # says what can be traded
    with pytest.raises(ClientError) as quoted:
        trader.quote("NOPE")
    assert quoted.value.code is ErrorCode.UNKNOWN_ASSET
    assert trader.quote("aapl").symbol == "AAPL"  # the connection is still usable


@pytest.mark.parametrize("quantity", [0, -1, -(2**40)])
def test_zero_and_negative_quantities(trader: PaperTraderClient, quantity: int) -> None:
    for call in (trader.buy, trader.sell):
        with pytest.raises(ClientError) as caught:
            call("AAPL", quantity)
        assert caught.value.code is ErrorCode.INVALID_QUANTITY
        assert caught.value.order_id is None
    assert trader.portfolio().cash == STARTING_CASH


def test_expired_and_ended_sessions_are_refused(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    short = Servers(tmp_path, redis_url, database_url, env_extra={"PT_SESSION_TTL_SECONDS": "2"})
    with running(short), short.client() as client:
        short.wait_quotes()
        name = new_user(client)
        session = client.session_id
        assert session is not None and client.session is not None
        client.quote("AAPL")  # valid now, and remembered by the worker
        time.sleep(
            max(0.0, (client.session.expires_at - datetime.now(timezone.utc)).total_seconds()) + 0.3
        )
        for call in (lambda: client.quote("AAPL"), client.portfolio, lambda: client.buy("AAPL", 1)):
            with pytest.raises(ClientError) as caught:
                call()
            assert caught.value.code is ErrorCode.INVALID_SESSION, caught.value
            assert caught.value.session_problem
        with pytest.raises(ClientError) as resumed:
            client.resume(session)
        assert resumed.value.code is ErrorCode.INVALID_SESSION

        client.login(name, PASSWORD, remember=True)  # remembered sessions last longer
        client.quote("AAPL")
        ended = client.session_id
        assert ended is not None
        client.logout()
        assert client.session_id is None
        with pytest.raises(ClientError) as gone:
            client.resume(ended)
        assert gone.value.code is ErrorCode.INVALID_SESSION

        # The worker takes an order's session from its cache, like a quote's; a session
        # that ended without the worker hearing of it yet still never trades: the
        # master's drain checks it in Redis and refuses the order, with the reason and
        # the order id.
        client.login(name, PASSWORD, remember=True)
        client.buy("AAPL", 1)  # the session is verified on this connection now
        unheard = client.session_id
        assert unheard is not None
        admin = redis.Redis.from_url(redis_url)
        try:  # ended in Redis with no announcement: the worker still trusts it
            assert admin.delete(keys.session(unheard.hex)) == 1
        finally:
            admin.close()
        with pytest.raises(ClientError) as caught:
            client.buy("AAPL", 2)
        assert caught.value.code is ErrorCode.INVALID_SESSION, caught.value
        assert "ended before it was applied" in caught.value.reason
        assert caught.value.order_id is not None
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT quantity, status FROM orders WHERE account_id = %s ORDER BY quantity",
            (account_id(database_url, name),),
        )
        assert cur.fetchall() == [(1, "filled"), (2, "rejected")]
    conn.close()


def test_a_session_made_on_one_worker_works_on_another(servers: Servers) -> None:
    with servers.client(0) as first:
        name = new_user(first)
        session = first.session_id
        assert session is not None
        first.buy("AMZN", 1)
    with servers.client(1) as second:
        info = second.resume(session)
        assert info.username == name and info.session_id == session
        second.buy("AMZN", 2)
        assert [(p.symbol, p.quantity) for p in second.portfolio().positions] == [("AMZN", 3)]
        second.logout()
    with servers.client(0) as first_again:
        with pytest.raises(ClientError) as caught:
            first_again.resume(session)  # logged out on worker 2: gone on worker 1 too
        assert caught.value.code is ErrorCode.INVALID_SESSION


def test_fifty_clients_trading_one_asset_at_once(servers: Servers, database_url: str) -> None:
    """Every account ends exactly where its own history says, in the API and in PostgreSQL."""
    clients = 50
    errors: list[BaseException] = []
    results: dict[str, list[Fill | ClientError]] = {}
    finals: dict[str, tuple[Portfolio, list[Trade]]] = {}
    start = threading.Barrier(clients)

    def trade(index: int) -> None:
        try:
            with servers.client(index % 2) as client:
                name = new_user(client, f"t{index:02d}_")
                outcomes: list[Fill | ClientError] = []
                results[name] = outcomes
                start.wait(timeout=60)
                plan = [("buy", 3), ("sell", 1), ("buy", 2), ("sell", 5 if index % 5 == 0 else 4)]
                for side, quantity in plan:
                    try:
                        send = client.buy if side == "buy" else client.sell
                        outcomes.append(send("NVDA", quantity))
                    except ClientError as exc:
                        outcomes.append(exc)
                finals[name] = (client.portfolio(), client.history())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=trade, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors, f"{errors[:3]}\n{servers.logs()}"
    assert len(results) == clients

    for name, outcomes in results.items():
        fills = [o for o in outcomes if isinstance(o, Fill)]
        rejections = [o for o in outcomes if isinstance(o, ClientError)]
        # every fifth client sells 5 of the 4 it holds: rejected; the others end flat
        assert all(r.code is ErrorCode.INSUFFICIENT_POSITION for r in rejections), rejections
        assert len(fills) + len(rejections) == 4
        portfolio, history = finals[name]
        assert [h.order_id for h in history] == [f.order_id for f in fills]
        cash, positions = expected_holdings(history)
        assert portfolio.cash == cash
        assert {p.symbol: p.quantity for p in portfolio.positions} == positions

    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            for name, outcomes in results.items():
                cur.execute(
                    "SELECT t.order_id, t.side, t.symbol, t.quantity, t.amount"
                    " FROM transactions t JOIN accounts a ON a.id = t.account_id"
                    " WHERE a.username = %s ORDER BY t.id",
                    (name,),
                )
                rows = cur.fetchall()
                stored = [
                    {"side": r[1], "symbol": r[2], "quantity": int(r[3]), "amount": r[4]}
                    for r in rows
                ]
                fills = [o for o in outcomes if isinstance(o, Fill)]
                assert {uuid.UUID(str(r[0])) for r in rows} == {f.order_id for f in fills}
                cash, positions = expected_holdings(stored)
                cur.execute(
                    "SELECT a.cash, p.symbol, p.quantity FROM accounts a"
                    " LEFT JOIN positions p ON p.account_id = a.id WHERE a.username = %s",
                    (name,),
                )
                held = cur.fetchall()
                assert held[0][0] == cash, name
                assert {r[1]: int(r[2]) for r in held if r[1] is not None} == positions, name
    finally:
        conn.close()


def test_a_long_history_arrives_in_many_packets(
    servers: Servers, redis_url: str, database_url: str
) -> None:
    """More than one DATA frame's worth (64 KiB): reassembled in order, nothing lost."""
    with servers.client() as client:
        name = new_user(client)
        account = account_id(database_url, name)
        assert client.session_id is not None  # the master fills only a live session's orders
        orders = [
            Order(uuid.uuid4(), account, "buy", "SPY", 1, datetime.now(timezone.utc),
                  "127.0.0.1", "worker-1", session=client.session_id.hex)
            for _ in range(800)
        ]  # fmt: skip
        queue_orders(redis_url, orders)
        deadline = time.monotonic() + 60
        while len(history := client.history()) < len(orders):
            assert time.monotonic() < deadline, servers.logs()
            time.sleep(0.2)
        assert [h.order_id for h in history] == [o.order_id for o in orders]
        cash, positions = expected_holdings(history)
        portfolio = client.portfolio()
        assert portfolio.cash == cash and positions == {"SPY": 800}
