"""Processes we start and stop, named by pid *and* start time.

A pid alone is not an identity: after a crash and a reboot (or simply a busy
machine) the number may belong to another program. Every process the stack
records is remembered with its start time from ``/proc/<pid>/stat`` (clock
ticks since boot), and is only ever signalled while both still match.

Children lead their own process group (``start_new_session``), so a signal
reaches the server and anything it spawned (gpg-agent is started detached by
gpg itself and is stopped by the keyring, not here).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from papertrader.services.state import pid_alive

#: How often the stop loop looks whether a process is gone.
_POLL = 0.05


def start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), or "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


@dataclass(frozen=True)
class ProcessId:
    """A process as the stack remembers it: pid plus start time."""

    pid: int
    started: str

    @classmethod
    def of(cls, pid: int) -> ProcessId:
        """The identity of the running process ``pid`` (now)."""
        return cls(pid, start_time(pid))

    def alive(self) -> bool:
        """True while ``pid`` runs and is still the process we recorded (not a recycled pid)."""
        if not pid_alive(self.pid):
            return False
        return not self.started or start_time(self.pid) in ("", self.started)


def exit_text(status: int) -> str:
    """``exited with status 1`` or ``was killed by SIGKILL`` (a Popen return code)."""
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def send_signal(pid: int, signum: int) -> None:
    """Signal the process group ``pid`` leads, else the pid alone; gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signum)
                return
        except ProcessLookupError:
            return
        os.kill(pid, signum)


def wait_gone(gone: Callable[[], bool], timeout: float) -> bool:
    """Poll ``gone`` until it is true or ``timeout`` passes; returns its last answer."""
    deadline = time.monotonic() + timeout
    while not gone():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def terminate(process: ProcessId, timeout: float, gone: Callable[[], bool] | None = None) -> str:
    """SIGTERM, then SIGKILL after ``timeout``; returns what happened, for people.

    ``gone`` overrides how the end is seen (a ``Popen.poll`` reaps our own
    child, where ``/proc`` would show a zombie until someone waits for it).
    """
    is_gone = gone if gone is not None else (lambda: not process.alive())
    if is_gone():
        return "was not running"
    send_signal(process.pid, signal.SIGTERM)
    if wait_gone(is_gone, timeout):
        return "stopped"
    send_signal(process.pid, signal.SIGKILL)
    wait_gone(is_gone, 5.0)
    return f"killed (did not stop within {timeout:g} s)"


def probe_host(host: str) -> str:
    """Where to knock to reach a server bound to ``host`` (wildcards mean loopback)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port`` now."""
    try:
        with socket.create_connection((probe_host(host), port), timeout=timeout):
            return True
    except OSError:
        return False
