"""Options and helpers shared by every ``pt`` group.

Keeping them here means every command spells ``--config``, ``--state-dir`` and
``--json`` the same way and turns expected errors into one clear line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from papertrader.config import Settings
    from papertrader.services import ServiceUrls
    from papertrader.store.pool import ConnectionPool

F = TypeVar("F", bound=Callable[..., Any])


def _config_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """The file given, else ./papertrader.toml, else the user's (absolute paths: children
    started in another directory read the same file)."""
    if value is not None:
        return value.expanduser().absolute()
    from papertrader.config.environment import find_config_file

    return find_config_file()


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PT_CONFIG",
    default=None,
    callback=_config_file,
    help="TOML settings file (also PT_CONFIG; default: ./papertrader.toml, else "
    "papertrader.toml in the user's config directory). PT_* variables override it.",
)

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PT_STATE_DIR",
    default=None,
    help="Directory holding the private Redis/PostgreSQL started by `pt services up` "
    "(also PT_STATE_DIR; default: the user's state directory).",
)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document instead of a table."
)


def print_json(document: Any) -> None:
    """Print exactly one JSON document; Decimals and paths become strings, never floats."""
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Left-aligned columns as wide as their widest cell, two spaces apart."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def json_requested() -> bool:
    """True when the running command, or a group above it, was given --json."""
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.params.get("as_json"):
            return True
        ctx = ctx.parent
    return False


def fail(message: str, exit_code: int = 1, **details: Any) -> NoReturn:
    """Stop with a one-line error and no traceback.

    With --json the error is a JSON document on stdout instead, so a script
    reading stdout always gets JSON: ``{"error": {"message": ..., ...details}}``
    (details such as the error code or the order id, when the caller has them).
    """
    if json_requested():
        print_json({"error": {"message": message, **details}})
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(exit_code)


def settings_or_fail(config_path: Path | None, **overrides: Any) -> Settings:
    """The settings with the command's options on top (None = option not given);
    a bad value stops the command with the one line ConfigError wrote."""
    from papertrader.config import ConfigError, load_settings

    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        settings = load_settings(config_path)
        return settings.with_overrides(**given) if given else settings
    except ConfigError as exc:
        fail(str(exc))


def provision_redis_user(
    config_path: Path | None,
    state_dir: Path | None,
    user: str,
    rules: tuple[str, ...],
    url_path: Path | None,
) -> tuple[Path, bool]:
    """Make or update the Redis user ``user`` (``store/redis_users.py``) with the Redis
    URL configured here, which must be the admin user's; its URL goes to ``url_path``
    (default: <state dir>/redis-users/USER.url, 0600). The file, and whether anything
    was new."""
    import redis

    from papertrader.services import resolve_state_dir
    from papertrader.store import redis_users
    from papertrader.store.redis_connect import RedisConfigError, admin_nodes

    settings, urls = settings_and_urls(config_path, state_dir)
    admin_url = urls.redis_url
    if url_path is None:
        directory = resolve_state_dir(state_dir if state_dir is not None else settings.state_dir)
        url_path = redis_users.url_file(directory, user)
    try:
        client = admin_nodes(admin_url, settings, socket_connect_timeout=5)
    except (RedisConfigError, redis.RedisError) as exc:
        fail(f"cannot reach Redis to make the user {user}: {exc}")
    try:
        created = redis_users.provision(client, admin_url, user, rules, url_path)
    except (redis.RedisError, redis_users.UsersUnavailable, OSError) as exc:
        fail(f"the Redis user {user} is not made: {exc} (use the Redis admin user's URL)")
    finally:
        for node in client:
            node.close()
    return url_path, created


# -- the deployment's stores, for an operator's command ------------------------------
def settings_and_urls(
    config_path: Path | None, state_dir: Path | None
) -> tuple[Settings, ServiceUrls]:
    """The settings and the URLs of the deployment's Redis and PostgreSQL (the private
    services' when none is configured); a bad setting is one line and exit status 1."""
    from papertrader.config import ConfigError, load_settings
    from papertrader.services import ServicesError, resolve_urls

    try:
        settings = load_settings(config_path)
        return settings, resolve_urls(settings, state_dir)
    except (ConfigError, ServicesError) as exc:
        fail(str(exc))


@contextmanager
def database_pool(config_path: Path | None, state_dir: Path | None) -> Iterator[ConnectionPool]:
    """A one-connection pool on the configured database; errors become one line."""
    import psycopg2

    from papertrader.store.pool import ConnectionPool

    _, urls = settings_and_urls(config_path, state_dir)
    try:
        pool = ConnectionPool(urls.database_url, size=1)
    except psycopg2.Error as exc:
        fail(f"cannot reach the database: {' '.join(str(exc).split())}")
    try:
        yield pool
    except psycopg2.Error as exc:
        fail(f"database error: {' '.join(str(exc).split())}")
    finally:
        pool.close()


def store_redis(config_path: Path | None, state_dir: Path | None, every_node: bool = False) -> Any:
    """A client of the Redis primary; ``every_node``: a list, the primary and each replica."""
    import redis

    from papertrader.store.redis_connect import RedisConfigError, admin_nodes, connect

    settings, urls = settings_and_urls(config_path, state_dir)
    try:
        if every_node:
            return admin_nodes(urls.redis_url, settings, socket_connect_timeout=5)
        return connect(urls.redis_url, settings, socket_connect_timeout=5)
    except (RedisConfigError, redis.RedisError) as exc:
        fail(str(exc))
