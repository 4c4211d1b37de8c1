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


# -- the same load over the worker's WebSocket (docs/PROTOCOL.md section 15) ----------------


def _websocket(port: int, origin: str) -> tuple[gevent.socket.socket, bytes]:
    """An upgraded connection to the web port, and what arrived after the 101."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request

    sock = gevent.socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
    ws = WSConnection(ConnectionType.CLIENT)
    request = Request(
        host=f"127.0.0.1:{port}",
        target="/ws",
        subprotocols=["papertrader.v1"],
        extra_headers=[(b"origin", origin.encode())],
    )
    sock.sendall(ws.send(request))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the web port closed during the upgrade")
        head += chunk
    end = head.index(b"\r\n\r\n") + 4
    ws.receive_data(head[:end])
    if not any(isinstance(e, AcceptConnection) for e in ws.events()):
        raise ConnectionError(f"upgrade refused: {head[:80]!r}")
    return sock, head[end:]


def _masked_message(payload: bytes) -> bytes:
    """One masked binary WebSocket frame (a client must mask), encoded once and reused."""
    from wsproto.frame_protocol import FrameProtocol

    return FrameProtocol(client=True, extensions=[]).send_data(payload, fin=True)


def _one_ws_connection(
    port: int, origin: str, frame: bytes, deadline: float, counts: list[int], idx: int
) -> None:
    sock, buf_bytes = _websocket(port, origin)
    buf = bytearray(buf_bytes)
    done = 0
    try:
        while time.monotonic() < deadline:
            sock.sendall(frame)
            frames = 0
            while frames < 2:  # stateSwitchSuccess and the DATA packet, in binary messages
                while True:
                    if len(buf) >= 2:
                        length, offset = buf[1] & 0x7F, 2
                        if length == 126 and len(buf) >= 4:
                            length, offset = int.from_bytes(buf[2:4], "big"), 4
                        elif length == 127 and len(buf) >= 10:
                            length, offset = int.from_bytes(buf[2:10], "big"), 10
                        if length < 126 or offset > 2:
                            if len(buf) >= offset + length:
                                message = bytes(buf[offset : offset + length])
                                del buf[: offset + length]
                                while len(message) >= 80:  # whole frames, one or more
                                    size = _SIZE_AT.unpack_from(message, 20)[0]
                                    message = message[80 + size :]
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


def run_websocket_load(
    port: int, origin: str, payload: bytes, connections: int, seconds: float
) -> float:
    """Quotes per second over the web port's WebSocket, same requests as ``run_load``."""
    frame = _masked_message(payload)
    counts = [0] * connections
    start = time.monotonic()
    deadline = start + seconds
    jobs = [
        gevent.spawn(_one_ws_connection, port, origin, frame, deadline, counts, i)
        for i in range(connections)
    ]
    gevent.joinall(jobs, raise_error=True)
    elapsed = time.monotonic() - start
    return sum(counts) / elapsed
