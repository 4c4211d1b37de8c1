"""Does a second worker process add as much as the first? Quotes through one process
and through two (``worker_processes = 2``, one port), each process held to the same
share of a core by a cgroup CPU quota.

On this 2-core machine the load generator needs about as much CPU per quote as the
worker, so an unconstrained two-process worker cannot show what a second core gives
(``bench/quotes.py`` reports 1.1-1.2x there: the cores run out, not the design).
Holding every worker process to ``BUDGET`` of a core (CFS bandwidth control, the
mechanism behind container CPU limits) stands for a host where each process has a
core of its own: the two-process worker then has twice the CPU of the one-process
worker, the load generator keeps enough left to saturate both, and the ratio of the
two rates is what a second core adds. Near 2 means the processes share nothing that
serialises them (the listening port through SO_REUSEPORT, Redis, the master link, the
session cache's invalidation): scaling is near-linear in cores.

Needs a writable cgroup CPU controller (cgroup v2 with ``cpu`` enabled, or v1's
``cpu`` hierarchy: root on most hosts, not in most containers); without one the
figure says why it was skipped. Baseline in the same run: the one-process worker
under the same budget, in interleaved rounds.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.loadgen import request_bytes, run_load
from bench.quotes import (
    Master,
    Target,
    answers_quotes,
    load_average,
    priced,
    spawn_worker,
    wait_until,
    with_children,
)
from bench.stack import stop, wait_for_port
from papertrader.services import ServiceUrls
from papertrader.services.ports import free_port
from papertrader.tls.local import ca_file

#: Share of a core each worker process may use.
BUDGET = 0.4
PERIOD_US = 100_000
V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup/cpu")


class CpuBudget:
    """Cgroups holding processes to ``BUDGET`` of a core each, removed on ``close``."""

    def __init__(self) -> None:
        self.root, self.v2 = _controller()
        self.groups: list[Path] = []

    def hold(self, pid: int) -> None:
        """Put ``pid`` (all its threads) in a cgroup of its own, limited to BUDGET."""
        group = self.root / f"pt-bench-{os.getpid()}-{len(self.groups)}"
        group.mkdir()
        self.groups.append(group)
        quota = int(BUDGET * PERIOD_US)
        if self.v2:
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        (group / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        """Move what is left back to the root group, then remove the groups."""
        for group in self.groups:
            try:
                for pid in (group / "cgroup.procs").read_text().split():
                    (self.root / "cgroup.procs").write_text(pid)
                group.rmdir()
            except OSError:
                pass


def _controller() -> tuple[Path, bool]:
    """Where cgroups with a CPU quota can be made: (directory, is cgroup v2); OSError
    saying why not."""
    controllers = V2_ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        subtree = V2_ROOT / "cgroup.subtree_control"
        if "cpu" not in subtree.read_text().split():
            subtree.write_text("+cpu")
        return V2_ROOT, True
    if (V1_ROOT / "cpu.cfs_quota_us").exists():
        probe = V1_ROOT / f"pt-bench-probe-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
        return V1_ROOT, False
    raise OSError("no cgroup CPU controller is mounted")


@contextmanager
def cpu_budget() -> Iterator[CpuBudget]:
    budget = CpuBudget()
    try:
        yield budget
    finally:
        budget.close()


def bench_scaling(
    urls: ServiceUrls, state: Path, connections: int = 100, seconds: float = 10.0
) -> dict[str, Any]:
    try:
        _controller()
    except OSError as exc:
        return {"skipped": f"no CPU quota can be set here ({exc})"}
    client, processes, rounds = priced(urls, seconds)
    started: list[subprocess.Popen[bytes]] = []
    try:
        master = Master.start(urls, state, started)
        session = master.sessions(client).create(1, "bench", "127.0.0.1", False)
        payload = request_bytes(session.session_id, "AAPL")
        one_port, wide_port = free_port(), free_port()
        one = spawn_worker(urls, state, one_port, master, "scale-one")
        wide = spawn_worker(urls, state, wide_port, master, "scale-two", processes=2)
        started += [one, wide]
        wait_for_port(one_port, one)
        wait_for_port(wide_port, wide)
        wait_until(lambda: len(with_children(wide.pid)) == 2)
        time.sleep(3)  # the second process binds the port once it has loaded
        ca = str(ca_file(state))
        logs = [state / "master.log"]
        for port in (one_port, wide_port):
            answers_quotes(port, session.session_id, ca, [state / f"worker-{port}.log", *logs])
        targets = [
            Target("one", one_port, lambda: [one.pid], ca=ca),
            Target("two", wide_port, lambda: with_children(wide.pid), ca=ca),
        ]
        with cpu_budget() as budget:
            for pid in [one.pid, *with_children(wide.pid)]:
                budget.hold(pid)
            load_before = load_average()
            for target in targets:  # warm-up
                run_load(target.port, payload, connections, 1.0, ca=ca)
            for _ in range(rounds):
                for target in targets:
                    target.round(payload, connections, seconds / rounds, processes)
            load_after = load_average()
    finally:
        for proc in started:
            stop(proc)
    one_f, two_f = (t.figures() for t in targets)
    one_rate = one_f["quotes_per_second"]
    return {
        "cpu_budget_per_process": BUDGET,
        "connections": connections,
        "seconds": seconds,
        "load_generator": f"{processes} processes of bench/loadgen.py (gevent), not limited",
        "load_average_before_after": [load_before, load_after],
        "one_process": one_f,
        "two_processes": two_f,
        "two_to_one": round(two_f["quotes_per_second"] / one_rate, 3) if one_rate else None,
        "linear": 2.0,
    }
