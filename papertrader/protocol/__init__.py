"""The PaperTrader wire protocol, sans-IO.

Nothing here opens a socket, imports gevent or talks to Redis: it turns bytes
into messages and messages into bytes, and tracks the connection state, the way
h11 does for HTTP. Master, worker and client all use it. docs/PROTOCOL.md is
the byte-by-byte description.
"""

from papertrader.protocol.codes import ConnectionStateCode, Instruction, MessageType
from papertrader.protocol.decoder import NEED_DATA, FrameDecoder, NeedData, decode_all
from papertrader.protocol.errors import ErrorCode, LocalProtocolError, ProtocolError
from papertrader.protocol.header import HEADER_SIZE, NIL, Header
from papertrader.protocol.message import (
    DEFAULT_MAX_DATA_SIZE,
    Message,
    encode_message,
    failure_reply,
    reply_to,
)
from papertrader.protocol.schemas import FAILURE_RETURN, SCHEMAS
from papertrader.protocol.states import TRANSITIONS, Connection, Event, Role, State
from papertrader.protocol.transfer import Reassembler, max_chunk_size, packets_for, split_payload
from papertrader.protocol.values import Value, ValueType, decode_payload, encode_payload

__all__ = [
    "DEFAULT_MAX_DATA_SIZE",
    "FAILURE_RETURN",
    "HEADER_SIZE",
    "NEED_DATA",
    "NIL",
    "SCHEMAS",
    "TRANSITIONS",
    "Connection",
    "ConnectionStateCode",
    "ErrorCode",
    "Event",
    "FrameDecoder",
    "Header",
    "Instruction",
    "LocalProtocolError",
    "Message",
    "MessageType",
    "NeedData",
    "ProtocolError",
    "Reassembler",
    "Role",
    "State",
    "Value",
    "ValueType",
    "decode_all",
    "decode_payload",
    "encode_message",
    "encode_payload",
    "failure_reply",
    "max_chunk_size",
    "packets_for",
    "reply_to",
    "split_payload",
]
