"""Entry point of the ``pt`` command.

Each audience gets its own click group in its own module, so a reader looking
for "how do I start a worker" opens ``cli/worker.py`` and nothing else.
"""

from __future__ import annotations

import click

from cli import db, services


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="papertrader")
def cli() -> None:
    """PaperTrader: practise investing with fake money against real market prices.

    Start with `pt services up` (private Redis and PostgreSQL), then `pt db migrate`.
    """


cli.add_command(services.services)
cli.add_command(db.db)


def main() -> None:
    """Console-script entry point."""
    cli()
