"""Quote load: N concurrent connections, each asking for one quote at a time.

Each request is the protocol's real sequence, switchState(1) then
getAssetValueCurrent, sent together (the client knows the state machine, so it
may pipeline them) and answered by stateSwitchSuccess plus one DATA packet.
Frames are pre-encoded and replies are counted by their headers, so the
generator costs as little as possible and the server is what is measured.
Every request's latency (send to last answer byte) is recorded.

One gevent process cannot keep a fast server busy (it costs about what a bare
server costs per request), so ``run_load`` spreads the connections over
several processes (``python -m bench.loadgen``, one per core by default), which
start together at an agreed moment and report their counts, latencies and CPU
time through a file.
"""

from __future__ import annotations

import json
import os
import resource
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import gevent.socket
import gevent.ssl

from papertrader.protocol import Instruction, Message, encode_message

_SIZE_AT = struct.Struct("<I")
_INSTRUCTION_AT = struct.Struct("<H")
ROOT = Path(__file__).resolve().parents[1]


def request_bytes(session_id: uuid.UUID, symbol: str) -> bytes:
    """switchState(1) and getAssetValueCurrent(symbol), pipelined."""
    return encode_message(
        Message(Instruction.SWITCH_STATE, (1,), session_id=session_id)
    ) + encode_message(
        Message(Instruction.GET_ASSET_VALUE_CURRENT, (symbol,), session_id=session_id)
    )


@dataclass
class LoadResult:
    """Requests answered in a window, their latencies (seconds) and the generator's CPU."""

    requests: int = 0
    seconds: float = 0.0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    cpu_seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def add(self, other: LoadResult) -> None:
        self.requests += other.requests
        self.seconds = max(self.seconds, other.seconds)
        self.latencies.extend(other.latencies)
        self.cpu_seconds += other.cpu_seconds

    def percentile_ms(self, fraction: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return round(float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]) * 1000, 3)


def read_frames(sock: gevent.socket.socket, buf: bytearray, wanted: int) -> int:
    """Read until ``wanted`` whole protocol frames are in front of ``buf``, then drop them;
    the last one's instruction (from its header, docs/PROTOCOL.md section 2)."""
    frames, instruction = 0, 0
    while frames < wanted:
        if len(buf) >= 80:
            size = _SIZE_AT.unpack_from(buf, 20)[0]
            if len(buf) >= 80 + size:
                instruction = _INSTRUCTION_AT.unpack_from(buf, 4)[0]
                del buf[: 80 + size]
                frames += 1
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return instruction


def _read_ws_frames(sock: gevent.socket.socket, buf: bytearray, wanted: int) -> None:
    """The same over WebSocket binary messages (one or more frames each)."""
    frames = 0
    while frames < wanted:
        if len(buf) >= 2:
            length, offset = buf[1] & 0x7F, 2
            if length == 126 and len(buf) >= 4:
                length, offset = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127 and len(buf) >= 10:
                length, offset = int.from_bytes(buf[2:10], "big"), 10
            if (length < 126 or offset > 2) and len(buf) >= offset + length:
                message = bytes(buf[offset : offset + length])
                del buf[: offset + length]
                while len(message) >= 80:  # whole frames, one or more
                    size = _SIZE_AT.unpack_from(message, 20)[0]
                    message = message[80 + size :]
                    frames += 1
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk


def tcp(port: int, ca: str | None = None) -> gevent.socket.socket:
    """A connection to 127.0.0.1:port; in TLS, verified against the CA file ``ca``."""
    sock = gevent.socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
    if ca is not None:
        return _context(ca).wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


_contexts: dict[str, ssl.SSLContext] = {}


def _context(ca: str) -> ssl.SSLContext:
    """Verifies chain and name as the client library does; gevent's SSLContext, so a
    handshake yields to the other connections (the generator is not monkey-patched)."""
    if ca not in _contexts:
        context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(ca)
        _contexts[ca] = context
    return _contexts[ca]


def connect_p50_ms(port: int, ca: str | None, count: int = 200) -> float:
    """Median milliseconds to open a new connection, one after the other: with ``ca`` a
    full TLS handshake (TCP included), without it the TCP handshake alone."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        sock = tcp(port, ca)
        times.append((time.perf_counter() - started) * 1000)
        sock.close()
    return round(statistics.median(times), 3)


def _websocket(port: int, origin: str, ca: str | None = None) -> tuple[gevent.socket.socket, bytes]:
    """An upgraded connection to the web port, and what arrived after the 101."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request

    sock = tcp(port, ca)
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

    return bytes(FrameProtocol(client=True, extensions=[]).send_data(payload, fin=True))


def _connect(
    port: int, origin: str | None, ca: str | None
) -> tuple[gevent.socket.socket, bytearray]:
    if origin is not None:
        sock, early = _websocket(port, origin, ca)
        return sock, bytearray(early)
    return tcp(port, ca), bytearray()


def generate(
    port: int,
    payload: bytes,
    connections: int,
    start_at: float,
    seconds: float,
    origin: str | None = None,
    ca: str | None = None,
) -> LoadResult:
    """Connect (in TLS with ``ca``: kept connections, each handshake done before the
    start), wait for ``start_at`` (time.time()), then load until ``seconds`` later."""
    message = _masked_message(payload) if origin is not None else payload
    read = _read_ws_frames if origin is not None else read_frames
    socks = [_connect(port, origin, ca) for _ in range(connections)]
    gevent.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + seconds
    latencies: list[array[float]] = [array("d") for _ in socks]
    clock = time.perf_counter

    def one(index: int) -> None:
        sock, buf = socks[index]
        record = latencies[index].append
        while time.monotonic() < deadline:
            sent = clock()
            sock.sendall(message)
            read(sock, buf, 2)
            record(clock() - sent)

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    gevent.joinall([gevent.spawn(one, i) for i in range(len(socks))], raise_error=True)
    elapsed = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for sock, _ in socks:
        sock.close()
    result = LoadResult(seconds=elapsed)
    for each in latencies:
        result.latencies.extend(each)
    result.requests = len(result.latencies)
    result.cpu_seconds = (cpu_after.ru_utime + cpu_after.ru_stime) - (
        cpu_before.ru_utime + cpu_before.ru_stime
    )
    return result


def run_load(
    port: int,
    payload: bytes,
    connections: int,
    seconds: float,
    *,
    processes: int = 1,
    origin: str | None = None,
    ca: str | None = None,
) -> LoadResult:
    """``connections`` clients for ``seconds``, spread over ``processes`` generator processes
    (1: in this process, which must be gevent-patched). ``origin``: over the WebSocket;
    ``ca``: in TLS, the server verified against that CA file."""
    if processes <= 1:
        return generate(port, payload, connections, time.time(), seconds, origin, ca)
    start_at = time.time() + 1.5  # every child connected by then
    with tempfile.TemporaryDirectory(prefix="pt-loadgen-") as tmp:
        children = []
        for index in range(processes):
            share = connections // processes + (1 if index < connections % processes else 0)
            job = {
                "port": port,
                "payload": payload.hex(),
                "connections": share,
                "start_at": start_at,
                "seconds": seconds,
                "origin": origin,
                "ca": ca,
                "out": str(Path(tmp) / f"{index}"),
            }
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.loadgen", json.dumps(job)], env=env, cwd=ROOT
                )
            )
        total = LoadResult()
        for index, child in enumerate(children):
            while child.poll() is None:
                gevent.sleep(0.05)
            if child.returncode != 0:
                raise RuntimeError(f"load generator {index} failed ({child.returncode})")
            out = Path(tmp) / f"{index}"
            figures = json.loads(out.with_suffix(".json").read_text())
            part = LoadResult(figures["requests"], figures["seconds"], array("d"), figures["cpu"])
            part.latencies.frombytes(out.with_suffix(".bin").read_bytes())
            total.add(part)
        return total


def _child(job: dict[str, object]) -> None:
    origin, ca = job["origin"], job.get("ca")
    result = generate(
        int(str(job["port"])),
        bytes.fromhex(str(job["payload"])),
        int(str(job["connections"])),
        float(str(job["start_at"])),
        float(str(job["seconds"])),
        str(origin) if origin is not None else None,
        str(ca) if ca is not None else None,
    )
    out = Path(str(job["out"]))
    out.with_suffix(".bin").write_bytes(result.latencies.tobytes())
    figures = {"requests": result.requests, "seconds": result.seconds, "cpu": result.cpu_seconds}
    out.with_suffix(".json").write_text(json.dumps(figures))


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
