"""The worker's web port: the page over HTTP(S), and the WebSocket upgrade, on one listener.

Theory of operation. gevent's StreamServer spawns one greenlet per
connection (:meth:`WebServer.handle`). With TLS configured the handshake
runs first, within ``HANDSHAKE_SECONDS``. Then h11 (sans-IO HTTP/1.1) reads
requests, keep-alive included:

* ``GET``/``HEAD`` of a page file: answered from memory (``static_files.py``)
  with its ETag (304 when the browser has it), gzip when accepted, and the
  security headers of ``headers.py``; anything else is 404, other methods
  405;
* ``GET /ws`` with ``Upgrade: websocket``: checked (version 13, a key, an
  allowed ``Origin`` (``origins.py``), the ``papertrader.v1`` subprotocol),
  answered 101, and the connection is handed, as a :class:`WebSocketStream`
  (``carriage.py``), to the worker's ``ClientHandler``: from then on it is a
  client like any TCP client, same sessions, orders and limits. A refused
  upgrade gets a plain-text answer saying why (400, 403, 426).

Bounds, so a slow or hostile visitor costs little: request headers at most
``MAX_HEADER_BYTES`` and complete within ``HEADER_SECONDS``; a keep-alive
connection idle for ``KEEPALIVE_SECONDS`` is closed; request bodies are not
accepted (``MAX_BODY_BYTES``); at most ``MAX_HTTP_CONNECTIONS`` page
connections at once (WebSockets count against the client handler's own
caps instead, once upgraded).
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import ssl
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import gevent
import h11
from gevent.server import StreamServer
from loguru import logger
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionType
from wsproto.utilities import generate_accept_token

from papertrader.config import Settings
from papertrader.protocol import HEADER_SIZE
from papertrader.web.carriage import SUBPROTOCOL, WebSocketStream
from papertrader.web.headers import security_headers
from papertrader.web.origins import OriginPolicy, WorkerDirectory
from papertrader.web.static_files import INDEX, StaticFiles

WS_PATH = "/ws"
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 0
HEADER_SECONDS = 10.0
KEEPALIVE_SECONDS = 30.0
HANDSHAKE_SECONDS = 10.0
SEND_SECONDS = 30.0
MAX_HTTP_CONNECTIONS = 512
READ_SIZE = 16 * 1024

#: The client handler of the worker: serves one connection until it ends.
Handle = Callable[[Any, Any], None]


def page_config(settings: Settings, origin: str) -> bytes:
    """/config.json: what the page needs to know of its deployment (no secrets)."""
    config = {
        "assets": list(settings.assets),
        "update_interval": settings.update_interval,
        "starting_cash": str(settings.starting_cash),
        "region": settings.region,
        "worker": settings.worker_name,
        "origin": origin,
        "max_data_size": settings.max_data_size,
    }
    return json.dumps(config, indent=1).encode("utf-8")


def _peer(address: Any) -> str:
    host, port = str(address[0]), int(address[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Refused(Exception):
    """An HTTP request answered with an error status and a sentence."""

    def __init__(self, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or []


class WebServer:
    """The page and the WebSocket endpoint of one worker."""

    def __init__(
        self,
        address: tuple[str, int],
        handle: Handle,
        origins: OriginPolicy,
        ssl_context: ssl.SSLContext | None,
        max_data_size: int,
        static: StaticFiles | None = None,
    ) -> None:
        self.handle_client = handle
        self.origins = origins
        self.ssl_context = ssl_context
        self.static = static or StaticFiles()
        self.ws_read_size = HEADER_SIZE + max_data_size
        self.server = StreamServer(address, self.handle)
        self.connections = 0
        #: Refreshes the worker list (the origins) on demand; None: never.
        self.directory: WorkerDirectory | None = None

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.address[:2]
        return str(host), int(port)

    def init_socket(self) -> None:
        self.server.init_socket()

    def start(self) -> None:
        self.server.start()

    def stop(self, timeout: float | None = None) -> None:
        self.server.stop(timeout=timeout)

    def handle(self, sock: socket.socket, address: Any) -> None:
        """StreamServer handle: one HTTP connection (perhaps becoming a WebSocket)."""
        peer = _peer(address)
        if self.connections >= MAX_HTTP_CONNECTIONS:
            logger.info("web connection from {} refused: {} open", peer, self.connections)
            sock.close()
            return
        self.connections += 1
        stream: WebSocketStream | None = None
        try:
            wrapped = self._tls(sock, peer)
            if wrapped is None:
                return
            sock = wrapped
            stream = _HttpConnection(self, sock, address, peer).serve()
        except Exception:
            logger.exception("web connection from {} failed", peer)
        finally:
            self.connections -= 1
            if stream is None:
                try:
                    sock.close()
                except OSError:
                    pass
        if stream is not None:
            # A client like any other from now on, counted by the handler's own caps.
            self.handle_client(stream, address)

    def _tls(self, sock: socket.socket, peer: str) -> socket.socket | None:
        if self.ssl_context is None:
            return sock
        try:
            with gevent.Timeout(HANDSHAKE_SECONDS):
                wrapped = self.ssl_context.wrap_socket(sock, server_side=True)
            return wrapped
        except gevent.Timeout:
            logger.info("TLS handshake with {} not finished within {:g} s", peer, HANDSHAKE_SECONDS)
        except (ssl.SSLError, OSError) as exc:
            logger.info(
                "TLS handshake with {} failed: {}", peer, getattr(exc, "reason", exc) or exc
            )
        sock.close()
        return None


class _HttpConnection:
    def __init__(self, server: WebServer, sock: socket.socket, address: Any, peer: str) -> None:
        self.server = server
        self.sock = sock
        self.address = address
        self.peer = peer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)

    def serve(self) -> WebSocketStream | None:
        """Answer requests until the connection ends, or it becomes a WebSocket (returned)."""
        while True:
            try:
                request = self._next_request()
            except h11.RemoteProtocolError as exc:
                self._refuse(_Refused(exc.error_status_hint, f"bad request: {exc}"))
                return None
            if request is None:
                return None
            try:
                if _wants_upgrade(request):
                    return self._upgrade(request)
                self._answer(request)
                self._skip_body()
            except _Refused as refusal:
                self._refuse(refusal)
                if self.h11.our_state is not h11.DONE:
                    return None
            except (OSError, h11.ProtocolError, gevent.Timeout):
                return None
            if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
                return None
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return None

    # reading -------------------------------------------------------------------------
    def _next_request(self) -> h11.Request | None:
        """The next request's head, or None when the client is gone or idle too long."""
        first = True
        deadline: gevent.Timeout | None = None
        try:
            while True:
                event = self.h11.next_event()
                if isinstance(event, h11.Request):
                    return event
                if isinstance(event, h11.ConnectionClosed):
                    return None
                if event is not h11.NEED_DATA:
                    return None
                # Idle keep-alive waits KEEPALIVE_SECONDS for a first byte; once a
                # request has started its head must be complete within HEADER_SECONDS.
                self.sock.settimeout(KEEPALIVE_SECONDS if first else HEADER_SECONDS)
                try:
                    data = self.sock.recv(READ_SIZE)
                except (TimeoutError, OSError):
                    return None
                if first and data:
                    first = False
                    deadline = gevent.Timeout(HEADER_SECONDS)
                    deadline.start()
                self.h11.receive_data(data)
        except gevent.Timeout as exc:
            if exc is not deadline:
                raise
            logger.info(
                "web client {} took over {:g} s to send a request", self.peer, HEADER_SECONDS
            )
            return None
        finally:
            if deadline is not None:
                deadline.close()

    def _skip_body(self) -> None:
        """Page requests have no body; a client that sends one more than that is closed."""
        while self.h11.their_state is h11.SEND_BODY:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.sock.settimeout(HEADER_SECONDS)
                self.h11.receive_data(self.sock.recv(READ_SIZE))
            elif isinstance(event, h11.Data) and len(event.data) > MAX_BODY_BYTES:
                raise OSError("a request body was sent")
            elif isinstance(event, h11.ConnectionClosed):
                raise OSError("closed")

    # answering -----------------------------------------------------------------------
    def _send(self, *events: h11.Event) -> None:
        data = b"".join(self.h11.send(event) or b"" for event in events)
        self.sock.settimeout(SEND_SECONDS)
        self.sock.sendall(data)

    def _headers(self, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        policy = self.server.origins
        return [*extra, *security_headers(self.server.tls, policy.connect_sources())]

    def _answer(self, request: h11.Request) -> None:
        method = request.method.upper()
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        if path == WS_PATH:
            raise _Refused(
                426,
                f"this address is the WebSocket endpoint (subprotocol {SUBPROTOCOL})",
                [(b"upgrade", b"websocket")],
            )
        if method not in (b"GET", b"HEAD"):
            raise _Refused(405, "only GET and HEAD are served here", [(b"allow", b"GET, HEAD")])
        if path in ("/", INDEX) and self.server.directory is not None:
            self.server.directory.fresh()  # the page's connect-src lists the workers
        found = self.server.static.lookup(path)
        if found is None:
            raise _Refused(404, f"nothing at {path[:100]}: the page is at /")
        headers = dict(request.headers)
        base = [
            (b"cache-control", b"no-cache"),
            (b"etag", found.etag.encode("ascii")),
            (b"vary", b"accept-encoding"),
        ]
        if headers.get(b"if-none-match", b"").decode("latin-1") == found.etag:
            self._send(
                h11.Response(status_code=304, headers=self._headers(base), reason=_reason(304)),
                h11.EndOfMessage(),
            )
            return
        body = found.body
        if found.gzipped is not None and b"gzip" in headers.get(b"accept-encoding", b""):
            body = found.gzipped
            base.append((b"content-encoding", b"gzip"))
        response = h11.Response(
            status_code=200,
            reason=b"OK",
            headers=self._headers(
                [
                    (b"content-type", found.content_type.encode("ascii")),
                    (b"content-length", str(len(body)).encode("ascii")),
                    *base,
                ]
            ),
        )
        if method == b"HEAD":
            self._send(response, h11.EndOfMessage())
        else:
            self._send(response, h11.Data(data=body), h11.EndOfMessage())

    def _refuse(self, refusal: _Refused) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = (refusal.text + "\n").encode("utf-8")
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"cache-control", b"no-store"),
            *refusal.headers,
        ]
        if refusal.status >= 400 and refusal.status not in (404, 405):
            headers.append((b"connection", b"close"))
        try:
            self._send(
                h11.Response(
                    status_code=refusal.status,
                    headers=self._headers(headers),
                    reason=_reason(refusal.status),
                ),
                h11.Data(data=body),
                h11.EndOfMessage(),
            )
        except (OSError, h11.ProtocolError):
            pass

    # the upgrade ---------------------------------------------------------------------
    def _upgrade(self, request: h11.Request) -> WebSocketStream:
        """Check the handshake (_Refused if it fails), answer 101: the WebSocket."""
        headers = _header_map(request)
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        if path != WS_PATH:
            raise _Refused(404, f"WebSockets are served at {WS_PATH} only")
        if request.method.upper() != b"GET" or request.http_version != b"1.1":
            raise _Refused(400, "a WebSocket upgrade is a GET over HTTP/1.1")
        if headers.get("sec-websocket-version") != "13":
            raise _Refused(426, "WebSocket version 13 only", [(b"sec-websocket-version", b"13")])
        key = headers.get("sec-websocket-key", "")
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except (binascii.Error, ValueError):
            valid_key = False
        if not valid_key:
            raise _Refused(400, "Sec-WebSocket-Key must be 16 bytes in base64")
        origin = headers.get("origin")
        if not self.server.origins.allows(origin) and self.server.directory is not None:
            self.server.directory.fresh(max_age=1.0)  # a worker that joined since the last look?
        if not self.server.origins.allows(origin):
            logger.info("WebSocket from {} refused: origin {!r} not allowed", self.peer, origin)
            raise _Refused(403, "this page's origin may not open a WebSocket here")
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
        if SUBPROTOCOL not in offered:
            raise _Refused(
                400, f"offer the {SUBPROTOCOL} subprotocol (docs/PROTOCOL.md section 15)"
            )
        self._send(
            h11.InformationalResponse(
                status_code=101,
                reason=b"Switching Protocols",
                headers=[
                    (b"upgrade", b"websocket"),
                    (b"connection", b"Upgrade"),
                    (b"sec-websocket-accept", generate_accept_token(key.encode("ascii"))),
                    (b"sec-websocket-protocol", SUBPROTOCOL.encode("ascii")),
                ],
            )
        )
        trailing, _closed = self.h11.trailing_data
        self.sock.settimeout(None)
        return WebSocketStream(
            self.sock,
            WSConnection(ConnectionType.SERVER, trailing_data=bytes(trailing)),
            self.peer,
            self.server.ws_read_size,
        )


def _reason(status: int) -> bytes:
    return HTTPStatus(status).phrase.encode("ascii")


def _header_map(request: h11.Request) -> dict[str, str]:
    """Lower-case names; repeated headers joined with commas (RFC 9110 5.3)."""
    out: dict[str, str] = {}
    for name, value in request.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _wants_upgrade(request: h11.Request) -> bool:
    headers = _header_map(request)
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return "upgrade" in connection and headers.get("upgrade", "").lower() == "websocket"
