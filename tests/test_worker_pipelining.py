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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from test_worker_support import Client, keyed_worker, signed_sessions, wait_for

from papertrader.client import ClientError, PaperTraderClient
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
    got: list[Message]
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


Answer = Callable[[Message, Message], list[Message]]


def quoted(switch: Message, quote: Message) -> list[Message]:
    """A worker's answer to a good pair: the switch granted, then the quote."""
    record = to_record(Quote("AAPL", PRICE, PRICE, PRICE, PRICE, 1, NOW).as_record())
    return [
        Message(Instruction.STATE_SWITCH_SUCCESS, (1,), request_id=switch.request_id),
        *packets_for(record, request_id=quote.request_id),
    ]


@contextmanager
def pair_server(*answers: Answer) -> Iterator[tuple[int, list[Message]]]:
    """A plaintext server taking one connection: for each answer in ``answers`` it waits
    until it holds two more whole frames, answering nothing, then sends what that
    answer says. Its port and the frames it received."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[Message] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(30)
            decoder = FrameDecoder()
            for answer in answers:
                mine: list[Message] = []
                while len(mine) < 2:
                    message = decoder.next_message()
                    if isinstance(message, NeedData):
                        data = conn.recv(1 << 16)
                        if not data:
                            return
                        decoder.receive_data(data)
                    else:
                        mine.append(message)
                received.extend(mine)
                conn.sendall(b"".join(encode_message(m) for m in answer(*mine)))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        listener.close()
        server.join(30)


def test_the_reference_client_sends_a_quote_in_one_round_trip() -> None:
    """The server answers nothing until it holds two whole frames: the client must have
    sent the quote request behind the switch without waiting for its answer."""
    session = uuid.uuid4()
    with pair_server(quoted) as (port, received):
        with PaperTraderClient("127.0.0.1", port, 30, session_id=session, tls=False) as client:
            assert client.quote("AAPL").close == PRICE
    assert [message.instruction for message in received] == [
        Instruction.SWITCH_STATE,
        Instruction.GET_ASSET_VALUE_CURRENT,
    ]
    assert all(message.session_id == session for message in received)


def test_a_refused_switch_is_reported_and_the_connection_stays_in_step() -> None:
    """The switch refused (as a worker refuses an ended session), then the request behind
    it refused for the state: the client reports the switch's reason, reads past the
    second refusal, and its next request is served on the same connection."""

    def refused(switch: Message, quote: Message) -> list[Message]:
        why = (int(ErrorCode.INVALID_SESSION), "session is unknown or expired: log in again")
        wrong = (int(ErrorCode.WRONG_STATE), "getAssetValueCurrent is not valid now")
        return [
            Message(Instruction.STATE_SWITCH_FAIL, why, request_id=switch.request_id),
            Message(Instruction.DATA_FAIL, wrong, request_id=quote.request_id),
        ]

    with pair_server(refused, quoted) as (port, received):
        with PaperTraderClient("127.0.0.1", port, 10, session_id=uuid.uuid4(), tls=False) as client:
            with pytest.raises(ClientError) as caught:
                client.quote("AAPL")
            assert caught.value.code is ErrorCode.INVALID_SESSION
            assert "log in again" in caught.value.reason
            assert client.quote("AAPL").close == PRICE  # the server takes no second one
    assert len(received) == 4
