"""`pt worker run` as an operator meets it: help, worker settings, one-line start-up errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_worker_support import ROOT, worker_env

from papertrader.config import ConfigError, Settings, load_settings
from papertrader.config.settings import derive_worker_uuid
from papertrader.services.ports import free_port
from papertrader_cli.worker import worker


def run_worker_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from papertrader_cli.worker import worker; worker()", "run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_names_every_option() -> None:
    result = CliRunner().invoke(worker, ["run", "--help"])
    assert result.exit_code == 0
    for option in ("--name", "--uuid", "--region", "--host", "--port", "--master", "--log-file"):
        assert option in result.output
    assert "pt services up" in result.output


def test_worker_identity_settings() -> None:
    default = load_settings(environ={})
    assert (default.worker_name, default.region, default.worker_uuid) == ("worker-1", "local", None)
    # Derived from the name: the same in `pt up` and in the worker, run after run.
    assert default.worker_id == derive_worker_uuid("worker-1") == Settings().worker_id
    assert Settings(worker_name="eu-1").worker_id != default.worker_id
    assert default.worker_client_address == "127.0.0.1:2049"
    assert default.master_address == ("127.0.0.1", 2048)

    given = uuid.uuid4()
    settings = load_settings(
        environ={
            "PT_WORKER_UUID": str(given).upper(),
            "PT_WORKER_ADVERTISE": "eu-1.example.com:2050",
            "PT_MASTER_CONNECT": "[::1]:2048",
        }
    )
    assert settings.worker_uuid == str(given) and settings.worker_id == given
    assert settings.worker_client_address == "eu-1.example.com:2050"
    assert settings.master_address == ("::1", 2048)
    assert load_settings(environ={"PT_MASTER_CONNECT": ""}).master_connect is None


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("PT_WORKER_UUID", "not-a-uuid", "is not a UUID"),
        ("PT_WORKER_UUID", str(uuid.UUID(int=0)), "is the nil UUID"),
        ("PT_WORKER_NAME", "eu 1", "is not usable"),
        ("PT_REGION", "x" * 65, "is not usable"),
        ("PT_MASTER_CONNECT", "10.0.0.5", "is not host:port"),
        ("PT_WORKER_ADVERTISE", "host:70000", "is not host:port"),
    ],
)
def test_bad_worker_settings_name_the_setting(var: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={var: value})
    message = str(info.value)
    assert message.startswith(f"{var.removeprefix('PT_').lower()} (from {var}): ")
    assert fragment in message and "; allowed: " in message


def test_bad_option_is_one_line(tmp_path: Path, redis_url: str) -> None:
    env = worker_env(tmp_path, redis_url, free_port(), free_port())
    result = run_worker_cli(env, "--master", "nowhere")
    assert result.returncode == 1
    assert result.stderr.startswith("error: master_connect (from override): ")
    assert "Traceback" not in result.stderr


def test_taken_port_is_one_line_and_no_traceback(tmp_path: Path, redis_url: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = worker_env(tmp_path, redis_url, port, free_port())
        # A worker needs no database: one given a URL anyway says to remove it.
        env["PT_DATABASE_URL"] = "postgresql://papertrader_master:secret@db.invalid/papertrader"
        result = run_worker_cli(env)
    assert result.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: " in result.stderr
    assert "Traceback" not in result.stderr
    assert "settings hold a database URL, which no worker uses: remove it" in result.stderr
    assert "secret" not in result.stderr


def test_no_redis_anywhere_says_what_to_do(tmp_path: Path, redis_url: str) -> None:
    env = worker_env(tmp_path, redis_url, free_port(), free_port())
    del env["PT_REDIS_URL"]
    result = run_worker_cli(env, "--state-dir", str(tmp_path / "empty"))
    assert result.returncode == 1
    assert "pt services up" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
