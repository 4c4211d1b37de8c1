"""Throwaway Redis/PostgreSQL and processes for the benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from papertrader.services import ServiceUrls, destroy_services, start_services
from papertrader.store.migrate import migrate
from papertrader.store.roles import master_role_for

ROOT = Path(__file__).resolve().parents[1]


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


@contextmanager
def services() -> Iterator[tuple[ServiceUrls, Path]]:
    """Private servers in a temporary state dir, migrated, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pt-bench-") as tmp:
        state = Path(tmp)
        urls = start_services(state)
        try:
            migrate(urls.owner_url, master_role=master_role_for(urls.owner_url, urls.database_url))
            yield urls, state
        finally:
            destroy_services(state)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child process of this repository's code, output to ``log``."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *args], env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
