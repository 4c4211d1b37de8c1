"""Entry point of the ``pt`` command.

Each audience gets its own click group in its own module, so a reader looking
for "how do I start a worker" opens ``cli/worker.py`` and nothing else.
"""

from __future__ import annotations

import sys

# The servers are gevent processes: patch before anything imports socket, ssl or
# threading (redis-py, psycopg2 and loguru all do), so every module sees the
# cooperative versions. Only for the server commands: the rest of `pt` is plain.
if sys.argv[1:2] in (["master"], ["worker"]):
    from gevent import monkey

    monkey.patch_all()

import click

from . import (
    certs,
    client,
    competitions,
    db,
    logs,
    market,
    master,
    services,
    services_ha,  # noqa: F401  (adds the replicas' commands to `pt services`)
    status,
    up,
    worker,
    workers,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="papertrader")
def cli() -> None:
    """PaperTrader: practise investing with fake money against real market prices.

    `pt up` starts everything (private Redis and PostgreSQL, the master, workers);
    `pt client --help` shows how to trade against it.
    """
    from papertrader.config.environment import unknown_variables

    for warning in unknown_variables():
        click.echo(f"warning: {warning}", err=True)


cli.add_command(up.up)
cli.add_command(up.down)
cli.add_command(up.restart)
cli.add_command(status.status)
cli.add_command(logs.logs)
cli.add_command(master.master)
cli.add_command(worker.worker)
cli.add_command(client.client)
cli.add_command(competitions.competitions)
cli.add_command(services.services)
cli.add_command(db.db)
cli.add_command(workers.workers)
cli.add_command(market.market)
cli.add_command(certs.certs)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
