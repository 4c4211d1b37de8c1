"""The worker's web port without a browser: its files and headers, the WebSocket upgrade's
checks, and the carriage of docs/PROTOCOL.md section 15 over a real ``pt up`` stack.

The WebSocket client is ``papertrader.client.websocket`` (wsproto over a
socket), speaking raw frames through the protocol's own ``Connection``, so
each test sees exactly the bytes a browser would.
"""

from __future__ import annotations

import gzip
import http.client
import json
import time
import uuid
from urllib.parse import urlsplit

import pytest
import web_support
from test_e2e_support import PASSWORD
from web_support import WebStack

from papertrader.client.websocket import WebSocketConnection, WebSocketRefused
from papertrader.protocol import (
    Connection,
    ConnectionStateCode,
    ErrorCode,
    Instruction,
    Message,
    NeedData,
    Role,
    encode_message,
)
from papertrader.protocol.records import from_record, from_records
from papertrader.protocol.values import Value, decode_payload
from papertrader.web.origins import OriginPolicy
from papertrader.web.tables import tables_js

web_stack = web_support.web_stack  # one pt up stack for the whole module
#: A short idle limit, so the idle test is quick (the other tests keep talking).
STACK_ENV = {"PT_CLIENT_IDLE_TIMEOUT": "4"}


def get(stack: WebStack, path: str, method: str = "GET", headers: dict[str, str] | None = None,
        index: int = 0) -> tuple[http.client.HTTPResponse, bytes]:  # fmt: skip
    where = urlsplit(stack.web(index))
    assert where.scheme == "https"  # the page is served over TLS, the stack's certificate
    assert where.hostname is not None
    conn = http.client.HTTPSConnection(
        where.hostname, where.port, timeout=10, context=stack.ssl_context()
    )
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response, body


def socket_url(stack: WebStack, index: int = 0) -> str:
    return stack.web(index).replace("https://", "wss://") + "/ws"


class WebClient:
    """Raw frames over one WebSocket, the protocol's state machine in the middle."""

    def __init__(self, stack: WebStack, index: int = 0, origin: str | None = None) -> None:
        self.ws = WebSocketConnection(
            socket_url(stack, index),
            origin or stack.web(index),
            10,
            ssl_context=stack.ssl_context(),
        )
        self.conn = Connection(Role.CLIENT)
        self.session: uuid.UUID | None = None  # set by login

    def send(self, *messages: Message) -> None:
        self.ws.send(b"".join(self.conn.send(m) for m in messages))

    def answers(self, count: int = 1) -> list[Message]:
        out: list[Message] = []
        while len(out) < count:
            data = self.ws.receive()
            assert data is not None, f"closed: {self.ws.close_code} {self.ws.close_reason}"
            self.conn.receive_data(data)
            while not isinstance(message := self.conn.next_message(), NeedData):
                out.append(message)
        return out

    def ask(self, message: Message) -> Message:
        self.send(message)
        (answer,) = self.answers()
        return answer

    def data(self, instruction: Instruction, *args: Value) -> Value:
        sid = self.session
        assert sid is not None  # logged in
        switched = self.ask(
            Message(
                Instruction.SWITCH_STATE, (int(ConnectionStateCode.DATA_TRANSFER),), session_id=sid
            )
        )
        assert switched.instruction is Instruction.STATE_SWITCH_SUCCESS, switched
        self.send(Message(instruction, args, session_id=sid, request_id=9))
        chunks = []
        while True:
            (packet,) = self.answers()
            assert packet.instruction is Instruction.DATA, packet
            chunks.append(packet.args[0])
            if packet.packet_number == packet.packet_max:
                return decode_payload(b"".join(chunks))  # type: ignore[arg-type]

    def login(self, username: str) -> None:
        answer = self.ask(Message(Instruction.LOGIN, (username, PASSWORD, False), request_id=1))
        assert answer.instruction is Instruction.SESSION_ID, answer
        self.session = answer.args[0]  # type: ignore[assignment]


# -- the page ------------------------------------------------------------------------------


def test_the_page_carries_the_security_headers(web_stack: WebStack) -> None:
    time.sleep(0.1)
    response, body = get(web_stack, "/")
    assert response.status == 200 and b"<!doctype html>" in body
    assert response.getheader("content-type") == "text/html; charset=utf-8"
    csp = response.getheader("content-security-policy") or ""
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'"  # no inline script, no eval
    assert directives["style-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in csp
    assert response.getheader("x-content-type-options") == "nosniff"
    assert response.getheader("referrer-policy") == "no-referrer"
    assert response.getheader("strict-transport-security") == "max-age=31536000"  # HTTPS
    # The other worker's socket is allowed, for failover.
    other = socket_url(web_stack, 1).removesuffix("/ws")
    deadline = time.monotonic() + 20
    while other not in directives["connect-src"] and time.monotonic() < deadline:
        time.sleep(0.5)
        directives = dict(
            d.strip().split(" ", 1)
            for d in (get(web_stack, "/")[0].getheader("content-security-policy") or "").split(";")
        )
    assert other in directives["connect-src"].split()
    assert b"<script>" not in body and " on" not in body.decode().split("<body>")[1].split("=")[0]


def test_files_are_cached_compressed_and_nothing_else_is_served(web_stack: WebStack) -> None:
    response, body = get(web_stack, "/js/app.js", headers={"accept-encoding": "gzip"})
    assert response.status == 200 and response.getheader("content-encoding") == "gzip"
    assert response.getheader("content-type") == "text/javascript; charset=utf-8"
    plain = gzip.decompress(body)
    etag = response.getheader("etag")
    again, empty = get(web_stack, "/js/app.js", headers={"if-none-match": etag or ""})
    assert again.status == 304 and empty == b""
    tables, text = get(web_stack, "/js/protocol/tables.js")
    assert text.decode() == tables_js()
    config = json.loads(get(web_stack, "/config.json")[1])
    assert config["assets"][:2] == ["AAPL", "MSFT"] and config["starting_cash"] == "100000.00"
    for path in ("/../pyproject.toml", "/%2e%2e/setup.py", "/nope.html", "/js/"):
        assert get(web_stack, path)[0].status == 404, path
    assert get(web_stack, "/", method="POST")[0].status == 405
    head, nothing = get(web_stack, "/js/app.js", method="HEAD")
    assert (
        head.status == 200
        and nothing == b""
        and int(head.getheader("content-length") or 0) == len(plain)
    )
    plain_ws, reason = get(web_stack, "/ws")
    assert plain_ws.status == 426 and b"papertrader.v1" in reason


# -- the upgrade ------------------------------------------------------------------------


def test_another_sites_page_may_not_open_the_socket(web_stack: WebStack) -> None:
    with pytest.raises(WebSocketRefused) as refused:
        WebSocketConnection(
            socket_url(web_stack), "https://evil.example", 10, ssl_context=web_stack.ssl_context()
        )
    assert refused.value.status == 403
    with pytest.raises(WebSocketRefused) as missing:
        WebSocketConnection(socket_url(web_stack), None, 10, ssl_context=web_stack.ssl_context())
    assert missing.value.status == 403


def test_the_subprotocol_is_required(web_stack: WebStack) -> None:
    with pytest.raises(WebSocketRefused) as refused:
        WebSocketConnection(
            socket_url(web_stack),
            web_stack.web(0),
            10,
            subprotocols=("chat",),
            ssl_context=web_stack.ssl_context(),
        )
    assert refused.value.status == 400 and "papertrader.v1" in refused.value.text
    ws = WebSocketConnection(
        socket_url(web_stack), web_stack.web(0), 10, ssl_context=web_stack.ssl_context()
    )
    assert ws.subprotocol == "papertrader.v1"
    ws.close()


# -- the carriage -----------------------------------------------------------------------


def test_register_login_quote_and_buy_over_the_socket_share_the_tcp_sessions(
    web_stack: WebStack,
) -> None:
    client = WebClient(web_stack)
    registered = client.ask(
        Message(Instruction.REGISTER, ("wsuser", "wsuser@example.org", PASSWORD), request_id=1)
    )
    assert registered.instruction is Instruction.REGISTER_SUCCESS, registered
    client.login("wsuser")
    assert client.session is not None
    quote = from_record(client.data(Instruction.GET_ASSET_VALUE_CURRENT, "AAPL"))
    assert quote["symbol"] == "AAPL" and quote["close"] > 0
    bought = client.ask(
        Message(Instruction.PURCHASE_ASSET, ("AAPL", 2), session_id=client.session, request_id=4)
    )
    assert bought.instruction is Instruction.PURCHASE_SUCCESS, bought
    # The same session on the other worker, over TCP.
    with web_stack.client(1) as tcp:
        tcp.resume(client.session)
        assert tcp.portfolio().positions[0].quantity == 2
    client.ws.close()


def test_frames_may_share_a_message_or_be_split_across_two(web_stack: WebStack) -> None:
    client = WebClient(web_stack)
    bad = Message(Instruction.LOGIN, ("nobody", "wrong password", False), request_id=5)
    two = encode_message(bad) * 2
    client.conn.send(bad)
    client.conn.send(bad)
    client.ws.send(two)
    answers = client.answers(2)
    assert [a.instruction for a in answers] == [Instruction.LOGIN_FAIL] * 2
    frame = client.conn.send(bad)
    client.ws.send(frame[:50])
    client.ws.send(frame[50:])
    (answer,) = client.answers()
    assert answer.instruction is Instruction.LOGIN_FAIL and answer.request_id == 5
    client.ws.close()


def test_a_text_message_closes_with_1003(web_stack: WebStack) -> None:
    ws = WebSocketConnection(
        socket_url(web_stack), web_stack.web(0), 10, ssl_context=web_stack.ssl_context()
    )
    ws.send_text("LOGIN alice secret")
    assert ws.receive() is None
    assert ws.close_code == 1003 and "binary" in ws.close_reason
    ws.sock.close()


def test_unframeable_bytes_get_an_error_then_the_close(web_stack: WebStack) -> None:
    client = WebClient(web_stack)
    client.ws.send(b"GET / HTTP/1.1\r\n" + bytes(80))
    data = client.ws.receive()
    assert data is not None
    client.conn.receive_data(data)
    error = client.conn.next_message()
    assert isinstance(error, Message) and error.instruction is Instruction.ERROR
    assert error.args[0] == ErrorCode.BAD_MAGIC
    assert client.ws.receive() is None and client.ws.close_code == 1000


def test_an_idle_socket_is_closed_like_an_idle_tcp_client(web_stack: WebStack) -> None:
    client = WebClient(web_stack)
    started = time.monotonic()
    (error,) = client.answers()
    assert error.instruction is Instruction.ERROR and error.args[0] == ErrorCode.TIMEOUT
    assert "idle" in str(error.args[1])
    assert time.monotonic() - started >= 3
    assert client.ws.receive() is None


def test_the_worker_list_comes_through_the_worker_with_web_pages(web_stack: WebStack) -> None:
    client = WebClient(web_stack)
    client.send(Message(Instruction.GET_WORKER_LIST, request_id=3))
    chunks = []
    while True:
        (packet,) = client.answers()
        assert packet.instruction is Instruction.DATA, packet
        chunks.append(packet.args[0])
        if packet.packet_number == packet.packet_max:
            break
    workers = from_records(decode_payload(b"".join(chunks)))  # type: ignore[arg-type]
    assert {w["name"]: w["web_url"] for w in workers} == {
        "worker-1": web_stack.web(0),
        "worker-2": web_stack.web(1),
    }
    client.ws.close()


def test_the_page_may_fetch_from_the_sign_in_providers_issuers_only() -> None:
    policy = OriginPolicy("http://127.0.0.1:8443")
    policy.learn_providers(
        [
            "https://login.example.com/tenant-1/v2.0",  # an issuer with a path: its origin
            "https://idp.example.org:443/",
            "http://[::1]:9000",  # no CSP syntax for an IPv6 literal: left out
            "not a url",
        ]
    )
    sources = policy.connect_sources()
    assert "https://login.example.com" in sources and "https://idp.example.org" in sources
    assert not any("::1" in s or "not" in s for s in sources)
    assert "ws://127.0.0.1:8443" in sources
    policy.learn_providers([])  # the master offers none any more
    assert not any(s.startswith("https://") for s in policy.connect_sources())
