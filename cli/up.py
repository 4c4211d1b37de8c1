"""``pt up``, ``pt down``, ``pt restart``: the whole stack on one machine, and its supervision.

Thin commands over ``papertrader.stack`` (planning, the supervisor, the
record in ``<state_dir>/stack.json``); read that package's docstrings for
what happens and in which order.
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
    settings_or_fail,
    state_dir_option,
)

if TYPE_CHECKING:
    from papertrader.stack import StackOptions, StackRecord


def _options(
    config_path: Path | None,
    state_dir: Path | None,
    detach: bool,
    timeout: float,
    ha: bool = False,
    standby_port: int | None = None,
    **overrides: Any,
) -> StackOptions:
    from papertrader.services import resolve_state_dir
    from papertrader.stack import StackOptions

    settings = settings_or_fail(config_path, **overrides)
    directory = resolve_state_dir(state_dir if state_dir is not None else settings.state_dir)
    return StackOptions(
        settings=settings,
        state_dir=directory,
        config_path=config_path.resolve() if config_path is not None else None,
        detached=detach,
        timeout=timeout,
        cwd=Path.cwd(),
        ha=ha,
        standby_port=standby_port,
    )


def _endpoints(record: StackRecord) -> dict[str, Any]:
    from papertrader.tls.local import ca_file

    tls_off = any(c.env.get("PT_TLS") == "false" for c in record.children)
    ca = ca_file(record.state_dir)
    document: dict[str, Any] = {
        # The private CA the stack's certificates come from (clients: --ca / PT_CA).
        "tls_ca": str(ca) if ca.is_file() and not tls_off else None,
        "state_dir": str(record.state_dir),
        "logs": str(record.state_dir / "logs"),
        "detached": record.detached,
        "services_started": record.services_started,
        "supervisor_pid": record.supervisor_pid,
        "ha": record.ha,
        "masters": [],
        "workers": [],
    }
    for child in record.children:
        entry = {"name": child.name, "address": child.endpoint, "pid": child.pid,
                 "log": child.log, "console": child.console}  # fmt: skip
        if child.role == "master":
            document["masters"].append(entry)
        else:
            document["workers"].append({**entry, "uuid": child.uuid, "web": child.web})
    document["master"] = document["masters"][0] if document["masters"] else None
    if record.ha:
        from papertrader.stack.ha import ha_summary

        document.update(ha_summary(record))
    return document


def _announce(record: StackRecord, as_json: bool, fresh: bool = False) -> None:
    """The endpoints: a JSON document, or lines for people."""
    if as_json:
        print_json({**_endpoints(record), "new_state_dir": fresh})
        return
    document = _endpoints(record)
    workers = [c for c in record.children if c.role != "master"]
    click.echo(f"state dir {record.state_dir}")
    if fresh:
        click.echo(
            "          (new: no accounts or history from any other state directory; "
            "PT_STATE_DIR or --state-dir names the one to use)"
        )
    active = (document.get("active_master") or {}).get("address")
    for child in record.children:
        role = ""
        if record.ha and child.role == "master":
            role = "  active" if child.endpoint == active else "  standby"
        click.echo(f"{child.name:<9} {child.endpoint}  (pid {child.pid}){role}")
    if record.ha:
        nodes = document["redis"]
        click.echo(
            f"redis     primary {nodes['primary']}, nodes {', '.join(nodes['nodes'])}; "
            f"Sentinels {', '.join(nodes['sentinels'])}"
        )
        pg = document["postgres"]
        click.echo(
            f"postgres  primary {pg['primary']}, synchronous replica {pg['replica']} "
            "(masters: target_session_attrs=read-write)"
        )
        click.echo(
            "          `pt status` shows the active master; docs/OPERATIONS.md, the promotion"
        )
    for child in workers:
        if child.web:
            click.echo(f"{child.name:<9} web page {child.web}/")
    click.echo(f"logs      {record.state_dir / 'logs'}  (pt logs -f)")
    if workers:
        click.echo(f"Try: pt client --worker {workers[0].endpoint} register USER --email E")
    if record.detached:
        click.echo(
            f"Running in the background (supervisor pid {record.supervisor_pid}); "
            f"stop with `pt down --state-dir {record.state_dir}`."
        )
    else:
        click.echo("Press Ctrl-C to stop.")


@click.command()
@config_option
@state_dir_option
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=None,
    help="How many workers to start (default: the `workers` setting).",
)
@click.option(
    "--master-port", type=click.IntRange(1, 65535), default=None, help="Master port (default 2048)."
)
@click.option(
    "--ha",
    is_flag=True,
    help="No single point of failure, to try on one machine: a standby master "
    "(master-2), Redis with a replica and three Sentinels, a synchronous PostgreSQL "
    "streaming replica; every worker names both masters. Needs the private services "
    "(no PT_REDIS_URL / PT_DATABASE_URL).",
)
@click.option(
    "--standby-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="With --ha: the standby master's port (default: the master port - 1, 2047).",
)
@click.option(
    "--worker-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of worker-1 (default 2049); worker-2 takes the next one, and so on.",
)
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Web page port of worker-1 (default 8443); worker-2 takes the next one, and so "
    "on; 0 picks free ports.",
)
@click.option(
    "--update-interval",
    type=click.FloatRange(0.05, 86400),
    default=None,
    help="Seconds between price updates and order drains.",
)
@click.option(
    "--provider",
    type=click.Choice(["sim", "http", "csv"]),
    default=None,
    help="Market data: sim (simulated), http (a public quote API), csv (replays "
    "market_csv_path or the bundled sample, its history backfilled at start; offline).",
)
@click.option(
    "--detach",
    is_flag=True,
    help="Return once everything answers, leaving it running under a background "
    "supervisor; stop it with `pt down`.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for each step of the start-up.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="In the foreground, do not show the servers' log entries (`pt logs -f` does).",
)
@json_option
def up(
    config_path: Path | None,
    state_dir: Path | None,
    workers: int | None,
    master_port: int | None,
    ha: bool,
    standby_port: int | None,
    worker_port: int | None,
    web_port: int | None,
    update_interval: float | None,
    provider: str | None,
    detach: bool,
    timeout: float,
    quiet: bool,
    as_json: bool,
) -> None:
    """Start everything: services, migrations, the master and its workers, supervised.

    A server that crashes is started again after a back-off (1 s, doubling up
    to 30 s), and logs/supervisor.log says why. In the foreground, Ctrl-C
    stops what this command started (workers, then the master, then
    Redis/PostgreSQL if it started them). With --detach a background
    supervisor keeps the stack running; `pt down` stops it, `pt restart`
    restarts a server. Logs are in <state_dir>/logs/.

    With --ha: two masters (one active, one standby that takes over when the
    active one dies), Redis with a replica and three Sentinels (every process
    finds the primary through them), PostgreSQL with a synchronous streaming
    replica, and workers that know both masters; `pt status` shows which
    master is active.
    Kill the active master (`kill -9 PID`) and the standby takes over within a
    few seconds; the supervisor starts the killed one again as a standby.
    docs/OPERATIONS.md, "Trying it out: pt up --ha", says what else to try.
    """
    from papertrader.stack import StackError, start_detached

    options = _options(
        config_path,
        state_dir,
        detach,
        timeout,
        ha,
        standby_port,
        market_provider=provider,
        master_port=master_port,
        worker_port=worker_port,
        web_port=web_port,
        workers=workers,
        update_interval=update_interval,
    )

    # A state directory used for the first time starts empty: say so, in case the
    # user meant another one (`pt up` in another directory, a forgotten PT_STATE_DIR).
    fresh = not any(
        (options.state_dir / name).exists() for name in ("services.json", "gnupg-master")
    )

    def say(text: str) -> None:
        click.echo(text, err=as_json)

    def tell(text: str) -> None:
        click.echo(text, err=True)

    if detach:
        try:
            record = start_detached(options, say)
        except StackError as exc:
            fail(str(exc))
        _announce(record, as_json, fresh)
        return

    from papertrader.stack import install_supervisor_logging, run_foreground
    from papertrader.stack.logs import Follower

    install_supervisor_logging(options.state_dir)
    # The servers' entries, merged and compact; the supervisor's own lines are
    # already printed as they happen. Logs of a --json run go to stderr.
    follower = None if quiet else Follower(options.state_dir)

    def show_logs() -> None:
        if follower is None:
            return
        for entry in follower.poll():
            if entry.process != "supervisor":
                click.echo(entry.compact(), err=as_json)

    try:
        run_foreground(
            options,
            say,
            echo=tell,
            on_started=lambda record: _announce(record, as_json, fresh),
            report=lambda name, outcome: tell(f"{name:<10} {outcome}"),
            every=show_logs,
        )
    except StackError as exc:
        fail(str(exc), 130 if "interrupted" in str(exc) else 1)
    finally:
        show_logs()  # what the servers wrote while stopping


@click.command()
@state_dir_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for each process to stop before killing it.",
)
@json_option
def down(state_dir: Path | None, timeout: float, as_json: bool) -> None:
    """Stop everything that runs for this state directory, however it was started.

    The stack `pt up` started (through its supervisor, which stops it in
    order), any master or worker started by hand with this --state-dir, and
    Redis/PostgreSQL if `pt up` started them (services started with
    `pt services up` stay up; `pt services down` stops them).
    """
    from papertrader.services import resolve_state_dir
    from papertrader.stack import StackError, stop

    directory = resolve_state_dir(state_dir)
    try:
        stopped = stop(directory, timeout)
    except StackError as exc:
        fail(str(exc))
    if as_json:
        print_json({"state_dir": str(directory), "stopped": stopped})
        return
    if not stopped:
        click.echo(f"nothing runs for {directory}")
    for name, outcome in stopped.items():
        click.echo(f"{name:<10} {outcome}")


@click.command()
@state_dir_option
@click.argument("processes", nargs=-1, metavar="[PROCESS]...")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for a process to stop, and then to answer again.",
)
@json_option
def restart(
    state_dir: Path | None, processes: tuple[str, ...], timeout: float, as_json: bool
) -> None:
    """Restart servers of the running stack (all when none is named: master first).

    PROCESS is a name from `pt status`: master, worker-1, ... Each is stopped
    gracefully (the master finishes its drain) and started again with the
    command line and settings recorded when `pt up` started it, then waited
    for until it answers.
    """
    from papertrader.services import resolve_state_dir
    from papertrader.stack import StackError
    from papertrader.stack import restart as restart_stack

    directory = resolve_state_dir(state_dir)
    try:
        results, supervised = restart_stack(directory, list(processes), timeout)
    except StackError as exc:
        fail(str(exc))
    if as_json:
        print_json({"state_dir": str(directory), "restarted": results, "supervised": supervised})
    else:
        for name, outcome in results.items():
            click.echo(f"{name:<10} {outcome}")
        if not supervised:
            click.echo(
                "note: no supervisor runs for this stack, so these are not restarted if they "
                "crash; `pt down` and `pt up` bring one back",
                err=True,
            )
    if any(not outcome.startswith("restarted") for outcome in results.values()):
        sys.exit(1)
