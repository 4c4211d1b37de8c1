"""Encrypted transport (issue 9): TLS contexts, certificates and the private PKI.

``contexts``: the ``ssl.SSLContext`` of servers and clients (TLS 1.2+, modern
ciphers, verification always on). ``certs``: a CA, server certificates,
what a certificate says. ``local``: the state directory's private CA that
``pt up`` uses. ``setup``: settings to contexts for one process. ``accept``:
the server side of a TLS port, plaintext clients refused in words.
"""

from __future__ import annotations

from papertrader.protocol import ErrorCode, Instruction, Message, encode_message

#: What a plaintext client on a TLS port is told before the connection closes.
PLAINTEXT_REFUSAL_REASON = (
    "the server speaks TLS; connect with TLS (pt client does by default; a program "
    "wraps its socket in TLS and verifies the server's certificate)"
)


def plaintext_refusal(max_data_size: int) -> bytes:
    """The ERROR frame (TLS_REQUIRED) a plaintext client gets on a TLS port."""
    message = Message(Instruction.ERROR, (int(ErrorCode.TLS_REQUIRED), PLAINTEXT_REFUSAL_REASON))
    return encode_message(message, max_data_size)
