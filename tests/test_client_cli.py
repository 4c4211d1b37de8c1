"""``pt client`` without a server: usage errors, the session file, an unreachable worker.

Everything that needs a running worker (JSON shapes of real answers, login
writing the session file) is in test_e2e_client.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from papertrader.client import ClientError, PaperTraderClient, ServerUnreachable, parse_address
from papertrader.client.session_file import StoredSession, load_session, save_session
from papertrader.protocol import ErrorCode
from papertrader.services.ports import free_port
from papertrader_cli.client import client

ROOT = Path(__file__).resolve().parent.parent


def _run(
    args: list[str], session_file: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``pt client ...`` as a real process, so exit status and stderr are what a user sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
    env["PYTHONPATH"] = str(ROOT)
    code = (
        "import sys; from papertrader_cli.client import client;"
        " sys.exit(client(prog_name='pt client'))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "--session-file", str(session_file), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _stored(path: Path) -> None:
    save_session(
        path,
        StoredSession(
            uuid.uuid4(), "alice", datetime.now(timezone.utc) + timedelta(hours=1), "127.0.0.1:1"
        ),
    )


@pytest.mark.parametrize(
    "args",
    [
        ["buy", "AAPL"],  # quantity missing
        ["buy", "AAPL", "0"],  # not a whole number of at least 1
        ["sell", "AAPL", "-3"],
        ["sell", "AAPL", "ten"],
        ["register", "alice"],  # --email missing
        ["quote"],  # at least one symbol
        ["--worker", "localhost:notaport", "whoami"],
        ["--worker", "::1", "whoami"],  # IPv6 without brackets
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2_without_touching_the_network(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(client, ["--session-file", str(tmp_path / "s.json"), *args])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "s.json").exists()


def test_session_file_is_private_from_the_first_byte(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # the most permissive umask: the mode must still be 0600
    try:
        path = tmp_path / "config" / "papertrader" / "session.json"
        _stored(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = load_session(path)
    assert stored is not None and stored.username == "alice"


def test_commands_needing_a_session_say_log_in_first(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        client, ["--session-file", str(tmp_path / "none.json"), "portfolio"]
    )
    assert result.exit_code == 1
    assert "not logged in" in result.output
    assert "Traceback" not in result.output


def test_unreachable_worker_is_one_clean_line_and_exit_1(tmp_path: Path) -> None:
    session_file = tmp_path / "session.json"
    _stored(session_file)
    port = free_port()
    result = _run(["--worker", f"127.0.0.1:{port}", "quote", "AAPL"], session_file)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_worker_on_login_keeps_no_session(tmp_path: Path) -> None:
    session_file = tmp_path / "session.json"
    port = free_port()
    result = _run(
        ["--worker", f"127.0.0.1:{port}", "login", "alice", "--password-stdin"],
        session_file,
        stdin="secret password\n",
    )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not session_file.exists()


def test_library_raises_server_unreachable_naming_the_address() -> None:
    port = free_port()
    with PaperTraderClient("127.0.0.1", port, timeout=5) as conn:
        with pytest.raises(ServerUnreachable) as caught:
            conn.login("alice", "whatever password")
    assert caught.value.address == f"127.0.0.1:{port}"
    assert caught.value.code is ErrorCode.UNAVAILABLE
    assert isinstance(caught.value, ClientError)


def test_library_refuses_session_requests_before_login() -> None:
    with PaperTraderClient("127.0.0.1", free_port(), timeout=5) as conn:
        with pytest.raises(ClientError) as caught:
            conn.portfolio()
    assert caught.value.code is ErrorCode.INVALID_SESSION


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:2049", ("127.0.0.1", 2049)),
        ("[::1]:2050", ("::1", 2050)),
        ("example.org", ("example.org", 2049)),
    ],
)
def test_worker_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text, default_port=2049) == expected


@pytest.mark.parametrize("text", ["host:0", "host:65536", ":2049", "[::1", "a:b:c"])
def test_bad_worker_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text, default_port=2049)
