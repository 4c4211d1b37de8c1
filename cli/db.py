"""``pt db``: the PostgreSQL schema.

``migrate`` brings the database to the current schema; ``status`` shows what
is applied and what is pending. The database is the configured one
(``PT_DATABASE_URL`` or the config file) or else the one `pt services up`
started in the state directory.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import config_option, fail, json_option, print_json, state_dir_option


def database_url_for(config_path: Path | None, state_dir: Path | None) -> str:
    """The database URL from the settings, else from the state directory.

    Raises ``ConfigError`` or ``ServicesError`` with a message for the user;
    kept apart from the commands so the lookup can be tested on its own.
    """
    from papertrader.config import load_settings
    from papertrader.services import resolve_urls

    settings = load_settings(config_path)
    return resolve_urls(settings, state_dir).database_url


def _database_url_or_fail(config_path: Path | None, state_dir: Path | None) -> str | None:
    """``database_url_for``, turning expected errors into one line on stderr and exit 1."""
    from papertrader.config import ConfigError
    from papertrader.services import ServicesError

    try:
        return database_url_for(config_path, state_dir)
    except (ConfigError, ServicesError) as exc:
        fail(str(exc))
        return None


@click.group()
def db() -> None:
    """PostgreSQL schema: apply migrations and show which are applied.

    Uses PT_DATABASE_URL (or database_url in the config file) if set,
    otherwise the database started by `pt services up`.
    """


@db.command()
@config_option
@state_dir_option
@json_option
def migrate(config_path: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Apply the schema migrations not yet applied, in order.

    Safe to run any time, also by several processes at once: applied
    migrations are skipped, and each runs in its own transaction.
    """
    from papertrader.services import mask_url
    from papertrader.store import migrate as schema

    url = _database_url_or_fail(config_path, state_dir)
    if url is None:
        return
    try:
        applied = schema.migrate(url)
    except schema.MigrationError as exc:
        fail(str(exc))
        return
    if as_json:
        print_json({"database": mask_url(url), "applied": applied})
    elif applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo("database is up to date")


@db.command()
@config_option
@state_dir_option
@json_option
def status(config_path: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """List applied and pending migrations. Exits with status 3 if any are pending."""
    from papertrader.services import mask_url
    from papertrader.store import migrate as schema

    url = _database_url_or_fail(config_path, state_dir)
    if url is None:
        return
    try:
        applied = schema.applied_migrations(url)
        done = {name for name, _ in applied}
        pending = [m.name for m in schema.list_migrations() if m.name not in done]
    except schema.MigrationError as exc:
        fail(str(exc))
        return
    if as_json:
        print_json(
            {
                "database": mask_url(url),
                "applied": [{"name": name, "applied_at": at.isoformat()} for name, at in applied],
                "pending": pending,
            }
        )
    else:
        click.echo(f"database {mask_url(url)}")
        for name, at in applied:
            click.echo(f"  applied  {name}  ({at:%Y-%m-%d %H:%M:%S %Z})")
        for name in pending:
            click.echo(f"  pending  {name}")
        if not applied and not pending:
            click.echo("  no migrations")
        elif not pending:
            click.echo("database is up to date")
        else:
            click.echo(f"{len(pending)} pending: run `pt db migrate`")
    if pending:
        raise SystemExit(3)
