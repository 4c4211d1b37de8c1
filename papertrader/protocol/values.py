"""Typed, length-prefixed values: the arguments of a message.

Each value is a one-byte type tag followed by its encoding. Nothing is ever a
space-separated string, so a username containing spaces or a symbol like
"BRK.B" can never be split in the wrong place. Money travels as exact decimal
text, never as a binary float.
"""

from __future__ import annotations

import functools
import re
import struct
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from typing import Union

from papertrader.protocol.errors import ErrorCode, ProtocolError

Value = Union[str, int, bool, Decimal, uuid.UUID, date, datetime, bytes, "tuple[Value, ...]"]

MAX_DECIMAL_TEXT = 64
MAX_LIST_DEPTH = 8
_DECIMAL_RE = re.compile(rb"-?[0-9]+(\.[0-9]+)?\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_DATE = struct.Struct("<HBB")
_MIN_MICROS = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
_MAX_MICROS = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
_STR_TAG = b"\x01"


class ValueType(IntEnum):
    """Type tags of argument values."""

    STR = 1  # u32 length + UTF-8
    INT = 2  # i64
    DECIMAL = 3  # u16 length + ASCII text -?[0-9]+(.[0-9]+)?
    BOOL = 4  # u8, 0 or 1
    ID = 5  # 16 bytes (session ids, order ids, worker UUIDs)
    DATE = 6  # u16 year, u8 month, u8 day
    TIMESTAMP = 7  # i64 microseconds since 1970-01-01T00:00:00Z
    BYTES = 8  # u32 length + raw bytes
    LIST = 9  # u32 count + that many values


def _bad(reason: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_ARGUMENT, reason)


def value_type(value: Value) -> ValueType:
    """The wire type a Python value is sent as (bool before int: bool is an int)."""
    if isinstance(value, bool):
        return ValueType.BOOL
    if isinstance(value, int):
        return ValueType.INT
    if isinstance(value, str):
        return ValueType.STR
    if isinstance(value, Decimal):
        return ValueType.DECIMAL
    if isinstance(value, uuid.UUID):
        return ValueType.ID
    if isinstance(value, datetime):
        return ValueType.TIMESTAMP
    if isinstance(value, date):
        return ValueType.DATE
    if isinstance(value, bytes):
        return ValueType.BYTES
    if isinstance(value, tuple):
        return ValueType.LIST
    raise _bad(f"cannot send a value of type {type(value).__name__}")


def decimal_text(value: Decimal) -> bytes:
    """Plain positional text of a finite Decimal (no exponent), as sent on the wire."""
    if not value.is_finite():
        raise _bad(f"decimal {value} is not finite")
    text = format(value, "f").encode("ascii")
    if text.startswith(b"-") and value.is_zero():
        text = text[1:]
    if len(text) > MAX_DECIMAL_TEXT:
        raise _bad(f"decimal has more than {MAX_DECIMAL_TEXT} characters")
    return text


def timestamp_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    if moment.tzinfo is None:
        raise _bad("timestamps must carry a time zone")
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if not _MIN_MICROS <= micros <= _MAX_MICROS:  # the decoder could not turn it back
        raise _bad(f"timestamp {moment} is outside years 1-9999 in UTC")
    return micros


def from_timestamp_micros(micros: int) -> datetime:
    """The UTC datetime of a wire timestamp."""
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise _bad(f"timestamp {micros} is out of range") from None


def _encode_bool(value: Value, out: bytearray, depth: int) -> None:
    out += b"\x04\x01" if value else b"\x04\x00"


def _encode_int(value: Value, out: bytearray, depth: int) -> None:
    assert isinstance(value, int)
    if not -(2**63) <= value < 2**63:
        raise _bad("integer does not fit in 64 bits")
    out.append(ValueType.INT)
    out += _I64.pack(value)


@functools.lru_cache(maxsize=4096)
def _str_encoding(value: str) -> bytes:
    """A string's whole encoding, tag included: answers repeat the same few (record
    field names, statuses, symbols), so the last few thousand are kept."""
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad("string is not valid Unicode") from None
    return _STR_TAG + _U32.pack(len(raw)) + raw


def _encode_str(value: Value, out: bytearray, depth: int) -> None:
    assert isinstance(value, str)
    out += _str_encoding(value)


def _encode_decimal(value: Value, out: bytearray, depth: int) -> None:
    assert isinstance(value, Decimal)
    text = decimal_text(value)
    out.append(ValueType.DECIMAL)
    out += _U16.pack(len(text))
    out += text


def _encode_id(value: Value, out: bytearray, depth: int) -> None:
    assert isinstance(value, uuid.UUID)
    out.append(ValueType.ID)
    out += value.bytes


def _encode_timestamp(value: Value, out: bytearray, depth: int) -> None:
    assert isinstance(value, datetime)
    micros = timestamp_micros(value)
    out.append(ValueType.TIMESTAMP)
    out += _I64.pack(micros)


def _encode_date(value: Value, out: bytearray, depth: int) -> None:
    assert isinstance(value, date)
    out.append(ValueType.DATE)
    out += _DATE.pack(value.year, value.month, value.day)


def _encode_bytes(value: Value, out: bytearray, depth: int) -> None:
    assert isinstance(value, bytes)
    out.append(ValueType.BYTES)
    out += _U32.pack(len(value))
    out += value


def _encode_list(value: Value, out: bytearray, depth: int) -> None:
    assert isinstance(value, tuple)
    out.append(ValueType.LIST)
    if depth >= MAX_LIST_DEPTH:
        raise _bad(f"lists nest deeper than {MAX_LIST_DEPTH}")
    out += _U32.pack(len(value))
    for item in value:
        encoder = _ENCODERS.get(type(item)) or _encoder_of(item)
        encoder(item, out, depth + 1)


_Encoder = Callable[[Value, bytearray, int], None]
_ENCODER_OF_KIND: dict[ValueType, _Encoder] = {
    ValueType.BOOL: _encode_bool,
    ValueType.INT: _encode_int,
    ValueType.STR: _encode_str,
    ValueType.DECIMAL: _encode_decimal,
    ValueType.ID: _encode_id,
    ValueType.TIMESTAMP: _encode_timestamp,
    ValueType.DATE: _encode_date,
    ValueType.BYTES: _encode_bytes,
    ValueType.LIST: _encode_list,
}
#: Encoders by the value's exact class (one dictionary lookup per value); a class not
#: seen yet (a subclass: an IntEnum code, a str subclass) is placed by ``value_type``.
_ENCODERS: dict[type, _Encoder] = {
    bool: _encode_bool,
    int: _encode_int,
    str: _encode_str,
    Decimal: _encode_decimal,
    uuid.UUID: _encode_id,
    datetime: _encode_timestamp,
    date: _encode_date,
    bytes: _encode_bytes,
    tuple: _encode_list,
}


def _encoder_of(value: Value) -> _Encoder:
    encoder = _ENCODER_OF_KIND[value_type(value)]  # raises for what cannot be sent
    if len(_ENCODERS) < 64:  # classes are few; never let odd ones grow it without end
        _ENCODERS[type(value)] = encoder
    return encoder


def encode_value(value: Value, out: bytearray, depth: int = 0) -> None:
    """Append the tagged encoding of ``value`` to ``out``."""
    encoder = _ENCODERS.get(type(value)) or _encoder_of(value)
    encoder(value, out, depth)


def encode_values(values: Sequence[Value]) -> bytes:
    """The data field for a sequence of arguments."""
    out = bytearray()
    for value in values:
        encode_value(value, out)
    return bytes(out)


class _Reader:
    """A cursor over a data field; every read checks the bounds first."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int, what: str) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise _bad(f"{what} runs past the end of the data field")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def value(self, depth: int = 0) -> Value:
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise _bad("type tag runs past the end of the data field")
        tag = data[pos]
        self.pos = pos + 1
        read = _READERS.get(tag)
        if read is None:
            raise _bad(f"unknown value type tag {tag}")
        return read(self, depth)

    def _bool(self, depth: int) -> Value:
        (flag,) = self.take(1, "bool")
        if flag > 1:
            raise _bad(f"bool byte is {flag}, not 0 or 1")
        return flag == 1

    def _int(self, depth: int) -> Value:
        return int(_I64.unpack(self.take(8, "int"))[0])

    def _str(self, depth: int) -> Value:
        (size,) = _U32.unpack(self.take(4, "string length"))
        try:
            return self.take(size, "string").decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("string is not valid UTF-8") from None

    def _decimal(self, depth: int) -> Value:
        (size,) = _U16.unpack(self.take(2, "decimal length"))
        if size > MAX_DECIMAL_TEXT:
            raise _bad(f"decimal has more than {MAX_DECIMAL_TEXT} characters")
        text = self.take(size, "decimal")
        if not _DECIMAL_RE.match(text):
            raise _bad("decimal is not plain decimal text")
        try:
            return Decimal(text.decode("ascii"))
        except InvalidOperation:  # pragma: no cover - the regex already ruled it out
            raise _bad("decimal is not plain decimal text") from None

    def _id(self, depth: int) -> Value:
        return uuid.UUID(bytes=self.take(16, "id"))

    def _timestamp(self, depth: int) -> Value:
        return from_timestamp_micros(int(_I64.unpack(self.take(8, "timestamp"))[0]))

    def _date(self, depth: int) -> Value:
        year, month, day = _DATE.unpack(self.take(4, "date"))
        try:
            return date(year, month, day)
        except ValueError:
            raise _bad(f"{year:04}-{month:02}-{day:02} is not a date") from None

    def _bytes(self, depth: int) -> Value:
        (size,) = _U32.unpack(self.take(4, "bytes length"))
        return self.take(size, "bytes")

    def _list(self, depth: int) -> Value:
        if depth >= MAX_LIST_DEPTH:
            raise _bad(f"lists nest deeper than {MAX_LIST_DEPTH}")
        (count,) = _U32.unpack(self.take(4, "list count"))
        if count > len(self.data) - self.pos:  # each value takes at least one byte
            raise _bad("list count is larger than the data left")
        value = self.value
        return tuple([value(depth + 1) for _ in range(count)])


#: How each type tag is read (one dictionary lookup per value, not an enum lookup).
_READERS: dict[int, Callable[[_Reader, int], Value]] = {
    ValueType.BOOL: _Reader._bool,
    ValueType.INT: _Reader._int,
    ValueType.STR: _Reader._str,
    ValueType.DECIMAL: _Reader._decimal,
    ValueType.ID: _Reader._id,
    ValueType.TIMESTAMP: _Reader._timestamp,
    ValueType.DATE: _Reader._date,
    ValueType.BYTES: _Reader._bytes,
    ValueType.LIST: _Reader._list,
}
assert set(_READERS) == set(ValueType) == set(_ENCODER_OF_KIND)


def decode_values(data: bytes, count: int) -> tuple[Value, ...]:
    """Decode exactly ``count`` values that fill ``data`` completely."""
    reader = _Reader(data)
    values = tuple(reader.value() for _ in range(count))
    if reader.pos != len(data):
        raise ProtocolError(
            ErrorCode.TRAILING_DATA, f"{len(data) - reader.pos} bytes left after {count} arguments"
        )
    return values


def encode_payload(value: Value) -> bytes:
    """A data-transfer payload: one value (usually a list) to be cut into packets."""
    out = bytearray()
    encode_value(value, out)
    return bytes(out)


def decode_payload(payload: bytes) -> Value:
    """Inverse of ``encode_payload``."""
    return decode_values(payload, 1)[0]
