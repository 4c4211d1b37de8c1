"""Pipelined quotes (docs/PROTOCOL.md 14.4): through a real worker, and as the
reference client sends them.

A client may send switchState(1) and getAssetValueCurrent together, many at a
time: the worker answers each pair at once (``protocol/lean.py``'s pair path)
once it has verified the session, frame by frame before that or when it cannot.
Whichever path answers, the client gets the same answers in order, each with
its request id, and a session that ended stops being served. The reference
client sends a data request behind its switchState in one write: one round
trip a quote.
"""

from __future__ import annotations

import socket
import threading
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import redis
from test_worker_support import Client, keyed_worker, signed_sessions, wait_for

from papertrader.client import PaperTraderClient
from papertrader.market.quote import Quote
from papertrader.protocol import ErrorCode, Instruction, Message, encode_message, packets_for
from papertrader.protocol.decoder import FrameDecoder, NeedData
from papertrader.protocol.records import from_record, to_record
from papertrader.protocol.values import decode_payload
from papertrader.store.quotes import QuoteStore

NOW = datetime(2024, 5, 6, 14, 30, tzinfo=timezone.utc)
PRICE = Decimal("189.25")


def pairs(session: uuid.UUID, symbols: list[str], first_id: int) -> bytes:
    """switchState(1) and a quote per symbol, request ids counting up from ``first_id``."""
    frames = []
    for index, symbol in enumerate(symbols):
        rid = first_id + 2 * index
        frames.append(Message(Instruction.SWITCH_STATE, (1,), session_id=session, request_id=rid))
        frames.append(
            Message(
                Instruction.GET_ASSET_VALUE_CURRENT,
                (symbol,),
                session_id=session,
                request_id=rid + 1,
            )  # fmt: skip
        )
    return b"".join(encode_message(frame) for frame in frames)


def answers(client: Client, count: int) -> list[Message]:
    """The next ``count`` messages the worker sends, decoded without a client state
    machine (which does not pipeline across a state switch)."""
    decoder, got = FrameDecoder(), []
    while len(got) < count:
        message = decoder.next_message()
        if isinstance(message, NeedData):
            data = client.sock.recv(1 << 16)
            assert data, "the worker closed the connection"
            decoder.receive_data(data)
            continue
        got.append(message)
    return got


def test_pipelined_quotes_are_answered_in_order_until_the_session_ends(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    QuoteStore(redis_client).publish(
        {"AAPL": Quote("AAPL", PRICE, PRICE, PRICE, PRICE, 1, NOW)}, NOW
    )
    sessions = signed_sessions(redis_client)
    session = sessions.create(1, "a", "127.0.0.1", False)
    symbols = ["AAPL", "aapl", "ZZZZ", "AAPL"] * 25  # known, lower case, unknown
    with keyed_worker(tmp_path, redis_url) as worker, Client(worker.port, timeout=30) as client:
        client.send_raw(pairs(session.session_id, symbols, first_id=1))
        got = answers(client, 2 * len(symbols))
        for index, symbol in enumerate(symbols):
            switched, quoted = got[2 * index], got[2 * index + 1]
            assert switched.instruction is Instruction.STATE_SWITCH_SUCCESS
            assert (switched.request_id, quoted.request_id) == (2 * index + 1, 2 * index + 2)
            if symbol == "ZZZZ":
                assert quoted.instruction is Instruction.DATA_FAIL
                assert quoted.args[0] == ErrorCode.UNKNOWN_ASSET
            else:
                assert quoted.instruction is Instruction.DATA
                record = from_record(decode_payload(quoted.args[-1]))  # type: ignore[arg-type]
                assert record["symbol"] == "AAPL" and Decimal(record["close"]) == PRICE

        sessions.end(session)  # announced: the worker drops it from its cache

        def refused() -> bool:
            client.send_raw(pairs(session.session_id, ["AAPL"], first_id=1000))
            switched, quoted = answers(client, 2)
            if switched.instruction is Instruction.STATE_SWITCH_SUCCESS:
                return False
            assert switched.args[0] == ErrorCode.INVALID_SESSION, switched
            assert quoted.instruction is Instruction.DATA_FAIL, quoted  # not in data state
            return True

        wait_for(refused, timeout=30)


def test_the_reference_client_sends_a_quote_in_one_round_trip() -> None:
    """A server that answers nothing until it holds two whole frames: the client must
    have sent the quote request behind the switch without waiting for its answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[Message] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(30)
            decoder = FrameDecoder()
            while len(received) < 2:
                message = decoder.next_message()
                if isinstance(message, NeedData):
                    data = conn.recv(1 << 16)
                    if not data:
                        return
                    decoder.receive_data(data)
                else:
                    received.append(message)
            switch, quote = received
            record = to_record(Quote("AAPL", PRICE, PRICE, PRICE, PRICE, 1, NOW).as_record())
            answer = [
                Message(Instruction.STATE_SWITCH_SUCCESS, (1,), request_id=switch.request_id),
                *packets_for(record, request_id=quote.request_id),
            ]
            conn.sendall(b"".join(encode_message(message) for message in answer))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    session = uuid.uuid4()
    port = listener.getsockname()[1]
    with PaperTraderClient("127.0.0.1", port, 30, session_id=session, tls=False) as client:
        assert client.quote("AAPL").close == PRICE
    server.join(30)
    listener.close()
    assert [message.instruction for message in received] == [
        Instruction.SWITCH_STATE,
        Instruction.GET_ASSET_VALUE_CURRENT,
    ]
    assert all(message.session_id == session for message in received)
