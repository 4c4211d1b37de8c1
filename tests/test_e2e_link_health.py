"""Link health with real processes: a stalled worker keeps its link; one stalled past the
silence window is dropped and links again on its own. SIGSTOP makes the stall real.

The window is max(10 s, 5 heartbeats); the heartbeat here is 1 s (the master's update
interval of 0.3 s, floored at 1 s, sent to the worker in LINK_WELCOME).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_e2e_support import Servers, running


@pytest.fixture
def servers(tmp_path: Path, redis_url: str, database_url: str) -> Iterator[Servers]:
    with running(Servers(tmp_path, redis_url, database_url)) as started:
        yield started


def listed(servers: Servers) -> bool:
    try:
        return any(w["name"] == "worker-1" for w in servers.worker_list())
    except Exception:
        return False


def master_log(servers: Servers) -> str:
    return servers.procs["master"].log.read_text(errors="replace")


def stall(servers: Servers, seconds: float) -> None:
    popen = servers.procs["worker-1"].popen
    assert popen is not None
    popen.send_signal(signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        popen.send_signal(signal.SIGCONT)


def test_a_short_stall_keeps_the_link_and_a_long_one_relinks(servers: Servers) -> None:
    assert listed(servers)
    stall(servers, 4.0)  # well inside the 10 s window
    time.sleep(2.0)  # heartbeats flow again
    assert listed(servers)
    assert "silent for" not in master_log(servers)
    assert master_log(servers).count("worker worker-1 disconnected") == 0

    stall(servers, 16.0)  # longer than the window: the master drops the link...
    log = master_log(servers)
    assert "worker-1 silent for" in log and "dropping its link" in log
    # ...and the worker, running again, links anew by itself (generous bound).
    deadline = time.monotonic() + 60
    while not (listed(servers) and master_log(servers).count("worker worker-1 (") >= 2):
        assert time.monotonic() < deadline, servers.logs(40)
        time.sleep(0.5)
