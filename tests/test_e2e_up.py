"""``pt up --detach`` and ``pt down``: the whole stack in one command, and back.

Redis and PostgreSQL come from the test fixtures (PT_REDIS_URL /
PT_DATABASE_URL), so ``pt up`` starts no services of its own here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg2
from conftest import owner_url
from test_e2e_support import (
    PASSWORD,
    ROOT,
    child_env,
    free_block,
    port_answers,
    retry_port_races,
)

from papertrader.client import PaperTraderClient, get_worker_list
from papertrader.config.settings import derive_worker_uuid
from papertrader.services import ServiceUrls
from papertrader.services.ports import free_port
from papertrader.services.state import pid_alive


def _pt(
    args: list[str], env: dict[str, str], timeout: float = 120, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "papertrader_cli", *args],
        input=input_text,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def process_environment(pid: int) -> dict[str, str]:
    """The environment process ``pid`` was started with, as the kernel keeps it."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().partition("=")[::2] for entry in raw if entry)


def test_up_detach_serves_clients_and_down_stops_everything(
    tmp_path: Path, redis_url: str, database_url: str, service_urls: ServiceUrls
) -> None:
    state = tmp_path / "state"
    env = child_env(redis_url, database_url, state,
                    PT_DATABASE_OWNER_URL=owner_url(service_urls, database_url))  # fmt: skip
    master_port = worker_port = 0

    def start() -> subprocess.CompletedProcess[str]:
        nonlocal master_port, worker_port
        master_port, worker_port = free_port(), free_block(2)
        return _pt(
            ["up", "--detach", "--json", "--state-dir", str(state), "--workers", "2",
             "--master-port", str(master_port), "--worker-port", str(worker_port),
             "--update-interval", "0.3"],
            env,
        )  # fmt: skip

    result = retry_port_races(start)
    assert result.returncode == 0, result.stderr
    endpoints: dict[str, Any] = json.loads(result.stdout)
    try:
        assert endpoints["master"]["address"] == f"127.0.0.1:{master_port}"
        addresses = [w["address"] for w in endpoints["workers"]]
        assert addresses == [f"127.0.0.1:{worker_port}", f"127.0.0.1:{worker_port + 1}"]
        assert endpoints["services_started"] is False  # the URLs were configured
        assert endpoints["new_state_dir"] is True  # said, in case another one was meant
        assert (state / "stack.json").exists()
        assert (state / "logs" / "master.log").exists()
        assert not list((state / "logs").glob("*.out"))  # one file per process

        # Only the master has a database URL, its own role's; the owner's stays with `pt up`.
        master_env = process_environment(endpoints["master"]["pid"])
        assert master_env["PT_DATABASE_URL"] == database_url
        for worker in endpoints["workers"]:
            # A worker gets no URL but its own Redis user's, in a file only it may read.
            worker_env = process_environment(worker["pid"])
            assert "PT_REDIS_URL" not in worker_env
            url_file = Path(worker_env["PT_REDIS_URL_FILE"])
            assert url_file.stat().st_mode & 0o777 == 0o600
            assert url_file.read_text().startswith(f"redis://pt-worker-{worker['name']}:")
            assert not [name for name in worker_env if "DATABASE" in name], worker_env.keys()
        assert "PT_DATABASE_OWNER_URL" not in master_env

        ca = state / "tls" / "ca.pem"  # the private CA `pt up` made, as `pt client` finds it
        listed = get_worker_list("127.0.0.1", master_port, ca=ca)
        assert {w["name"] for w in listed} == {"worker-1", "worker-2"}

        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT name, uuid::text FROM workers ORDER BY name")
            rows = cur.fetchall()
        conn.close()
        assert rows == [(n, str(derive_worker_uuid(n))) for n in ("worker-1", "worker-2")]

        assert endpoints["tls_ca"] == str(ca)
        with PaperTraderClient("127.0.0.1", worker_port + 1, ca=ca) as client:
            client.register("upuser", "up@example.org", PASSWORD)
            client.login("upuser", PASSWORD)
            assert client.buy("SPY", 1).quantity == 1

        # `pt client` with the same settings trusts the stack's CA without a flag.
        session = {"PT_SESSION_FILE": str(tmp_path / "session.json")}
        login = _pt(["client", "--worker", f"127.0.0.1:{worker_port}", "login", "upuser",
                     "--password-stdin"],
                    {**env, **session}, input_text=PASSWORD + "\n")  # fmt: skip
        assert login.returncode == 0, login.stderr

        again = _pt(["up", "--detach", "--state-dir", str(state)], env)
        assert again.returncode == 1 and "pt down" in again.stderr
    finally:
        down = _pt(["down", "--state-dir", str(state), "--json"], env)
    assert down.returncode == 0, down.stderr
    stopped = json.loads(down.stdout)["stopped"]
    assert stopped == {"worker-1": "stopped", "worker-2": "stopped", "master": "stopped"}
    assert not (state / "stack.json").exists()
    pids = [endpoints["master"]["pid"], *[w["pid"] for w in endpoints["workers"]]]
    assert not any(pid_alive(pid) for pid in pids)
    assert not port_answers(master_port) and not port_answers(worker_port)


def test_a_port_in_use_is_refused_before_anything_starts(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    state = tmp_path / "state"
    env = child_env(redis_url, database_url, state)
    master_port, worker_port = free_port(), free_port()
    blocker = subprocess.Popen(
        [sys.executable, "-c",
         f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{worker_port}));"
         "s.listen(); print('ok', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert blocker.stdout is not None and blocker.stdout.readline().strip() == b"ok"
        result = _pt(
            ["up", "--detach", "--state-dir", str(state), "--workers", "1",
             "--master-port", str(master_port), "--worker-port", str(worker_port),
             "--timeout", "10"],
            env,
        )  # fmt: skip
    finally:
        blocker.kill()
        blocker.wait()
    assert result.returncode == 1
    assert f"{worker_port}" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not port_answers(master_port)  # nothing was left running


def test_a_worker_the_master_refuses_stops_the_stack(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    state = tmp_path / "state"
    env = child_env(redis_url, database_url, state)
    master_port, worker_port = free_port(), free_port()
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO workers (uuid, name, gpg_public_key, gpg_fingerprint, enabled)"
            " VALUES (%s::uuid, 'worker-1', '', '', false)",
            (str(derive_worker_uuid("worker-1")),),
        )
    conn.close()
    result = _pt(
        ["up", "--detach", "--state-dir", str(state), "--workers", "1",
         "--master-port", str(master_port), "--worker-port", str(worker_port),
         "--timeout", "8"],
        env,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert "worker-1" in result.stderr
    assert "Traceback (most recent call last)" not in result.stderr.split("last lines")[0]
    assert not port_answers(master_port) and not port_answers(worker_port)
    assert not (state / "stack.json").exists()
    assert os.path.exists(state / "logs" / "worker-1.log")


def test_a_child_dying_at_start_is_named_with_its_log(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    state = tmp_path / "state"
    empty = tmp_path / "empty.csv"  # pt up does not read it; the master refuses to start
    empty.write_text("symbol,time,open,high,low,close,volume\n")
    env = child_env(
        redis_url, database_url, state, PT_MARKET_PROVIDER="csv", PT_MARKET_CSV_PATH=str(empty)
    )
    master_port, worker_port = free_port(), free_port()
    result = _pt(
        ["up", "--detach", "--state-dir", str(state), "--workers", "1",
         "--master-port", str(master_port), "--worker-port", str(worker_port),
         "--timeout", "8"],
        env,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert "master" in result.stderr.splitlines()[0] and "last lines" in result.stderr
    assert not port_answers(master_port) and not port_answers(worker_port)
    assert not (state / "stack.json").exists()


def test_ctrl_c_stops_a_foreground_up_in_order(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    state = tmp_path / "state"
    env = child_env(redis_url, database_url, state, PT_LOG_FLUSH_SECONDS="0.2")
    master_port, worker_port = free_port(), free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "papertrader_cli", "up", "--state-dir", str(state), "--workers", "1",
         "--master-port", str(master_port), "--worker-port", str(worker_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        assert up.stdout is not None
        lines = []
        for line in up.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        assert port_answers(master_port) and port_answers(worker_port), lines
        # The servers' own log entries follow, merged and compact: "12:00:01 worker-1 ...".
        for line in up.stdout:
            lines.append(line)
            if re.match(r"\d\d:\d\d:\d\d worker-1 +worker worker-1 .*listening", line):
                break
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, err
    stopping = err.split("SIGINT: stopping", 1)[1]
    assert stopping.index("worker-1") < stopping.index("master")  # workers, then the master
    assert not port_answers(master_port) and not port_answers(worker_port)
    assert not (state / "stack.json").exists()
