"""``pt workers`` and ``pt master keygen`` as an operator uses them.

The registry commands run against the test's PostgreSQL; the live ones
(list, info, boot, disable) against a real running master with real workers.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_e2e_support import Servers, running
from test_worker_support import wait_for
from test_workers_keys import keys

from papertrader.keyring import stop_agent
from papertrader_cli.main import cli


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for GnuPG homes made by the commands under test."""
    directory = Path(tempfile.mkdtemp(prefix="ptw-", dir="/tmp"))
    yield directory
    for home in directory.iterdir():
        stop_agent(home)
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


def pt(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def db_env(redis_url: str, database_url: str) -> dict[str, str]:
    return {"PT_REDIS_URL": redis_url, "PT_DATABASE_URL": database_url, "PT_CONFIG": ""}


def document(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_keygen_register_and_the_registry_commands(
    short_dir: Path, redis_url: str, database_url: str
) -> None:
    env = db_env(redis_url, database_url)
    master = pt(env, "master", "keygen", "--home", str(short_dir / "m"))
    assert master.exit_code == 0, master.output
    fingerprint = master.stdout.strip()
    assert len(fingerprint) == 40 and "PT_MASTER_FINGERPRINT=" in master.stderr
    again = pt(env, "master", "keygen", "--home", str(short_dir / "m"))
    assert again.stdout.strip() == fingerprint and "already there" in again.stderr
    assert (short_dir / "m").stat().st_mode & 0o777 == 0o700

    key_file = short_dir / "eu-1.asc"
    made = document(pt(env, "workers", "keygen", "--home", str(short_dir / "w"), "--name",
                       "eu-1", "--out", str(key_file), "--json"))  # fmt: skip
    assert made["created"] and key_file.read_text().startswith("-----BEGIN PGP PUBLIC KEY")

    unpinned = pt(env, "workers", "register", "eu-1", "--key", str(key_file),
                  "--ip", "203.0.113.7", "--region", "eu")  # fmt: skip
    assert unpinned.exit_code == 1 and "needs --address HOST:PORT" in unpinned.stderr
    bad_address = pt(env, "workers", "register", "eu-1", "--key", str(key_file), "--ip",
                     "203.0.113.7", "--region", "eu", "--address", "eu-1")  # fmt: skip
    assert bad_address.exit_code == 2 and "is not HOST:PORT" in bad_address.output
    registered = document(pt(env, "workers", "register", "eu-1", "--key", str(key_file),
                             "--ip", "203.0.113.7", "--region", "eu", "--address",
                             "EU-1.example.net:2049", "--json"))  # fmt: skip
    assert registered["allowed_ips"] == ["203.0.113.7/32"]
    assert registered["address"] == "eu-1.example.net:2049"
    assert registered["fingerprint"] == made["fingerprint"]
    same = pt(env, "workers", "register", "eu-1", "--key", str(key_file), "--ip",
              "198.51.100.0/24", "--ip", "203.0.113.7/32")  # fmt: skip
    assert same.exit_code == 0 and same.stdout.strip() == registered["uuid"]  # same UUID

    other_key = short_dir / "other.asc"
    other_key.write_text(keys().key("someone-else").public_key)
    clash = pt(env, "workers", "register", "eu-1", "--key", str(other_key), "--ip", "10.0.0.1")
    assert clash.exit_code == 1 and "registered with another key" in clash.stderr
    bad_ip = pt(env, "workers", "register", "x", "--key", str(key_file), "--ip", "nonsense")
    assert bad_ip.exit_code == 2 and "not an IP address or CIDR" in bad_ip.output
    secret = short_dir / "secret.asc"
    secret.write_text("-----BEGIN PGP PRIVATE KEY BLOCK-----\n...")
    refused = pt(env, "workers", "register", "y", "--key", str(secret), "--ip", "10.0.0.1")
    assert refused.exit_code == 1 and "secret key" in refused.stderr

    listing = document(pt(env, "workers", "list", "--json"))
    (row,) = listing["workers"]
    assert row["name"] == "eu-1" and row["connected"] is False and row["region"] == "eu"
    assert row["address"] == "eu-1.example.net:2049"  # kept by the update without --address
    assert row["allowed_ips"] == ["198.51.100.0/24", "203.0.113.7/32"]
    assert "not running" in listing["master"]

    info = pt(env, "workers", "info", "eu-1")
    assert info.exit_code == 0 and "live figures unavailable: the master is not running" in (
        info.stdout
    )
    disabled = pt(env, "workers", "disable", "eu-1")
    assert disabled.exit_code == 0 and "disabled" in disabled.stdout
    assert document(pt(env, "workers", "info", "eu-1", "--json"))["enabled"] is False
    assert pt(env, "workers", "enable", "eu-1").exit_code == 0
    assert pt(env, "workers", "remove", "eu-1").exit_code == 0
    missing = pt(env, "workers", "info", "eu-1")
    assert missing.exit_code == 1 and missing.stderr.count("\n") == 1
    assert "no worker named 'eu-1'" in missing.stderr


def test_live_figures_boot_and_disable_through_the_master(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    env = db_env(redis_url, database_url)
    with running(Servers(tmp_path, redis_url, database_url, workers=2)) as servers:
        with servers.client(0) as client:
            client.register("ivan", "ivan@example.org", "correct horse battery")
            client.login("ivan", "correct horse battery")
            listing = document(pt(env, "workers", "list", "--json"))
            rows = {r["name"]: r for r in listing["workers"]}
            assert rows["worker-1"]["connected"] and rows["worker-1"]["clients"] == 1
            assert rows["worker-2"]["connected"] and rows["worker-2"]["clients"] == 0

            info = document(pt(env, "workers", "info", "worker-1", "--json"))
            live = info["live"]
            assert live["clients"] == 1 and live["logged_in"] == 1
            assert live["uptime_seconds"] >= 0 and live["cache_age_seconds"] is not None
            assert float(live["link_latency_ms"]) < 1000
            assert info["allowed_ips"] == ["127.0.0.1/32"]

        started = time.monotonic()
        booted = pt(env, "workers", "boot", "worker-1")
        assert booted.exit_code == 0 and "booted off" in booted.stdout
        assert time.monotonic() - started < 1.0
        log = servers.procs["worker-1"].log
        wait_for(lambda: "refused the link" in log.read_text(), timeout=3)
        # Still enabled: it comes back by itself.
        wait_for(lambda: len(servers.worker_list(5)) == 2, 10)

        disabled = pt(env, "workers", "disable", "worker-2")
        assert disabled.exit_code == 0 and "worker-2 booted off" in disabled.stdout
        names = [w["name"] for w in servers.worker_list(5)]
        assert names == ["worker-1"]
        text = pt(env, "workers", "list")
        assert text.exit_code == 0
        line = next(row for row in text.stdout.splitlines() if row.startswith("worker-2"))
        assert " no " in line  # disabled, not connected
        unknown = pt(env, "workers", "boot", f"nobody-{uuid.uuid4().hex[:6]}")
        assert unknown.exit_code == 1 and "no worker named" in unknown.stderr


def test_every_command_has_help_a_user_can_act_on() -> None:
    for command in ("keygen", "register", "list", "info", "boot", "disable", "enable", "remove"):
        result = pt({}, "workers", command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output
    assert "--ip" in pt({}, "workers", "register", "--help").output
    assert "fingerprint" in pt({}, "master", "keygen", "--help").output
