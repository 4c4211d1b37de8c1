"""Reading the stack's logs: one file per process, merged in time order, followed live.

Every process of a stack writes its own log in ``<state_dir>/logs/``:
``master.log``, ``worker-1.log``..., and ``supervisor.log`` for the
supervisor. Each entry starts with a UTC timestamp (``papertrader/log``:
``2026-01-02 03:04:05.678901 | LEVEL | file:function:line | message``),
continuation lines (a traceback) belong to the entry above them. Rotated
files sit beside the live one as ``<name>.<stamp>.log`` (optionally
``.gz``) and are read first, oldest first.

Because every entry carries a UTC time, entries of different processes sort
into one history (``merged``), and ``Follower`` tails all files at once for
``pt logs -f`` and the foreground ``pt up``. A follower notices a file that
was rotated (its inode changed or it shrank) and starts the new one from its
beginning. Processes buffer entries in memory for up to
``log_flush_seconds`` (spec 2.3.3), so a followed entry can arrive that much
after it was logged; the follower orders what it reads in one look.
"""

from __future__ import annotations

import gzip
import heapq
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from papertrader.stack.record import logs_dir

_ENTRY_RE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?) \| (?P<level>[A-Z]+) *\| "
    r"(?P<where>\S*) \| (?P<message>.*)"
)
_ROTATED_RE = re.compile(r"(?P<name>.+?)\.(?P<stamp>\d[\w.\-]*)\.log(?:\.gz)?")
_DURATION_RE = re.compile(r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Bytes read from a followed file in one look (a burst is read over several looks).
_READ_CHUNK = 1 << 20
#: A partial line longer than this is given up on (a corrupt file must not fill memory).
_MAX_PARTIAL = 1 << 20


@dataclass(frozen=True, order=True)
class LogEntry:
    """One entry of one process's log (``time`` first: entries sort by time)."""

    time: datetime
    process: str = field(compare=False)
    level: str = field(compare=False)
    where: str = field(compare=False)
    message: str = field(compare=False)  # continuation lines joined with "\n"

    def compact(self, width: int = 9) -> str:
        """``12:00:01 master    message`` (the level only when it is not INFO)."""
        level = "" if self.level == "INFO" else f"{self.level} "
        return f"{self.time:%H:%M:%S} {self.process:<{width}} {level}{self.message}"

    def full(self, width: int = 9) -> str:
        """Date and time, process, level, source location, message."""
        stamp = f"{self.time:%Y-%m-%d %H:%M:%S.%f}"[:-3]
        return f"{stamp} {self.process:<{width}} {self.level:<8} {self.where} | {self.message}"

    def as_json(self) -> dict[str, str]:
        return {
            "time": self.time.isoformat(),
            "process": self.process,
            "level": self.level,
            "where": self.where,
            "message": self.message,
        }


class LogError(Exception):
    """A log request cannot be served (unknown process, bad --since)."""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``10m``, ``2h``, ``1d``, ``90s``, ``1w`` ago, or an ISO date/time (UTC if no zone)."""
    now = now or datetime.now(timezone.utc)
    cleaned = text.strip()
    match = _DURATION_RE.fullmatch(cleaned)
    if match:
        return now - timedelta(seconds=float(match["amount"]) * _UNITS[match["unit"]])
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise LogError(
            f"--since {text!r}: give a duration (30s, 10m, 2h, 1d, 1w) or a date/time "
            "(2026-01-02 or 2026-01-02T15:04:05, UTC unless a zone is given)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def parse_line(line: str) -> tuple[datetime, str, str, str] | None:
    """(time, level, where, message) of an entry's first line; None for a continuation."""
    match = _ENTRY_RE.fullmatch(line)
    if match is None:
        return None
    moment = datetime.fromisoformat(match["time"]).replace(tzinfo=timezone.utc)
    return moment, match["level"], match["where"], match["message"]


def entries(lines: Iterable[str], process: str) -> Iterator[LogEntry]:
    """Group lines into entries; lines before the first entry are dropped."""
    current: list[str] | None = None
    head: tuple[datetime, str, str, str] | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        parsed = parse_line(line)
        if parsed is None:
            if current is not None and line:
                current.append(line)
            continue
        if head is not None and current is not None:
            yield LogEntry(head[0], process, head[1], head[2], "\n".join(current))
        head, current = parsed, [parsed[3]]
    if head is not None and current is not None:
        yield LogEntry(head[0], process, head[1], head[2], "\n".join(current))


def process_files(state_dir: Path) -> dict[str, list[Path]]:
    """Each process's log files, oldest first (rotated ones, then the live one)."""
    directory = logs_dir(state_dir)
    found: dict[str, list[tuple[float, Path]]] = {}
    try:
        paths = list(directory.iterdir())
    except OSError:
        return {}
    live = {p.name[: -len(".log")] for p in paths if p.name.endswith(".log")}
    for path in paths:
        name = path.name
        rotated = _ROTATED_RE.fullmatch(name)
        if rotated is not None and rotated["name"] in live and name != f"{rotated['name']}.log":
            process = rotated["name"]
        elif name.endswith(".log"):
            process = name[: -len(".log")]
        else:
            continue
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        # The live file is the newest whatever its mtime says.
        rank = float("inf") if name == f"{process}.log" else mtime
        found.setdefault(process, []).append((rank, path))
    return {p: [path for _, path in sorted(items)] for p, items in sorted(found.items())}


def _lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            yield from handle
    except OSError:
        return


def choose(files: dict[str, list[Path]], processes: Iterable[str]) -> dict[str, list[Path]]:
    """The files of the named processes (all when none is named); LogError for a stranger."""
    wanted = list(processes)
    if not wanted:
        return files
    unknown = [name for name in wanted if name not in files]
    if unknown:
        known = ", ".join(files) or "none yet"
        raise LogError(f"no log for {', '.join(unknown)} (logs exist for: {known})")
    return {name: files[name] for name in wanted}


def merged(files: dict[str, list[Path]], since: datetime | None = None) -> Iterator[LogEntry]:
    """Every entry of ``files`` in time order (a k-way merge: memory stays flat)."""

    def of(process: str, paths: list[Path]) -> Iterator[LogEntry]:
        for path in paths:
            for entry in entries(_lines(path), process):
                if since is None or entry.time >= since:
                    yield entry

    return heapq.merge(*(of(process, paths) for process, paths in files.items()))


@dataclass
class _Tail:
    path: Path
    process: str
    inode: int = -1
    offset: int = 0
    partial: str = ""
    pending: list[str] = field(default_factory=list)  # lines of an entry still growing


class Follower:
    """Tails every live log of a state directory, new files included.

    ``start_at_end`` skips what is already there (the foreground ``pt up``);
    otherwise the caller printed the history with ``merged`` and the follower
    starts where each file ends at construction.
    """

    def __init__(self, state_dir: Path, processes: Iterable[str] = ()) -> None:
        self.state_dir = state_dir
        self.processes = set(processes)
        self._tails: dict[Path, _Tail] = {}
        for tail in self._discover():
            self._skip_to_end(tail)

    def _discover(self) -> list[_Tail]:
        fresh = []
        for process, paths in process_files(self.state_dir).items():
            if self.processes and process not in self.processes:
                continue
            live = paths[-1]
            if live.name != f"{process}.log" or live in self._tails:
                continue
            tail = _Tail(live, process)
            self._tails[live] = tail
            fresh.append(tail)
        return fresh

    @staticmethod
    def _skip_to_end(tail: _Tail) -> None:
        try:
            stat = tail.path.stat()
        except OSError:
            return
        tail.inode, tail.offset = stat.st_ino, stat.st_size

    def poll(self) -> list[LogEntry]:
        """Entries written since the last call, in time order.

        An entry is handed out once the next entry of its file began (its
        traceback lines are complete) or the file has been quiet for a look.
        """
        self._discover()
        found: list[LogEntry] = []
        for tail in self._tails.values():
            found.extend(self._read(tail))
        found.sort()
        return found

    def _read(self, tail: _Tail) -> list[LogEntry]:
        try:
            stat = tail.path.stat()
        except OSError:
            return self._flush(tail)
        if stat.st_ino != tail.inode or stat.st_size < tail.offset:
            flushed = self._flush(tail)  # rotated: the new file starts from its beginning
            tail.inode, tail.offset, tail.partial = stat.st_ino, 0, ""
        else:
            flushed = []
        if stat.st_size == tail.offset:
            return flushed + self._flush(tail)
        try:
            with open(tail.path, "rb") as handle:
                handle.seek(tail.offset)
                data = handle.read(_READ_CHUNK)
        except OSError:
            return flushed
        tail.offset += len(data)
        text = tail.partial + data.decode("utf-8", errors="replace")
        *complete, tail.partial = text.split("\n")
        if len(tail.partial) > _MAX_PARTIAL:
            tail.partial = ""
        out = flushed
        for line in complete:
            if parse_line(line) is not None and tail.pending:
                out.extend(entries(tail.pending, tail.process))
                tail.pending = []
            tail.pending.append(line)
        return out

    @staticmethod
    def _flush(tail: _Tail) -> list[LogEntry]:
        done = list(entries(tail.pending, tail.process))
        tail.pending = []
        return done


def process_width(names: Iterable[str]) -> int:
    """Column width for process names (at least 9: ``worker-10``)."""
    return max([9, *(len(n) for n in names)])


def log_size(state_dir: Path) -> int:
    """Bytes of logs in the state directory (for ``pt status``)."""
    total = 0
    for paths in process_files(state_dir).values():
        for path in paths:
            try:
                total += os.path.getsize(path)
            except OSError:
                pass
    return total
