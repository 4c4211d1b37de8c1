"""Golden vectors of the order instructions (docs/PROTOCOL.md, section 13).

Byte-exact frames for placeOrder with a ticket, orderStatus with an order
record, orderFail saying the outcome is unknown, cancelOrder and getOrders;
the same hex must appear in docs/PROTOCOL.md, whose section 13 examples are
printed by this file from the real encoder::

    PYTHONPATH=. python tests/test_protocol_golden_orders.py
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from test_protocol_golden import (
    CLIENT,
    SESSION,
    STAMP,
    WORKER,
    Vector,
    encoded,
    section_examples,
)

from papertrader.client.models import OrderStatus
from papertrader.protocol import ErrorCode, Instruction, Message, decode_all
from papertrader.protocol.records import from_record, to_record
from papertrader.store.order_state import OrderState, order_id_for
from papertrader.worker.orders import parse_ticket

DOCS_SECTION = "## 13. Orders"
CLIENT_ORDER = uuid.UUID("0c1d0000-0000-4000-8000-00000000b0b1")
ACCOUNT = 42
ORDER = order_id_for(ACCOUNT, CLIENT_ORDER)
ACCEPTED = datetime(2025, 1, 1, 12, 0, 5, tzinfo=timezone.utc)
EXPIRES = datetime(2025, 1, 1, 21, 0, tzinfo=timezone.utc)

TICKET = to_record(
    {
        "client_order_id": CLIENT_ORDER,
        "side": "buy",
        "symbol": "AAPL",
        "quantity": 10,
        "type": "limit",
        "limit_price": Decimal("180.50"),
        "time_in_force": "day",
    }
)
OPEN_ORDER = OrderState(
    order_id=ORDER,
    status="open",
    code=0,
    reason="",
    side="buy",
    symbol="AAPL",
    quantity=10,
    price=None,
    executed_at=None,
    client_order_id=CLIENT_ORDER,
    order_type="limit",
    limit_price=Decimal("180.50"),
    time_in_force="day",
    reserved_cash=Decimal("1805.00"),
    received_at=datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc),
    accepted_at=ACCEPTED,
    expires_at=EXPIRES,
)
UNKNOWN_REASON = (
    f"outcome unknown: order {CLIENT_ORDER} is queued, but the master has not processed it "
    f"within 60 s; it may still be filled or rejected: check with `pt client order "
    f"{CLIENT_ORDER}` (sending it again with the same client order id is safe)"
)

VECTORS = (
    Vector(
        "place-order",
        "placeOrder(ticket): a limit buy",
        f"A client places a day limit order to buy 10 AAPL at 180.50 with its own order id "
        f"{CLIENT_ORDER}, request id 8. The ticket is one record (section 6); fields it does "
        "not use (stop_price here) are left out.",
        (Message(Instruction.PLACE_ORDER, (TICKET,), session_id=SESSION, request_id=8),),
        (
            "5054010120010100080000000000000000000000ce00000000000000000000005e55104d00004000"
            "800000000000a11c0000000000000000000000000000000000000000000000000000000000000000"
            "09070000000902000000010f000000636c69656e745f6f726465725f6964050c1d00000000400080"
            "0000000000b0b1090200000001040000007369646501030000006275790902000000010600000073"
            "796d626f6c01040000004141504c090200000001080000007175616e74697479020a000000000000"
            "00090200000001040000007479706501050000006c696d69740902000000010b0000006c696d6974"
            "5f70726963650306003138302e35300902000000010d00000074696d655f696e5f666f7263650103"
            "000000646179",
        ),
    ),
    Vector(
        "order-status",
        "orderStatus(order): the order waits in the book",
        "The master's next drain found AAPL at more than 180.50: the order is open, with "
        "1805.00 of cash reserved, until the market's close. Every field of the order "
        "record is there; those without a value are the empty LIST.",
        (Message(Instruction.ORDER_STATUS, (to_record(OPEN_ORDER.as_record()),), request_id=8),),
        (
            "50540104200401000800000000000000000000008502000000000000000000000000000000000000"
            "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "0917000000090200000001080000006f726465725f6964054f053f82ef115a15bd316995202e9cf1"
            "0902000000010f000000636c69656e745f6f726465725f6964050c1d000000004000800000000000"
            "b0b10902000000010600000073746174757301040000006f70656e09020000000104000000636f64"
            "6502000000000000000009020000000106000000726561736f6e0100000000090200000001040000"
            "007369646501030000006275790902000000010600000073796d626f6c01040000004141504c0902"
            "00000001080000007175616e74697479020a000000000000000902000000010a0000006f72646572"
            "5f7479706501050000006c696d69740902000000010b0000006c696d69745f707269636503060031"
            "38302e35300902000000010a00000073746f705f707269636509000000000902000000010d000000"
            "74696d655f696e5f666f726365010300000064617909020000000105000000707269636509000000"
            "0009020000000106000000616d6f756e7409000000000902000000010c0000007265616c697a6564"
            "5f706e6c09000000000902000000010d00000072657365727665645f63617368030700313830352e"
            "30300902000000011100000072657365727665645f7175616e746974790200000000000000000902"
            "000000010b00000072656365697665645f61740740f2f9c8a32a06000902000000010b0000006163"
            "6365707465645f617407405b44c9a32a06000902000000010c0000007472696767657265645f6174"
            "09000000000902000000010a000000646563696465645f617409000000000902000000010b000000"
            "65786563757465645f617409000000000902000000010a000000657870697265735f61740700d428"
            "54ab2a0600",
        ),
    ),
    Vector(
        "order-fail-unknown",
        "orderFail(code, reason, order_id): outcome unknown",
        "Had the master not decided the order within the worker's wait, the answer would "
        "have been this failure return with OUTCOME_UNKNOWN (140) and the order's id: the "
        "order is still queued and may fill; asking getOrder with the client order id (or "
        "this id), or sending the same ticket again, is safe.",
        (
            Message(
                Instruction.ORDER_FAIL,
                (int(ErrorCode.OUTCOME_UNKNOWN), UNKNOWN_REASON, ORDER),
                request_id=8,
            ),
        ),
        (
            "50540104210403000800000000000000000000003501000000000000000000000000000000000000"
            "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "028c0000000000000001160100006f7574636f6d6520756e6b6e6f776e3a206f7264657220306331"
            "64303030302d303030302d343030302d383030302d30303030303030306230623120697320717565"
            "7565642c2062757420746865206d617374657220686173206e6f742070726f636573736564206974"
            "2077697468696e20363020733b206974206d6179207374696c6c2062652066696c6c6564206f7220"
            "72656a65637465643a20636865636b20776974682060707420636c69656e74206f72646572203063"
            "3164303030302d303030302d343030302d383030302d30303030303030306230623160202873656e"
            "64696e6720697420616761696e2077697468207468652073616d6520636c69656e74206f72646572"
            "206964206973207361666529054f053f82ef115a15bd316995202e9cf1",
        ),
    ),
    Vector(
        "cancel-forwarded",
        "cancelOrder(order_id) as the worker forwards it",
        "The client cancels its order by its own id; the worker forwards the command to the "
        "master over the link, stamped with its time, its UUID and the client's address.",
        (
            Message(
                Instruction.CANCEL_ORDER,
                (CLIENT_ORDER,),
                session_id=SESSION,
                worker_uuid=WORKER,
                client_address=CLIENT,
                timestamp=STAMP,
                request_id=9,
            ),
        ),
        (
            "50540101210101000900000000000000000000001100000040f2f9c8a32a06005e55104d00004000"
            "800000000000a11cc0ffee001234456789abcdef0000000100000000000000000000ffffcb007107"
            "050c1d000000004000800000000000b0b1",
        ),
    ),
    Vector(
        "get-orders",
        "getOrders(account, status, limit)",
        "In the data transfer state: the practice account's (empty account) open orders, "
        "at most 50, newest first. The answer is DATA packets of a list of order records.",
        (Message(Instruction.GET_ORDERS, ("", "open", 50), session_id=SESSION, request_id=10),),
        (
            "50540102210203000a00000000000000000000001700000000000000000000005e55104d00004000"
            "800000000000a11c0000000000000000000000000000000000000000000000000000000000000000"
            "010000000001040000006f70656e023200000000000000",
        ),
    ),
)


def _golden() -> dict[str, tuple[str, ...]]:
    """The hex of every vector (also in docs/PROTOCOL.md, and checked by the JavaScript
    codec's tests through tests/golden_export.py)."""
    return {v.name: v.hexes for v in VECTORS}


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_encodes_to_golden_hex(vector: Vector) -> None:
    assert encoded(vector) == vector.hexes


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vectors_decode_back(vector: Vector) -> None:
    stream = b"".join(bytes.fromhex(h) for h in _golden()[vector.name])
    assert decode_all(stream) == list(vector.messages)


def test_the_ticket_parses_to_the_order_placed() -> None:
    ticket = parse_ticket(TICKET, max_quantity=1_000_000)
    assert (ticket.client_order_id, ticket.side, ticket.symbol, ticket.quantity) == (
        CLIENT_ORDER,
        "buy",
        "AAPL",
        10,
    )
    assert (ticket.order_type, ticket.limit_price, ticket.time_in_force) == (
        "limit",
        Decimal("180.50"),
        "day",
    )


def test_the_order_record_reads_back_as_the_client_library_model() -> None:
    (vector,) = [v for v in VECTORS if v.name == "order-status"]
    (message,) = decode_all(bytes.fromhex(_golden()[vector.name][0]))
    status = OrderStatus.from_record(from_record(message.arg("order")))
    assert status.client_order_id == CLIENT_ORDER and status.order_id == ORDER
    assert (status.status, status.reserved_cash, status.expires_at) == (
        "open",
        Decimal("1805.00"),
        EXPIRES,
    )
    assert status.is_open and status.fill is None


def test_docs_contain_every_order_vector() -> None:
    docs = (
        __import__("test_protocol_golden").DOCS.read_text(encoding="utf-8").split(DOCS_SECTION)[1]
    )
    for name, hexes in _golden().items():
        for hex_string in hexes:
            assert hex_string in docs, f"{name}: {hex_string[:40]}... missing from section 13"


def examples_markdown() -> str:
    return section_examples(13, VECTORS)


if __name__ == "__main__":  # pragma: no cover - prints section 13's examples
    print(examples_markdown())
