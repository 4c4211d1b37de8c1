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
_NAMESPACE_SHA1 = hashlib.sha1(ORDER_NAMESPACE.bytes)
#: A hex digit with the RFC 4122 variant bits (10xx) set in place of its top two bits.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
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
    competition: str = ""  # the competition it trades in, as named ("": practice account)
    #: Hex id of the session the order was placed with (the master checks it at the
    #: drain); None for an entry without one (queued before sessions were recorded).
    session: str | None = None


def order_id_hex_for(account_id: int | str, client_order_id_hex: str) -> str:
    """``order_id_for`` (order_state) on text, without building UUID objects: the
    namespace's SHA-1 state is hashed once, and the version (5) and variant bits are
    set on the hex digest (this runs for every entry the drain reads)."""
    c = client_order_id_hex.lower()
    sha = _NAMESPACE_SHA1.copy()
    sha.update(f"{account_id}:{c[:8]}-{c[8:12]}-{c[12:16]}-{c[16:20]}-{c[20:]}".encode())
    d = sha.hexdigest()
    return d[:12] + "5" + d[13:16] + _VARIANT[d[16]] + d[17:32]


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


_SIDES = {b"buy": "buy", b"sell": "sell"}
_TYPES = {b"market": "market", b"limit": "limit", b"stop": "stop", b"stop_limit": "stop_limit"}
_TIFS = {b"day": "day", b"gtc": "gtc"}
_HEX_DIGITS = b"0123456789abcdef"
_new = tuple.__new__
_PLAIN_STAMP = re.compile(r"[0-9T:.+\-]+")


def _hex32(value: bytes, what: str) -> str:
    """32 hex digits as lower-case text (what workers write: ``uuid.hex``). Checked by
    deleting the digits (``bytes.translate``, in C): nothing may be left."""
    if len(value) == 32 and not value.translate(None, _HEX_DIGITS):
        return value.decode()
    lowered = value.lower()
    if len(lowered) != 32 or lowered.translate(None, _HEX_DIGITS):
        raise ValueError(f"the {what} is not 32 hex digits")
    return lowered.decode()


def _count(value: bytes, what: str) -> str:
    """A whole number as canonical text; "0" when it does not fit a BIGINT."""
    if value.isdigit() and len(value) < 19 and (value[:1] != b"0" or value == b"0"):
        return value.decode()  # canonical already (the usual case)
    return _integer(value.decode(), what)


def parse_fields(raw: dict[bytes, bytes], stream_id: bytes = b"0-0") -> StagedOrder:
    """Check a stream entry; ValueError/KeyError/UnicodeDecodeError if it is malformed.

    An entry naming a client order id must carry the order id derived from it
    (``order_id_for``): that is what makes the client order id unique per
    account, so an entry that breaks it is malformed. Fields are compared as the
    bytes Redis gives, and decoded only once they are known to be good.
    """
    get = raw.get
    side = _SIDES.get(raw[b"side"])
    if side is None:
        raise ValueError(f"side {raw[b'side'][:16]!r}")
    order_id = _hex32(raw[b"order_id"], "order id")
    account = _count(raw[b"account_id"], "account id")
    client_raw = get(b"client_order_id")
    client = ""
    if client_raw:
        client = _hex32(client_raw, "client order id")
        if order_id != order_id_hex_for(account, client):
            raise ValueError("the order id is not the one of its client order id")
    type_raw, tif_raw = get(b"type"), get(b"time_in_force")
    order_type = "market" if type_raw is None else _TYPES.get(type_raw)
    time_in_force = "day" if tif_raw is None else _TIFS.get(tif_raw)
    if order_type is None or time_in_force is None:
        raise ValueError(f"order type {type_raw!r} / time in force {tif_raw!r}")
    reply_raw = get(b"reply")
    reply = _hex32(reply_raw, "reply") if reply_raw else None
    session_raw = get(b"session")
    session = _hex32(session_raw, "session") if session_raw else None
    received = raw[b"received_at"].decode()
    stamp = datetime.fromisoformat(received)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
        received = stamp.isoformat()
    elif not _PLAIN_STAMP.fullmatch(received):  # e.g. a space for the T: say it plainly
        received = stamp.isoformat()
    limit_raw, stop_raw = get(b"limit_price"), get(b"stop_price")
    ms, _, seq = stream_id.partition(b"-")
    # Positional, through tuple.__new__: a NamedTuple's keyword constructor costs more
    # than the rest of this check (the order of StagedOrder's fields).
    return _new(
        StagedOrder,
        (
            order_id,
            account,
            client or order_id,
            bool(client),
            side,
            raw[b"symbol"].decode(),
            _count(raw[b"quantity"], "quantity"),
            order_type,
            _price(limit_raw.decode()) if limit_raw else None,
            _price(stop_raw.decode()) if stop_raw else None,
            time_in_force,
            stamp,
            received,
            _ip(raw[b"client_ip"].decode()),
            (get(b"worker") or b"").decode(),
            reply,
            (stamp, int(ms or 0), int(seq or 0)),
            (get(b"competition") or b"").decode()[:64],
            session,
        ),
    )
