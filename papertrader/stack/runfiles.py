"""Servers announce themselves in ``<state_dir>/run/``, however they were started.

A master or worker writes ``run/<name>.<pid>.json`` once it serves (its
address, log file, command line, start time) and removes it when it stops.
That is how ``pt down`` stops a master an operator restarted by hand with
``pt master run --state-dir DIR``, and how ``pt status`` shows it: the stack's
record only knows what the supervisor started.

A file left by a process killed with SIGKILL is recognised by its pid and
start time no longer matching and is removed by the next reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from papertrader.services.state import write_private_file
from papertrader.stack.processes import ProcessId, start_time
from papertrader.stack.record import now_iso, run_dir


@dataclass
class RunningServer:
    """What one serving process says about itself."""

    name: str
    role: str
    pid: int
    started: str
    address: str
    log: str
    started_at: str = field(default_factory=now_iso)
    argv: list[str] = field(default_factory=list)
    metrics: str | None = None

    @property
    def process(self) -> ProcessId:
        return ProcessId(self.pid, self.started)


def _path(state_dir: Path, name: str, pid: int) -> Path:
    return run_dir(state_dir) / f"{name}.{pid}.json"


@contextlib.contextmanager
def announced(
    state_dir: Path,
    name: str,
    role: str,
    address: str,
    log: Path,
    metrics: str | None = None,
) -> Iterator[RunningServer]:
    """Announce this process for the ``with`` body (the time it serves)."""
    pid = os.getpid()
    server = RunningServer(
        name=name,
        role=role,
        pid=pid,
        started=start_time(pid),
        address=address,
        log=str(log),
        argv=list(sys.argv),
        metrics=metrics,
    )
    path: Path | None = _path(state_dir, name, pid)
    assert path is not None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_file(path, json.dumps(asdict(server), indent=2, sort_keys=True) + "\n")
    except OSError:
        path = None  # a read-only state directory must not stop a server from serving
    try:
        yield server
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def running_servers(state_dir: Path) -> list[RunningServer]:
    """Every server announced in ``state_dir`` that still runs (stale files are removed)."""
    directory = run_dir(state_dir)
    found: list[RunningServer] = []
    try:
        paths = sorted(directory.glob("*.json"))
    except OSError:
        return found
    for path in paths:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            server = RunningServer(**document)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, TypeError):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if server.process.alive():
            found.append(server)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return found
