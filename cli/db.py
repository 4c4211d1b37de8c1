"""``pt db``: the PostgreSQL schema.

``migrate`` brings the database to the current schema and gives the master's
role its grants; ``status`` shows what is applied and what is pending. Both
log in as the schema's owner: ``PT_DATABASE_OWNER_URL`` (or the config file),
else ``PT_DATABASE_URL``, else the owner role of the cluster `pt services up`
started in the state directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .common import config_option, fail, json_option, print_json, state_dir_option

if TYPE_CHECKING:
    from papertrader.services import ServiceUrls


def database_urls_for(
    config_path: Path | None, state_dir: Path | None, prepare: bool = False
) -> ServiceUrls:
    """The master's and the owner's database URLs from the settings, else from the
    state directory.

    With ``prepare``, a private cluster first gets its owner and master roles
    (a cluster started by an older PaperTrader, still running, has none yet).
    Raises ``ConfigError`` or ``ServicesError`` with a message for the user;
    kept apart from the commands so the lookup can be tested on its own.
    """
    from papertrader.config import load_settings
    from papertrader.services import ServiceUrls, prepare_database_roles, resolve_urls

    settings = load_settings(config_path)
    if settings.database_url:  # no Redis needed, nor asked for
        return ServiceUrls(
            settings.redis_url or "",
            settings.database_url,
            database_owner_url=settings.database_owner_url or "",
        )
    if prepare:
        prepare_database_roles(state_dir if state_dir is not None else settings.state_dir)
    return resolve_urls(settings, state_dir)


def _urls_or_fail(
    config_path: Path | None, state_dir: Path | None, prepare: bool = False
) -> ServiceUrls:
    """``database_urls_for``, turning expected errors into one line on stderr and exit 1."""
    from papertrader.config import ConfigError
    from papertrader.services import ServicesError

    try:
        return database_urls_for(config_path, state_dir, prepare)
    except (ConfigError, ServicesError) as exc:
        fail(str(exc))


@click.group()
def db() -> None:
    """PostgreSQL schema: apply migrations and show which are applied.

    Logs in as the schema's owner: PT_DATABASE_OWNER_URL (database_owner_url
    in the config file), else PT_DATABASE_URL, else the owner role of the
    database `pt services up` started. The master's role is the user of
    PT_DATABASE_URL (or the private cluster's master role).
    """


@db.command()
@config_option
@state_dir_option
@json_option
def migrate(config_path: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Apply the schema migrations not yet applied, in order, as the owner; then
    give the master's role its grants (rows only, no schema changes).

    Safe to run any time, also by several processes at once: applied
    migrations are skipped, and each runs in its own transaction. On an
    install of before the database roles, it also moves the private cluster to
    them (owner and master roles made, the database handed to the owner; no
    row is touched).
    """
    from papertrader.services import mask_url
    from papertrader.store import migrate as schema
    from papertrader.store.roles import master_role_for

    urls = _urls_or_fail(config_path, state_dir, prepare=True)
    master_role = master_role_for(urls.owner_url, urls.database_url)
    try:
        applied = schema.migrate(urls.owner_url, master_role=master_role)
    except schema.MigrationError as exc:
        fail(str(exc))
    if master_role is None:
        click.echo(
            "note: the master logs in as the schema's owner, so it could change the "
            'schema; give it a role of its own (docs/OPERATIONS.md, "Database roles")',
            err=True,
        )
    if as_json:
        print_json(
            {"database": mask_url(urls.owner_url), "applied": applied, "master_role": master_role}
        )
        return
    for name in applied:
        click.echo(f"applied {name}")
    if not applied:
        click.echo("database is up to date")
    if master_role is not None:
        click.echo(f"master role {master_role}: rows only, no schema changes")


@db.command()
@config_option
@state_dir_option
@json_option
def status(config_path: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """List applied and pending migrations, and whether the master's role has only the
    master's rights. Exits with status 3 if a migration is pending or it has more."""
    from papertrader.services import mask_url
    from papertrader.store import migrate as schema
    from papertrader.store.roles import login_name, problems_of

    urls = _urls_or_fail(config_path, state_dir)
    url = urls.owner_url
    try:
        applied = schema.applied_migrations(url)
        done = {name for name, _ in applied}
        pending = [m.name for m in schema.list_migrations() if m.name not in done]
    except schema.MigrationError as exc:
        fail(str(exc))
    master_role = login_name(urls.database_url)
    problems = problems_of(urls.database_url)
    if as_json:
        print_json(
            {
                "database": mask_url(url),
                "applied": [{"name": name, "applied_at": at.isoformat()} for name, at in applied],
                "pending": pending,
                "master_role": master_role,
                "master_role_problems": problems,
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
        if problems:
            click.echo(
                f"master role {master_role}: more rights than it needs ({'; '.join(problems)}): "
                'see docs/OPERATIONS.md, "Database roles"'
            )
        else:
            click.echo(f"master role {master_role}: rows only, no schema changes")
    if pending or problems:
        raise SystemExit(3)
