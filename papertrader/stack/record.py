"""The stack's record: ``<state_dir>/stack.json``, everything needed to restart any child.

``pt up`` writes it before it starts anything, and the supervisor keeps it
current as children start, exit and restart. It holds, per child, the exact
command line, working directory and environment the child was started with
(the settings ``pt up`` resolved: ports, update interval, URLs, key homes), so
``pt restart master`` brings back the same master even after the supervisor
itself was killed, and ``pt status`` and ``pt down`` know what belongs to the
stack without asking anyone.

The environment is a closed set, not a copy of the caller's: every ``PT_*``
variable (the settings), the variables the stack sets itself, and the few a
process needs to run (``PATH``, ``HOME``, locale, proxies, ``XDG_*``...). It
may hold database and Redis passwords, like ``services.json``; the file is
written 0600, atomically, under ``stack.lock`` so the supervisor and a
command never overwrite each other's changes.

Other engineers add per-child settings (TLS files, ACL users and roles) as
``env`` entries of the child's spec: nothing here needs to change for that.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from papertrader.config.settings import join_host_port
from papertrader.services.errors import ServicesError
from papertrader.services.state import ensure_private_dir, write_private_file
from papertrader.stack.processes import ProcessId, probe_host

RECORD_FILE = "stack.json"
LOCK_FILE = "stack.lock"
RECORD_VERSION = 2

#: Where servers announce themselves (``runfiles.py``) and commands leave requests.
RUN_DIR = "run"
REQUESTS_DIR = "requests"
LOGS_DIR = "logs"

#: Besides every PT_* variable: what a child process needs from the caller's environment.
_KEPT_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GNUPGHOME",
    }
)
_KEPT_PATTERN = re.compile(r"(PT_|LC_|XDG_)\w*|(?i:(http|https|no|all)_proxy)")


class StackError(Exception):
    """The stack cannot do what was asked; the message says why and what to do."""


def now_iso() -> str:
    """The current UTC time as ISO 8601 (what the record and ``pt status`` show)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def kept_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` a child inherits: PT_* settings and what processes need."""
    return {
        name: value
        for name, value in environ.items()
        if name in _KEPT_NAMES or _KEPT_PATTERN.fullmatch(name)
    }


@dataclass
class Child:
    """One server process of the stack: how to start it, and what it is doing now.

    The first group of fields is the recipe (never changes after ``pt up``
    planned it); the second is the supervisor's view of the current run.
    """

    name: str
    role: str  # "master" or "worker"
    argv: list[str]
    env: dict[str, str]
    cwd: str
    host: str
    port: int
    log: str  # the process's own log file (loguru)
    console: str  # its stdout and stderr (what is printed before logging starts): its log
    uuid: str | None = None
    metrics: str | None = None  # host:port of /metrics and /healthz, when enabled
    web: str | None = None  # a worker's web page (its origin), when it serves one

    pid: int | None = None
    started: str = ""  # /proc start time of ``pid``
    started_at: str | None = None
    state: str = "planned"  # planned, running, backoff, stopped
    restarts: int = 0  # restarts after a crash (not counting `pt restart`)
    last_exit: str | None = None
    last_exit_at: str | None = None
    next_start_at: str | None = None

    @property
    def endpoint(self) -> str:
        """host:port to reach it (a wildcard bind shown as loopback)."""
        return join_host_port(probe_host(self.host), self.port)

    @property
    def process(self) -> ProcessId | None:
        """The recorded process, if one was started."""
        return None if self.pid is None else ProcessId(self.pid, self.started)

    def alive(self) -> bool:
        """True while the recorded process still runs."""
        process = self.process
        return process is not None and process.alive()


@dataclass
class StackRecord:
    """The whole ``stack.json`` of one state directory."""

    state_dir: Path
    services_started: bool = False
    detached: bool = False
    #: ``pt up --ha``: a standby master and replicated services (``ha.py``).
    ha: bool = False
    phase: str = "starting"  # starting, running, failed, stopping
    error: str | None = None
    supervisor_pid: int | None = None
    supervisor_started: str = ""
    created_at: str = field(default_factory=now_iso)
    children: list[Child] = field(default_factory=list)
    version: int = RECORD_VERSION

    @property
    def supervisor(self) -> ProcessId | None:
        """The supervising process (a foreground ``pt up`` or the detached supervisor)."""
        if self.supervisor_pid is None:
            return None
        return ProcessId(self.supervisor_pid, self.supervisor_started)

    def supervised(self) -> bool:
        """True while a supervisor watches this stack."""
        supervisor = self.supervisor
        return supervisor is not None and supervisor.alive()

    def child(self, name: str) -> Child:
        """The child called ``name``; StackError listing the names otherwise."""
        for child in self.children:
            if child.name == name:
                return child
        known = ", ".join(c.name for c in self.children) or "none"
        raise StackError(f"the stack has no process {name!r} (it has: {known})")

    def ordered_for_stop(self) -> list[Child]:
        """Workers first (they hold the clients), then the master."""
        return [c for c in self.children if c.role != "master"] + [
            c for c in self.children if c.role == "master"
        ]

    def to_json(self) -> str:
        document = asdict(self)
        document["state_dir"] = str(self.state_dir)
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Path) -> StackRecord:
        try:
            document = json.loads(text)
            if not isinstance(document, dict):
                raise TypeError("not a JSON object")
            version = int(document.get("version", 0))
            if version != RECORD_VERSION:
                raise ValueError(f"unsupported version {version}")
            children = [Child(**_known(Child, c)) for c in document.get("children", [])]
            values = _known(cls, document)
            values["state_dir"] = Path(values["state_dir"])
            values["children"] = children
            return cls(**values)
        except (ValueError, TypeError, KeyError) as exc:
            raise StackError(
                f"{source} is damaged ({exc}); check that no server of this state directory "
                "runs, then remove it"
            ) from None


def _known(cls: type[Any], document: dict[str, Any]) -> dict[str, Any]:
    """Only the keys ``cls`` declares: a newer record's extra keys do not break an older reader."""
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in document.items() if key in names}


def record_path(state_dir: Path) -> Path:
    return state_dir / RECORD_FILE


def logs_dir(state_dir: Path) -> Path:
    return state_dir / LOGS_DIR


def run_dir(state_dir: Path) -> Path:
    return state_dir / RUN_DIR


def requests_dir(state_dir: Path) -> Path:
    return run_dir(state_dir) / REQUESTS_DIR


def load_record(state_dir: Path) -> StackRecord | None:
    """The record of ``state_dir``, or None when no stack was started there."""
    path = record_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StackError(f"cannot read {path}: {exc.strerror or exc}") from None
    return StackRecord.from_json(text, path)


def save_record(record: StackRecord) -> None:
    """Write the record (0600, atomic: a crash never leaves half of it)."""
    try:
        write_private_file(record_path(record.state_dir), record.to_json())
    except OSError as exc:
        raise StackError(f"cannot write {record_path(record.state_dir)}: {exc}") from None


def remove_record(state_dir: Path) -> None:
    record_path(state_dir).unlink(missing_ok=True)


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold ``stack.lock`` for a read-change-write of the record.

    Short sections only: the supervisor takes it for every change it records.
    """
    try:
        ensure_private_dir(state_dir)
    except ServicesError as exc:
        raise StackError(str(exc)) from None
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
