"""Quote load: N concurrent connections, each asking for one quote at a time.

Each request is the protocol's real sequence, switchState(1) then
getAssetValueCurrent, sent together (the client knows the state machine, so it
may pipeline them) and answered by stateSwitchSuccess plus one DATA packet.
Frames are pre-encoded and replies are counted by their headers, so the
generator costs as little as possible and the server is what is measured.
"""

from __future__ import annotations

import struct
import time
import uuid

import gevent
import gevent.socket

from papertrader.protocol import Instruction, Message, encode_message

_SIZE_AT = struct.Struct("<I")


def request_bytes(session_id: uuid.UUID, symbol: str) -> bytes:
    """switchState(1) and getAssetValueCurrent(symbol), pipelined."""
    return encode_message(
        Message(Instruction.SWITCH_STATE, (1,), session_id=session_id)
    ) + encode_message(
        Message(Instruction.GET_ASSET_VALUE_CURRENT, (symbol,), session_id=session_id)
    )


def _one_connection(
    port: int, payload: bytes, deadline: float, counts: list[int], idx: int
) -> None:
    sock = gevent.socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
    buf = bytearray()
    done = 0
    try:
        while time.monotonic() < deadline:
            sock.sendall(payload)
            frames = 0
            while frames < 2:
                while True:
                    if len(buf) >= 80:
                        size = _SIZE_AT.unpack_from(buf, 20)[0]
                        if len(buf) >= 80 + size:
                            del buf[: 80 + size]
                            frames += 1
                            break
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("server closed the connection")
                    buf += chunk
            done += 1
    finally:
        counts[idx] = done
        sock.close()


def run_load(port: int, payload: bytes, connections: int, seconds: float) -> float:
    """Quotes per second over ``seconds`` with ``connections`` concurrent clients."""
    counts = [0] * connections
    start = time.monotonic()
    deadline = start + seconds
    jobs = [
        gevent.spawn(_one_connection, port, payload, deadline, counts, i)
        for i in range(connections)
    ]
    gevent.joinall(jobs, raise_error=True)
    elapsed = time.monotonic() - start
    return sum(counts) / elapsed
