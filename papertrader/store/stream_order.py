"""An order's stream entry, checked once and kept as text for the drain.

The drain handles tens of thousands of orders a second, and most of its
Python time used to go into turning each entry into objects (UUIDs, Decimals,
datetimes) only to turn them back into text for PostgreSQL and JSON for the
worker. ``parse_fields`` checks an entry completely (a malformed entry is
refused here, never half-applied) and keeps every value as the text
PostgreSQL and the outcome JSON take; only the stamp is parsed, to sort by.
``Order.from_fields`` (``order_queue``) is this check plus the conversion to
objects, so there is one definition of a well-formed entry.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from papertrader.store.order_state import ORDER_NAMESPACE

_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_INTEGER = re.compile(r"-?[0-9]{1,64}")
_BIGINT = range(-(2**63), 2**63)
_ORDER_TYPES = frozenset({"market", "limit", "stop", "stop_limit"})
_TIMES_IN_FORCE = frozenset({"day", "gtc"})
_NAMESPACE = ORDER_NAMESPACE.bytes
#: Client addresses already checked (workers send a few thousand distinct ones).
_IP_CACHE: dict[str, str | None] = {}
_IP_CACHE_SIZE = 50_000


class StagedOrder(NamedTuple):
    """One checked order, its values as text (hex ids, decimal numbers, ISO times)."""

    order_id: str  # 32 lower-case hex digits
    account_id: str  # canonical decimal, "0" when out of range (rejected by the drain)
    client_order_id: str  # 32 hex digits; the order id for entries without one
    has_client_order_id: bool
    side: str
    symbol: str
    quantity: str  # canonical decimal, "0" when out of range (rejected by the drain)
    order_type: str
    limit_price: str | None
    stop_price: str | None
    time_in_force: str
    received_at: datetime  # aware UTC
    received_text: str  # received_at.isoformat()
    client_ip: str | None  # a valid address, or None
    worker: str
    reply: str | None
    sort_key: tuple[datetime, int, int]  # the stamp, then the stream id


def order_id_hex_for(account_id: int | str, client_order_id_hex: str) -> str:
    """``order_id_for`` (order_state) on text, without building UUID objects."""
    c = client_order_id_hex.lower()
    name = f"{account_id}:{c[:8]}-{c[8:12]}-{c[12:16]}-{c[16:20]}-{c[20:]}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


def _integer(text: str, what: str) -> str:
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{what} {text[:32]!r} is not a whole number")
    value = int(text)
    return str(value) if value in _BIGINT else "0"


def _price(text: str | None) -> str | None:
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"price {text[:32]!r}") from None
    if not value.is_finite():
        raise ValueError(f"price {text[:32]!r}")
    return str(value)


def _ip(text: str) -> str | None:
    if not text:
        return None
    try:
        return _IP_CACHE[text]
    except KeyError:
        pass
    try:
        checked: str | None = str(ipaddress.ip_address(text))
    except ValueError:
        checked = None  # not an address: recorded as unknown
    if len(_IP_CACHE) >= _IP_CACHE_SIZE:
        _IP_CACHE.clear()
    _IP_CACHE[text] = checked
    return checked


def parse_fields(raw: dict[bytes, bytes], stream_id: bytes = b"0-0") -> StagedOrder:
    """Check a stream entry; ValueError/KeyError/UnicodeDecodeError if it is malformed.

    An entry naming a client order id must carry the order id derived from it
    (``order_id_for``): that is what makes the client order id unique per
    account, so an entry that breaks it is malformed.
    """
    get = raw.get
    side = raw[b"side"].decode()
    if side not in ("buy", "sell"):
        raise ValueError(f"side {side[:16]!r}")
    order_id = raw[b"order_id"].decode()
    if not _HEX32.fullmatch(order_id):
        raise ValueError("the order id is not 32 hex digits")
    order_id = order_id.lower()
    account_text = raw[b"account_id"].decode()
    account = _integer(account_text, "account id")
    client = (get(b"client_order_id") or b"").decode()
    if client:
        if not _HEX32.fullmatch(client):
            raise ValueError("the client order id is not 32 hex digits")
        if order_id != order_id_hex_for(int(account_text), client):
            raise ValueError("the order id is not the one of its client order id")
        client = client.lower()
    order_type = (get(b"type") or b"market").decode()
    time_in_force = (get(b"time_in_force") or b"day").decode()
    if order_type not in _ORDER_TYPES or time_in_force not in _TIMES_IN_FORCE:
        raise ValueError(f"order type {order_type[:16]!r} / time in force {time_in_force[:16]!r}")
    reply = (get(b"reply") or b"").decode() or None
    if reply is not None and not _HEX32.fullmatch(reply):
        raise ValueError("reply is not 32 hex digits")
    stamp = datetime.fromisoformat(raw[b"received_at"].decode())
    stamp = stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp
    ms, _, seq = stream_id.partition(b"-")
    return StagedOrder(
        order_id=order_id,
        account_id=account,
        client_order_id=client or order_id,
        has_client_order_id=bool(client),
        side=side,
        symbol=raw[b"symbol"].decode(),
        quantity=_integer(raw[b"quantity"].decode(), "quantity"),
        order_type=order_type,
        limit_price=_price((get(b"limit_price") or b"").decode()),
        stop_price=_price((get(b"stop_price") or b"").decode()),
        time_in_force=time_in_force,
        received_at=stamp,
        received_text=stamp.isoformat(),
        client_ip=_ip(raw[b"client_ip"].decode()),
        worker=(get(b"worker") or b"").decode(),
        reply=reply,
        sort_key=(stamp, int(ms or 0), int(seq or 0)),
    )
