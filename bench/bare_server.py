"""Baseline: a bare gevent server answering the quote frames with canned replies.

Same framing, same two replies per quote, no sessions, no state machine, no
cache: the fastest a gevent server on this machine can answer this load. The
worker's figure is read against it.

Run as: python -m bench.bare_server PORT
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from decimal import Decimal  # noqa: E402

from gevent.server import StreamServer  # noqa: E402

from papertrader.market.quote import Quote  # noqa: E402
from papertrader.protocol import Instruction, Message, encode_message, packets_for  # noqa: E402
from papertrader.protocol.records import to_record  # noqa: E402

_SIZE_AT = struct.Struct("<I")
QUOTE = Quote("AAPL", Decimal("1.00"), Decimal("1.00"), Decimal("1.00"), Decimal("1.00"), 1,
              datetime.now(timezone.utc))  # fmt: skip
SWITCH_OK = encode_message(Message(Instruction.STATE_SWITCH_SUCCESS, (1,)))
DATA = b"".join(encode_message(p) for p in packets_for(to_record(QUOTE.as_record())))


def handle(sock, _address):  # type: ignore[no-untyped-def]
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


if __name__ == "__main__":
    StreamServer(("127.0.0.1", int(sys.argv[1])), handle).serve_forever()
