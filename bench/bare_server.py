"""Baseline: a bare gevent server answering the quote frames with canned replies.

Same framing, same two replies per quote, no sessions, no state machine, no
cache: the fastest a gevent server on this machine can answer this load. The
worker's figure is read against it. Given a certificate and key it speaks TLS
with the worker's own server context (papertrader/tls/contexts.py), so the TLS
worker can be read against a server paying the same transport's cost.

Run as: python -m bench.bare_server PORT [CERT KEY]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import ssl  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402

from gevent.server import StreamServer  # noqa: E402

from papertrader.market.quote import Quote  # noqa: E402
from papertrader.protocol import Instruction, Message, encode_message, packets_for  # noqa: E402
from papertrader.protocol.records import to_record  # noqa: E402
from papertrader.tls.contexts import server_context  # noqa: E402

_SIZE_AT = struct.Struct("<I")
QUOTE = Quote("AAPL", Decimal("1.00"), Decimal("1.00"), Decimal("1.00"), Decimal("1.00"), 1,
              datetime.now(timezone.utc))  # fmt: skip
SWITCH_OK = encode_message(Message(Instruction.STATE_SWITCH_SUCCESS, (1,)))
DATA = b"".join(encode_message(p) for p in packets_for(to_record(QUOTE.as_record())))


def handle(sock: socket.socket, _address: object) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the worker does
    buf = bytearray()
    answers = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buf += chunk
        out = bytearray()
        while len(buf) >= 80:
            size = _SIZE_AT.unpack_from(buf, 20)[0]
            if len(buf) < 80 + size:
                break
            del buf[: 80 + size]
            out += SWITCH_OK if answers % 2 == 0 else DATA
            answers += 1
        if out:
            sock.sendall(out)


def tls_handle(context: ssl.SSLContext) -> Callable[[socket.socket, object], None]:
    """``handle`` behind a TLS handshake, as the worker's acceptor does (no peek)."""

    def handle_tls(sock: socket.socket, address: object) -> None:
        handle(context.wrap_socket(sock, server_side=True), address)

    return handle_tls


if __name__ == "__main__":
    port = int(sys.argv[1])
    if len(sys.argv) == 4:
        context = server_context(Path(sys.argv[2]), Path(sys.argv[3]))
        StreamServer(("127.0.0.1", port), tls_handle(context)).serve_forever()
    else:
        StreamServer(("127.0.0.1", port), handle).serve_forever()
