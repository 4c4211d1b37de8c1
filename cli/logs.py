"""``pt logs``: the stack's logs, one file per process, merged in time order.

A thin layer over ``papertrader.stack.logs``.
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path

import click

from .common import fail, state_dir_option

FOLLOW_POLL_SECONDS = 0.25


@click.command()
@state_dir_option
@click.argument("processes", nargs=-1, metavar="[PROCESS]...")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries as they come.")
@click.option(
    "--since",
    metavar="WHEN",
    help="Only entries from then on: a duration ago (30s, 10m, 2h, 1d) or a UTC date/time "
    "(2026-01-02, 2026-01-02T15:04).",
)
@click.option(
    "-n",
    "--tail",
    "last",
    type=click.IntRange(min=0),
    default=None,
    help="Only the last N entries of the merged history (then follow, with -f).",
)
@click.option("--long", is_flag=True, help="Full date, level and source location of each entry.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry and line.")
def logs(
    state_dir: Path | None,
    processes: tuple[str, ...],
    follow: bool,
    since: str | None,
    last: int | None,
    long: bool,
    as_json: bool,
) -> None:
    """Show the logs of the stack's processes merged in time order (all when none is named).

    PROCESS is master, worker-1, ... or supervisor (the restarts and why).
    Times are UTC. Servers hold entries in memory for up to log_flush_seconds
    before writing them, so with -f an entry can appear that much later.

    \b
    Examples:
      pt logs                       # everything, oldest first
      pt logs master -n 50          # the master's last 50 entries
      pt logs -f --since 10m        # the last ten minutes, then follow
    """
    from papertrader.services import resolve_state_dir
    from papertrader.stack.logs import (
        Follower,
        LogEntry,
        LogError,
        choose,
        merged,
        parse_since,
        process_files,
        process_width,
    )

    directory = resolve_state_dir(state_dir)
    try:
        start = parse_since(since) if since else None
        files = choose(process_files(directory), processes)
    except LogError as exc:
        fail(str(exc))
    if not files and not follow:
        click.echo(f"no logs yet in {directory / 'logs'}", err=True)
        return
    width = process_width([*files, *processes])

    def show(entry: LogEntry) -> None:
        if as_json:
            click.echo(json.dumps(entry.as_json()))
        else:
            click.echo(entry.full(width) if long else entry.compact(width))

    follower = Follower(directory, processes) if follow else None
    history = merged(files, start)
    for entry in deque(history, maxlen=last) if last is not None else history:
        show(entry)
    if follower is None:
        return
    try:
        while True:
            for entry in follower.poll():
                show(entry)
            time.sleep(FOLLOW_POLL_SECONDS)
    except KeyboardInterrupt:
        return
