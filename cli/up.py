"""``pt up`` / ``pt down``: the whole stack on one machine in one command.

``pt up`` starts the private Redis and PostgreSQL (unless both URLs are
configured), applies the migrations, makes the master's key pair and one per
worker (GnuPG homes in the state directory, reused on later runs), registers
its workers in the ``workers`` table (their keys, allowed from 127.0.0.1/32),
pins the master's fingerprint in each worker's environment, then starts the
master and N workers as child processes, each logging to ``<state_dir>/logs/``.
It returns control only once every server answers on its port and the master
lists every worker, then prints the endpoints.

Who stops what: ``pt up`` stops exactly what it started. In the foreground,
Ctrl-C or SIGTERM stops the workers, then the master, then the services if
this run started them (services that were already running are left alone).
With ``--detach`` it returns once everything answers and records the pids in
``<state_dir>/up.json``; ``pt down`` reads that file and stops the same set
in the same order. If a child dies while starting, its name and the end of
its log are shown, everything already started is stopped, and the exit
status is 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

import click
import psycopg2

import cli
from cli.common import (
    config_option,
    fail,
    json_option,
    print_json,
    settings_or_fail,
    state_dir_option,
)
from papertrader.client import ClientError, format_address, get_worker_list
from papertrader.config import Settings
from papertrader.config.settings import derive_worker_uuid, join_host_port
from papertrader.keyring import Keyring, KeyringError, master_home, worker_home
from papertrader.services import (
    ServicesError,
    resolve_state_dir,
    resolve_urls,
    services_status,
    start_services,
    stop_services,
)
from papertrader.services.ports import port_is_free
from papertrader.services.state import ensure_private_dir, pid_alive, tail, write_private_file
from papertrader.store import migrate as schema
from papertrader.store.pool import ConnectionPool
from papertrader.store.workers import WorkerConflict, register_worker

UP_FILE = "up.json"
#: Where `pt up`'s own workers may link from: this machine.
LOCAL_WORKER_IPS = ("127.0.0.1/32", "::1/128")
UP_FILE_VERSION = 1
LOG_TAIL_LINES = 20
#: Where ``python -m cli.main`` is importable from, for the children.
PROJECT_ROOT = Path(cli.__file__).resolve().parent.parent


class StartupFailed(Exception):
    """A child died or never answered while the stack was starting."""


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: stop everything started so far, in order."""


@dataclass
class Child:
    """One server process started by ``pt up`` (recorded in up.json)."""

    name: str
    role: str  # "master" or "worker"
    host: str
    port: int
    pid: int
    log: str  # console output (stdout and stderr) of the process
    started: str  # /proc start time, so `pt down` never signals a recycled pid
    uuid: str | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "popen"}


@dataclass
class Stack:
    """Everything one ``pt up`` started; written to up.json as it grows."""

    state_dir: Path
    services_started: bool
    detached: bool
    supervisor_pid: int | None
    children: list[Child] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.state_dir / UP_FILE

    def save(self) -> None:
        document = {
            "version": UP_FILE_VERSION,
            "state_dir": str(self.state_dir),
            "services_started": self.services_started,
            "detached": self.detached,
            "supervisor_pid": self.supervisor_pid,
            "supervisor_started": _start_time(self.supervisor_pid) if self.supervisor_pid else None,
            "saved_at": datetime.now(timezone.utc).isoformat(),
            "children": [child.record() for child in self.children],
        }
        write_private_file(self.path, json.dumps(document, indent=2) + "\n")

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)


# -- small process helpers ------------------------------------------------------------
def _start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), or "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def _same_process(pid: int, started: str) -> bool:
    """True if ``pid`` still is the process we started (not a recycled pid)."""
    if not pid_alive(pid):
        return False
    return not started or _start_time(pid) in ("", started)


def _signal(pid: int, signum: int) -> None:
    """Signal the child's whole process group (it leads one), else the pid alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signum)
                return
        except ProcessLookupError:
            return
        os.kill(pid, signum)


def _wait_gone(child: Child, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.popen is not None:
            if child.popen.poll() is not None:
                return True
        elif not pid_alive(child.pid):
            return True
        time.sleep(0.05)
    return False


def stop_child(child: Child, timeout: float) -> str:
    """SIGTERM, then SIGKILL after ``timeout``; says what happened."""
    if child.popen is None and not _same_process(child.pid, child.started):
        return "was not running"
    if child.popen is not None and child.popen.poll() is not None:
        return f"had already stopped: it {_exit_text(child.popen.returncode)}"
    _signal(child.pid, signal.SIGTERM)
    if _wait_gone(child, timeout):
        return "stopped"
    _signal(child.pid, signal.SIGKILL)
    _wait_gone(child, 5.0)
    return f"killed (did not stop within {timeout:g} s)"


def stop_children(children: list[Child], timeout: float, echo: bool) -> None:
    """Workers first (they hold clients), then the master."""
    ordered = [c for c in children if c.role == "worker"] + [
        c for c in children if c.role != "worker"
    ]
    for child in ordered:
        outcome = stop_child(child, timeout)
        if echo:
            click.echo(f"{child.name:<10} {outcome}", err=True)


def _exit_text(status: int) -> str:
    """``exited with status 1`` or ``was killed by SIGKILL``."""
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _log_tail(child: Child) -> str:
    text: str = tail(Path(child.log), LOG_TAIL_LINES)
    return text.rstrip() or "(the log is empty)"


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- starting --------------------------------------------------------------------------
#: One worker's identity in the caller's environment would be shared by all of ours.
_PER_WORKER_VARIABLES = (
    "PT_WORKER_GNUPG_HOME",
    "PT_WORKER_KEY_FINGERPRINT",
    "PT_MASTER_FINGERPRINT",
    "PT_WORKER_NAME",
    "PT_WORKER_UUID",
    "PT_WORKER_ADVERTISE",
    "PT_WORKER_PORT",
)


def _child_env(settings: Settings, redis_url: str, database_url: str, log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PER_WORKER_VARIABLES}
    env.update(
        {
            "PT_REDIS_URL": redis_url,
            "PT_DATABASE_URL": database_url,
            "PT_MASTER_HOST": settings.master_host,
            "PT_MASTER_PORT": str(settings.master_port),
            "PT_UPDATE_INTERVAL": repr(settings.update_interval),
            "PT_MARKET_PROVIDER": settings.market_provider,
            "PT_LOG_FILE": str(log),
            "PYTHONUNBUFFERED": "1",
        }
    )
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    return env


def _launch(
    name: str,
    role: str,
    args: list[str],
    env: dict[str, str],
    host: str,
    port: int,
    logs: Path,
    worker_uuid: str | None = None,
) -> Child:
    console = logs / f"{name}.out"
    handle: IO[bytes]
    with open(console, "ab") as handle:
        handle.write(f"--- pt up started {name} at {datetime.now(timezone.utc)} ---\n".encode())
        handle.flush()
        popen = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(PROJECT_ROOT),
            start_new_session=True,  # Ctrl-C reaches only `pt up`, which stops children in order
        )
    return Child(
        name=name,
        role=role,
        host=host,
        port=port,
        pid=popen.pid,
        log=str(console),
        started=_start_time(popen.pid),
        uuid=worker_uuid,
        popen=popen,
    )


def _died(child: Child) -> NoReturn:
    assert child.popen is not None
    raise StartupFailed(
        f"{child.name} {_exit_text(child.popen.returncode)} while starting; "
        f"last lines of {child.log}:\n{_log_tail(child)}"
    )


def _wait_port(child: Child, deadline: float) -> None:
    probe_host = "127.0.0.1" if child.host in ("0.0.0.0", "") else child.host
    if child.host == "::":
        probe_host = "::1"
    while True:
        assert child.popen is not None
        if child.popen.poll() is not None:
            _died(child)
        if _port_answers(probe_host, child.port):
            return
        if time.monotonic() > deadline:
            raise StartupFailed(
                f"{child.name} does not answer on {child.address}; "
                f"last lines of {child.log}:\n{_log_tail(child)}"
            )
        time.sleep(0.1)


def _wait_listed(master: Child, workers: list[Child], deadline: float) -> None:
    """Until getWorkerList on the master names every worker (each linked and accepted)."""
    wanted = {w.name for w in workers}
    missing = set(wanted)
    while True:
        for child in [master, *workers]:
            assert child.popen is not None
            if child.popen.poll() is not None:
                _died(child)
        try:
            listed = get_worker_list(_probe(master.host), master.port, timeout=5)
            names = {str(entry.get("name")) for entry in listed}
            missing = wanted - names
            if not missing:
                return
        except ClientError:
            pass
        if time.monotonic() > deadline:
            who = ", ".join(sorted(missing))
            raise StartupFailed(
                f"the master does not list {who} (not linked); see {workers[0].log} "
                f"and {master.log}; last lines of the master's log:\n{_log_tail(master)}"
            )
        time.sleep(0.2)


def _probe(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


@dataclass(frozen=True)
class _Key:
    """A key pair ``pt up`` made (or found) in the state directory."""

    home: Path
    fingerprint: str
    public_key: str


def _key(home: Path, name: str, say: Any) -> _Key:
    """The key pair in ``home``, made on the first run (GnuPG home 0700)."""
    try:
        keyring = Keyring(home, create=True)
        try:
            existing = keyring.secret_fingerprints()
            fingerprint = existing[0] if existing else keyring.generate(name)
            public = keyring.export_public(fingerprint).decode("ascii")
        finally:
            keyring.stop_agent()
    except KeyringError as exc:
        raise StartupFailed(f"key of {name}: {exc}") from None
    if not existing and keyring.gpg_home != keyring.home:
        say(f"keys      {home} is reached through {keyring.gpg_home} (short path for gpg-agent)")
    return _Key(home, fingerprint, public)


def _register_workers(
    database_url: str, workers: list[tuple[str, uuid.UUID, _Key, str]], region: str
) -> None:
    """Allow our workers on the master, with their keys, from this machine only, pinned
    to their client addresses and region (idempotent on the name: re-runs update the
    row, an operator's disable stays)."""
    pool = ConnectionPool(database_url, size=1)
    try:
        for name, worker_id, key, address in workers:
            register_worker(
                pool, name, worker_id, region, key.public_key, key.fingerprint, LOCAL_WORKER_IPS,
                address,
            )  # fmt: skip
    except WorkerConflict as exc:
        raise StartupFailed(f"registering {name}: {exc}") from None
    except psycopg2.Error as exc:
        raise StartupFailed(f"registering the workers in PostgreSQL: {exc}".strip()) from None
    finally:
        pool.close()


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM and SIGINT raise Interrupted, so every exit path stops the children."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _existing_stack(state_dir: Path) -> dict[str, Any] | None:
    """The up.json of a stack whose processes still run, else None (stale files are removed)."""
    document = _read_up_file(state_dir)
    if document is None:
        return None
    alive = [
        c
        for c in document.get("children", [])
        if _same_process(int(c["pid"]), str(c.get("started", "")))
    ]
    supervisor = document.get("supervisor_pid")
    if supervisor and _same_process(int(supervisor), str(document.get("supervisor_started") or "")):
        return document
    if alive:
        return document
    (state_dir / UP_FILE).unlink(missing_ok=True)
    return None


def _read_up_file(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / UP_FILE
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        fail(f"{path} cannot be read ({exc}); remove it after checking no server runs")
    return document


def _settings(
    config_path: Path | None,
    master_port: int | None,
    worker_port: int | None,
    workers: int | None,
    update_interval: float | None,
    provider: str | None = None,
) -> Settings:
    return settings_or_fail(
        config_path,
        market_provider=provider,
        master_port=master_port,
        worker_port=worker_port,
        workers=workers,
        update_interval=update_interval,
    )


def _endpoints(stack: Stack, master: Child, workers: list[Child]) -> dict[str, Any]:
    return {
        "state_dir": str(stack.state_dir),
        "logs": str(stack.state_dir / "logs"),
        "detached": stack.detached,
        "services_started": stack.services_started,
        "master": {"address": master.address, "pid": master.pid, "log": master.log},
        "workers": [
            {
                "name": w.name,
                "uuid": w.uuid,
                "address": w.address,
                "pid": w.pid,
                "log": w.log,
            }
            for w in workers
        ],
    }


# -- commands -----------------------------------------------------------------------------
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
    "--worker-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of worker-1 (default 2049); worker-2 takes the next one, and so on.",
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
    help="Return once everything answers, leaving it running; stop it with `pt down`.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds to wait for each step of the start-up.",
)
@json_option
def up(
    config_path: Path | None,
    state_dir: Path | None,
    workers: int | None,
    master_port: int | None,
    worker_port: int | None,
    update_interval: float | None,
    provider: str | None,
    detach: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Start everything: services, migrations, the master and its workers.

    In the foreground, Ctrl-C stops what this command started (workers, then
    the master, then Redis/PostgreSQL if it started them). With --detach it
    returns once everything answers; `pt down` stops it. Logs are in
    <state_dir>/logs/.
    """
    settings = _settings(config_path, master_port, worker_port, workers, update_interval, provider)
    directory = resolve_state_dir(state_dir if state_dir is not None else settings.state_dir)
    try:
        ensure_private_dir(directory)
    except (ServicesError, OSError) as exc:
        fail(f"state directory {directory}: {exc}")
    if (running := _existing_stack(directory)) is not None:
        fail(
            f"a stack started by `pt up` already runs from {directory} "
            f"(master pid {_master_pid(running)}): stop it with `pt down --state-dir {directory}`"
        )
    count = settings.workers
    ports = [settings.worker_port + i for i in range(count)]
    if ports[-1] > 65535:
        fail(f"worker ports {ports[0]}-{ports[-1]} go past 65535: choose a lower --worker-port")
    for what, host, port in [
        ("master", settings.master_host, settings.master_port),
        *[(f"worker-{i + 1}", settings.worker_host, p) for i, p in enumerate(ports)],
    ]:
        if not port_is_free(port, _probe(host)):
            fail(f"port {port} on {host} (for {what}) is already in use; choose another port")

    logs = directory / "logs"
    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    stack = Stack(directory, False, detach, None if detach else os.getpid())
    say = (lambda text: click.echo(text, err=True)) if as_json else click.echo
    started = False
    try:
        with _interruptible():
            master, started_workers = _start_stack(stack, settings, config_path, logs, timeout, say)
            started = True
            _announce(stack, master, started_workers, as_json)
            if detach:
                return
            code = _supervise(stack)
    except Interrupted as why:
        if started:
            click.echo(f"{why}: stopping", err=True)
            _teardown(stack, timeout, echo=True)
            sys.exit(0)
        click.echo(f"interrupted ({why}) while starting: stopping what was started", err=True)
        _teardown(stack, timeout, echo=True)
        sys.exit(130 if str(why) == "SIGINT" else 143)
    except (StartupFailed, ServicesError, schema.MigrationError) as exc:
        click.echo(f"error: {exc}", err=True)
        if stack.children or stack.services_started:
            click.echo("stopping what was started", err=True)
        _teardown(stack, timeout, echo=True)
        sys.exit(1)
    except BaseException:
        _teardown(stack, timeout, echo=True)  # a bug of ours must not leave servers behind
        raise
    _teardown(stack, timeout, echo=True)  # a child died: stop the rest
    sys.exit(code)


def _announce(stack: Stack, master: Child, workers: list[Child], as_json: bool) -> None:
    """The endpoints: a JSON document, or lines for people."""
    if as_json:
        print_json(_endpoints(stack, master, workers))
        return
    click.echo(f"master    {master.address}  (pid {master.pid})")
    for w in workers:
        click.echo(f"{w.name:<9} {w.address}  (pid {w.pid})")
    click.echo(f"logs      {stack.state_dir / 'logs'}")
    click.echo(f"Try: pt client --worker {workers[0].address} register USER --email E")
    if stack.detached:
        click.echo(f"Running in the background; stop with `pt down --state-dir {stack.state_dir}`.")
    else:
        click.echo("Press Ctrl-C to stop.")


def _master_pid(document: dict[str, Any]) -> str:
    for child in document.get("children", []):
        if child.get("role") == "master":
            return str(child.get("pid"))
    return "?"


def _start_stack(
    stack: Stack,
    settings: Settings,
    config_path: Path | None,
    logs: Path,
    timeout: float,
    say: Any,
) -> tuple[Child, list[Child]]:
    """Services, migrations, registration, master, workers; each step waited for."""
    directory = stack.state_dir
    if settings.redis_url and settings.database_url:
        redis_url, database_url = settings.redis_url, settings.database_url
    else:
        before = services_status(directory)
        already = bool(before["redis"]["running"] and before["postgres"]["running"])
        stack.services_started = not already
        stack.save()  # so `pt down` finds the services even if we die right here
        start_services(directory, timeout=timeout)
        urls = resolve_urls(settings, directory)
        redis_url, database_url = urls.redis_url, urls.database_url
        say("services  running" + ("" if stack.services_started else " (already were)"))
    applied = schema.migrate(database_url)
    if applied:
        say(f"schema    applied {', '.join(applied)}")

    count = settings.workers
    names = [f"worker-{i + 1}" for i in range(count)]
    identities = [(name, derive_worker_uuid(name)) for name in names]
    region = settings.region
    master_key = _key(master_home(settings, directory), "papertrader-master", say)
    worker_keys = {
        name: _key(worker_home(settings.with_overrides(worker_name=name), directory), name, say)
        for name in names
    }
    addresses = {
        name: join_host_port(settings.worker_host, settings.worker_port + index)
        for index, name in enumerate(names)
    }
    _register_workers(
        database_url, [(n, u, worker_keys[n], addresses[n]) for n, u in identities], region
    )
    say(f"keys      master {master_key.fingerprint}; {count} workers registered")

    config_args = ["--config", str(config_path)] if config_path is not None else []
    state_args = ["--state-dir", str(directory)]
    master = _launch(
        "master",
        "master",
        [
            "master",
            "run",
            "--host",
            settings.master_host,
            "--port",
            str(settings.master_port),
            "--log-file",
            str(logs / "master.log"),
            *config_args,
            *state_args,
        ],
        {
            **_child_env(settings, redis_url, database_url, logs / "master.log"),
            "PT_MASTER_GNUPG_HOME": str(master_key.home),
        },
        settings.master_host,
        settings.master_port,
        logs,
    )
    stack.children.append(master)
    stack.save()
    _wait_port(master, time.monotonic() + timeout)
    say(f"master    answering on {master.address}")

    master_address = format_address(_probe(settings.master_host), settings.master_port)
    started: list[Child] = []
    for index, (name, worker_id) in enumerate(identities):
        port = settings.worker_port + index
        child = _launch(
            name,
            "worker",
            [
                "worker",
                "run",
                "--name",
                name,
                "--uuid",
                str(worker_id),
                "--region",
                region,
                "--host",
                settings.worker_host,
                "--port",
                str(port),
                "--master",
                master_address,
                "--log-file",
                str(logs / f"{name}.log"),
                *config_args,
                *state_args,
            ],
            {
                **_child_env(settings, redis_url, database_url, logs / f"{name}.log"),
                "PT_WORKER_GNUPG_HOME": str(worker_keys[name].home),
                "PT_WORKER_KEY_FINGERPRINT": worker_keys[name].fingerprint,
                "PT_MASTER_FINGERPRINT": master_key.fingerprint,
            },
            settings.worker_host,
            port,
            logs,
            worker_uuid=str(worker_id),
        )
        stack.children.append(child)
        started.append(child)
        stack.save()
    deadline = time.monotonic() + timeout
    for child in started:
        _wait_port(child, deadline)
    _wait_listed(master, started, time.monotonic() + timeout)
    say(f"workers   {len(started)} linked to the master")
    return master, started


def _teardown(stack: Stack, timeout: float, echo: bool) -> None:
    """Stop the children (workers, then master), then services this run started.

    A second Ctrl-C is ignored meanwhile: stopping half-way would leave servers
    behind (SIGTERM/SIGKILL still end the children after ``timeout``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_children(stack.children, timeout, echo)
    if stack.services_started:
        try:
            stop_services(stack.state_dir, timeout=timeout)
            if echo:
                click.echo("services   stopped", err=True)
        except ServicesError as exc:
            click.echo(f"error: stopping the services: {exc}", err=True)
    stack.forget()


def _supervise(stack: Stack) -> int:
    """Wait in the foreground until a child dies (returns 1); signals raise Interrupted."""
    while True:
        for child in stack.children:
            assert child.popen is not None
            status = child.popen.poll()
            if status is not None:
                click.echo(
                    f"error: {child.name} {_exit_text(status)}; "
                    f"last lines of {child.log}:\n{_log_tail(child)}",
                    err=True,
                )
                return 1
        time.sleep(0.5)


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
    """Stop what `pt up` started from this state directory (and services it started)."""
    directory = resolve_state_dir(state_dir)
    document = _read_up_file(directory)
    if document is None:
        if as_json:
            print_json({"state_dir": str(directory), "stopped": {}})
        else:
            click.echo(f"nothing started by `pt up` in {directory}")
        return
    supervisor = document.get("supervisor_pid")
    stopped: dict[str, str] = {}
    if supervisor and _same_process(int(supervisor), str(document.get("supervisor_started") or "")):
        # A foreground `pt up`: let it stop its children itself, in order.
        os.kill(int(supervisor), signal.SIGTERM)
        deadline = time.monotonic() + timeout * 3
        while pid_alive(int(supervisor)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(int(supervisor)):
            stopped["pt up"] = "still running"
        elif not (directory / UP_FILE).exists():
            _report({"pt up": "stopped, with everything it started"}, directory, as_json)
            return
        else:
            stopped["pt up"] = "stopped"
    children = [
        Child(
            name=str(c["name"]),
            role=str(c["role"]),
            host=str(c["host"]),
            port=int(c["port"]),
            pid=int(c["pid"]),
            log=str(c["log"]),
            started=str(c.get("started", "")),
            uuid=c.get("uuid"),
        )
        for c in document.get("children", [])
    ]
    ordered = [c for c in children if c.role == "worker"] + [
        c for c in children if c.role != "worker"
    ]
    for child in ordered:
        stopped[child.name] = stop_child(child, timeout)
    if document.get("services_started"):
        try:
            result = stop_services(directory, timeout=timeout)
            for name, was_running in result.items():
                stopped[name] = "stopped" if was_running else "was not running"
        except ServicesError as exc:
            fail(f"stopping the services: {exc}")
    (directory / UP_FILE).unlink(missing_ok=True)
    _report(stopped, directory, as_json)


def _report(stopped: dict[str, str], directory: Path, as_json: bool) -> None:
    if as_json:
        print_json({"state_dir": str(directory), "stopped": stopped})
        return
    for name, outcome in stopped.items():
        click.echo(f"{name:<10} {outcome}")
