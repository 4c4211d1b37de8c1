"""``pt competitions``: an operator's competitions, straight in the database.

For whoever runs the server (a school's administrator setting up a term's
competition for every class, say): `create`, `list` and `leaderboard` act on
the configured database with the rules the master applies to users
(``papertrader/competitions.py``), without a user account. A competition an
operator creates has no creator: its join code is shown here only.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from . import client_format as fmt
from .client_competitions import terms_options
from .common import (
    config_option,
    database_pool,
    fail,
    json_option,
    print_json,
    state_dir_option,
    store_redis,
)


@click.group()
def competitions() -> None:
    """Trading competitions, for an operator: create, list, leaderboard.

    Users create, join and follow them with `pt client competitions` and
    `pt client leaderboard`.
    """


def _document(record: dict[str, Any]) -> dict[str, Any]:
    return dict(fmt.text(record))


@competitions.command()
@config_option
@state_dir_option
@click.argument("name")
@terms_options
@json_option
def create(
    config_path: Path | None,
    state_dir: Path | None,
    name: str,
    ends_at: datetime,
    starts_at: datetime | None,
    starting_cash: Decimal | None,
    symbols: str,
    private: bool,
    as_json: bool,
) -> None:
    """Create competition NAME (a private one prints its join code)."""
    from papertrader import competitions as rules
    from papertrader.config import load_settings

    settings = load_settings(config_path)
    now = datetime.now(timezone.utc)
    listed = tuple(s.strip() for s in symbols.split(",") if s.strip())
    fields = {
        "name": name,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "starting_cash": starting_cash,
        "symbols": listed or None,
        "private": private,
    }
    with database_pool(config_path, state_dir) as pool:
        try:
            terms = rules.check_terms(
                {k: v for k, v in fields.items() if v is not None}, now,
                tuple(settings.assets) or None, settings.starting_cash, operator=True,
            )  # fmt: skip
            created = rules.create(pool, terms, None, now)
        except rules.CompetitionError as exc:
            fail(exc.reason)
    record = rules.record(created, now, None)
    if as_json:
        print_json(_document(record))
        return
    kind = "private" if created.private else "public"
    click.echo(f"created {kind} competition {created.name!r}, {fmt.when(created.starts_at)} "
               f"to {fmt.when(created.ends_at)}")  # fmt: skip
    if created.join_code:
        click.echo(f"join code: {created.join_code}  "
                   f"(`pt client competitions join --code {created.join_code}`)")  # fmt: skip


@competitions.command(name="list")
@config_option
@state_dir_option
@json_option
def list_competitions(config_path: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Every competition, running and upcoming first (join codes included)."""
    from papertrader import competitions as rules
    from papertrader.store import competitions as store

    now = datetime.now(timezone.utc)
    with database_pool(config_path, state_dir) as pool:
        found = store.visible(pool, None, rules.MAX_LISTED)
    records = [rules.record(c, now, None) for c in found]
    if as_json:
        print_json([_document(r) for r in records])
        return
    if not records:
        click.echo("no competitions")
        return
    rows = [
        [r["name"], r["status"], r["join_code"] or "public", fmt.when(r["ends_at"]),
         fmt.money(r["starting_cash"]), str(r["members"]), r["created_by"] or "(operator)"]
        for r in records
    ]  # fmt: skip
    headers = ["Name", "Status", "Join code", "Ends", "Starting cash", "Members", "Created by"]
    click.echo(fmt.table(headers, rows, right={4, 5}))


@competitions.command()
@config_option
@state_dir_option
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@json_option
def leaderboard(
    config_path: Path | None, state_dir: Path | None, name: str, limit: int, as_json: bool
) -> None:
    """NAME's members ranked by return, at the prices the master last published."""
    import redis

    from papertrader import competitions as rules
    from papertrader.store.quotes import QuoteStore

    client = store_redis(config_path, state_dir)
    try:
        quotes, priced_at = QuoteStore(client).load()
    except redis.RedisError as exc:
        fail(f"cannot read the prices from Redis ({exc})")
    finally:
        client.close()
    prices = {symbol: quote.price for symbol, quote in quotes.items()}
    with database_pool(config_path, state_dir) as pool:
        try:
            competition = rules.find(pool, name, None)
        except rules.CompetitionError as exc:
            fail(exc.reason)
        places = rules.leaderboard(pool, competition, prices)
    entries = [rules.place_record(p) for p in places[:limit]]
    if as_json:
        print_json(
            _document(
                {"competition": competition.name, "members": len(places),
                 "priced_at": priced_at, "entries": entries}
            )
        )  # fmt: skip
        return
    click.echo(f"{competition.name}: {len(places)} members, prices as of {fmt.when(priced_at)}")
    rows = [
        [str(e["rank"]), e["username"], fmt.money(e["equity"]), fmt.money(e["gain"]),
         f"{e['return_percent']:+}%"]
        for e in entries
    ]  # fmt: skip
    click.echo(fmt.table(["Rank", "User", "Equity", "Gain", "Return"], rows, right={0, 2, 3, 4}))
