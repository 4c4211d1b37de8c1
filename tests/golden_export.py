"""The golden vectors of every ``test_protocol_golden*.py`` as JSON, for the JavaScript codec.

No tests here. ``golden_json()`` collects the ``VECTORS`` of each golden test
module (so a module added later is exported too), the value examples of
docs/PROTOCOL.md section 4, and frames the Python decoder refuses (each with
the error code and fatality it gives), in a language-neutral form: every
value tagged with its wire type, integers and timestamps as decimal text.
tests/test_web_codec.py hands the result to node's test runner.
"""

from __future__ import annotations

import importlib
import ipaddress
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from papertrader.protocol import (
    Instruction,
    Message,
    ProtocolError,
    Reassembler,
    Value,
    decode_all,
    decode_payload,
    encode_message,
)
from papertrader.protocol.values import decimal_text, timestamp_micros

HERE = Path(__file__).resolve().parent


def typed(value: Value) -> dict[str, Any]:
    """One value with its wire type: {"t": "DECIMAL", "v": "0.10"}."""
    if isinstance(value, bool):
        return {"t": "BOOL", "v": value}
    if isinstance(value, int):
        return {"t": "INT", "v": str(value)}
    if isinstance(value, str):
        return {"t": "STR", "v": value}
    if isinstance(value, Decimal):
        return {"t": "DECIMAL", "v": decimal_text(value).decode("ascii")}
    if isinstance(value, uuid.UUID):
        return {"t": "ID", "v": str(value)}
    if isinstance(value, datetime):
        return {"t": "TIMESTAMP", "v": str(timestamp_micros(value))}
    if isinstance(value, date):
        return {"t": "DATE", "v": value.isoformat()}
    if isinstance(value, bytes):
        return {"t": "BYTES", "v": value.hex()}
    assert isinstance(value, tuple)
    return {"t": "LIST", "v": [typed(item) for item in value]}


def message_json(message: Message) -> dict[str, Any]:
    address = message.client_address
    return {
        "instruction": message.instruction.name,
        "args": [typed(arg) for arg in message.args],
        "request_id": message.request_id,
        "session_id": str(message.session_id),
        "worker_uuid": str(message.worker_uuid),
        "client_address": None if address is None else str(address),
        "timestamp": str(message.timestamp),
        "packet_number": message.packet_number,
        "packet_max": message.packet_max,
    }


def _golden_modules() -> list[Any]:
    names = sorted(p.stem for p in HERE.glob("test_protocol_golden*.py"))
    return [importlib.import_module(name) for name in names]


def vectors() -> list[dict[str, Any]]:
    out = []
    for module in _golden_modules():
        for vector in getattr(module, "VECTORS", ()):
            entry: dict[str, Any] = {
                "module": module.__name__,
                "name": vector.name,
                "messages": [message_json(m) for m in vector.messages],
                "hexes": list(vector.hexes),
                "payload": None,
            }
            if all(m.instruction is Instruction.DATA for m in vector.messages):
                reassembler = Reassembler()
                payload = None
                for packet in vector.messages:
                    payload = reassembler.feed(packet)
                assert payload is not None
                entry["payload"] = typed(decode_payload(payload))
                entry["payload_hex"] = payload.hex()
            out.append(entry)
    return out


def value_examples() -> list[dict[str, Any]]:
    from test_protocol_golden import VALUE_EXAMPLES, value_hex

    return [
        {"shown": shown, "value": typed(value), "hex": value_hex(value).replace(" ", "")}
        for shown, value in VALUE_EXAMPLES
    ]


def _login_frame() -> bytearray:
    return bytearray(
        encode_message(Message(Instruction.LOGIN, ("alice", "correct horse", True), request_id=1))
    )


def _refused(name: str, frame: bytes | bytearray, max_data_size: int = 65536) -> dict[str, Any]:
    """What the Python decoder says about ``frame``: the JavaScript one must say the same."""
    try:
        decode_all(bytes(frame), max_data_size)
    except ProtocolError as exc:
        return {
            "name": name,
            "hex": bytes(frame).hex(),
            "max_data_size": max_data_size,
            "code": int(exc.code),
            "fatal": exc.fatal,
        }
    raise AssertionError(f"{name}: the Python decoder accepted it")


def refused_frames() -> list[dict[str, Any]]:
    """One frame for each way a frame can be refused (docs/PROTOCOL.md section 8)."""
    login = _login_frame()
    cases: list[dict[str, Any]] = []

    def variant(name: str, offset: int, data: bytes, base: bytearray | None = None) -> None:
        frame = bytearray(base if base is not None else login)
        frame[offset : offset + len(data)] = data
        cases.append(_refused(name, frame))

    variant("bad magic", 0, b"PX")
    variant("bad version", 2, b"\x02")
    variant("unknown message type", 3, b"\x09")
    variant("unknown instruction", 4, (0x01FF).to_bytes(2, "little"))
    variant("type mismatch", 3, b"\x02")
    variant("too many arguments", 6, (9).to_bytes(2, "little"))
    variant("argument count", 6, (2).to_bytes(2, "little"))
    variant("packet fields on a command", 12, (1).to_bytes(4, "little"))
    variant("unknown value tag", 80, b"\x0f")
    variant("wrong value type", 80, b"\x08")  # BYTES where the username STR is due
    variant("bool not 0 or 1", len(login) - 1, b"\x02")
    variant("invalid UTF-8", 85, b"\xff")
    cases.append(_refused("frame too large", login, max_data_size=16))
    trailing = bytearray(login) + b"\x00"
    trailing[20:24] = (int.from_bytes(login[20:24], "little") + 1).to_bytes(4, "little")
    cases.append(_refused("trailing data", trailing))
    cases.append(_refused("frame cut short", login[:-3]))
    bad_date = bytearray(
        encode_message(Message(Instruction.GET_ASSET_VALUE_DAY, ("AAPL", date(2025, 1, 31))))
    )
    bad_date[-1] = 30
    bad_date[-2] = 2  # 2025-02-30
    cases.append(_refused("impossible date", bad_date))
    fill = bytearray(
        encode_message(
            Message(
                Instruction.PURCHASE_SUCCESS,
                (
                    uuid.UUID(int=1),
                    "AAPL",
                    1,
                    Decimal("1.5"),
                    datetime(2025, 1, 1, tzinfo=timezone.utc),
                ),
            )
        )
    )
    at = fill.index(b"1.5")
    cases.append(_refused("decimal with an exponent", fill[:at] + b"1e5" + fill[at + 3 :]))
    return cases


def golden_json() -> dict[str, Any]:
    return {
        "vectors": vectors(),
        "values": value_examples(),
        "refused": refused_frames(),
        "addresses": [
            str(ipaddress.ip_address(a))
            for a in ("203.0.113.7", "2001:db8::1", "::1", "fe80::1:0:0:1")
        ],
    }
