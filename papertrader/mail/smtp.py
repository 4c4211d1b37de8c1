"""Sending mail through the operator's SMTP server (settings ``smtp_*``).

``Mailer.send`` makes one connection per message: STARTTLS (port 587) or
implicit TLS (port 465) with the certificate checked against the system's
CAs (or ``smtp_ca_file``), then AUTH when a user is configured. ``none``
sends in clear and is meant for a relay on the same host. The password is
never logged, and recipients appear in the log only masked (``a***@example.org``).

smtplib is blocking, but in the gevent-patched master its socket waits
cooperatively; the master also sends from a greenlet of its own, so a slow
mail server never delays an answer (and the answer's timing never tells
whether an account exists).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from loguru import logger

from papertrader.config import Settings


class MailError(Exception):
    """The message could not be handed to the mail server; the reason is safe to log."""


def masked(address: str) -> str:
    """``alice@example.org`` -> ``a***@example.org``: enough to follow a log, not to harvest."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


class Mailer:
    """Sends plain-text mail with the deployment's SMTP settings."""

    def __init__(self, settings: Settings) -> None:
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.security = settings.smtp_security
        self.user = settings.smtp_user
        self._password = settings.smtp_password
        self.sender = settings.smtp_sender
        self.timeout = settings.smtp_timeout
        self.ca_file = settings.smtp_ca_file

    @property
    def configured(self) -> bool:
        return self.host is not None

    def __repr__(self) -> str:
        return f"Mailer({self.host}:{self.port}, {self.security}, user={self.user!r})"

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def send(self, to: str, subject: str, body: str) -> None:
        """Deliver one message to the SMTP server, or raise MailError."""
        if self.host is None:
            raise MailError("no mail server is configured (setting smtp_host)")
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain="papertrader")
        message.set_content(body)
        try:
            if self.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self._context()
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=self._context())
                if self.user is not None:
                    smtp.login(self.user, self._password or "")
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError:
            raise MailError(
                f"the mail server {self.host} refused the login of {self.user}"
            ) from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise MailError(
                f"mail server {self.host}:{self.port}: {exc.__class__.__name__}: {exc}"
            ) from None
        logger.info("mailed {!r} to {}", subject, masked(to))
