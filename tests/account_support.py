"""Real parts for the account tests: an OpenID provider process and an SMTP server.

No tests here. :class:`ProviderProcess` runs ``tests/oidc_provider.py`` (a
real OpenID Connect provider built on Authlib's server classes) on a free
loopback port; :class:`MailSink` is a real SMTP server (aiosmtpd) on
loopback that keeps what it receives, so a test reads the reset mail the
master sent. Both stop at the end of their ``with`` block.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message as MailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from papertrader.services.ports import free_port

HERE = Path(__file__).resolve().parent
CLIENT_ID = "papertrader-test-client"
CLIENT_SECRET = "installed-app-secret"


class ProviderProcess:
    """``with ProviderProcess(tmp) as idp:`` a live provider at ``idp.issuer``."""

    def __init__(
        self, tmp: Path, client_secret: str | None = CLIENT_SECRET, web_client_id: str | None = None
    ) -> None:
        self.tmp = tmp
        self.client_secret = client_secret
        self.web_client_id = web_client_id  # a second, public client, for web pages
        self.port_file = tmp / "oidc.port"
        self.log = tmp / "oidc.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.issuer = ""

    def __enter__(self) -> ProviderProcess:
        args = [
            sys.executable,
            str(HERE / "oidc_provider.py"),
            "--port-file",
            str(self.port_file),
            "--client-id",
            CLIENT_ID,
        ]
        if self.client_secret:
            args += ["--client-secret", self.client_secret]
        if self.web_client_id:
            args += ["--web-client-id", self.web_client_id]
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.port_file.exists():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the test OpenID provider did not start:\n{self.logs()}")
            time.sleep(0.05)
        self.issuer = f"http://127.0.0.1:{self.port_file.read_text().strip()}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def entry(
        self, name: str = "testid", display_name: str = "TestID", **more: Any
    ) -> dict[str, Any]:
        """One provider of the ``oidc_providers`` setting; ``more`` adds keys (web_flow...)."""
        entry: dict[str, Any] = {
            "name": name,
            "issuer": self.issuer,
            "client_id": CLIENT_ID,
            "display_name": display_name,
            **more,
        }
        if self.client_secret:
            entry["client_secret"] = self.client_secret
        return entry

    def setting(self, name: str = "testid", display_name: str = "TestID") -> str:
        """The ``oidc_providers`` setting (JSON, as PT_OIDC_PROVIDERS) naming this provider."""
        return json.dumps([self.entry(name, display_name)])

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(self.issuer + path, json=body, timeout=30)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def sign_in_as(self, sub: str, email: str, email_verified: bool = True) -> None:
        """The person signed in at the provider's web pages from now on."""
        self._post("/test/user", {"sub": sub, "email": email, "email_verified": email_verified})

    def rotate(self, keep: bool = False) -> str:
        return str(self._post("/test/rotate", {"keep": keep})["kid"])

    def mint(self, sign_with: str = "current", **claims: Any) -> str:
        """An ID token for the signed-in person with ``claims`` replaced (None removes one)."""
        return str(self._post("/test/mint", {"claims": claims, "sign_with": sign_with})["id_token"])

    def approve_device(self, user_code: str) -> None:
        self._post("/test/device/approve", {"user_code": user_code})

    def browse(self, authorization_url: str) -> str:
        """Act as the browser: open the URL, return where the provider redirects to."""
        response = requests.get(authorization_url, allow_redirects=False, timeout=30)
        assert response.status_code in (302, 303), (response.status_code, response.text[:500])
        return str(response.headers["Location"])

    def browse_and_follow(self, authorization_url: str) -> None:
        """Act as the browser on the client's machine: follow the redirect to its loopback."""
        location = self.browse(authorization_url)
        assert "code=" in location, location
        requests.get(location, timeout=30).raise_for_status()


def redirect_query(location: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


@dataclass
class Mail:
    to: list[str]
    message: MailMessage

    @property
    def body(self) -> str:
        payload = self.message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode()

    def code(self) -> str:
        match = re.search(r"--code (\S+)", self.body)
        assert match, self.body
        return match.group(1)


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        assert isinstance(content, bytes)
        with self.sink.lock:
            self.sink.mails.append(Mail(list(envelope.rcpt_tos), message_from_bytes(content)))
            self.sink.arrived.notify_all()
        return "250 OK"


class MailSink:
    """A real SMTP server on loopback that keeps every message it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mails: list[Mail] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> MailSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def env(self) -> dict[str, str]:
        """The master's settings for this server (plain SMTP: it is on loopback)."""
        return {
            "PT_SMTP_HOST": "127.0.0.1",
            "PT_SMTP_PORT": str(self.port),
            "PT_SMTP_SECURITY": "none",
            "PT_SMTP_SENDER": "PaperTrader <noreply@example.org>",
        }

    def wait_for(self, to: str, count: int = 1, timeout: float = 60.0) -> Mail:
        """The ``count``-th mail to ``to`` (AssertionError if it does not come in time)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                mine = [mail for mail in self.mails if to in mail.to]
                if len(mine) >= count:
                    return mine[count - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no mail #{count} to {to} within {timeout} s")
                self.arrived.wait(left)

    def to(self, address: str) -> list[Mail]:
        with self.lock:
            return [mail for mail in self.mails if address in mail.to]
