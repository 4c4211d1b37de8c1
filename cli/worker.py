"""``pt worker``: run a worker server (spec 3.2), the server clients connect to.

gevent must patch the standard library before anything that opens sockets is
imported, so ``run`` patches first and imports the worker afterwards; nothing
at the top of this module imports the worker or gevent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import config_option, fail, settings_or_fail, state_dir_option


@click.group()
def worker() -> None:
    """Worker servers: the servers clients connect to (TCP port 2049 by default).

    A worker serves quotes and sessions from Redis, queues orders, and forwards
    logins and account data to the master over one persistent link. `pt up`
    starts and registers workers for you; to run one by hand, the master must
    know its UUID (a row in the master's `workers` table, as `pt up` writes).
    The UUID is derived from --name unless --uuid is given, and printed at start.
    """


@worker.command()
@config_option
@state_dir_option
@click.option("--name", help="Worker name, as registered on the master (also PT_WORKER_NAME).")
@click.option(
    "--uuid",
    "worker_uuid",
    help="Worker UUID registered on the master (also PT_WORKER_UUID; "
    "default: derived from the name, so it is the same on every start).",
)
@click.option("--region", help="Region shown to clients in the worker list (also PT_REGION).")
@click.option("--host", help="Address to listen on for clients (also PT_WORKER_HOST).")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="TCP port to listen on for clients (also PT_WORKER_PORT; default 2049).",
)
@click.option(
    "--advertise",
    metavar="HOST:PORT",
    help="Address clients should use, if not --host:--port, e.g. behind NAT "
    "(also PT_WORKER_ADVERTISE).",
)
@click.option(
    "--master",
    "masters",
    metavar="HOST:PORT",
    multiple=True,
    help="A master's link address; repeat it for every master (the active one and its "
    "standbys: the worker links to whichever is active). Also PT_MASTER_CONNECT, "
    "comma-separated; default master_host:master_port, 127.0.0.1:2048.",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Log file (also PT_LOG_FILE; default <state-dir>/logs/<name>.log).",
)
@click.option(
    "--processes",
    type=click.IntRange(0, 256),
    help="Processes serving the worker's ports, sharing them (also PT_WORKER_PROCESSES; "
    "default 0: one per core). The first holds the master link for all.",
)
@click.option("--process-index", type=int, default=0, hidden=True)
@click.option("--relay", type=click.Path(path_type=Path), hidden=True)
def run(
    config_path: Path | None,
    state_dir: Path | None,
    name: str | None,
    worker_uuid: str | None,
    region: str | None,
    host: str | None,
    port: int | None,
    advertise: str | None,
    masters: tuple[str, ...],
    log_file: Path | None,
    processes: int | None,
    process_index: int,
    relay: Path | None,
) -> None:
    """Run one worker in the foreground until Ctrl-C or SIGTERM.

    Settings come from --config and PT_* variables; these options override
    them. Redis is PT_REDIS_URL, else the one `pt services up` started in the
    state directory (the worker needs no PostgreSQL). If the master is not up
    yet the worker keeps retrying; meanwhile quotes and sessions work and
    logins answer "master unreachable". Logs go to the log file and stderr.
    The worker uses every core: it serves its ports from one process per core
    (--processes), started and stopped with it.

    \b
    Examples:
      pt worker run                                   # worker-1 on 127.0.0.1:2049
      pt worker run --name eu-1 --region eu --host 0.0.0.0 --port 2050 \\
                    --advertise eu-1.example.com:2050 --master 10.0.0.5:2048
      pt worker run --master 10.0.0.5:2048 --master 10.0.0.6:2048   # a standby too
    """
    import warnings

    from gevent import monkey

    with warnings.catch_warnings():
        # `pt` imported redis (hence ssl) before this command ran; redis only builds
        # SSL contexts when it connects, after this patch, so the warning does not apply.
        warnings.simplefilter("ignore", monkey.MonkeyPatchWarning)
        monkey.patch_all()

    from papertrader.worker.main import run_worker
    from papertrader.worker.startup import WorkerStartError

    settings = settings_or_fail(
        config_path,
        worker_name=name,
        worker_uuid=worker_uuid,
        region=region,
        worker_host=host,
        worker_port=port,
        worker_advertise=advertise,
        master_connect=",".join(masters) if masters else None,
        log_file=log_file,
        worker_processes=processes,
    )
    # How the other processes start: this command with these options (run_worker adds
    # the port it bound, their index and the relay).
    command = [sys.executable, "-m", "papertrader_cli", "worker", "run"]
    given = {
        "--config": config_path,
        "--state-dir": state_dir,
        "--name": name,
        "--uuid": worker_uuid,
        "--region": region,
        "--host": host,
        "--advertise": advertise,
        "--log-file": log_file,
    }
    for flag, value in given.items():
        if value is not None:
            command += [flag, str(value)]
    for address in masters:
        command += ["--master", address]
    try:
        run_worker(settings, state_dir, command=command, process_index=process_index, relay=relay)
    except WorkerStartError as exc:
        fail(str(exc))
