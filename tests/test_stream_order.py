"""An order's stream entry as the drain checks it (``store/stream_order.py``).

The check runs for every entry of every drain, so it is written for speed; these
tests hold it to the definitions it must agree with: the order id is the one
``order_id_for`` derives from the client order id (what makes an order apply
once), and an entry with an id that is not 32 hex digits is malformed.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timezone

import pytest

from papertrader.store.order_queue import Order
from papertrader.store.order_state import order_id_for
from papertrader.store.stream_order import order_id_hex_for, parse_fields

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)


def test_the_order_id_derived_from_text_is_the_uuid5_of_the_client_order_id() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        account = rng.randrange(1, 2**63)
        client = uuid.UUID(int=rng.getrandbits(128))
        expected = order_id_for(account, client).hex
        assert order_id_hex_for(account, client.hex) == expected
        assert order_id_hex_for(str(account), client.hex.upper()) == expected


def entry(**changes: str) -> dict[bytes, bytes]:
    client = uuid.uuid4()
    order = Order(
        order_id_for(42, client), 42, "buy", "AAPL", 3, T0, "203.0.113.7", "w1",
        client_order_id=client, reply=uuid.uuid4().hex, session=uuid.uuid4().hex,
    )  # fmt: skip
    fields = {**order.fields(), **changes}
    return {key.encode(): value.encode() for key, value in fields.items()}


def test_a_well_formed_entry_is_read_as_written_with_ids_in_lower_case() -> None:
    raw = entry()
    shouting = {k: v.upper() if k in (b"reply", b"session") else v for k, v in raw.items()}
    staged = parse_fields(shouting, b"1700000000000-5")
    assert staged.order_id == raw[b"order_id"].decode()
    assert staged.reply == raw[b"reply"].decode() and staged.session == raw[b"session"].decode()
    assert staged.sort_key == (T0, 1700000000000, 5)


@pytest.mark.parametrize(
    "field, value",
    [
        ("order_id", "0" * 31),
        ("order_id", "g" * 32),
        ("session", "a" * 33),
        ("reply", "é" * 16),
        ("client_order_id", "z" + "0" * 31),
        ("order_id", "5" * 32),  # not the one its client order id gives (fixed: xdist compares ids)
    ],
)
def test_an_entry_with_a_bad_id_is_malformed(field: str, value: str) -> None:
    with pytest.raises(ValueError):
        parse_fields(entry(**{field: value}))
