"""Two real masters: the standby refuses a worker's link naming the active master, the
worker links to the active one, both masters give clients the same worker list, and
`pt status` says which master is active. Take-overs under load (kill -9, SIGSTOP) are
in test_faults.py and `make faults`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from test_e2e_support import ROOT, Servers, running
from tls_support import pki

from papertrader.client import ClientError, get_worker_list


def _lists(servers: Servers) -> list[list[dict[str, object]]]:
    return [
        get_worker_list("127.0.0.1", servers.procs[n].port, 5, ca=pki().ca)
        for n in servers.master_names
    ]


def test_the_standby_sends_workers_to_the_active_master_and_lists_the_same_workers(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    servers = Servers(tmp_path, redis_url, database_url, standbys=1)
    worker = servers.procs["worker-1"]
    masters = [servers.address("master-2"), servers.address("master")]  # the standby first
    worker.args = [a for a in worker.args if a not in masters and a != "--master"]
    worker.args += ["--master", masters[0], "--master", masters[1]]
    with running(servers):
        log = (servers.log_dir / "worker-1.out").read_text(errors="replace")
        active = servers.address("master")
        assert f"this master is a standby; the active master is {active}" in log, log[-3000:]

        deadline = time.monotonic() + 30
        while True:  # the standby reads the active master's mirror in Redis
            try:
                lists = _lists(servers)
            except ClientError:
                lists = []
            if len(lists) == 2 and lists[0] == lists[1]:
                break
            assert time.monotonic() < deadline, f"{lists}\n{servers.logs()}"
            time.sleep(0.2)
        assert [w["name"] for w in lists[0]] == ["worker-1"]

        done = subprocess.run(
            [sys.executable, "-m", "papertrader_cli", "status", "--json"],
            env=servers.env,
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=60,
        )
        status = json.loads(done.stdout)
        assert status["active_master"]["address"] == active
        assert status["active_master"]["epoch"] == 1 and status["active_master"]["lock_held"]
        roles = {p["address"]: p.get("master_role") for p in status["processes"]}
        assert roles[active] == "active"
        assert roles[servers.address("master-2")] == "standby"
