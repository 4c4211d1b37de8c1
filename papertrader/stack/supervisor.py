"""The supervisor: start the stack's children, keep them running, stop them in order.

One supervisor watches one state directory's stack: the foreground ``pt up``
process, or, with ``--detach``, a background process of its own
(``python -m papertrader.stack``) so the stack keeps its restarts after the
terminal is gone. Either way it is the same code:

* **Start** (``start_all``): the master, until its port answers; then every
  worker, until each port answers and the master lists each of them (linked
  and accepted). A child that dies or never answers here fails the start,
  with its name and the end of its console: a wrong setting should stop
  ``pt up`` with a message, not loop forever.
* **Watch** (``run``): a child that exits afterwards is started again with
  the same command line and environment after a back-off (1 s, doubling, at
  most 30 s; back to 1 s once a run lasted a minute), and the supervisor's log
  says what happened and shows the end of the child's console. Services this
  stack started (Redis, PostgreSQL) are looked at too and started again if
  they stopped. ``pt restart`` leaves requests in ``run/requests/``, served
  here between two looks.
* **Stop** (``stop_all``, on SIGTERM/SIGINT or ``pt down``): workers first
  (they hold the clients), then the master (which finishes its drain), then
  the services if this stack started them; the record is removed last.

Everything it learns goes into the record (``record.py``) at once, which is
what ``pt status`` reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

from loguru import logger

from papertrader.services.state import tail
from papertrader.stack.processes import (
    exit_text,
    port_answers,
    start_time,
    terminate,
)
from papertrader.stack.record import (
    Child,
    StackError,
    StackRecord,
    locked,
    logs_dir,
    now_iso,
    requests_dir,
    run_dir,
    save_record,
)
from papertrader.stack.teardown import teardown

#: Back-off before restarting a crashed child: first delay, cap, and how long a
#: run must last for the next crash to start from the first delay again.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
#: Seconds between two looks at the children.
POLL_SECONDS = 0.2
#: Seconds between two looks at the services (a status check costs a few syscalls).
SERVICES_POLL_SECONDS = 5.0
CONSOLE_TAIL_LINES = 20
SUPERVISOR_LOG = "supervisor.log"
#: Outcomes of the last stop, for the `pt down` that asked for it.
STOPPED_FILE = "stopped.json"


class StartupFailed(StackError):
    """A child died or never answered while the stack was starting."""


class Interrupted(StackError):
    """SIGINT or SIGTERM arrived while the stack was starting."""


def backoff_delay(failures: int) -> float:
    """Seconds to wait before restart number ``failures`` (1-based) of a crash series."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, failures - 1)))


def console_tail(child: Child) -> str:
    """The end of a child's console, for messages about why it stopped."""
    text: str = tail(Path(child.console), CONSOLE_TAIL_LINES)
    return text.rstrip() or "(the console is empty)"


class Supervisor:
    """Owns the children of one stack record for the life of this process."""

    def __init__(
        self,
        record: StackRecord,
        timeout: float,
        *,
        is_ready: Callable[[StackRecord], bool] | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.record = record
        self.timeout = timeout
        self._is_ready = is_ready
        self._echo = echo
        self._popens: dict[str, subprocess.Popen[bytes]] = {}
        self._launched_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._wake_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._stop_reason = ""
        self._services_next_look = 0.0
        self._services_failures = 0
        self._ha_notes: set[str] = set()

    # -- signals -------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Ask the loop (or the start-up) to stop everything; safe from a signal handler."""
        self._stop_reason = reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def stop_reason(self) -> str:
        return self._stop_reason

    @contextlib.contextmanager
    def signals_handled(self) -> Iterator[None]:
        """SIGTERM and SIGINT ask for a stop while the ``with`` body runs."""

        def handler(signum: int, frame: object) -> None:
            self.request_stop(signal.Signals(signum).name)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    # -- recording -----------------------------------------------------------------
    def _save(self) -> None:
        with locked(self.record.state_dir):
            save_record(self.record)

    def _say(self, text: str) -> None:
        logger.info(text)
        if self._echo is not None:
            self._echo(text)

    def _warn(self, text: str) -> None:
        logger.warning(text)
        if self._echo is not None:
            self._echo(text)

    # -- one child -----------------------------------------------------------------
    def launch(self, child: Child) -> None:
        """Start ``child`` from its recorded recipe (its console appended to, 0600)."""
        console = Path(child.console)
        console.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(console, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        cwd = child.cwd if Path(child.cwd).is_dir() else str(self.record.state_dir)
        try:
            # An entry in the log's own format, so `pt logs` shows it in its place.
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
            os.write(
                fd,
                f"{stamp} | INFO     | papertrader/stack/supervisor.py:launch:0 | "
                f"the supervisor starts {child.name}: {' '.join(child.argv[1:])}\n".encode(),
            )
            popen = subprocess.Popen(
                child.argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=child.env,
                cwd=cwd,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops in order
            )
        except OSError as exc:
            raise StackError(f"cannot start {child.name} ({child.argv[0]}): {exc}") from None
        finally:
            os.close(fd)
        self._popens[child.name] = popen
        self._launched_at[child.name] = time.monotonic()
        child.pid = popen.pid
        child.started = start_time(popen.pid)
        child.started_at = now_iso()
        child.state = "running"
        child.next_start_at = None
        self._save()

    def _exited(self, child: Child) -> int | None:
        """The exit status of a child we launched, once it has exited (reaps it)."""
        popen = self._popens.get(child.name)
        if popen is None:
            return None if child.alive() else -signal.SIGKILL
        return popen.poll()

    def stop_child(self, child: Child, timeout: float) -> str:
        """SIGTERM then SIGKILL; the outcome for people. Leaves the child ``stopped``."""
        popen = self._popens.get(child.name)
        process = child.process
        if process is None:
            outcome = "was not running"
        elif popen is not None:
            if popen.poll() is not None:
                outcome = f"had already stopped: it {exit_text(popen.returncode)}"
            else:
                outcome = terminate(process, timeout, gone=lambda: popen.poll() is not None)
        else:
            outcome = terminate(process, timeout)
        child.state = "stopped"
        child.next_start_at = None
        return outcome

    # -- start ---------------------------------------------------------------------
    def _check_start(self, child: Child, deadline: float, what: str) -> None:
        if self._stop.is_set():
            raise Interrupted(self._stop_reason or "stop requested")
        status = self._exited(child)
        if status is not None:
            raise StartupFailed(
                f"{child.name} {exit_text(status)} while starting; "
                f"last lines of {child.console}:\n{console_tail(child)}"
            )
        if time.monotonic() > deadline:
            raise StartupFailed(
                f"{child.name} {what}; last lines of {child.console}:\n{console_tail(child)}"
            )

    def wait_port(self, child: Child, deadline: float) -> None:
        """Until ``child`` accepts connections; StartupFailed if it dies or the time is up."""
        while not port_answers(child.host, child.port):
            self._check_start(child, deadline, f"does not answer on {child.host}:{child.port}")
            time.sleep(0.1)

    def start_all(self) -> None:
        """Start every child in order and wait until the stack serves (see the module doc)."""
        masters = [c for c in self.record.children if c.role == "master"]
        others = [c for c in self.record.children if c.role != "master"]
        for child in masters:
            self.launch(child)
            self.wait_port(child, time.monotonic() + self.timeout)
            self._say(f"{child.name:<9} answering on {child.endpoint} (pid {child.pid})")
        for child in others:
            self.launch(child)
        deadline = time.monotonic() + self.timeout
        for child in others:
            self.wait_port(child, deadline)
        if self._is_ready is not None:
            deadline = time.monotonic() + self.timeout
            while not self._is_ready(self.record):
                for child in self.record.children:
                    self._check_start(
                        child,
                        deadline,
                        "is not linked: the master does not list every worker; see the "
                        "master's log",
                    )
                time.sleep(0.2)
        if others:
            self._say(f"workers   {len(others)} linked to the master")
        self.record.phase = "running"
        self._save()

    # -- watch ---------------------------------------------------------------------
    def run(self, every: Callable[[], None] | None = None) -> str:
        """Watch until a stop is requested; returns its reason.

        ``every`` runs after each look (the foreground ``pt up`` prints the
        servers' new log entries there).
        """
        while not self._stop.wait(POLL_SECONDS):
            self.tick()
            if every is not None:
                every()
        return self._stop_reason

    def tick(self) -> None:
        """One look: crashed children, due restarts, requests, services."""
        now = time.monotonic()
        for child in self.record.children:
            if child.state == "running":
                status = self._exited(child)
                if status is not None:
                    self._crashed(child, status, now)
            elif child.state == "backoff" and now >= self._wake_at.get(child.name, 0.0):
                self._restart_now(child, "after a crash")
        self._serve_requests()
        if self.record.services_started and now >= self._services_next_look:
            self._look_at_services(now)

    def _crashed(self, child: Child, status: int, now: float) -> None:
        ran = now - self._launched_at.get(child.name, now)
        failures = 1 if ran >= STABLE_AFTER else self._failures.get(child.name, 0) + 1
        self._failures[child.name] = failures
        delay = backoff_delay(failures)
        child.restarts += 1
        child.last_exit = exit_text(status)
        child.last_exit_at = now_iso()
        child.state = "backoff"
        child.next_start_at = (datetime.now(timezone.utc) + timedelta(seconds=delay)).isoformat(
            timespec="seconds"
        )
        self._wake_at[child.name] = now + delay
        self._popens.pop(child.name, None)
        self._save()
        self._warn(
            f"{child.name} {child.last_exit} after {ran:.0f} s; restarting in {delay:g} s "
            f"(restart {child.restarts}); last lines of {child.console}:\n{console_tail(child)}"
        )

    def _restart_now(self, child: Child, why: str) -> str:
        try:
            self.launch(child)
        except StackError as exc:
            self._crashed_to_start(child, str(exc))
            return f"could not be started: {exc}"
        self._say(f"{child.name} started again {why} (pid {child.pid})")
        return f"restarted (pid {child.pid})"

    def _crashed_to_start(self, child: Child, why: str) -> None:
        failures = self._failures.get(child.name, 0) + 1
        self._failures[child.name] = failures
        delay = backoff_delay(failures)
        child.state = "backoff"
        child.last_exit = why
        child.last_exit_at = now_iso()
        self._wake_at[child.name] = time.monotonic() + delay
        self._save()
        self._warn(f"{child.name}: {why}; trying again in {delay:g} s")

    def restart(self, names: list[str]) -> dict[str, str]:
        """An operator's restart: stop gracefully, start at once, wait for the port."""
        results: dict[str, str] = {}
        for name in names:
            child = self.record.child(name)
            stopped = self.stop_child(child, self.timeout)
            self._popens.pop(child.name, None)
            outcome = self._restart_now(child, "on request")
            if child.state == "running":
                try:
                    self.wait_port(child, time.monotonic() + self.timeout)
                except StackError as exc:
                    outcome = f"restarted, but {str(exc).splitlines()[0]}"
            results[name] = f"{stopped}; {outcome}" if stopped != "stopped" else outcome
        return results

    def _serve_requests(self) -> None:
        directory = requests_dir(self.record.state_dir)
        try:
            pending = sorted(directory.glob("*.request"))
        except OSError:
            return
        for path in pending:
            try:
                request = json.loads(path.read_text(encoding="utf-8"))
                names = [str(n) for n in request.get("restart", [])]
                results: dict[str, str] | str = self.restart(names)
            except (OSError, ValueError, AttributeError) as exc:
                results = f"unreadable request: {exc}"
            except StackError as exc:
                results = str(exc)
            answer = path.with_suffix(".done")
            with contextlib.suppress(OSError):
                answer.write_text(json.dumps({"results": results}), encoding="utf-8")
                path.unlink()

    def _look_at_services(self, now: float) -> None:
        from papertrader.services import ServicesError, services_status, start_services

        self._services_next_look = now + SERVICES_POLL_SECONDS
        try:
            report = services_status(self.record.state_dir)
        except ServicesError as exc:
            self._warn(f"services: {exc}")
            return
        down = [name for name in ("redis", "postgres") if not report[name]["running"]]
        if self.record.ha:
            down = self._look_at_ha_services(down)
        if not down:
            self._services_failures = 0
            return
        self._services_failures += 1
        self._warn(f"{' and '.join(down)} stopped; starting again")
        try:
            start_services(self.record.state_dir, timeout=self.timeout)
        except ServicesError as exc:
            delay = backoff_delay(self._services_failures)
            self._services_next_look = time.monotonic() + delay
            self._warn(f"services could not be started ({exc}); trying again in {delay:g} s")
            return
        self._say(f"{' and '.join(down)} running again")

    def _look_at_ha_services(self, down: list[str]) -> list[str]:
        """The services of ``pt up --ha`` (``ha.py``, ``ha_redis.py``), which look after
        themselves: nothing is left for ``start_services`` (never a stopped PostgreSQL
        primary; a Redis node only in the role the Sentinels gave it)."""
        from papertrader.stack.ha import look_at_ha_services

        notes = look_at_ha_services(self.record, self.timeout)
        for note in notes:
            if note not in self._ha_notes:
                self._warn(note)
        self._ha_notes = set(notes)
        return []

    # -- stop ----------------------------------------------------------------------
    def stop_all(
        self,
        timeout: float,
        report: Callable[[str, str], None] | None = None,
        forget: bool = True,
    ) -> dict[str, str]:
        """Stop the children (workers together, then the master), services, the record.

        The outcomes are also left in ``run/stopped.json`` for a ``pt down``
        that asked for this stop and waits for it.
        """
        outcomes: dict[str, str] = {}

        def note(name: str, outcome: str) -> None:
            outcomes[name] = outcome
            logger.info(f"{name} {outcome}")
            if report is not None:
                report(name, outcome)

        def stop(child: Child) -> str:
            return self.stop_child(child, timeout)

        try:
            teardown(self.record, stop, timeout, note, forget=forget)
        finally:
            with contextlib.suppress(OSError):
                stopped = run_dir(self.record.state_dir) / STOPPED_FILE
                stopped.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                stopped.write_text(json.dumps(outcomes), encoding="utf-8")
        return outcomes


def install_supervisor_logging(state_dir: Path) -> None:
    """The supervisor's own log, ``logs/supervisor.log``, written entry by entry.

    Same format as the servers' logs, so ``pt logs`` merges it with theirs; no
    entry is held in memory (a supervisor logs little, and what it logs
    explains restarts, which must be on disk at once).
    """
    from papertrader.log import install_logging

    install_logging(logs_dir(state_dir) / SUPERVISOR_LOG, 1, 1.0, also_stderr=False)


def clear_stop_report(state_dir: Path) -> None:
    """Forget the outcomes of an earlier stop (a new supervisor starts)."""
    (run_dir(state_dir) / STOPPED_FILE).unlink(missing_ok=True)
