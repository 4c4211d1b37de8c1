"""Supervision: a crashed server comes back, `pt restart` works with or without a
supervisor, and `pt down` stops whatever runs for the state directory.

Real processes throughout (``pt up --detach`` with a background supervisor,
``pt master run`` by hand, SIGKILL); Redis and PostgreSQL come from the test
fixtures. The pure parts (back-off, the record, announcements) are checked
directly at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_e2e_support import (
    ROOT,
    Servers,
    child_env,
    free_block,
    port_answers,
    retry_port_races,
)
from test_workers_keys import master_env

from papertrader.client import get_worker_list
from papertrader.keyring import short_home
from papertrader.services.ports import free_port
from papertrader.services.state import pid_alive
from papertrader.stack.processes import ProcessId
from papertrader.stack.record import (
    Child,
    StackError,
    StackRecord,
    kept_environment,
    load_record,
    save_record,
)
from papertrader.stack.runfiles import announced, running_servers
from papertrader.stack.supervisor import BACKOFF_MAX, backoff_delay


def pt(
    args: list[str], env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "papertrader_cli", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout, check=False,
    )  # fmt: skip


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def children(state: Path) -> dict[str, Child]:
    record = load_record(state)
    assert record is not None
    return {c.name: c for c in record.children}


def listed(master_port: int, state: Path) -> set[str]:
    """The workers the master lists, asked as `pt client` would: trusting the stack's CA."""
    try:
        ca = state / "tls" / "ca.pem"
        return {str(w.get("name")) for w in get_worker_list("127.0.0.1", master_port, 5, ca=ca)}
    except Exception:
        return set()


def test_a_detached_stack_restarts_a_killed_server_and_pt_restart_works_without_supervisor(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    state = tmp_path / "state"
    metrics_port = master_port = worker_port = 0
    env: dict[str, str] = {}

    def start() -> subprocess.CompletedProcess[str]:
        nonlocal metrics_port, master_port, worker_port, env
        metrics_port, master_port, worker_port = free_block(2), free_port(), free_port()
        env = child_env(redis_url, database_url, state, PT_METRICS_ENABLED="yes",
                        PT_METRICS_PORT=str(metrics_port))  # fmt: skip
        return pt(
            ["up", "--detach", "--json", "--workers", "1", "--master-port", str(master_port),
             "--worker-port", str(worker_port), "--update-interval", "0.3"],
            env,
        )  # fmt: skip

    started = retry_port_races(start)
    assert started.returncode == 0, started.stderr
    endpoints: dict[str, Any] = json.loads(started.stdout)
    supervisor = int(endpoints["supervisor_pid"])
    try:
        before = children(state)["master"]
        port_at = before.argv.index("--port")
        assert before.argv[port_at + 1] == str(master_port)
        assert before.argv[before.argv.index("--state-dir") + 1] == str(state)
        assert before.env["PT_UPDATE_INTERVAL"] == "0.3"
        assert before.env["PT_DATABASE_URL"] == database_url

        # pt status: everything up, exit 0 (the first drain and price update may take a moment).
        wait_until("pt status to say all is well", lambda: pt(["status"], env).returncode == 0)
        status = pt(["status", "--json"], env)
        document = json.loads(status.stdout)
        assert document["ok"] is True and document["problems"] == []
        assert [(p["name"], p["state"], p["started_by"]) for p in document["processes"]] == [
            ("master", "running", "pt up"), ("worker-1", "running", "pt up"),
        ]  # fmt: skip
        assert document["processes"][0]["address"] == f"127.0.0.1:{master_port}"
        assert [p["metrics"] for p in document["processes"]] == [
            f"127.0.0.1:{metrics_port}", f"127.0.0.1:{metrics_port + 1}",
        ]  # fmt: skip
        assert [p["healthz"] for p in document["processes"]] == [True, True]
        assert [(w["name"], w["clients"]) for w in document["workers"]] == [("worker-1", 0)]
        assert document["market"]["stale"] is False
        assert document["orders"]["queue_depth"] == 0
        assert document["orders"]["last_drain"]["ok"] is True
        assert document["supervisor"]["running"] is True
        human = pt(["status"], env).stdout
        assert "all good" in human and "worker-1" in human and "fresh" in human

        # A crash: the supervisor starts the same master again, and the worker relinks.
        os.kill(int(before.pid or 0), signal.SIGKILL)
        wait_until(
            "the master to be restarted",
            lambda: (
                children(state)["master"].pid != before.pid
                and children(state)["master"].state == "running"
                and port_answers(master_port)
            ),
        )
        after = children(state)["master"]
        assert after.restarts == 1 and after.last_exit == "was killed by SIGKILL"
        wait_until("worker-1 to relink", lambda: "worker-1" in listed(master_port, state))
        log = (state / "logs" / "supervisor.log").read_text()
        assert "master was killed by SIGKILL" in log and "restarting in 1 s" in log

        # An operator's restart, through the supervisor.
        old_worker = children(state)["worker-1"].pid
        result = pt(["restart", "worker-1", "--json"], env)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["supervised"] is True
        assert answer["restarted"]["worker-1"].startswith("restarted (pid ")
        new_worker = children(state)["worker-1"]
        assert new_worker.pid != old_worker and new_worker.restarts == 0
        assert port_answers(worker_port)

        # The supervisor itself dies: `pt restart` still brings a server back from the record.
        os.kill(supervisor, signal.SIGKILL)
        wait_until("the supervisor to be gone", lambda: not pid_alive(supervisor))
        old_master = children(state)["master"].pid
        result = pt(["restart", "master"], env)
        assert result.returncode == 0, result.stderr
        assert "no supervisor runs" in result.stderr
        assert children(state)["master"].pid != old_master and port_answers(master_port)
        wait_until("worker-1 to relink", lambda: "worker-1" in listed(master_port, state))

        unknown = pt(["restart", "worker-9"], env)
        assert unknown.returncode == 1 and "worker-1" in unknown.stderr

        # Nobody restarts a killed worker now: pt status says so and exits non-zero.
        os.kill(int(children(state)["worker-1"].pid or 0), signal.SIGKILL)
        wait_until("worker-1 to die", lambda: not children(state)["worker-1"].alive())
        broken = pt(["status", "--json"], env)
        assert broken.returncode == 3
        problems = json.loads(broken.stdout)["problems"]
        assert "worker-1 is not running" in problems
        assert any("the supervisor is gone" in p for p in problems)
        assert "worker-1 is not running" in pt(["status"], env).stdout

        # The logs of every process, merged.
        logs = pt(["logs", "master", "-n", "3", "--json"], env)
        assert logs.returncode == 0 and logs.stdout.count('"process": "master"') == 3
    finally:
        down = pt(["down", "--json"], env)
    assert down.returncode == 0, down.stderr
    stopped = json.loads(down.stdout)["stopped"]
    assert stopped["master"] == "stopped" and stopped["worker-1"] == "was not running"
    assert not port_answers(master_port) and not port_answers(worker_port)
    assert load_record(state) is None and running_servers(state) == []
    # The killed worker could not stop its gpg-agent: pt down did.
    wait_until("no gpg-agent of the stack", lambda: agents_of(state) == [])


def agents_of(state: Path) -> list[int]:
    """Pids of gpg-agents running for a GnuPG home of ``state`` (or its short link)."""
    homes = {str(home) for home in state.glob("gnupg-*")}
    homes |= {str(short_home(Path(home))) for home in homes}
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and argv[0].endswith("gpg-agent") and homes & set(argv):
            found.append(int(proc.name))
    return found


def test_down_stops_servers_started_by_hand_for_the_state_dir(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    servers = Servers(tmp_path, redis_url, database_url, workers=1)
    try:
        servers.start()
        announced_names = {s.name for s in running_servers(servers.state_dir)}
        assert announced_names == {"master", "worker-1"}
        down = pt(["down", "--json"], servers.env)
        assert down.returncode == 0, down.stderr
        stopped = json.loads(down.stdout)["stopped"]
        assert set(stopped.values()) == {"stopped"} and len(stopped) == 2
        assert not port_answers(servers.master_port)
        assert not port_answers(servers.worker_port())
    finally:
        servers.stop()


def test_down_with_nothing_running_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
    result = pt(["down", "--state-dir", str(tmp_path / "none")], env)
    assert result.returncode == 0 and "nothing runs for" in result.stdout


def test_restart_without_a_stack_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
    result = pt(["restart", "--state-dir", str(tmp_path)], env)
    assert result.returncode == 1
    assert "no stack runs from" in result.stderr and "Traceback" not in result.stderr


# -- the pure parts ---------------------------------------------------------------------
def test_backoff_doubles_from_one_second_up_to_the_cap() -> None:
    assert [backoff_delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, BACKOFF_MAX]
    assert backoff_delay(50) == BACKOFF_MAX


def test_children_inherit_settings_and_what_they_need_but_not_unrelated_variables() -> None:
    kept = kept_environment(
        {"PT_UPDATE_INTERVAL": "2", "PATH": "/bin", "LC_ALL": "C", "https_proxy": "http://p",
         "AWS_SECRET_ACCESS_KEY": "x", "EDITOR": "vi", "XDG_RUNTIME_DIR": "/run/user/0"}
    )  # fmt: skip
    assert kept == {"PT_UPDATE_INTERVAL": "2", "PATH": "/bin", "LC_ALL": "C",
                    "https_proxy": "http://p", "XDG_RUNTIME_DIR": "/run/user/0"}  # fmt: skip


def test_the_record_round_trips_and_a_damaged_one_is_named(tmp_path: Path) -> None:
    record = StackRecord(tmp_path, services_started=True)
    record.children.append(
        Child("master", "master", ["pt"], {"PT_X": "1"}, "/", "127.0.0.1", 2048,
              "m.log", "m.out", pid=123, started="42")
    )  # fmt: skip
    save_record(record)
    assert (tmp_path / "stack.json").stat().st_mode & 0o777 == 0o600
    loaded = load_record(tmp_path)
    assert loaded == record
    assert loaded is not None and loaded.child("master").process == ProcessId(123, "42")
    with pytest.raises(StackError, match="no process 'x'.*master"):
        loaded.child("x")
    (tmp_path / "stack.json").write_text("{")
    with pytest.raises(StackError, match="stack.json is damaged"):
        load_record(tmp_path)


def test_an_announcement_lasts_while_the_server_runs_and_a_stale_one_is_dropped(
    tmp_path: Path,
) -> None:
    with announced(tmp_path, "worker-7", "worker", "127.0.0.1:1", tmp_path / "w.log") as me:
        found = running_servers(tmp_path)
        assert [(s.name, s.pid) for s in found] == [("worker-7", os.getpid())]
        assert me.process.alive()
    assert running_servers(tmp_path) == []
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "run" / f"master.{dead.pid}.json"
    stale.write_text(json.dumps({"name": "master", "role": "master", "pid": dead.pid,
                                 "started": "1", "address": "x", "log": "y"}))  # fmt: skip
    assert running_servers(tmp_path) == [] and not stale.exists()


def test_the_supervisor_starts_the_services_again_when_they_stop(tmp_path: Path) -> None:
    from papertrader.services import destroy_services, services_status

    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
    env.update(
        master_env(tls=False), PT_STATE_DIR=str(state), PT_BCRYPT_COST="4", PT_WEB_PORT="0"
    )  # any free port for the page: tests run side by side
    started = retry_port_races(
        lambda: pt(["up", "--detach", "--master-port", str(free_port()),
                    "--worker-port", str(free_port()), "--update-interval", "0.5"], env)
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        assert load_record(state) is not None and load_record(state).services_started  # type: ignore[union-attr]
        redis_pid = services_status(state)["redis"]["pid"]
        os.kill(int(redis_pid), signal.SIGKILL)
        wait_until(
            "Redis to run again",
            lambda: (
                services_status(state)["redis"]["running"]
                and services_status(state)["redis"]["pid"] != redis_pid
            ),
            timeout=90,
        )
        # Said once start_services returns, which may be after Redis already answers.
        log = state / "logs" / "supervisor.log"
        wait_until("the supervisor to say so", lambda: "redis running again" in log.read_text(),
                   timeout=30)  # fmt: skip
        assert "redis stopped; starting again" in log.read_text()
    finally:
        down = pt(["down", "--json"], env)
        destroy_services(state)
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["stopped"]["redis"] == "stopped"
