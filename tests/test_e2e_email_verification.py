"""Optional e-mail verification at registration (setting ``email_verification``), end to end.

A real master and worker with the setting on, and a real SMTP server
(aiosmtpd) on loopback that the test reads the mail from.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from account_support import MailSink
from test_e2e_support import PASSWORD, Servers, running

from papertrader.client import ClientError
from papertrader.protocol import ErrorCode


def test_a_new_account_confirms_its_address_before_it_can_log_in(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    with MailSink() as mail:
        env = {"PT_EMAIL_VERIFICATION": "true", **mail.env()}
        with running(Servers(tmp_path, redis_url, database_url, env_extra=env)) as servers:
            with servers.client() as client:
                name = f"v{uuid.uuid4().hex[:10]}"
                email = f"{name}@example.org"
                deadline = time.monotonic() + 30
                while True:  # the worker may take a moment to mark its new link up
                    try:
                        client.register(name, email, PASSWORD)
                        break
                    except ClientError as exc:
                        if exc.code is not ErrorCode.UNAVAILABLE or time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                with pytest.raises(ClientError) as caught:
                    client.login(name, PASSWORD)
                assert caught.value.code is ErrorCode.EMAIL_UNVERIFIED
                message = mail.wait_for(email)
                assert message.message["Subject"] == "PaperTrader: confirm your e-mail address"
                code = message.code()
                assert f"pt client email verify --code {code}" in message.body
                with pytest.raises(ClientError) as wrong:
                    client.verify_email("not-the-code")
                assert wrong.value.code is ErrorCode.RESET_CODE_INVALID
                assert "confirmed" in client.verify_email(code)
                client.login(name, PASSWORD)
                assert client.sign_in_methods().email_verified is True
