"""One master link for all the processes of a worker (``pt worker run --processes N``).

A worker may serve its ports from several processes (``worker_processes``,
SO_REUSEPORT), but the master allows **one live link per worker UUID**
(``WorkerRegistry.claim``, issue 10): a second link of the same UUID is
refused, so that a stolen key cannot sit beside the real worker. The processes
therefore do not each link: process 0 holds the one sealed, GPG-admitted link
(``master_link.py``) and serves a relay on a Unix socket (mode 0600, in the
state directory's ``run/``); processes 1..N-1 send their forwarded requests
(logins, account data, history misses, commands) through it with a
:class:`RelayLink`, which has the parts of ``MasterLink``'s interface the
worker uses. The master sees one worker, as before, and nothing about the
rule changes; the other processes need no key at all.

Records on the relay socket: kind (1 byte), request id (u32), body size
(u32), body. From a serving process: ``R`` (timeout as f64 seconds, then the
request frame) and ``C`` (cancel: the client gave up). From process 0: ``A``
(the master's answer frame), ``P`` (the payload of its DATA packets), ``E``
(a LinkError as JSON: code, reason, whether the request left the worker) and
``S`` (the link's state as JSON, sent on connect and whenever it changes,
with the master's session-signing public key once the link has it).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.socket
from gevent.server import StreamServer
from loguru import logger

from papertrader.protocol import ErrorCode, Message, decode_all, encode_message
from papertrader.worker.link import LinkError, LinkIdentity
from papertrader.worker.master_link import DEFAULT_REQUEST_TIMEOUT, MasterLink

_RECORD = struct.Struct("<cII")
_TIMEOUT = struct.Struct("<d")
#: The largest record body: a master's answer is bounded by the link's reassembler.
MAX_BODY = 64 * 1024 * 1024 + 1024
#: Frames on the relay are the worker's own: as large as the link carries.
_FRAME_LIMIT = MAX_BODY
STATUS_POLL = 0.2
_TEMP_PREFIX = "pt-link-"
RECONNECT_DELAY = 0.5


class _Records:
    """Length-prefixed records over a stream socket, sent whole under a lock."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = gevent.lock.Semaphore()
        self._buffer = bytearray()

    def send(self, kind: bytes, request_id: int, body: bytes = b"") -> None:
        with self._lock:
            self.sock.sendall(_RECORD.pack(kind, request_id, len(body)) + body)

    def send_json(self, kind: bytes, request_id: int, value: dict[str, Any]) -> None:
        self.send(kind, request_id, json.dumps(value).encode())

    def read(self) -> tuple[bytes, int, bytes] | None:
        """The next record, or None once the peer closed (OSError on a broken one)."""
        while True:
            if len(self._buffer) >= _RECORD.size:
                kind, request_id, size = _RECORD.unpack_from(self._buffer)
                if size > MAX_BODY:
                    raise ConnectionError(f"relay record of {size} bytes")
                end = _RECORD.size + size
                if len(self._buffer) >= end:
                    body = bytes(self._buffer[_RECORD.size : end])
                    del self._buffer[:end]
                    return kind, request_id, body
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return None
            self._buffer += chunk


def relay_path(run_dir: Path, worker_name: str) -> Path:
    """Where process 0 of ``worker_name`` listens: in the state directory's ``run/``, or
    in a private (0700) temporary directory when that path is too long for a Unix
    socket (108 bytes)."""
    path = run_dir / f"{worker_name}.link"
    if len(os.fsencode(path)) < 100:
        return path
    return Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX)) / "link"


class LinkRelayServer:
    """Process 0's side: carries the other processes' requests over its master link."""

    def __init__(self, link: MasterLink, path: Path) -> None:
        self.link = link
        self.path = path
        self._server: StreamServer | None = None
        self._peers: set[_Records] = set()
        self._watcher: gevent.Greenlet | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        listener = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket file is born 0600: only this user's processes
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old)
        listener.listen(64)
        self._server = StreamServer(listener, self._serve)
        self._server.start()
        self._watcher = gevent.spawn(self._watch)

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.kill(block=False)
        if self._server is not None:
            self._server.stop(timeout=1)
        self.path.unlink(missing_ok=True)
        if self.path.parent.name.startswith(_TEMP_PREFIX):
            self.path.parent.rmdir()

    def _state(self) -> dict[str, Any]:
        key = self.link.session_key
        return {
            "connected": self.link.connected,
            "out_of_service": self.link.out_of_service,
            # The master's session-signing public key, as the link received it.
            "session_key": key.hex() if key is not None else None,
        }

    def _watch(self) -> None:
        """Tell every serving process when the link comes up, drops or is refused."""
        last = self._state()
        while True:
            gevent.sleep(STATUS_POLL)
            state = self._state()
            if state != last:
                last = state
                for peer in list(self._peers):
                    try:
                        peer.send_json(b"S", 0, state)
                    except OSError:
                        pass

    def _serve(self, sock: socket.socket, _address: Any) -> None:
        peer = _Records(sock)
        jobs: dict[int, gevent.Greenlet] = {}
        self._peers.add(peer)
        try:
            peer.send_json(b"S", 0, self._state())
            while (record := peer.read()) is not None:
                kind, request_id, body = record
                if kind == b"R":
                    (timeout,) = _TIMEOUT.unpack_from(body)
                    jobs[request_id] = gevent.spawn(
                        self._forward, peer, request_id, timeout, body[_TIMEOUT.size :], jobs
                    )
                elif kind == b"C" and request_id in jobs:
                    jobs.pop(request_id).kill(block=False)  # the link cancels it on the master
        except (OSError, struct.error) as exc:
            logger.warning(f"link relay: a serving process's connection broke ({exc})")
        finally:
            self._peers.discard(peer)
            for job in jobs.values():
                job.kill(block=False)
            sock.close()

    def _forward(
        self,
        peer: _Records,
        request_id: int,
        timeout: float,
        frame: bytes,
        jobs: dict[int, gevent.Greenlet],
    ) -> None:
        try:
            try:
                (message,) = decode_all(frame, _FRAME_LIMIT)
                answer = self.link.request(message, timeout)
            except LinkError as exc:
                error = {"code": int(exc.code), "reason": exc.reason, "sent": exc.sent}
                peer.send_json(b"E", request_id, error)
            else:
                if isinstance(answer, bytes):
                    peer.send(b"P", request_id, answer)
                else:
                    peer.send(b"A", request_id, encode_message(answer, _FRAME_LIMIT))
        except OSError:
            pass  # the serving process went away: its clients are gone too
        finally:
            jobs.pop(request_id, None)


class RelayLink:
    """A serving process's way to the master: through process 0's link.

    It answers what the worker asks of a ``MasterLink`` (``request``,
    ``connected``, ``out_of_service``...), with the same errors.
    """

    def __init__(
        self,
        path: Path,
        identity: LinkIdentity,
        *,
        on_refused: Callable[[str], None] | None = None,
        on_session_key: Callable[[bytes], None] | None = None,
    ) -> None:
        self.path = path
        self.identity = identity
        self.on_refused = on_refused
        self.on_session_key = on_session_key
        self.request_timeout = DEFAULT_REQUEST_TIMEOUT
        self.out_of_service: str | None = None
        self.connections = 0
        self._up = gevent.event.Event()
        self._peer: _Records | None = None
        self._pending: dict[int, gevent.event.AsyncResult] = {}
        self._ids = itertools.count(1)
        self._runner: gevent.Greenlet | None = None

    @property
    def where(self) -> str:
        return f"the link of this worker's process 0 ({self.path})"

    @property
    def connected(self) -> bool:
        return bool(self._up.is_set())

    def wait_connected(self, timeout: float | None = None) -> bool:
        return bool(self._up.wait(timeout))

    def start(self) -> None:
        if self._runner is None:
            self._runner = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.kill(block=True, timeout=5)
            self._runner = None
        self._drop("the worker is shutting down")

    def request(self, message: Message, timeout: float | None = None) -> Message | bytes:
        """As ``MasterLink.request``: the answer, or LinkError."""
        if timeout is None:
            timeout = self.request_timeout
        peer = self._peer
        if peer is None or not self._up.is_set():
            raise LinkError("master unreachable: try again shortly", sent=False)
        request_id = next(self._ids) & 0xFFFFFFFF
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._pending[request_id] = result
        body = _TIMEOUT.pack(timeout) + encode_message(message, _FRAME_LIMIT)
        try:
            try:
                peer.send(b"R", request_id, body)
            except OSError:
                raise LinkError("master unreachable: try again shortly", sent=False) from None
            # Process 0 gives up at ``timeout``; a margin lets its answer (or error) arrive.
            answer: Message | bytes = result.get(timeout=timeout + 1.0)
            return answer
        except gevent.Timeout:
            raise LinkError(f"master did not answer within {timeout:g} s: try again") from None
        finally:
            self._pending.pop(request_id, None)
            if not result.ready():
                try:
                    peer.send(b"C", request_id)
                except OSError:
                    pass

    def _run(self) -> None:
        while True:
            sock = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
            except OSError:
                sock.close()
                gevent.sleep(RECONNECT_DELAY)
                continue
            peer = _Records(sock)
            self._peer = peer
            try:
                while (record := peer.read()) is not None:
                    self._receive(*record)
            except (OSError, ValueError, struct.error) as exc:
                logger.warning(f"link relay broke ({exc}); reconnecting")
            finally:
                self._peer = None
                sock.close()
                self._drop("the master link dropped: try again")
            gevent.sleep(RECONNECT_DELAY)

    def _receive(self, kind: bytes, request_id: int, body: bytes) -> None:
        if kind == b"S":
            self._status(json.loads(body))
            return
        result = self._pending.get(request_id)
        if result is None:
            return  # given up already
        if kind == b"A":
            (message,) = decode_all(body, _FRAME_LIMIT)
            result.set(message)
        elif kind == b"P":
            result.set(body)
        elif kind == b"E":
            error = json.loads(body)
            code = ErrorCode(int(error["code"]))
            result.set_exception(LinkError(str(error["reason"]), code, sent=bool(error["sent"])))

    def _status(self, state: dict[str, Any]) -> None:
        key = state.get("session_key")
        if isinstance(key, str) and self.on_session_key is not None:
            try:
                self.on_session_key(bytes.fromhex(key))
            except ValueError:
                logger.error("link relay: a session key that is not hex")
        refused = state.get("out_of_service")
        newly_refused = refused and refused != self.out_of_service
        self.out_of_service = refused or None
        if state.get("connected"):
            if not self._up.is_set():
                self.connections += 1
            self._up.set()
        else:
            self._up.clear()
        if newly_refused and self.on_refused is not None:
            self.on_refused(str(refused))

    def _drop(self, reason: str) -> None:
        """The relay is gone: nothing can reach the master until it is back."""
        self._up.clear()
        pending, self._pending = self._pending, {}
        for result in pending.values():
            result.set_exception(LinkError(reason))
