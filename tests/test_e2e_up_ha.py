"""``pt up --ha``: two masters, Redis with a replica and three Sentinels, PostgreSQL with
a synchronous streaming replica, workers that know both masters; one command up, a
client trades, `pt status` names the one active master, and the standby takes over
when the active one is killed.

Unlike the other ``pt up`` tests, the stack starts its own private Redis and
PostgreSQL (``--ha`` replicates them, so configured URLs are refused): they live in
the test's state directory and are removed afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from test_e2e_support import PASSWORD, child_env, free_block, port_answers, retry_port_races
from test_e2e_up import _pt, process_environment

from papertrader.client import ClientError, PaperTraderClient
from papertrader.protocol import ErrorCode
from papertrader.services import destroy_services, postgres_cluster
from papertrader.services.ports import free_port
from papertrader.stack.ha import load_ha


def _status(env: dict[str, str], state: Path) -> dict[str, Any]:
    done = _pt(["status", "--json", "--state-dir", str(state)], env, timeout=60)
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def _masters_by_role(status: dict[str, Any]) -> dict[str, list[str]]:
    """The addresses of the running masters, by the role `pt status` gives them."""
    roles: dict[str, list[str]] = {"active": [], "standby": []}
    for proc in status["processes"]:
        running = proc["role"] == "master" and proc["state"] == "running"
        if running and proc.get("master_role") in roles:
            roles[proc["master_role"]].append(proc["address"])
    return roles


def _buy(port: int, ca: Path, username: str, deadline: float) -> None:
    """Log in and buy one share, waiting out UNAVAILABLE while the workers move to the
    new master (a take-over is not instant); any other refusal fails the test."""
    while True:
        try:
            with PaperTraderClient("127.0.0.1", port, ca=ca, timeout=30) as client:
                client.login(username, PASSWORD)
                assert client.buy("SPY", 1).quantity == 1
                return
        except ClientError as exc:
            if exc.code is not ErrorCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_up_ha_trades_and_the_standby_takes_over_when_the_active_master_dies(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    env = child_env("", "", state)
    for name in ("PT_REDIS_URL", "PT_DATABASE_URL"):
        env.pop(name)  # --ha starts its own Redis and PostgreSQL (with a replica)
    master_port = standby_port = worker_port = 0

    def start() -> Any:
        nonlocal master_port, standby_port, worker_port
        master_port, standby_port, worker_port = free_port(), free_port(), free_block(1)
        return _pt(
            ["up", "--ha", "--detach", "--json", "--state-dir", str(state), "--workers", "1",
             "--master-port", str(master_port), "--standby-port", str(standby_port),
             "--worker-port", str(worker_port), "--update-interval", "0.3"],
            env,
        )  # fmt: skip

    try:
        result = retry_port_races(start)
        assert result.returncode == 0, result.stderr
        endpoints: dict[str, Any] = json.loads(result.stdout)
        first, second = f"127.0.0.1:{master_port}", f"127.0.0.1:{standby_port}"
        assert [m["address"] for m in endpoints["masters"]] == [first, second]
        assert endpoints["ha"] is True and endpoints["active_master"]["address"] == first
        pg = endpoints["postgres"]
        assert pg["synchronous"] and pg["primary"] != pg["replica"]
        redis_ha = endpoints["redis"]
        assert len(redis_ha["nodes"]) == 2 and redis_ha["primary"] == redis_ha["nodes"][0]
        assert len(redis_ha["sentinels"]) == 3

        # Both masters: one URL naming the primary and the replica, their role's; the
        # worker: no database URL, both masters on its command line.
        for master in endpoints["masters"]:
            master_env = process_environment(master["pid"])
            url = master_env["PT_DATABASE_URL"]
            assert url.startswith("postgresql://papertrader_master:")
            assert pg["primary"] in url and pg["replica"] in url
            assert "target_session_attrs=read-write" in url
        # Every process finds the Redis primary through the Sentinels, and a worker calls
        # an order queued only once the replica has it.
        for child in [*endpoints["masters"], *endpoints["workers"]]:
            seen = process_environment(child["pid"])
            assert seen["PT_REDIS_SENTINELS"] == ",".join(redis_ha["sentinels"])
            assert seen["PT_REDIS_MIN_REPLICAS_ACK"] == "1"
            password_file = Path(seen["PT_REDIS_SENTINEL_PASSWORD_FILE"])
            assert password_file.stat().st_mode & 0o777 == 0o600
        worker_pid = endpoints["workers"][0]["pid"]
        assert not [n for n in process_environment(worker_pid) if "DATABASE" in n]
        argv = Path(f"/proc/{worker_pid}/cmdline").read_bytes().decode().split("\0")
        assert [argv[i + 1] for i, a in enumerate(argv) if a == "--master"] == [first, second]

        ca = Path(endpoints["tls_ca"])
        with PaperTraderClient("127.0.0.1", worker_port, ca=ca) as client:
            client.register("hauser", "ha@example.org", PASSWORD)
        _buy(worker_port, ca, "hauser", time.monotonic() + 30)

        status = _status(env, state)
        assert _masters_by_role(status) == {"active": [first], "standby": [second]}
        ha_services = [
            "redis replica",
            "sentinel-1",
            "sentinel-2",
            "sentinel-3",
            "postgres replica",
        ]
        assert all(status["services"][name]["running"] for name in ha_services), status

        # kill -9 the active master: the standby takes over, the supervisor starts the
        # killed one again (as a standby), and clients trade on.
        os.kill(endpoints["masters"][0]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            status = _status(env, state)
            roles = _masters_by_role(status)
            if roles == {"active": [second], "standby": [first]}:
                break
            assert time.monotonic() < deadline, json.dumps(status, indent=1)
            time.sleep(0.5)
        assert status["active_master"]["epoch"] == endpoints["active_master"]["epoch"] + 1
        _buy(worker_port, ca, "hauser", time.monotonic() + 60)
    finally:
        down = _pt(["down", "--state-dir", str(state), "--json"], env)
        replica = load_ha(state).pg_replica
        destroy_services(state)
        if replica is not None:
            postgres_cluster.remove(replica)
    assert down.returncode == 0, down.stderr
    stopped = json.loads(down.stdout)["stopped"]
    assert stopped["master"] == stopped["master-2"] == "stopped"
    assert stopped["postgres replica"] == stopped["redis replica"] == "stopped"
    assert [v for k, v in stopped.items() if k.startswith("sentinel")] == ["stopped"] * 3
    assert not any(port_answers(p) for p in (master_port, standby_port, worker_port))
