"""Messages: a header's meaning plus typed arguments, and their bytes."""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from papertrader.protocol.codes import Instruction, MessageType
from papertrader.protocol.errors import ErrorCode, LocalProtocolError, ProtocolError
from papertrader.protocol.header import NIL, Header, IPAddress, pack_header
from papertrader.protocol.schemas import FAILURE_RETURN, MAX_ARGUMENTS, SCHEMAS
from papertrader.protocol.values import Value, ValueType, decode_values, encode_values, value_type

DEFAULT_MAX_DATA_SIZE = 64 * 1024


@dataclass(frozen=True)
class Message:
    """One frame. ``args`` follow the instruction's schema in ``schemas.SCHEMAS``."""

    instruction: Instruction
    args: tuple[Value, ...] = ()
    session_id: uuid.UUID = NIL
    worker_uuid: uuid.UUID = NIL
    client_address: IPAddress | None = None
    timestamp: int = 0
    request_id: int = 0
    packet_number: int = 0
    packet_max: int = 0

    @property
    def message_type(self) -> MessageType:
        """Derived from the instruction (its high byte), so it can never disagree."""
        return _MESSAGE_TYPES[self.instruction]

    def arg(self, name: str) -> Value:
        """An argument by its schema name, so handlers never count positions."""
        return self.args[SCHEMAS[self.instruction].names.index(name)]

    @property
    def is_failure(self) -> bool:
        return self.instruction in _FAILURES


_MESSAGE_TYPES = {instruction: instruction.message_type for instruction in Instruction}
# Plain dict lookups: calling an Enum to convert a code is slow on the hot path.
_BY_TYPE_CODE = {int(mtype): mtype for mtype in MessageType}
_BY_INSTRUCTION_CODE = {int(instruction): instruction for instruction in Instruction}
_FAILURES = frozenset(set(FAILURE_RETURN.values()))


def check_args(instruction: Instruction, args: tuple[Value, ...]) -> None:
    """Raise BAD_ARGUMENT unless ``args`` match the instruction's schema."""
    schema = SCHEMAS[instruction]
    if len(args) != len(schema.args):
        raise ProtocolError(
            ErrorCode.ARGUMENT_COUNT,
            f"{instruction.name} takes {len(schema.args)} arguments, got {len(args)}",
        )
    for (name, expected), value in zip(schema.args, args, strict=True):
        actual = value_type(value)
        if actual is not expected:
            raise ProtocolError(
                ErrorCode.BAD_ARGUMENT,
                f"{instruction.name} argument {name!r} must be {expected.name}, not {actual.name}",
            )


def check_packet_fields(instruction: Instruction, number: int, maximum: int) -> None:
    """Only data packets number themselves, 1..max; everything else says 0/0."""
    if instruction is Instruction.DATA:
        if not 1 <= number <= maximum:
            raise ProtocolError(
                ErrorCode.BAD_PACKET_NUMBER, f"data packet {number} of {maximum} is not in 1..max"
            )
    elif number or maximum:
        raise ProtocolError(
            ErrorCode.BAD_PACKET_NUMBER,
            f"{instruction.name} is not a data packet but says {number}/{maximum}",
        )


def encode_message(message: Message, max_data_size: int = DEFAULT_MAX_DATA_SIZE) -> bytes:
    """Header plus data field; refuses to produce anything the decoder would refuse."""
    try:
        check_args(message.instruction, message.args)
        check_packet_fields(message.instruction, message.packet_number, message.packet_max)
        data = encode_values(message.args)
    except ProtocolError as exc:
        raise LocalProtocolError(exc.code, exc.reason) from None
    if len(data) > max_data_size:
        raise LocalProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"data field of {len(data)} bytes exceeds {max_data_size}"
        )
    header = Header(
        message_type=message.message_type,
        instruction=message.instruction,
        argument_count=len(message.args),
        request_id=message.request_id,
        packet_number=message.packet_number,
        packet_max=message.packet_max,
        data_size=len(data),
        timestamp=message.timestamp,
        session_id=message.session_id,
        worker_uuid=message.worker_uuid,
        client_address=message.client_address,
    )
    try:
        raw_header = pack_header(header)
    except struct.error as exc:  # a header field out of its range (request id, timestamp...)
        raise LocalProtocolError(ErrorCode.BAD_ARGUMENT, f"header field: {exc}") from None
    return raw_header + data


def check_header(header: Header, max_data_size: int) -> Instruction:
    """Every limit that can be judged before the body is read.

    A data size over the limit is fatal (we refuse to buffer it, so we cannot
    skip it either); the other problems leave the framing intact.
    """
    if header.data_size > max_data_size:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE,
            f"data size {header.data_size} exceeds the maximum of {max_data_size}",
            fatal=True,
            header=header,
        )
    mtype = _BY_TYPE_CODE.get(header.message_type)
    if mtype is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            f"unknown message type {header.message_type}",
            header=header,
        )
    instruction = _BY_INSTRUCTION_CODE.get(header.instruction)
    if instruction is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_INSTRUCTION,
            f"unknown instruction 0x{header.instruction:04x}",
            header=header,
        )
    if _MESSAGE_TYPES[instruction] is not mtype:
        raise ProtocolError(
            ErrorCode.TYPE_MISMATCH,
            f"{instruction.name} is a {instruction.message_type.name} instruction, "
            f"sent as {mtype.name}",
            header=header,
        )
    if header.argument_count > MAX_ARGUMENTS:
        raise ProtocolError(
            ErrorCode.TOO_MANY_ARGUMENTS,
            f"{header.argument_count} arguments; no instruction takes more than {MAX_ARGUMENTS}",
            header=header,
        )
    expected = len(SCHEMAS[instruction].args)
    if header.argument_count != expected:
        raise ProtocolError(
            ErrorCode.ARGUMENT_COUNT,
            f"{instruction.name} takes {expected} arguments, header says {header.argument_count}",
            header=header,
        )
    try:
        check_packet_fields(instruction, header.packet_number, header.packet_max)
    except ProtocolError as exc:
        exc.header = header
        raise
    return instruction


def decode_body(header: Header, instruction: Instruction, data: bytes) -> Message:
    """Build the message once its data field has arrived."""
    try:
        args = decode_values(data, header.argument_count)
        check_args(instruction, args)
    except ProtocolError as exc:
        exc.header = header
        raise
    return Message(
        instruction=instruction,
        args=args,
        session_id=header.session_id,
        worker_uuid=header.worker_uuid,
        client_address=header.client_address,
        timestamp=header.timestamp,
        request_id=header.request_id,
        packet_number=header.packet_number,
        packet_max=header.packet_max,
    )


def failure_reply(
    instruction: Instruction | int | None, code: ErrorCode, reason: str, request_id: int = 0
) -> Message:
    """The failure return answering ``instruction`` (``ERROR`` when there is none)."""
    try:
        answered = Instruction(instruction) if instruction is not None else None
    except ValueError:
        answered = None
    reply = (
        Instruction.ERROR if answered is None else FAILURE_RETURN.get(answered, Instruction.ERROR)
    )
    args: tuple[Value, ...] = (int(code), reason)
    if SCHEMAS[reply].args[-1][1] is ValueType.ID:
        args += (NIL,)
    return Message(reply, args, request_id=request_id)


def reply_to(request: Message, instruction: Instruction, *args: Value) -> Message:
    """A return for ``request``, echoing its request id."""
    return Message(instruction, args, request_id=request.request_id)
