"""Golden vectors: fixed frames in hex, byte-exact, and the same hex in docs/PROTOCOL.md.

An implementation in another language can test itself against these strings.
If the encoder changes a single byte these tests fail; if docs/PROTOCOL.md is
edited without the vectors (or the reverse) ``test_docs_*`` fail.

The examples section of docs/PROTOCOL.md is printed by this file, from the real
encoder, so no byte in the docs is typed by hand::

    PYTHONPATH=. python tests/test_protocol_golden.py
"""

from __future__ import annotations

import ipaddress
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from papertrader.protocol import (
    FAILURE_RETURN,
    HEADER_SIZE,
    SCHEMAS,
    TRANSITIONS,
    ErrorCode,
    Instruction,
    Message,
    MessageType,
    Reassembler,
    Value,
    ValueType,
    decode_all,
    decode_payload,
    encode_message,
    encode_payload,
    packets_for,
)
from papertrader.protocol.header import HEADER

DOCS = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"

SESSION = uuid.UUID("5e55104d-0000-4000-8000-00000000a11c")
WORKER = uuid.UUID("c0ffee00-1234-4567-89ab-cdef00000001")
EXPIRES = datetime(2025, 1, 2, 12, 0, tzinfo=timezone.utc)
STAMP = 1_735_732_800_123_456  # 2025-01-01T12:00:00.123456Z in microseconds
CLIENT = ipaddress.IPv4Address("203.0.113.7")
#: The quote record a worker sends for getAssetValueCurrent (section 6's "quote" record).
QUOTE = (
    ("symbol", "AAPL"),
    ("open", Decimal("189.10")),
    ("high", Decimal("189.80")),
    ("low", Decimal("188.95")),
    ("close", Decimal("189.25")),
    ("volume", 12000),
    ("time", datetime(2025, 1, 2, 14, 30, tzinfo=timezone.utc)),
)
QUOTE_CHUNK = 90  # small on purpose, so the quote needs two packets


@dataclass(frozen=True)
class Vector:
    name: str
    title: str
    story: str
    messages: tuple[Message, ...]
    hexes: tuple[str, ...]


VECTORS = (
    Vector(
        "login",
        "login(username, password, remember)",
        "A client logs in on a worker. No session yet, so the session id is zero; "
        "the client picks request id 1.",
        (Message(Instruction.LOGIN, ("alice", "correct horse", True), request_id=1),),
        (
            "50540101010103000100000000000000000000001e00000000000000000000000000000000000000"
            "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "0105000000616c696365010d000000636f727265637420686f7273650401",
        ),
    ),
    Vector(
        "session-id",
        "sessionID(session_id, expires_at, username)",
        "The worker's answer: the new session id (an ID value in the data field), when it "
        "expires, and the username. Request id 1 is echoed.",
        (Message(Instruction.SESSION_ID, (SESSION, EXPIRES, "alice"), request_id=1),),
        (
            "50540104020403000100000000000000000000002400000000000000000000000000000000000000"
            "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "055e55104d00004000800000000000a11c070070cfe6b72a06000105000000616c696365",
        ),
    ),
    Vector(
        "switch-state",
        "switchState(1) with a session id",
        "Ask for the data transfer state. The signature's sessionID travels in the "
        "header's session id field; the data field holds only the state (INT 1).",
        (Message(Instruction.SWITCH_STATE, (1,), session_id=SESSION, request_id=2),),
        (
            "50540103010301000200000000000000000000000900000000000000000000005e55104d00004000"
            "800000000000a11c0000000000000000000000000000000000000000000000000000000000000000"
            "020100000000000000",
        ),
    ),
    Vector(
        "state-switch-success",
        "stateSwitchSuccess(1)",
        "The worker agrees: both sides are now in the data transfer state.",
        (Message(Instruction.STATE_SWITCH_SUCCESS, (1,), request_id=2),),
        (
            "50540104090401000200000000000000000000000900000000000000000000000000000000000000"
            "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "020100000000000000",
        ),
    ),
    Vector(
        "purchase-forwarded",
        "purchaseAsset(symbol, quantity) as the worker forwards it",
        "purchaseAsset(AAPL, 10) with the client's session id, request id 7, the time the "
        "worker received it (2025-01-01T12:00:00.123456Z), the worker's UUID and the "
        "client's IPv4 address 203.0.113.7 (sent as the IPv4-mapped ::ffff:203.0.113.7).",
        (
            Message(
                Instruction.PURCHASE_ASSET,
                ("AAPL", 10),
                session_id=SESSION,
                worker_uuid=WORKER,
                client_address=CLIENT,
                timestamp=STAMP,
                request_id=7,
            ),
        ),
        (
            "50540101040102000700000000000000000000001200000040f2f9c8a32a06005e55104d00004000"
            "800000000000a11cc0ffee001234456789abcdef0000000100000000000000000000ffffcb007107"
            "01040000004141504c020a00000000000000",
        ),
    ),
    Vector(
        "data-transfer",
        "a quote in two DATA packets",
        "The answer to getAssetValueCurrent(AAPL) in the data transfer state, request id 3. "
        "The payload is one LIST value, the quote record of section 6 as (name, value) "
        "pairs: symbol AAPL, open 189.10, high 189.80, low 188.95, close 189.25, volume "
        "12000, time 2025-01-02T14:30:00Z; 170 bytes, cut into chunks of 90 bytes (real "
        "servers use max_data_size - 5). Packet 1 of 2 and 2 of 2; after packet 2 both "
        "sides are back in the command state.",
        tuple(packets_for(QUOTE, QUOTE_CHUNK, request_id=3)),
        (
            "505401040b0401000300000001000000020000005f00000000000000000000000000000000000000"
            "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "085a00000009070000000902000000010600000073796d626f6c01040000004141504c0902000000"
            "01040000006f70656e0306003138392e313009020000000104000000686967680306003138392e38"
            "30090200000001030000006c6f7703",
            "505401040b0401000300000002000000020000005500000000000000000000000000000000000000"
            "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "085000000006003138382e393509020000000105000000636c6f73650306003138392e3235090200"
            "00000106000000766f6c756d6502e02e0000000000000902000000010400000074696d6507008a40"
            "ffb92a0600",
        ),
    ),
)


def encoded(vector: Vector) -> tuple[str, ...]:
    return tuple(encode_message(message).hex() for message in vector.messages)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_encodes_to_golden_hex(vector: Vector) -> None:
    assert encoded(vector) == vector.hexes


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_golden_hex_decodes_to_message(vector: Vector) -> None:
    stream = b"".join(bytes.fromhex(h) for h in vector.hexes)
    assert decode_all(stream) == list(vector.messages)


def test_at_least_four_vectors() -> None:
    assert len(VECTORS) >= 4
    assert sum(len(v.hexes) for v in VECTORS) >= 6


def test_data_transfer_vector_reassembles_to_the_quote() -> None:
    (vector,) = [v for v in VECTORS if v.name == "data-transfer"]
    packets = decode_all(b"".join(bytes.fromhex(h) for h in vector.hexes))
    assert [(p.packet_number, p.packet_max) for p in packets] == [(1, 2), (2, 2)]
    reassembler = Reassembler()
    assert reassembler.feed(packets[0]) is None
    payload = reassembler.feed(packets[1])
    assert payload == encode_payload(QUOTE)
    assert decode_payload(payload) == QUOTE
    assert str(dict(QUOTE)["close"]) == "189.25"


#: One example per value type for the docs' encoding table: (how the docs show it, value).
VALUE_EXAMPLES: tuple[tuple[str, Value], ...] = (
    ('STR "BRK.B"', "BRK.B"),
    ('STR "Zürich" (ü is 2 bytes)', "Zürich"),
    ("INT 10", 10),
    ("INT -2", -2),
    ('DECIMAL "0.10"', Decimal("0.10")),
    ('DECIMAL "-42"', Decimal("-42")),
    ("BOOL true", True),
    ("ID 5e55104d-0000-4000-8000-00000000a11c", SESSION),
    ("DATE 2025-01-31", date(2025, 1, 31)),
    ("TIMESTAMP 2025-01-01T12:00:00.123456Z", datetime(2025, 1, 1, 12, 0, 0, 123456, timezone.utc)),
    ("BYTES 00 ff", b"\x00\xff"),
    ('LIST ("AAPL", 3)', ("AAPL", 3)),
    ("LIST () (empty)", ()),
)


def value_hex(value: Value) -> str:
    raw = encode_payload(value).hex()
    return f"{raw[:2]} {raw[2:]}".strip()


def test_value_examples_round_trip() -> None:
    for _, value in VALUE_EXAMPLES:
        assert decode_payload(bytes.fromhex(value_hex(value).replace(" ", ""))) == value


# --- the docs cannot drift -------------------------------------------------------------


def _docs() -> str:
    return DOCS.read_text(encoding="utf-8")


def test_docs_contain_every_value_example() -> None:
    docs = _docs()
    for shown, value in VALUE_EXAMPLES:
        assert f"| {shown} | `{value_hex(value)}` |" in docs, shown


def test_docs_contain_every_golden_hex() -> None:
    docs = _docs()
    for vector in VECTORS:
        for hex_string in vector.hexes:
            assert hex_string in docs, (
                f"{vector.name}: {hex_string[:40]}... missing from PROTOCOL.md"
            )


def test_docs_list_every_instruction_with_its_code() -> None:
    docs = _docs()
    for instruction in Instruction:
        row = re.search(rf"\|\s*`0x{instruction.value:04X}`\s*\|\s*`{instruction.name}`\s*\|", docs)
        assert row, f"{instruction.name} (0x{instruction.value:04X}) missing from PROTOCOL.md"


def test_docs_list_every_error_code_with_its_number() -> None:
    docs = _docs()
    for code in ErrorCode:
        assert re.search(rf"\|\s*{code.value}\s*\|\s*`{code.name}`\s*\|", docs), code.name


def test_docs_list_every_value_type_with_its_tag() -> None:
    docs = _docs()
    for kind in ValueType:
        assert re.search(rf"\|\s*{kind.value}\s*\|\s*`{kind.name}`\s*\|", docs), kind.name


def test_docs_transition_table_matches_states_py() -> None:
    docs = _docs()
    for (source, event), target in TRANSITIONS.items():
        cells = (re.escape(source.value), re.escape(event.value), re.escape(target.value))
        row = r"\|\s*" + r"\s*\|\s*".join(cells) + r"\s*\|"
        assert re.search(row, docs), f"{source.value} + {event.value} -> {target.value}"


def test_docs_header_table_matches_the_struct() -> None:
    docs = _docs()
    assert HEADER.size == HEADER_SIZE == sum(size for _, size, *_ in HEADER_FIELDS)
    codes = re.findall(r"\d*[a-zA-Z]", HEADER.format.lstrip("<"))
    assert len(codes) == len(HEADER_FIELDS)
    for index, (offset, size, kind, _, _) in enumerate(HEADER_FIELDS):
        assert struct.calcsize("<" + "".join(codes[:index])) == offset
        assert struct.calcsize("<" + codes[index]) == size
        assert (
            kind == {"s": "bytes", "B": "u8", "H": "u16", "I": "u32", "q": "i64"}[codes[index][-1]]
        )
    for offset, size, kind, field, _ in HEADER_FIELDS:
        assert re.search(
            rf"\|\s*{offset}\s*\|\s*{size}\s*\|\s*{re.escape(kind)}\s*\|\s*{field}", docs
        )


# --- the generator of the docs' tables and examples ----------------------------------------

#: offset, size, type, field, meaning: the header of header.py.
HEADER_FIELDS = (
    (0, 2, "bytes", "magic", 'ASCII "PT" (`50 54`)'),
    (2, 1, "u8", "version", "1"),
    (
        3,
        1,
        "u8",
        "message type",
        "1 command, 2 data transfer, 3 control, 4 server return, 5 master-worker link",
    ),
    (4, 2, "u16", "instruction", "instruction code; its high byte equals the message type"),
    (6, 2, "u16", "argument count", "number of values in the data field"),
    (8, 4, "u32", "request id", "chosen by the requester, echoed in the answer"),
    (12, 4, "u32", "packet number", "1..max on DATA packets, 0 on every other message"),
    (16, 4, "u32", "packet max", "number of packets of the transfer on DATA, else 0"),
    (20, 4, "u32", "data size", "bytes in the data field after the header"),
    (
        24,
        8,
        "i64",
        "timestamp",
        "µs since 1970-01-01T00:00:00Z when the worker received it; 0 = none",
    ),
    (32, 16, "bytes", "session id", "UUID, 16 bytes big-endian (RFC 4122 order); zero if none"),
    (
        48,
        16,
        "bytes",
        "worker uuid",
        "UUID of the worker on master-worker messages; zero otherwise",
    ),
    (
        64,
        16,
        "bytes",
        "client address",
        "IPv6, IPv4 as IPv4-mapped `::ffff:a.b.c.d`; zero if unset",
    ),
)

#: The instructions' signatures (a sessionID there is the header's session id field).
SPEC_NAMES = {
    Instruction.LOGIN: "login(username, password, remember)",
    Instruction.LOGIN_SESSION: "login(sessionID)",
    Instruction.REGISTER: "register(username, email, password)",
    Instruction.PURCHASE_ASSET: "purchaseAsset(sessionID, symbol, quantity)",
    Instruction.SELL_ASSET: "sellAsset(sessionID, symbol, quantity)",
    Instruction.LOGOUT: "logout(sessionID) (project addition)",
    Instruction.GET_ASSET_INFO: "getAssetInfo(asset)",
    Instruction.GET_ASSET_VALUE_CURRENT: "getAssetValueCurrent(asset)",
    Instruction.GET_ASSET_VALUE_DAY: "getAssetValueDay(asset, date)",
    Instruction.GET_ASSET_VALUE_WEEK: "getAssetValueWeek(asset, date)",
    Instruction.GET_ASSET_VALUE_MONTH: "getAssetValueMonth(asset, date)",
    Instruction.GET_ASSET_VALUE_YEAR: "getAssetValueYear(asset, date)",
    Instruction.GET_ASSET_VALUE_ALL_TIME: "getAssetValueAllTime(asset)",
    Instruction.GET_ASSET_VALUE_PREDICTED: "getAssetValuePredicted(asset, horizon)",
    Instruction.GET_USER_INFO: "getUserInfo(sessionID, username)",
    Instruction.GET_USER_PORTFOLIO: "getUserPortfolio(sessionID, username)",
    Instruction.GET_USER_TRANSACTION_HISTORY: "getUserTransactionHistory(sessionID, username)",
    Instruction.SWITCH_STATE: "switchState(sessionID, state)",
    Instruction.GET_WORKER_LIST: "getWorkerList",
    Instruction.SESSION_ID: "sessionID",
    Instruction.LOGOUT_SUCCESS: "logoutSuccess (project addition)",
    Instruction.ERROR: "error (project addition)",
}
CLIENT_PROTOCOL = {
    MessageType.COMMAND,
    MessageType.DATA_TRANSFER,
    MessageType.CONTROL,
    MessageType.RETURN,
}


def spec_name(instruction: Instruction) -> str:
    if instruction in SPEC_NAMES:
        return SPEC_NAMES[instruction]
    first, *rest = instruction.name.lower().split("_")
    return first + "".join(word.capitalize() for word in rest)


def instruction_table(link: bool = False) -> str:
    """The client protocol's instructions, or (``link``) the master-worker link's."""
    rows = [
        "| code | name | signature | category | arguments (data field, in order) "
        "| session id in header | failure return |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for instruction in Instruction:
        if (instruction.message_type in CLIENT_PROTOCOL) == link:
            continue
        schema = SCHEMAS[instruction]
        args = ", ".join(f"{name}: {kind.name}" for name, kind in schema.args) or "none"
        failure = FAILURE_RETURN.get(instruction)
        rows.append(
            f"| `0x{instruction.value:04X}` | `{instruction.name}` | {spec_name(instruction)} "
            f"| {instruction.message_type.name} | {args} "
            f"| {'required' if schema.needs_session else 'no'} "
            f"| {f'`{failure.name}`' if failure else ''} |"
        )
    return "\n".join(rows)


def header_table() -> str:
    rows = ["| offset | size | type | field | meaning |", "| --- | --- | --- | --- | --- |"]
    rows += [f"| {o} | {s} | {k} | {f} | {m} |" for o, s, k, f, m in HEADER_FIELDS]
    return "\n".join(rows)


def _value_rows(data: bytes, pos: int, indent: str) -> tuple[list[str], int]:
    """Rows for one tagged value at ``pos``: a small independent reader for the docs."""
    tag = ValueType(data[pos])
    rows = [f"| {pos} | `{data[pos]:02x}` | {indent}type tag | {tag.name} |"]
    pos += 1

    def row(size: int, what: str, meaning: str) -> None:
        nonlocal pos
        rows.append(f"| {pos} | `{data[pos : pos + size].hex()}` | {indent}{what} | {meaning} |")
        pos += size

    if tag is ValueType.STR or tag is ValueType.BYTES:
        (size,) = struct.unpack_from("<I", data, pos)
        row(4, "length (u32)", str(size))
        raw = data[pos : pos + size]
        row(size, "UTF-8" if tag is ValueType.STR else "bytes",
            repr(raw.decode()) if tag is ValueType.STR else f"{size} raw bytes")  # fmt: skip
    elif tag is ValueType.DECIMAL:
        (size,) = struct.unpack_from("<H", data, pos)
        row(2, "length (u16)", str(size))
        row(size, "ASCII", repr(data[pos : pos + size].decode()))
    elif tag is ValueType.INT:
        row(8, "i64", str(struct.unpack_from("<q", data, pos)[0]))
    elif tag is ValueType.BOOL:
        row(1, "u8", "true" if data[pos] else "false")
    elif tag is ValueType.ID:
        row(16, "16 bytes", str(uuid.UUID(bytes=data[pos : pos + 16])))
    elif tag is ValueType.TIMESTAMP:
        row(8, "i64 µs", _stamp(struct.unpack_from("<q", data, pos)[0]))
    elif tag is ValueType.DATE:
        year, month, day = struct.unpack_from("<HBB", data, pos)
        row(4, "u16 year, u8 month, u8 day", f"{year:04}-{month:02}-{day:02}")
    else:
        (count,) = struct.unpack_from("<I", data, pos)
        row(4, "count (u32)", f"{count} values")
        for _ in range(count):
            more, pos = _value_rows(data, pos, indent + "&nbsp;&nbsp;")
            rows += more
    return rows, pos


def _stamp(micros: int) -> str:
    moment = decode_payload(b"\x07" + struct.pack("<q", micros))
    assert isinstance(moment, datetime)
    return f"{micros} = {moment.isoformat()}"


def frame_breakdown(frame: bytes) -> str:
    fields = HEADER.unpack(frame[:HEADER_SIZE])
    mtype, instruction = MessageType(fields[2]), Instruction(fields[3])
    rows = ["| offset | bytes | field | value |", "| --- | --- | --- | --- |"]
    meanings = [
        repr(fields[0].decode()),
        str(fields[1]),
        f"{fields[2]} = {mtype.name}",
        f"0x{fields[3]:04X} = {instruction.name}",
        *(str(value) for value in fields[4:9]),
        _stamp(fields[9]) if fields[9] else "0 (not stamped)",
    ]
    for raw in (fields[10], fields[11]):
        meanings.append(str(uuid.UUID(bytes=raw)) if any(raw) else "zero (none)")
    address = ipaddress.IPv6Address(fields[12])
    meanings.append(
        "zero (unset)" if not any(fields[12]) else f"{address} = {address.ipv4_mapped or address}"
    )
    for (offset, size, _, name, _), meaning in zip(HEADER_FIELDS, meanings, strict=True):
        rows.append(f"| {offset} | `{frame[offset : offset + size].hex()}` | {name} | {meaning} |")
    pos = HEADER_SIZE
    while pos < len(frame):
        more, pos = _value_rows(frame, pos, "")
        rows += more
    return "\n".join(rows)


def section_examples(section: int, vectors: tuple[Vector, ...]) -> str:
    """The examples of a later section (13.1, 13.2...) as docs/PROTOCOL.md shows them."""
    parts = []
    for number, vector in enumerate(vectors, start=1):
        parts.append(f"#### Example {section}.{number}: {vector.title}\n\n{vector.story}\n")
        for message in vector.messages:
            frame = encode_message(message)
            parts.append(
                f"`{message.instruction.name}`, {len(frame)} bytes:\n\n```text\n{frame.hex()}\n"
                f"```\n\n{frame_breakdown(frame)}\n"
            )
    return "\n".join(parts)


def examples_markdown() -> str:
    parts = []
    for number, vector in enumerate(VECTORS, start=1):
        parts.append(f"### Example {number}: {vector.title}\n\n{vector.story}\n")
        for message in vector.messages:
            frame = encode_message(message)
            label = (
                f"Packet {message.packet_number} of {message.packet_max}"
                if message.instruction is Instruction.DATA
                else f"`{message.instruction.name}`"
            )
            parts.append(
                f"{label}, {len(frame)} bytes:\n\n```text\n{frame.hex()}\n```\n\n"
                f"{frame_breakdown(frame)}\n"
            )
        chunks = [m.args[0] for m in vector.messages if m.instruction is Instruction.DATA]
        if chunks:
            payload = b"".join(c for c in chunks if isinstance(c, bytes))
            rows, end = _value_rows(payload, 0, "")
            assert end == len(payload)
            table = "\n".join(
                ["| offset | bytes | field | value |", "| --- | --- | --- | --- |", *rows]
            )
            parts.append(
                f"The receiver joins the chunks in packet order into the {len(payload)}-byte "
                f"payload, one LIST value (offsets from the start of the payload):\n\n{table}\n"
            )
    return "\n".join(parts)


def transition_table() -> str:
    rows = ["| state | event | next state |", "| --- | --- | --- |"]
    rows += [
        f"| {source.value} | {event.value} | {target.value} |"
        for (source, event), target in TRANSITIONS.items()
    ]
    return "\n".join(rows)


def value_table() -> str:
    rows = ["| value | bytes (tag, then the encoding) |", "| --- | --- |"]
    rows += [f"| {shown} | `{value_hex(value)}` |" for shown, value in VALUE_EXAMPLES]
    return "\n".join(rows)


def error_table() -> str:
    rows = ["| number | code | meaning |", "| --- | --- | --- |"]
    rows += [f"| {code.value} | `{code.name}` | |" for code in ErrorCode]
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - prints the generated sections of the docs
    import sys

    section = sys.argv[1] if len(sys.argv) > 1 else "examples"
    printers: dict[str, Callable[[], str]] = {
        "examples": examples_markdown,
        "header": header_table,
        "instructions": instruction_table,
        "link": lambda: instruction_table(link=True),
        "transitions": transition_table,
        "values": value_table,
        "errors": error_table,
        "hex": lambda: "\n".join(f"{v.name}: {encoded(v)}" for v in VECTORS),
    }
    print(printers[section]())
