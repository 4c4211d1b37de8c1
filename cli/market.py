"""``pt market``: the market data feed, for operators.

``status`` shows which provider feeds the master, when prices last changed,
whether they are stale (the last update failed, or none came for two
intervals) and how many API requests the deployment has made. ``backfill``
loads a historical OHLCV file into ``asset_bars`` (the format is in
``papertrader/market/csvfile.py``), so the history views and charts have data.
Both use the configured Redis/PostgreSQL, else the ones `pt services up`
started in the state directory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .common import (
    config_option,
    fail,
    json_option,
    print_json,
    settings_and_urls,
    state_dir_option,
)

if TYPE_CHECKING:  # the rest is imported when a command runs: `pt --help` stays quick
    import redis

    from papertrader.config import Settings
    from papertrader.market.quote import Quote

BATCH = 1000


@click.group()
def market() -> None:
    """Market data: the feed's status, and loading price history."""


def status_document(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    from papertrader.store.market_status import MarketStatusStore

    return (
        MarketStatusStore(client)
        .read()
        .describe(settings.market_provider, settings.update_interval)
    )


@market.command()
@config_option
@state_dir_option
@json_option
def status(config_path: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Provider, last update, staleness and API calls of the running master.

    Exits with status 3 when the prices are stale (the last update failed, or
    none came for two intervals) or no master has updated them yet, so a
    monitoring script can test it.
    """
    import redis

    from papertrader.store.redis_connect import connect

    settings, urls = settings_and_urls(config_path, state_dir)
    client = connect(urls.redis_url, settings, socket_connect_timeout=5)
    try:
        document = status_document(settings, client)
    except redis.RedisError as exc:
        fail(f"cannot read the market status from Redis ({exc}); is it running?")
        return
    finally:
        client.close()
    if as_json:
        print_json(document)
    else:
        _print_status(document)
    if document["stale"] or not document["running"]:
        raise SystemExit(3)


def _print_status(document: dict[str, Any]) -> None:
    api = f" ({document['api']})" if document["api"] else ""
    click.echo(f"provider         {document['provider']}{api}")
    if not document["running"]:
        click.echo("last update      none yet (is the master running? `pt up`)")
    else:
        state = "STALE" if document["stale"] else "fresh"
        click.echo(
            f"last update      {document['last_update'] or 'never'} "
            f"({document['age_seconds']:.1f} s ago, {state})"
            if document["age_seconds"] is not None
            else f"last update      never ({state})"
        )
        if document["last_error"]:
            click.echo(f"last error       {document['last_error']}")
    click.echo(f"update interval  {document['update_interval']:g} s")
    click.echo(f"API calls        {document['api_calls']}")
    click.echo(f"history reads    {document['history_queries']}")


def _clear_history_cache(redis_url: str, settings: Settings) -> int:
    """Delete the workers' cached history answers: the past just changed."""
    from papertrader.store import keys
    from papertrader.store.redis_connect import connect

    client = connect(redis_url, settings, socket_connect_timeout=5)
    try:
        removed = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=keys.HISTORY_CACHE_PATTERN, count=500):
            batch.append(key)
            if len(batch) >= 500:
                removed += int(client.delete(*batch))
                batch = []
        if batch:
            removed += int(client.delete(*batch))
        return removed
    finally:
        client.close()


@market.command()
@click.option(
    "--provider",
    type=click.Choice(["csv"]),
    default="csv",
    show_default=True,
    help="Where the history comes from (a CSV file; the HTTP quote API has no history).",
)
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="OHLCV file: symbol,time,open,high,low,close,volume with a header "
    "(default: the bundled sample).",
)
@config_option
@state_dir_option
@json_option
def backfill(
    provider: str,
    path: Path | None,
    config_path: Path | None,
    state_dir: Path | None,
    as_json: bool,
) -> None:
    """Load historical bars into the database (bars already there are kept)."""
    import psycopg2
    import redis

    from papertrader.market.csvfile import SAMPLE, CsvFormatError, count_rows, iter_rows
    from papertrader.store.history import insert_history
    from papertrader.store.pool import ConnectionPool, PoolTimeout

    source = path or SAMPLE
    settings, urls = settings_and_urls(config_path, state_dir)
    try:
        total = count_rows(source)
    except CsvFormatError as exc:
        fail(str(exc))
        return
    pool = ConnectionPool(urls.database_url, size=1)
    added = read = 0
    symbols: set[str] = set()
    try:
        batch: list[Quote] = []
        with click.progressbar(
            length=total, label=f"loading {source.name}", file=sys.stderr
        ) as bar:
            for quote in iter_rows(source):
                batch.append(quote)
                symbols.add(quote.symbol)
                if len(batch) >= BATCH:
                    added += insert_history(pool, batch)
                    read += len(batch)
                    bar.update(len(batch))
                    batch = []
            if batch:
                added += insert_history(pool, batch)
                read += len(batch)
                bar.update(len(batch))
    except CsvFormatError as exc:
        fail(f"{exc} (the {read} rows before it were loaded)")
    except (psycopg2.Error, PoolTimeout) as exc:
        detail = " ".join(str(exc).split())
        fail(f"cannot write to the database ({detail}); is it running and migrated?")
    finally:
        pool.close()
    try:
        cleared = _clear_history_cache(urls.redis_url, settings)
    except redis.RedisError:
        cleared = 0  # no Redis, no cache to clear
    unconfigured = sorted(symbols.difference(settings.assets))
    document = {
        "file": str(source),
        "provider": provider,
        "rows": read,
        "added": added,
        "kept": read - added,
        "symbols": sorted(symbols),
        "not_configured": unconfigured,
        "cache_entries_cleared": cleared,
    }
    if as_json:
        print_json(document)
        return
    click.echo(
        f"loaded {read} bars of {len(symbols)} symbols from {source}: "
        f"{added} new, {read - added} already there"
    )
    if unconfigured:
        click.echo(f"note: not in the configured assets, so not served: {', '.join(unconfigured)}")
