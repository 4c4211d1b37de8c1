"""The log system: bounded memory, entry fields, timed and final flushes, and the crash dump."""

from __future__ import annotations

import inspect
import os
import re
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from loguru import logger

from papertrader.log import (
    MemoryLog,
    crash_guard,
    display_path,
    entry_format,
    install_logging,
    uninstall_logging,
)

ROOT = Path(__file__).resolve().parents[1]
ENTRY_RE = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2}) (?P<time>\d{2}:\d{2}:\d{2}\.\d{6}) \| (?P<level>[A-Z]+) *"
    r" \| (?P<file>[^:]+):(?P<function>[^:]+):(?P<line>\d+) \| (?P<message>.*)$"
)


@pytest.fixture
def attach() -> Iterator[Callable[[MemoryLog], None]]:
    """Add MemoryLog sinks to loguru for one test, removing them (and closing) afterwards."""
    added: list[tuple[int, MemoryLog]] = []

    def add(memory: MemoryLog) -> None:
        handler_id = logger.add(
            memory, level="DEBUG", format=entry_format, colorize=False, diagnose=False
        )
        added.append((handler_id, memory))

    yield add
    for handler_id, memory in added:
        logger.remove(handler_id)
        memory.close()


@pytest.fixture
def installed() -> Iterator[None]:
    """Undo install_logging whatever the test does, restoring the process-wide hooks."""
    hooks = (sys.excepthook, threading.excepthook)
    yield
    uninstall_logging()
    assert (sys.excepthook, threading.excepthook) == hooks


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def messages_of(path: Path) -> list[str]:
    return [m.group("message") for m in map(ENTRY_RE.match, lines_of(path)) if m]


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_memory_bound_and_order(tmp_path: Path, attach: Callable[[MemoryLog], None]) -> None:
    capacity = 10
    log_file = tmp_path / "logs" / "bound.log"
    memory = MemoryLog(log_file, capacity=capacity, flush_seconds=3600)
    attach(memory)
    for number in range(capacity * 3):
        logger.info("entry {}", number)
        assert memory.held <= capacity
        # The entry that fills memory writes everything out.
        assert memory.held == (number + 1) % capacity
        assert len(lines_of(log_file)) == (number + 1) // capacity * capacity
    assert messages_of(log_file) == [f"entry {n}" for n in range(capacity * 3)]


def test_memory_bound_under_concurrency(
    tmp_path: Path, attach: Callable[[MemoryLog], None]
) -> None:
    capacity, threads, per_thread = 16, 4, 200
    log_file = tmp_path / "concurrent.log"
    memory = MemoryLog(log_file, capacity=capacity, flush_seconds=3600)
    attach(memory)
    seen: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.append(memory.held)

    def work(worker: int) -> None:
        for number in range(per_thread):
            logger.info("t{} n{}", worker, number)

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    sampler.join()
    memory.flush()
    assert max(seen) <= capacity
    messages = messages_of(log_file)
    assert len(messages) == threads * per_thread
    for worker in range(threads):
        mine = [m for m in messages if m.startswith(f"t{worker} ")]
        assert mine == [f"t{worker} n{n}" for n in range(per_thread)]


def test_entry_fields(tmp_path: Path, attach: Callable[[MemoryLog], None]) -> None:
    log_file = tmp_path / "fields.log"
    memory = MemoryLog(log_file, capacity=100, flush_seconds=3600)
    attach(memory)
    frame = inspect.currentframe()
    assert frame is not None
    expected_line = frame.f_lineno + 1
    logger.warning("formatted {} and {name}", 7, name="kw")
    memory.flush()
    (line,) = lines_of(log_file)
    match = ENTRY_RE.match(line)
    assert match, line
    assert match.group("level") == "WARNING"
    assert match.group("file") == "tests/test_log.py"
    assert match.group("function") == "test_entry_fields"
    assert int(match.group("line")) == expected_line
    assert match.group("message") == "formatted 7 and kw"
    stamp = datetime.strptime(
        f"{match.group('date')} {match.group('time')}", "%Y-%m-%d %H:%M:%S.%f"
    ).replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=1)
    assert line.split(" | ")[1] == "WARNING "  # level padded to 8 columns


def test_exception_traceback_is_appended(
    tmp_path: Path, attach: Callable[[MemoryLog], None]
) -> None:
    log_file = tmp_path / "exc.log"
    memory = MemoryLog(log_file, capacity=100, flush_seconds=3600)
    attach(memory)
    try:
        raise ValueError("bad thing")
    except ValueError:
        logger.exception("failed")
    logger.info("after")
    memory.flush()
    text = log_file.read_text(encoding="utf-8")
    assert "| failed\nTraceback (most recent call last):" in text
    assert "ValueError: bad thing\n" in text
    assert messages_of(log_file) == ["failed", "after"]


def test_display_path() -> None:
    assert display_path(str(ROOT / "papertrader" / "master" / "main.py")) == (
        "papertrader/master/main.py"
    )
    assert display_path("/somewhere/else/module.py") == "module.py"
    assert display_path("<string>") == "<string>"


def test_timer_flush(tmp_path: Path, attach: Callable[[MemoryLog], None]) -> None:
    log_file = tmp_path / "timer.log"
    memory = MemoryLog(log_file, capacity=1000, flush_seconds=0.05)
    attach(memory)
    memory.start()
    logger.info("quiet period")
    assert wait_for(lambda: messages_of(log_file) == ["quiet period"])
    assert memory.held == 0


def test_close_flushes(tmp_path: Path) -> None:
    log_file = tmp_path / "close.log"
    memory = MemoryLog(log_file, capacity=1000, flush_seconds=3600)
    handler_id = logger.add(memory, format=entry_format)
    try:
        memory.start()
        for number in range(3):
            logger.info("pending {}", number)
        assert memory.held == 3 and not log_file.exists()
        memory.close()
        assert messages_of(log_file) == ["pending 0", "pending 1", "pending 2"]
        assert memory.held == 0
    finally:
        logger.remove(handler_id)


def test_file_is_private_and_appended(tmp_path: Path) -> None:
    log_file = tmp_path / "new" / "dir" / "private.log"
    memory = MemoryLog(log_file, capacity=1, flush_seconds=3600)
    handler_id = logger.add(memory, format=entry_format)
    try:
        logger.info("first")
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
        logger.info("second")
        assert messages_of(log_file) == ["first", "second"]
    finally:
        logger.remove(handler_id)

    loose = tmp_path / "loose.log"
    loose.write_text("old line\n")
    os.chmod(loose, 0o644)
    memory = MemoryLog(loose, capacity=1, flush_seconds=3600)
    handler_id = logger.add(memory, format=entry_format)
    try:
        logger.info("new")
    finally:
        logger.remove(handler_id)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    assert lines_of(loose)[0] == "old line"


def test_invalid_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        MemoryLog(tmp_path / "x.log", capacity=0, flush_seconds=1)
    with pytest.raises(ValueError):
        MemoryLog(tmp_path / "x.log", capacity=1, flush_seconds=0)


def test_crash_guard_logs_dumps_and_reraises(tmp_path: Path, installed: None) -> None:
    log_file = tmp_path / "guard.log"
    memory = install_logging(log_file, capacity=1000, flush_seconds=3600, also_stderr=False)
    logger.info("before the crash")

    @crash_guard()
    def run() -> None:
        password = "hunter2-local-variable"  # noqa: F841 - must not leak via diagnose
        raise RuntimeError("guarded failure")

    with pytest.raises(RuntimeError, match="guarded failure"):
        run()
    assert memory.held == 0
    text = log_file.read_text(encoding="utf-8")
    assert messages_of(log_file)[0] == "before the crash"
    assert re.search(r"\| CRITICAL \| tests/test_log.py:run:\d+ \| ", text)
    assert "RuntimeError: guarded failure" in text
    assert "hunter2" not in text


def test_crash_guard_context_manager_passes_exits(tmp_path: Path, installed: None) -> None:
    log_file = tmp_path / "exits.log"
    install_logging(log_file, capacity=1000, flush_seconds=3600, also_stderr=False)
    for exc in (KeyboardInterrupt(), SystemExit(3)):
        with pytest.raises(type(exc)), crash_guard():
            raise exc
    with crash_guard():
        logger.info("fine")
    uninstall_logging()
    assert "CRITICAL" not in log_file.read_text(encoding="utf-8")
    assert messages_of(log_file) == ["fine"]


def test_reinstall_flushes_previous(tmp_path: Path, installed: None) -> None:
    first = install_logging(
        tmp_path / "a.log", capacity=1000, flush_seconds=3600, also_stderr=False
    )
    logger.info("to a")
    install_logging(tmp_path / "b.log", capacity=1000, flush_seconds=3600, also_stderr=False)
    logger.info("to b")
    assert first.held == 0
    uninstall_logging()
    assert messages_of(tmp_path / "a.log") == ["to a"]
    assert messages_of(tmp_path / "b.log") == ["to b"]


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(body)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unhandled_crash_dumps_memory(tmp_path: Path) -> None:
    log_file = tmp_path / "state" / "logs" / "master.log"
    result = run_script(
        tmp_path,
        f"""
        from pathlib import Path
        from loguru import logger
        from papertrader.log import install_logging

        install_logging(Path({str(log_file)!r}), capacity=10000, flush_seconds=3600)
        for number in range(5):
            logger.info("step {{}}", number)

        def explode():
            raise RuntimeError("boom in main")

        explode()
        """,
    )
    assert result.returncode != 0
    assert "RuntimeError: boom in main" in result.stderr  # the previous hook still ran
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    text = log_file.read_text(encoding="utf-8")
    assert messages_of(log_file)[:5] == [f"step {n}" for n in range(5)]
    critical = [
        m for m in map(ENTRY_RE.match, lines_of(log_file)) if m and m["level"] == "CRITICAL"
    ]
    assert len(critical) == 1
    assert critical[0]["function"] == "explode"  # where it was raised
    assert "Traceback (most recent call last):" in text
    assert "RuntimeError: boom in main" in text


def test_unhandled_crash_inside_crash_guard_logged_once(tmp_path: Path) -> None:
    log_file = tmp_path / "worker.log"
    result = run_script(
        tmp_path,
        f"""
        from pathlib import Path
        from loguru import logger
        from papertrader.log import crash_guard, install_logging

        install_logging(Path({str(log_file)!r}), 10000, 3600, also_stderr=False)

        @crash_guard()
        def run():
            logger.info("serving")
            raise ValueError("guarded")

        run()
        """,
    )
    assert result.returncode != 0
    assert "ValueError: guarded" in result.stderr
    assert messages_of(log_file)[0] == "serving"
    assert log_file.read_text(encoding="utf-8").count("| CRITICAL |") == 1


def test_thread_crash_dumps_memory(tmp_path: Path) -> None:
    log_file = tmp_path / "thread.log"
    result = run_script(
        tmp_path,
        f"""
        import threading
        from pathlib import Path
        from loguru import logger
        from papertrader.log import install_logging

        memory = install_logging(Path({str(log_file)!r}), 10000, 3600, also_stderr=False)
        logger.info("starting thread")

        def handler():
            raise OSError("thread failed")

        thread = threading.Thread(target=handler, name="client-7")
        thread.start()
        thread.join()
        assert memory.held == 0, memory.held
        print("held", memory.held)
        """,
    )
    assert result.returncode == 0, result.stderr
    assert "held 0" in result.stdout
    text = log_file.read_text(encoding="utf-8")
    assert messages_of(log_file)[0] == "starting thread"
    assert "unhandled exception in thread client-7" in text
    assert "OSError: thread failed" in text


def test_the_log_file_is_rotated_kept_private_and_pruned(tmp_path: Path, installed: None) -> None:
    log_file = tmp_path / "logs" / "rotating.log"
    install_logging(
        log_file,
        capacity=10,
        flush_seconds=3600,
        also_stderr=False,
        rotation_bytes=65536,
        retention_files=2,
        repeat_limit=100_000,
    )
    for index in range(4000):  # ~400 KB of entries: several rotations
        logger.info("entry {} {}", index, "x" * 60)
    uninstall_logging()
    files = sorted(log_file.parent.iterdir())
    rotated = [f for f in files if f.name != log_file.name]
    assert log_file in files
    assert 1 <= len(rotated) <= 2, files  # older rotated files were deleted
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert path.stat().st_size <= 65536 + 2000  # a batch may finish the file it starts
    assert messages_of(log_file)[-1] == f"entry 3999 {'x' * 60}"


def test_repeated_entries_from_one_line_are_summarised(tmp_path: Path, installed: None) -> None:
    log_file = tmp_path / "throttled.log"
    memory = install_logging(
        log_file, capacity=100_000, flush_seconds=3600, also_stderr=False, repeat_limit=5
    )
    for index in range(1000):  # a flood of one error (a client hammering a bad request)
        logger.warning("refused request {} from 203.0.113.7", index)
    logger.info("another line of code is not affected")
    memory.flush()
    messages = messages_of(log_file)
    assert len(messages) == 6
    assert messages[:5] == [f"refused request {i} from 203.0.113.7" for i in range(5)]
    assert messages[5] == "another line of code is not affected"


def test_the_throttle_reports_what_it_dropped() -> None:
    from papertrader.log.throttle import LogThrottle

    now = [0.0]
    throttle = LogThrottle(burst=2, window=10, clock=lambda: now[0])
    seen: list[str] = []
    sink_id = logger.add(
        lambda message: seen.append(message.record["message"]),
        filter=throttle,
        format="{message}",
    )

    def emit() -> None:
        logger.info("same line")  # one call site

    try:
        for _ in range(7):
            emit()
        assert seen == ["same line", "same line"]
        now[0] = 10.5  # the next window: the count rides on the next entry
        emit()
        assert seen[-1].endswith("[5 more like this in the previous 10 s were not logged]")
        for _ in range(3):
            logger.info("quiet after this")  # then this site goes quiet
        now[0] = 30.0
        summaries = throttle.summaries()
        assert len(summaries) == 1 and "1 log entries" in summaries[0]
        assert "(more than 2 alike)" in summaries[0]
    finally:
        logger.remove(sink_id)
