"""The event log system of the master and the workers (spec 3.1.4, 3.2.5), built on loguru.

The whole project logs with ``from loguru import logger``. A process's main
module calls :func:`install_logging` once; from then on every entry is
formatted (date, time, level, caller's file:function:line, message, spec 2.4.4)
and held in a :class:`MemoryLog`, which writes the held entries to the log file
when it holds ``log_memory_entries`` of them (spec 2.3.3), every
``log_flush_seconds``, at exit, and when the process crashes (spec 3.1.1), so the
entries leading up to a crash are on disk.

The file itself is a loguru file sink: rotated at ``log_rotation_bytes``, the
newest ``log_retention_files`` rotated files kept, created 0600. Held batches
reach it as raw records that only it accepts. Every entry first passes a
:class:`~papertrader.log.throttle.LogThrottle`: one line of code logs at
most ``log_repeat_limit`` entries per 10 s, the rest are counted and
summarised, so no client can make a server write more than a bounded amount
per second. One file per process: a process started by ``pt up`` does not
copy its entries to stderr (``log_stderr``), whose raw output goes to the
same file.

Never log secrets: passwords, password hashes, session ids, GPG material, link
keys, or URLs with credentials (mask them with
``papertrader.config.redact_url``). This module does not filter messages; it
only turns off loguru's ``diagnose`` mode, which would print the values of
local variables (passwords among them) in tracebacks.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from loguru import logger

from papertrader.log.throttle import LogThrottle

if TYPE_CHECKING:
    from loguru import Message, Record

    from papertrader.config import Settings

# Files under this directory are shown relative to it: papertrader/master/main.py.
_ROOT = Path(__file__).resolve().parents[2]

# Keys this module puts in a record's ``extra``.
_WHERE = "pt_where"  # the rendered file:function:line
_ORIGIN = "pt_origin"  # (path, function, line) overriding the caller, for crash entries
_FROM_HOOK = "pt_from_hook"  # crash entry whose traceback the previous hook prints anyway
_LOGGED_ATTR = "_papertrader_crash_logged"
_BATCH = "pt_batch"  # a batch of held entries on its way to the rotating file sink

# UTC, so entries from workers in different regions sort together.
_TEMPLATE = (
    "{time:YYYY-MM-DD HH:mm:ss.SSSSSS!UTC} | {level: <8} | {extra[" + _WHERE + "]} | {message}\n"
    "{exception}"
)

_JOIN_SECONDS = 5.0


@lru_cache(maxsize=4096)
def display_path(path: str) -> str:
    """Show a source file relative to the project root (or, for an installed package,
    the working directory), else by its bare name (cached)."""
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(path).name
    for root in (_ROOT, Path.cwd()):
        try:
            return resolved.relative_to(root).as_posix()
        except ValueError:
            continue
    return resolved.name


def entry_format(record: Record) -> str:
    """Loguru format function for one entry.

    The caller's location goes through ``extra`` rather than into the template
    so that names like ``<module>`` are not read as loguru colour tags.
    """
    origin = record["extra"].get(_ORIGIN)
    if origin is not None:
        path, function, line = origin
    else:
        path, function, line = record["file"].path, record["function"], record["line"]
    record["extra"][_WHERE] = f"{display_path(path)}:{function}:{line}"
    return _TEMPLATE


class MemoryLog:
    """Loguru sink holding at most ``capacity`` formatted entries before they go to disk.

    Disk writes happen under the same lock as appends: that is what keeps the
    bound exact and the file in order, at the price of a logging call waiting
    while a batch is written (the trade-off spec 2.3.3 describes). The sink never
    logs through loguru itself, which would re-enter the handler.
    """

    def __init__(
        self,
        log_file: Path,
        capacity: int,
        flush_seconds: float,
        writer: Callable[[str], None] | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        """``writer`` takes each batch (default: append to ``log_file`` directly);
        ``on_tick`` runs before each timed flush (the throttle's summaries)."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        if not flush_seconds > 0:
            raise ValueError(f"flush_seconds must be greater than 0, not {flush_seconds}")
        self.log_file = Path(log_file)
        self.capacity = capacity
        self.flush_seconds = flush_seconds
        self._writer = writer
        self._on_tick = on_tick
        self._entries: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, message: Message) -> None:
        """Hold one formatted entry; the entry that fills memory sends all of them to disk."""
        text = _terminated(message)
        with self._lock:
            self._entries.append(text)
            if len(self._entries) >= self.capacity:
                self._write_locked()

    @property
    def held(self) -> int:
        """How many entries are in memory, not yet in the file."""
        with self._lock:
            return len(self._entries)

    def flush(self) -> None:
        """Append every held entry to the log file now."""
        with self._lock:
            self._write_locked()

    def start(self) -> None:
        """Start the background flusher, so quiet periods still reach the disk."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        # A daemon thread waiting on an Event: works unchanged under gevent monkey-patching.
        self._thread = threading.Thread(
            target=self._run, name="papertrader-log-flusher", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the flusher and flush a last time. Entries logged later still flush when full."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_SECONDS)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                if self._on_tick is not None:
                    self._on_tick()
                self.flush()
            except Exception as exc:  # keep flushing later; the logger cannot report this
                _stderr(f"papertrader.log: flusher error: {exc!r}\n")

    def _write_locked(self) -> None:
        if not self._entries:
            return
        batch = "".join(self._entries)
        count = len(self._entries)
        # Dropped even if the write fails: the memory bound outranks the entries.
        self._entries = []
        try:
            if self._writer is None:
                _append_private(self.log_file, batch)
            else:
                self._writer(batch)
        except OSError as exc:
            _stderr(f"papertrader.log: lost {count} entries, cannot write {self.log_file}: {exc}\n")


def _append_private(path: Path, text: str) -> None:
    """Append to ``path`` as a 0600 file: logs hold user names and IP addresses."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        if hasattr(os, "fchmod") and os.fstat(fd).st_mode & 0o077:
            with contextlib.suppress(OSError):  # not our file: leave its mode alone
                os.fchmod(fd, 0o600)
        data = memoryview(text.encode("utf-8", "backslashreplace"))
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def _stderr(text: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(text)
        sys.stderr.flush()


def _write_stderr(message: Message) -> None:
    """Stderr sink resolving ``sys.stderr`` per entry, so a replaced stream is honoured."""
    sys.stderr.write(_terminated(message))


def _terminated(text: str) -> str:
    """End an entry with a newline; loguru leaves a formatted traceback unterminated."""
    return text if text.endswith("\n") else text + "\n"


def _not_from_hook(record: Record) -> bool:
    return not record["extra"].get(_FROM_HOOK, False)


def _is_batch(record: Record) -> bool:
    return bool(record["extra"].get(_BATCH, False))


def _private_opener(path: str, flags: int) -> int:
    """Log files hold user names and IP addresses: 0600."""
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)


def _write_batch(batch: str) -> None:
    """Hand a batch of held entries to the rotating file sink (and to no other)."""
    logger.bind(**{_BATCH: True}).opt(raw=True).log("INFO", batch)


@dataclass
class _Installation:
    memory: MemoryLog
    handler_ids: list[int]
    file_handler_id: int
    throttle: LogThrottle
    excepthook: Callable[[type[BaseException], BaseException, TracebackType | None], None]
    thread_hook: Callable[[threading.ExceptHookArgs], None]
    previous_excepthook: Callable[
        [type[BaseException], BaseException, TracebackType | None], object
    ]
    previous_thread_hook: Callable[[threading.ExceptHookArgs], object]


_install_lock = threading.Lock()
_installed: _Installation | None = None


def log_file_for(settings: Settings, state_dir: Path | None, name: str) -> Path:
    """Where server ``name`` (``master``, a worker's name) logs: ``log_file`` if set,
    else ``<state_dir>/logs/<name>.log``, the directory ``pt up`` and ``pt logs`` use."""
    if settings.log_file is not None:
        return settings.log_file
    from papertrader.services.state import resolve_state_dir  # services import a lot

    directory = resolve_state_dir(state_dir if state_dir is not None else settings.state_dir)
    return directory / "logs" / f"{name}.log"


def install_logging_for(settings: Settings, log_file: Path) -> MemoryLog:
    """:func:`install_logging` with every log setting of a server process."""
    return install_logging(
        log_file,
        settings.log_memory_entries,
        settings.log_flush_seconds,
        also_stderr=settings.log_stderr,
        rotation_bytes=settings.log_rotation_bytes,
        retention_files=settings.log_retention_files,
        repeat_limit=settings.log_repeat_limit,
    )


def install_logging(
    settings_log_file: Path,
    capacity: int,
    flush_seconds: float,
    level: str = "INFO",
    also_stderr: bool = True,
    rotation_bytes: int = 10 * 1024 * 1024,
    retention_files: int = 10,
    repeat_limit: int = 20,
) -> MemoryLog:
    """Route loguru into a started :class:`MemoryLog` and make crashes dump it to disk.

    Removes loguru's default handler (and any earlier installation), adds the
    memory sink and optionally a stderr sink, flushes at exit, and wraps
    ``sys.excepthook`` and ``threading.excepthook``: an unhandled exception is
    logged at CRITICAL with its traceback, the memory is written out, then the
    previous hook runs.
    """
    global _installed
    uninstall_logging()
    throttle = LogThrottle(repeat_limit)

    def tick() -> None:
        for line in throttle.summaries():
            logger.warning(line)

    memory = MemoryLog(settings_log_file, capacity, flush_seconds, _write_batch, tick)

    def entries(record: Record) -> bool:
        return not _is_batch(record) and throttle(record)

    Path(settings_log_file).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _install_lock:
        with contextlib.suppress(ValueError):  # already removed by someone else
            logger.remove(0)
        file_id = logger.add(
            str(settings_log_file),
            level=0,
            format="{message}",
            filter=_is_batch,
            colorize=False,
            rotation=rotation_bytes,
            retention=retention_files,
            encoding="utf-8",
            opener=_private_opener,
        )
        ids = [
            logger.add(
                memory,
                level=level,
                format=entry_format,
                filter=entries,
                colorize=False,
                backtrace=False,
                diagnose=False,
            )
        ]
        if also_stderr:
            ids.append(
                logger.add(
                    _write_stderr,
                    level=level,
                    format=entry_format,
                    colorize=False,
                    backtrace=False,
                    diagnose=False,
                    filter=lambda record: entries(record) and _not_from_hook(record),
                )
            )
        previous_excepthook = sys.excepthook
        previous_thread_hook = threading.excepthook

        def excepthook(
            exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
        ) -> None:
            _record_crash(exc_type, exc, tb, "unhandled exception, the process stops", True)
            previous_excepthook(exc_type, exc, tb)

        def thread_hook(args: threading.ExceptHookArgs) -> None:
            if not issubclass(args.exc_type, SystemExit):
                name = args.thread.name if args.thread is not None else "?"
                what = f"unhandled exception in thread {name}"
                _record_crash(args.exc_type, args.exc_value, args.exc_traceback, what, True)
            previous_thread_hook(args)

        sys.excepthook = excepthook
        threading.excepthook = thread_hook
        atexit.register(memory.close)
        memory.start()
        _installed = _Installation(
            memory,
            ids,
            file_id,
            throttle,
            excepthook,
            thread_hook,
            previous_excepthook,
            previous_thread_hook,
        )
    return memory


def uninstall_logging() -> None:
    """Undo :func:`install_logging`: flush and close, remove the sinks, restore the hooks.

    Mostly for tests and for re-installing with new settings; loguru's default
    stderr handler is not brought back.
    """
    global _installed
    with _install_lock:
        installed, _installed = _installed, None
        if installed is None:
            return
        for handler_id in installed.handler_ids:
            with contextlib.suppress(ValueError):
                logger.remove(handler_id)
        # Only restore hooks still ours; a hook wrapped around ours keeps working.
        if sys.excepthook is installed.excepthook:
            sys.excepthook = installed.previous_excepthook
        if threading.excepthook is installed.thread_hook:
            threading.excepthook = installed.previous_thread_hook
        atexit.unregister(installed.memory.close)
    installed.memory.close()  # the last batch still goes through the file sink
    with contextlib.suppress(ValueError):
        logger.remove(installed.file_handler_id)


@contextlib.contextmanager
def crash_guard() -> Iterator[None]:
    """Wrap a main module's run function (``with crash_guard():`` or ``@crash_guard()``).

    Any exception escaping it, other than KeyboardInterrupt and SystemExit, is
    logged at CRITICAL and the memory is dumped before it propagates, so the
    entries survive even if something upstream swallows it or the process is
    torn down abruptly. The excepthook will not log it a second time.
    """
    try:
        yield
    except Exception as exc:
        _record_crash(type(exc), exc, exc.__traceback__, "unhandled exception", False)
        raise


def _record_crash(
    exc_type: type[BaseException],
    exc: BaseException | None,
    tb: TracebackType | None,
    what: str,
    from_hook: bool,
) -> None:
    """Log a crash once (at the frame that raised it) and dump the memory to the file."""
    installed = _installed
    try:
        if not getattr(exc, _LOGGED_ATTR, False):
            origin = None
            if tb is not None:
                last = tb
                while last.tb_next is not None:
                    last = last.tb_next
                code = last.tb_frame.f_code
                origin = (code.co_filename, code.co_name, last.tb_lineno)
            bound = logger.bind(**{_ORIGIN: origin, _FROM_HOOK: from_hook})
            if issubclass(exc_type, KeyboardInterrupt):
                bound.warning("interrupted by the user (KeyboardInterrupt)")
            else:
                bound.opt(exception=(exc_type, exc, tb)).critical(f"{what}: {exc_type.__name__}")
            if exc is not None:
                with contextlib.suppress(Exception):
                    setattr(exc, _LOGGED_ATTR, True)
    finally:
        if installed is not None:
            installed.memory.flush()
