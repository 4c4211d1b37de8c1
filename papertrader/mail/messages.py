"""The texts PaperTrader mails: plain text, the code and the command that uses it."""

from __future__ import annotations


def reset_mail(username: str, code: str, minutes: int) -> tuple[str, str]:
    """(subject, body) of a password-reset mail."""
    subject = "PaperTrader: your password reset code"
    body = f"""Hello {username},

someone (hopefully you) asked to reset the password of your PaperTrader
account. Your reset code is:

    {code}

Set a new password with:

    pt client password reset --code {code}

(add --worker HOST:PORT if you use another worker than the default). The code
works once, for {minutes} minutes. Using it signs you out everywhere.

If you did not ask for this, ignore this mail: your password is unchanged.
"""
    return subject, body


def verify_mail(username: str, code: str, minutes: int) -> tuple[str, str]:
    """(subject, body) of an e-mail verification mail."""
    subject = "PaperTrader: confirm your e-mail address"
    body = f"""Hello {username},

please confirm that this address belongs to your PaperTrader account with:

    pt client email verify --code {code}

The code works once, for {minutes} minutes. If you did not register, ignore
this mail.
"""
    return subject, body
