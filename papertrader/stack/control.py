"""What the ``pt up``, ``pt down`` and ``pt restart`` commands call.

* ``start_foreground``: plan the stack and start it under a supervisor in
  this process; the caller then runs the supervisor's loop until Ctrl-C.
* ``start_detached``: plan the stack, hand it to a background supervisor
  (``python -m papertrader.stack``, a session of its own, logging to
  ``logs/supervisor.log``) and return once that supervisor says the stack
  serves, or why it could not start.
* ``stop``: ask the supervisor to stop everything (it knows the order and the
  exit statuses); without one, or if it does not finish, stop what the record
  and ``run/`` name directly.
* ``restart``: through the supervisor's request directory when one runs,
  otherwise directly from the recorded recipe.

Only one stack per state directory: ``running_stack`` says whether one runs,
and ``start_*`` refuse a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from papertrader.services.state import ensure_private_dir, tail
from papertrader.stack.plan import Say, StackOptions, check_ports, prepare
from papertrader.stack.processes import ProcessId, probe_host, terminate
from papertrader.stack.record import (
    Child,
    StackError,
    StackRecord,
    load_record,
    locked,
    logs_dir,
    remove_record,
    requests_dir,
    run_dir,
    save_record,
)
from papertrader.stack.supervisor import (
    STOPPED_FILE,
    SUPERVISOR_LOG,
    Supervisor,
    clear_stop_report,
)
from papertrader.stack.teardown import Report, stop_announced, teardown


def running_stack(state_dir: Path) -> StackRecord | None:
    """The record of a stack that still runs here; a stale record is removed."""
    with locked(state_dir):
        record = load_record(state_dir)
        if record is None:
            return None
        if record.supervised() or any(c.alive() for c in record.children):
            return record
        remove_record(state_dir)
    return None


def master_lists_workers(record: StackRecord) -> bool:
    """True once getWorkerList on the master names every worker of the stack."""
    from papertrader.client import ClientError, get_worker_list
    from papertrader.config import ConfigError, load_settings
    from papertrader.tls.contexts import TlsConfigError
    from papertrader.tls.setup import peer_context

    masters = [c for c in record.children if c.role == "master"]
    wanted = {c.name for c in record.children if c.role == "worker"}
    if not masters or not wanted:
        return True
    try:
        master = masters[0]
        # Verified as the master's own workers verify it: its settings' tls and tls_ca.
        context = peer_context(load_settings(environ=master.env), record.state_dir)
        listed = get_worker_list(
            probe_host(master.host),
            master.port,
            timeout=5,
            ssl_context=context,
            tls=context is not None,
        )
    except (ClientError, ConfigError, TlsConfigError):
        return False
    return wanted <= {str(entry.get("name")) for entry in listed}


def _new_record(options: StackOptions) -> StackRecord:
    try:
        ensure_private_dir(options.state_dir)
        logs_dir(options.state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StackError(f"state directory {options.state_dir}: {exc}") from None
    if (running := running_stack(options.state_dir)) is not None:
        raise StackError(
            f"a stack already runs from {options.state_dir} ({_who(running)}): "
            f"stop it with `pt down --state-dir {options.state_dir}`"
        )
    check_ports(options)
    clear_stop_report(options.state_dir)
    return StackRecord(options.state_dir, detached=options.detached, ha=options.ha)


def _who(record: StackRecord) -> str:
    for child in record.children:
        if child.role == "master" and child.alive():
            return f"master pid {child.pid}"
    if record.supervised():
        return f"supervisor pid {record.supervisor_pid}"
    return "its processes"


def run_foreground(
    options: StackOptions,
    say: Say,
    *,
    echo: Say | None = None,
    on_started: Callable[[StackRecord], None] | None = None,
    report: Report | None = None,
    every: Callable[[], None] | None = None,
) -> str:
    """Plan, start and supervise the stack in this process until SIGINT or SIGTERM.

    The signal handlers are in place from the first step to the last, so a
    Ctrl-C at any moment stops exactly what was started so far, in order.
    Returns the signal's name; raises StackError (after stopping everything
    started) if the stack could not start.
    """
    record = _new_record(options)
    record.supervisor_pid = os.getpid()
    record.supervisor_started = ProcessId.of(os.getpid()).started
    supervisor = Supervisor(record, options.timeout, is_ready=master_lists_workers, echo=echo)
    with supervisor.signals_handled():
        try:
            with locked(options.state_dir):
                save_record(record)
            prepare(record, options, say)
            if supervisor.stopping:
                raise StackError(f"interrupted ({supervisor.stop_reason}) while starting")
            supervisor.start_all()
        except BaseException:
            supervisor.stop_all(options.timeout, report or _echo_report(say))
            raise
        if on_started is not None:
            on_started(record)
        reason = supervisor.run(every)
        # A second Ctrl-C must not leave servers behind half-way (SIGTERM and
        # SIGKILL still end each child after the timeout).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if echo is not None:
            echo(f"{reason}: stopping")
        supervisor.stop_all(options.timeout, report)
    return reason


def _echo_report(say: Say) -> Report:
    return lambda name, outcome: say(f"{name:<10} {outcome}")


def start_detached(options: StackOptions, say: Say) -> StackRecord:
    """Plan the stack, start a background supervisor, wait until it serves (or failed)."""
    record = _new_record(options)
    try:
        with locked(options.state_dir):
            save_record(record)
        prepare(record, options, say)
        with locked(options.state_dir):
            save_record(record)
        daemon = _spawn_supervisor(options)
    except BaseException:
        teardown(record, lambda c: "was not started", options.timeout, _echo_report(say))
        raise
    deadline = time.monotonic() + options.timeout * (2 + len(record.children))
    while True:
        current = load_record(options.state_dir)
        if current is not None and current.phase == "running":
            return current
        if current is not None and current.phase == "failed":
            remove_record(options.state_dir)
            raise StackError(current.error or "the stack could not start")
        if daemon.poll() is not None or time.monotonic() > deadline:
            # The supervisor died (or hangs) before saying anything: clean up after it.
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
            log = logs_dir(options.state_dir) / SUPERVISOR_LOG
            if current is not None:
                teardown(current, _stop_recorded(options.timeout), options.timeout)
            raise StackError(
                f"the supervisor stopped before the stack served; last lines of {log}:\n"
                f"{tail(log, 20) or '(empty)'}"
            )
        time.sleep(0.2)


def _spawn_supervisor(options: StackOptions) -> subprocess.Popen[bytes]:
    """``python -m papertrader.stack`` in a session of its own, outliving this process."""
    log = logs_dir(options.state_dir) / SUPERVISOR_LOG  # one file per process
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "papertrader.stack", str(options.state_dir),
             "--timeout", repr(options.timeout)],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            cwd=str(options.state_dir),
            start_new_session=True,
        )  # fmt: skip
    finally:
        os.close(fd)


def _stop_recorded(timeout: float) -> Callable[[Child], str]:
    """How to stop a child this process did not start: by its recorded pid and start time."""

    def stop(child: Child) -> str:
        process = child.process
        return "was not running" if process is None else terminate(process, timeout)

    return stop


def stop(state_dir: Path, timeout: float, report: Report | None = None) -> dict[str, str]:
    """Stop whatever runs for ``state_dir`` (see the module doc); outcomes by name."""
    outcomes: dict[str, str] = {}

    def note(name: str, outcome: str) -> None:
        outcomes[name] = outcome
        if report is not None:
            report(name, outcome)

    record = load_record(state_dir)
    supervisor = record.supervisor if record is not None else None
    if supervisor is not None and supervisor.alive():
        os.kill(supervisor.pid, signal.SIGTERM)
        budget = timeout * 2 + 15  # workers together, then the master, then the services
        deadline = time.monotonic() + budget
        while supervisor.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if supervisor.alive():
            os.kill(supervisor.pid, signal.SIGKILL)
            note("supervisor", f"killed (did not finish within {budget:g} s)")
        stopped_file = run_dir(state_dir) / STOPPED_FILE
        with contextlib.suppress(OSError, ValueError):
            for name, outcome in json.loads(stopped_file.read_text(encoding="utf-8")).items():
                note(name, outcome)
            stopped_file.unlink()
        record = load_record(state_dir)
    if record is None:
        stop_announced(StackRecord(state_dir), timeout, note)
        return outcomes
    with locked(state_dir):
        teardown(record, _stop_recorded(timeout), timeout, note)
    return outcomes


def restart(state_dir: Path, names: list[str], timeout: float) -> tuple[dict[str, str], bool]:
    """Restart children by name (all when empty: master first, then each worker).

    Returns the outcome per name and whether a supervisor did it (if not, the
    restarted processes are not watched: nothing restarts them if they crash).
    """
    record = load_record(state_dir)
    if record is None:
        raise StackError(f"no stack runs from {state_dir}: start one with `pt up`")
    chosen = names or [c.name for c in record.children if c.role == "master"] + [
        c.name for c in record.children if c.role != "master"
    ]
    for name in chosen:
        record.child(name)  # StackError naming the known ones
    if record.supervised():
        return _ask_supervisor(state_dir, chosen, timeout * (2 * len(chosen) + 1) + 10), True
    results: dict[str, str] = {}
    supervisor = Supervisor(record, timeout)
    for name in chosen:
        child = record.child(name)
        stopped = _stop_recorded(timeout)(child)
        for server in _announced(state_dir, name):
            terminate(server, timeout)
        try:
            supervisor.launch(child)
            supervisor.wait_port(child, time.monotonic() + timeout)
        except StackError as exc:
            results[name] = str(exc).splitlines()[0]
            continue
        results[name] = f"restarted (pid {child.pid})" + (
            "" if stopped == "stopped" else f"; it {stopped}"
        )
    return results, False


def _announced(state_dir: Path, name: str) -> list[ProcessId]:
    from papertrader.stack.runfiles import running_servers

    return [s.process for s in running_servers(state_dir) if s.name == name]


def _ask_supervisor(state_dir: Path, names: list[str], timeout: float) -> dict[str, str]:
    directory = requests_dir(state_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    request = directory / f"{uuid.uuid4().hex}.request"
    request.write_text(json.dumps({"restart": names}), encoding="utf-8")
    answer = request.with_suffix(".done")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            document: dict[str, Any] = json.loads(answer.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            time.sleep(0.1)
            continue
        answer.unlink(missing_ok=True)
        results = document.get("results")
        if isinstance(results, str):
            raise StackError(results)
        return {str(k): str(v) for k, v in (results or {}).items()}
    request.unlink(missing_ok=True)
    raise StackError(f"the supervisor did not answer within {timeout:g} s; see its log")
