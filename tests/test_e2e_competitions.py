"""Competitions as a class meets them: a real master and worker, the library and ``pt``.

A teacher creates a private competition with a short asset list; students join
it by its code (one through ``pt client competitions join --code``); a stranger
can neither see nor join it by name. Orders name the competition and trade in
its own account (the practice account is untouched); an asset outside the list
and a competition that has not started are refused with their reasons; open
orders of a competition account are listed and canceled on their own; the
leaderboard ranks the members by return, exactly, through the protocol and
``pt client leaderboard``; an operator's competition (``pt competitions``) is
joined by its code too; leaving closes the account.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from test_e2e_support import PASSWORD, ROOT, STARTING_CASH, Servers, new_user, running
from tls_support import pki

from papertrader.client import ClientError
from papertrader.protocol import ErrorCode

CLASS_CASH = Decimal("1000.00")


@pytest.fixture
def servers(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Servers]:
    with running(Servers(tmp_path, redis_url, database_url, workers=1)) as started:
        started.wait_quotes()
        yield started


def pt(servers: Servers, session: Path, *args: str, stdin: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
    env.update(
        PYTHONPATH=str(ROOT), PT_WORKER=f"127.0.0.1:{servers.worker_port()}", PT_CA=str(pki().ca)
    )
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "client", "--session-file", str(session), *args],
        input=stdin, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def operator(servers: Servers, *args: str) -> str:
    """``pt competitions`` on the master's host (its database and Redis)."""
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "competitions", *args], capture_output=True,
        text=True, env=servers.env, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def test_a_class_competition(servers: Servers, tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    with (
        servers.client() as teacher,
        servers.client() as alice,
        servers.client() as stranger,
    ):
        new_user(teacher, "teach")
        alice_name = new_user(alice, "alice")
        new_user(stranger, "str")
        created = teacher.create_competition(
            "Class 7B", now + timedelta(days=30), starting_cash=CLASS_CASH,
            symbols=["aapl", "MSFT"], private=True,
        )  # fmt: skip
        assert created.private and created.join_code and created.status == "running"
        assert created.symbols == ("AAPL", "MSFT") and created.members == 0

        # Students join by code: alice with the library, bob with pt.
        joined = alice.join_competition(join_code=created.join_code.lower())
        assert joined.joined and joined.join_code is None  # only the creator sees the code
        bob_session = tmp_path / "bob.session"
        pt(servers, bob_session, "register", "bob" + alice_name[5:], "--email",
           f"bob{alice_name}@example.org", "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
        pt(servers, bob_session, "login", "bob" + alice_name[5:], "--password-stdin",
           stdin=PASSWORD + "\n")  # fmt: skip
        shown = json.loads(
            pt(servers, bob_session, "competitions", "join", "--code", created.join_code, "--json")
        )
        assert shown["name"] == "Class 7B" and shown["joined"] is True

        # A stranger cannot tell it exists.
        for call in (
            lambda: stranger.competition("Class 7B"),
            lambda: stranger.join_competition("class 7b"),
            lambda: stranger.leaderboard("Class 7B"),
        ):
            with pytest.raises(ClientError) as refused:
                call()
            assert refused.value.code is ErrorCode.UNKNOWN_COMPETITION
        assert all(c.name != "Class 7B" for c in stranger.competitions())

        # Orders trade in the competition's own account.
        price = alice.quote("AAPL").close
        filled = alice.place_order("buy", "AAPL", 3, competition="class 7b")
        assert filled.status == "filled" and filled.price is not None
        cost = (3 * filled.price).quantize(Decimal("0.01"))
        assert alice.portfolio().cash == STARTING_CASH  # the practice account is untouched
        mine = alice.competition("Class 7B").account
        assert mine is not None and mine.cash == CLASS_CASH - cost
        assert [(p.symbol, p.quantity) for p in mine.positions] == [("AAPL", 3)]
        assert alice.order(filled.client_order_id).status == "filled"  # found by its id

        with pytest.raises(ClientError) as refused:
            alice.place_order("buy", "GOOG", 1, competition="Class 7B")
        assert refused.value.code is ErrorCode.ASSET_NOT_ALLOWED
        assert "trades only AAPL, MSFT" in refused.value.reason
        with pytest.raises(ClientError) as refused:
            stranger.place_order("buy", "AAPL", 1, competition="Class 7B")
        assert refused.value.code is ErrorCode.NOT_A_MEMBER
        with pytest.raises(ClientError) as refused:  # more than the class's cash
            alice.place_order("buy", "MSFT", 10_000, competition="Class 7B")
        assert refused.value.code is ErrorCode.INSUFFICIENT_CASH

        # A limit order waits in the competition account, apart from the practice one.
        waiting = alice.place_order(
            "buy", "MSFT", 1, order_type="limit", limit_price=Decimal("0.01"),
            time_in_force="gtc", competition="Class 7B",
        )  # fmt: skip
        assert waiting.status == "open"
        assert [
            o.client_order_id for o in alice.orders(open_only=True, competition="Class 7B")
        ] == [waiting.client_order_id]
        assert alice.orders(open_only=True) == []
        assert alice.cancel_all(competition="Class 7B") == 1

        # The leaderboard: alice's equity is her cash and her AAPL at the master's price.
        board = teacher.leaderboard("Class 7B")
        assert board.members == 2 and board.your_rank is None
        by_name = {e.username: e for e in board.entries}
        alice_entry = by_name[alice_name]
        equity = CLASS_CASH - cost + (3 * alice.quote("AAPL").close).quantize(Decimal("0.01"))
        if alice_entry.equity == equity:  # the price did not move between the two looks
            assert alice_entry.gain == equity - CLASS_CASH
            assert alice_entry.return_ == ((equity - CLASS_CASH) / CLASS_CASH).quantize(
                Decimal("0.00000001")
            )
        bob_entry = next(e for e in board.entries if e.username != alice_name)
        assert bob_entry.equity == CLASS_CASH and bob_entry.return_ == 0
        ranks = [e.rank for e in board.entries]
        assert ranks == ([1, 1] if alice_entry.equity == CLASS_CASH else [1, 2])
        assert [e.equity for e in board.entries] == sorted(
            (e.equity for e in board.entries), reverse=True
        )
        assert price > 0

        table = pt(servers, bob_session, "leaderboard", "Class 7B")
        assert alice_name in table and "Rank" in table
        as_json = json.loads(pt(servers, bob_session, "leaderboard", "Class 7B", "--json"))
        # (the price may have moved since: the order is the equity's, whatever it is now)
        assert {e["username"] for e in as_json["entries"]} == set(by_name)
        equities = [Decimal(e["equity"]) for e in as_json["entries"]]
        assert equities == sorted(equities, reverse=True)
        assert as_json["your_rank"] is not None

        # A competition that has not started takes no orders yet.
        teacher.create_competition(
            "Next term", now + timedelta(days=60), starts_at=now + timedelta(days=30)
        )
        assert alice.join_competition("Next term").status == "upcoming"
        with pytest.raises(ClientError) as refused:
            alice.place_order("buy", "AAPL", 1, competition="Next term")
        assert refused.value.code is ErrorCode.COMPETITION_CLOSED
        assert "starts at" in refused.value.reason

        # An operator's competition: created on the master's host, joined by its code.
        made = json.loads(operator(servers, "create", "Spring term", "--ends", "30d",
                                   "--private", "--cash", "5000", "--json"))  # fmt: skip
        assert made["created_by"] == "" and made["starting_cash"] == "5000.00"
        assert alice.join_competition(join_code=made["join_code"]).starting_cash == Decimal(5000)
        board_json = json.loads(operator(servers, "leaderboard", "spring term", "--json"))
        assert [e["username"] for e in board_json["entries"]] == [alice_name]
        assert board_json["entries"][0]["equity"] == "5000.00"

        # Leaving closes the account; the leaderboard has one member left.
        assert "left" in alice.leave_competition("Class 7B")
        assert teacher.leaderboard("Class 7B").members == 1
        with pytest.raises(ClientError) as refused:
            alice.orders(competition="Class 7B")
        assert refused.value.code is ErrorCode.UNKNOWN_COMPETITION  # private: no longer hers
