"""A real ``pt up`` stack for the web client's tests, shared by the tests of one module.

No tests here. ``web_stack`` (module scope) starts ``pt up --detach`` with two
workers, web pages on free ports, against a Redis database and a PostgreSQL
database of its own (copied from the migrated template), and stops it at the
end of the module; ``WebStack.pt`` runs other ``pt`` commands against it
(``pt workers boot``).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import _redis_numbers, _with_path, create_database, drop_database
from test_e2e_support import ROOT, child_env, free_block, retry_port_races

from papertrader.client import PaperTraderClient
from papertrader.services import ServiceUrls
from papertrader.services.ports import free_port
from papertrader.tls.contexts import client_context


@dataclass
class WebStack:
    state_dir: Path
    env: dict[str, str]
    endpoints: dict[str, Any]
    tmp: Path

    @property
    def workers(self) -> list[dict[str, Any]]:
        return list(self.endpoints["workers"])

    def web(self, index: int = 0) -> str:
        return str(self.workers[index]["web"])

    def worker_address(self, index: int = 0) -> tuple[str, int]:
        host, port = str(self.workers[index]["address"]).rsplit(":", 1)
        return host, int(port)

    @property
    def ca(self) -> Path:
        """The private CA `pt up` made for the stack (its web pages are HTTPS)."""
        return self.state_dir / "tls" / "ca.pem"

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the stack's servers (chain and name), as a browser trusting the CA."""
        return client_context(self.ca)

    def client(self, index: int = 0) -> PaperTraderClient:
        """A TCP client of worker ``index``, trusting the stack's CA as `pt client` does."""
        return PaperTraderClient(*self.worker_address(index), ca=self.ca)

    def pt(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "papertrader_cli", *args],
            capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=timeout, check=False,
        )  # fmt: skip

    def logs(self, lines: int = 60) -> str:
        out = []
        for log in sorted((self.state_dir / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)


@pytest.fixture(scope="module")
def web_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    service_urls: ServiceUrls,
    migrated_template: str,
) -> Iterator[WebStack]:
    """The stack; a test module may set STACK_ENV (PT_* settings) for its servers, or
    define a module fixture ``web_stack_env`` returning more (made by other fixtures)."""
    tmp = tmp_path_factory.mktemp("web")
    database_url = create_database(service_urls, template=migrated_template)
    redis_url = _with_path(service_urls.redis_url, str(next(_redis_numbers)))
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    state = tmp / "state"
    extra = dict(getattr(request.module, "STACK_ENV", {}))
    if hasattr(request.module, "web_stack_env"):
        extra.update(request.getfixturevalue("web_stack_env"))
    env = child_env(redis_url, database_url, state, PT_UPDATE_INTERVAL="0.5", **extra)
    stack = WebStack(state, env, {}, tmp)
    result = retry_port_races(
        lambda: stack.pt(
            "up", "--detach", "--json", "--state-dir", str(state), "--workers", "2",
            "--master-port", str(free_port()), "--worker-port", str(free_block(2)),
            "--web-port", "0", "--update-interval", "0.5",
        )
    )  # fmt: skip
    try:
        assert result.returncode == 0, result.stderr
        stack.endpoints = json.loads(result.stdout)
        yield stack
    finally:
        stack.pt("down", "--state-dir", str(state))
        client.flushdb()
        client.close()
        drop_database(service_urls, database_url)
