"""Self-describing records inside data-transfer payloads.

A record is a LIST of (name, value) pairs, a missing value is an empty LIST.
Field names travel with the values, so a client written in another language
needs no position table, and adding a field later breaks nobody.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from papertrader.protocol.errors import ErrorCode, ProtocolError
from papertrader.protocol.values import Value

NULL: tuple[Value, ...] = ()


def to_record(fields: Mapping[str, Any]) -> tuple[Value, ...]:
    """Encode a mapping; nested mappings and lists of mappings are encoded too."""
    return tuple((name, _encode(value)) for name, value in fields.items())


def _encode(value: Any) -> Value:
    if value is None:
        return NULL
    if isinstance(value, Mapping):
        return to_record(value)
    if isinstance(value, list):
        return tuple(_encode(item) for item in value)
    return value  # type: ignore[no-any-return]


def from_record(record: Value) -> dict[str, Any]:
    """Decode a record into a dict (empty LIST values become None)."""
    if not isinstance(record, tuple):
        raise ProtocolError(
            ErrorCode.BAD_ARGUMENT, "a record must be a list of (name, value) pairs"
        )
    fields: dict[str, Any] = {}
    for pair in record:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ProtocolError(
                ErrorCode.BAD_ARGUMENT, "a record field must be a (name, value) pair"
            )
        name, value = pair[0], pair[1]
        assert isinstance(name, str)
        fields[name] = None if value == NULL else value
    return fields


def from_records(records: Value) -> list[dict[str, Any]]:
    """Decode a LIST of records."""
    if not isinstance(records, tuple):
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, "expected a list of records")
    return [from_record(record) for record in records]
