"""`pt logs` and the foreground merged view: files of several processes, rotated
and live, read as one history in time order and followed as they grow."""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from papertrader.stack.logs import (
    Follower,
    LogError,
    choose,
    merged,
    parse_since,
    process_files,
)
from papertrader_cli.main import cli


def line(second: int, message: str, level: str = "INFO") -> str:
    return f"2026-03-01 12:00:{second:02d}.000000 | {level:<8} | papertrader/x.py:f:1 | {message}\n"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "master.log").write_text(line(3, "master three") + line(7, "master seven"))
    (logs / "worker-1.log").write_text(
        line(5, "worker boom", "ERROR") + "Traceback (most recent call last):\n  raise X\n"
        + line(8, "worker eight")
    )  # fmt: skip
    rotated = logs / "master.2026-03-01_11-59-00_000000.log.gz"
    with gzip.open(rotated, "wt") as handle:
        handle.write(line(1, "master one (rotated)"))
    os.utime(rotated, (1, 1))  # older than the live file whatever the clock says
    (logs / "master.out").write_text("console noise, not a log\n")
    return tmp_path


def test_files_of_several_processes_merge_in_time_order_with_their_tracebacks(
    state: Path,
) -> None:
    files = process_files(state)
    assert list(files) == ["master", "worker-1"]
    assert files["master"][-1].name == "master.log" and len(files["master"]) == 2
    history = list(merged(files))
    assert [e.message.splitlines()[0] for e in history] == [
        "master one (rotated)", "master three", "worker boom", "master seven", "worker eight",
    ]  # fmt: skip
    boom = history[2]
    assert boom.process == "worker-1" and boom.level == "ERROR"
    assert boom.message == "worker boom\nTraceback (most recent call last):\n  raise X"
    assert (
        boom.compact() == "12:00:05 worker-1  ERROR worker boom\nTraceback (most recent"
        " call last):\n  raise X"
    )
    since = datetime(2026, 3, 1, 12, 0, 6, tzinfo=timezone.utc)
    assert [e.message for e in merged(files, since)] == ["master seven", "worker eight"]


def test_since_takes_durations_and_dates_and_says_what_it_wants() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_since("10m", now) == now - timedelta(minutes=10)
    assert parse_since("1.5h", now) == now - timedelta(minutes=90)
    assert parse_since("2026-02-28", now) == datetime(2026, 2, 28, tzinfo=timezone.utc)
    with pytest.raises(LogError, match="give a duration"):
        parse_since("yesterday", now)


def test_an_unknown_process_names_the_known_ones(state: Path) -> None:
    with pytest.raises(LogError, match="no log for worker-9 .*master, worker-1"):
        choose(process_files(state), ["worker-9"])


def test_the_follower_sees_new_entries_new_files_and_rotation(state: Path) -> None:
    logs = state / "logs"
    follower = Follower(state)
    assert follower.poll() == []  # what was there before is history, not news
    with open(logs / "master.log", "a") as handle:
        handle.write(line(9, "master nine"))
    (logs / "worker-2.log").write_text(line(10, "worker two starts"))
    first = follower.poll()
    second = follower.poll()  # the quiet look hands out the last entry of each file
    got = [(e.process, e.message) for e in first + second]
    assert sorted(got) == [("master", "master nine"), ("worker-2", "worker two starts")]

    os.rename(logs / "master.log", logs / "master.2026-03-01_12-00-09_000000.log")
    (logs / "master.log").write_text(line(11, "after rotation"))
    follower.poll()
    assert [e.message for e in follower.poll()] == ["after rotation"]


def test_pt_logs_prints_the_merged_history_and_json(state: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["logs", "--state-dir", str(state), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "12:00:07 master    master seven", "12:00:08 worker-1  worker eight",
    ]  # fmt: skip
    as_json = runner.invoke(cli, ["logs", "--state-dir", str(state), "worker-1", "--json"])
    entries = [json.loads(text) for text in as_json.output.splitlines()]
    assert [e["process"] for e in entries] == ["worker-1", "worker-1"]
    assert entries[0]["level"] == "ERROR" and entries[0]["time"].startswith("2026-03-01T12:00:05")
    unknown = runner.invoke(cli, ["logs", "--state-dir", str(state), "nobody"])
    assert unknown.exit_code == 1 and "no log for nobody" in unknown.output
