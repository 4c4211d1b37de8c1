"""The fixed 80-byte header that starts every frame, little-endian.

Everything needed to decide whether a frame is acceptable is in the header, so
limits are enforced before a single byte of the body is buffered.

    offset size field
    0      2    magic b"PT"
    2      1    version (1)
    3      1    message type
    4      2    instruction
    6      2    argument count
    8      4    request id (echoed in the answer; tells requests apart on a shared link)
    12     4    packet number (1..max for data packets, 0 otherwise)
    16     4    packet max (0 when not a data packet)
    20     4    data size (bytes after the header)
    24     8    timestamp, i64 microseconds since the Unix epoch (0 = not stamped)
    32     16   session id (zero when the instruction needs none)
    48     16   worker uuid (zero on client-worker messages)
    64     16   client address, IPv6 or IPv4-mapped (zero when unset)
"""

from __future__ import annotations

import ipaddress
import struct
import uuid
from dataclasses import dataclass

from papertrader.protocol.errors import ErrorCode, ProtocolError

MAGIC = b"PT"
VERSION = 1
HEADER = struct.Struct("<2sBBHHIIIIq16s16s16s")
HEADER_SIZE = HEADER.size
NIL = uuid.UUID(int=0)
_NO_ADDRESS = bytes(16)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

assert HEADER_SIZE == 80


@dataclass(frozen=True)
class Header:
    """A decoded header; the body is still to come (``data_size`` bytes)."""

    message_type: int
    instruction: int
    argument_count: int
    request_id: int
    packet_number: int
    packet_max: int
    data_size: int
    timestamp: int
    session_id: uuid.UUID
    worker_uuid: uuid.UUID
    client_address: IPAddress | None


def address_bytes(address: IPAddress | None) -> bytes:
    """16 bytes for the header: IPv4 travels as an IPv4-mapped IPv6 address."""
    if address is None:
        return _NO_ADDRESS
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(f"::ffff:{address}").packed
    return address.packed


def address_from_bytes(raw: bytes) -> IPAddress | None:
    """Inverse of ``address_bytes``."""
    if raw == _NO_ADDRESS:
        return None
    address = ipaddress.IPv6Address(raw)
    return address.ipv4_mapped or address


_NIL_BYTES = bytes(16)


def _uuid(raw: bytes) -> uuid.UUID:
    """UUID of 16 header bytes; the common all-zero case skips building a new object."""
    return NIL if raw == _NIL_BYTES else uuid.UUID(bytes=raw)


def pack_header(header: Header) -> bytes:
    """The 80 header bytes."""
    return HEADER.pack(
        MAGIC,
        VERSION,
        header.message_type,
        header.instruction,
        header.argument_count,
        header.request_id,
        header.packet_number,
        header.packet_max,
        header.data_size,
        header.timestamp,
        header.session_id.bytes,
        header.worker_uuid.bytes,
        address_bytes(header.client_address),
    )


def unpack_header(raw: bytes) -> Header:
    """Parse 80 bytes; a wrong magic or version is fatal since the framing is lost."""
    (magic, version, mtype, instruction, argc, request_id, number, maximum, size, stamp,
     session, worker, address) = HEADER.unpack(raw)  # fmt: skip
    if magic != MAGIC:
        raise ProtocolError(
            ErrorCode.BAD_MAGIC, f"frame starts with {magic!r}, not {MAGIC!r}", fatal=True
        )
    if version != VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION, f"protocol version {version}, expected {VERSION}", fatal=True
        )
    return Header(
        message_type=mtype,
        instruction=instruction,
        argument_count=argc,
        request_id=request_id,
        packet_number=number,
        packet_max=maximum,
        data_size=size,
        timestamp=stamp,
        session_id=_uuid(session),
        worker_uuid=_uuid(worker),
        client_address=address_from_bytes(address),
    )
