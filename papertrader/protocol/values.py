"""Typed, length-prefixed values: the arguments of a message.

Each value is a one-byte type tag followed by its encoding. Nothing is ever a
space-separated string, so a username containing spaces or a symbol like
"BRK.B" can never be split in the wrong place. Money travels as exact decimal
text, never as a binary float.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Sequence
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


def encode_value(value: Value, out: bytearray, depth: int = 0) -> None:
    """Append the tagged encoding of ``value`` to ``out``."""
    kind = value_type(value)
    out.append(kind)
    if kind is ValueType.BOOL:
        out.append(1 if value else 0)
    elif kind is ValueType.INT:
        assert isinstance(value, int)
        if not -(2**63) <= value < 2**63:
            raise _bad("integer does not fit in 64 bits")
        out += _I64.pack(value)
    elif kind is ValueType.STR:
        assert isinstance(value, str)
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad("string is not valid Unicode") from None
        out += _U32.pack(len(raw)) + raw
    elif kind is ValueType.DECIMAL:
        assert isinstance(value, Decimal)
        text = decimal_text(value)
        out += _U16.pack(len(text)) + text
    elif kind is ValueType.ID:
        assert isinstance(value, uuid.UUID)
        out += value.bytes
    elif kind is ValueType.TIMESTAMP:
        assert isinstance(value, datetime)
        out += _I64.pack(timestamp_micros(value))
    elif kind is ValueType.DATE:
        assert isinstance(value, date)
        out += _DATE.pack(value.year, value.month, value.day)
    elif kind is ValueType.BYTES:
        assert isinstance(value, bytes)
        out += _U32.pack(len(value)) + value
    else:
        assert isinstance(value, tuple)
        if depth >= MAX_LIST_DEPTH:
            raise _bad(f"lists nest deeper than {MAX_LIST_DEPTH}")
        out += _U32.pack(len(value))
        for item in value:
            encode_value(item, out, depth + 1)


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
        (tag,) = self.take(1, "type tag")
        try:
            kind = ValueType(tag)
        except ValueError:
            raise _bad(f"unknown value type tag {tag}") from None
        if kind is ValueType.BOOL:
            (flag,) = self.take(1, "bool")
            if flag > 1:
                raise _bad(f"bool byte is {flag}, not 0 or 1")
            return flag == 1
        if kind is ValueType.INT:
            return int(_I64.unpack(self.take(8, "int"))[0])
        if kind is ValueType.STR:
            (size,) = _U32.unpack(self.take(4, "string length"))
            try:
                return self.take(size, "string").decode("utf-8")
            except UnicodeDecodeError:
                raise _bad("string is not valid UTF-8") from None
        if kind is ValueType.DECIMAL:
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
        if kind is ValueType.ID:
            return uuid.UUID(bytes=self.take(16, "id"))
        if kind is ValueType.TIMESTAMP:
            return from_timestamp_micros(int(_I64.unpack(self.take(8, "timestamp"))[0]))
        if kind is ValueType.DATE:
            year, month, day = _DATE.unpack(self.take(4, "date"))
            try:
                return date(year, month, day)
            except ValueError:
                raise _bad(f"{year:04}-{month:02}-{day:02} is not a date") from None
        if kind is ValueType.BYTES:
            (size,) = _U32.unpack(self.take(4, "bytes length"))
            return self.take(size, "bytes")
        if depth >= MAX_LIST_DEPTH:
            raise _bad(f"lists nest deeper than {MAX_LIST_DEPTH}")
        (count,) = _U32.unpack(self.take(4, "list count"))
        if count > len(self.data) - self.pos:  # each value takes at least one byte
            raise _bad("list count is larger than the data left")
        return tuple(self.value(depth + 1) for _ in range(count))


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
