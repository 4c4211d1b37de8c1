"""The connection state machine of spec 4.2, in one table.

A connection starts in the command state. ``switchState`` asks for the data
transfer state; once there, one data request is answered with packets 1..max
(or dataFail) and the last packet puts the connection back in the command
state. Client and server run the same machine over the same messages, so both
always agree on the state without it ever travelling on the wire (spec 4.1:
"states switching are indicated by commands and NOT values in the message").

``Connection`` is sans-IO, like h11: it never touches a socket. Servers and
clients feed it bytes and send the bytes it returns.
"""

from __future__ import annotations

from enum import Enum

from papertrader.protocol.codes import ConnectionStateCode, Instruction, MessageType
from papertrader.protocol.decoder import FrameDecoder, NeedData
from papertrader.protocol.errors import ErrorCode, LocalProtocolError, ProtocolError
from papertrader.protocol.header import Header
from papertrader.protocol.message import (
    DEFAULT_MAX_DATA_SIZE,
    Message,
    encode_message,
    failure_reply,
)


class State(Enum):
    # Members are singletons compared by identity: hash them by identity too, in C
    # (Enum's own __hash__ is Python code, run twice per TRANSITIONS lookup).
    __hash__ = object.__hash__

    COMMAND = "command"
    AWAIT_DATA_SWITCH = "awaiting switch to data transfer"
    DATA_TRANSFER = "data transfer"
    AWAIT_COMMAND_SWITCH = "awaiting switch to command"
    TRANSFERRING = "transferring"


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class Event(Enum):
    __hash__ = object.__hash__  # as State's

    # sent by the client
    COMMAND_REQUEST = "command request"
    SWITCH_TO_DATA = "switchState(data transfer)"
    SWITCH_TO_COMMAND = "switchState(command)"
    DATA_REQUEST = "data request"
    WORKER_LIST_REQUEST = "getWorkerList"
    # sent by the server
    COMMAND_RETURN = "command return"
    SWITCH_OK = "stateSwitchSuccess"
    SWITCH_FAIL = "stateSwitchFail"
    PACKET = "data packet"
    LAST_PACKET = "last data packet"
    DATA_FAIL = "dataFail"
    ERROR = "error"


S, E = State, Event

#: Every legal transition. Anything not listed is refused with WRONG_STATE.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.COMMAND, E.COMMAND_REQUEST): S.COMMAND,
    (S.COMMAND, E.COMMAND_RETURN): S.COMMAND,
    (S.COMMAND, E.SWITCH_TO_DATA): S.AWAIT_DATA_SWITCH,
    (S.COMMAND, E.WORKER_LIST_REQUEST): S.TRANSFERRING,
    (S.COMMAND, E.SWITCH_FAIL): S.COMMAND,  # a refused switchState
    (S.COMMAND, E.DATA_FAIL): S.COMMAND,  # a data request refused in the command state
    (S.COMMAND, E.ERROR): S.COMMAND,
    (S.AWAIT_DATA_SWITCH, E.SWITCH_OK): S.DATA_TRANSFER,
    (S.AWAIT_DATA_SWITCH, E.SWITCH_FAIL): S.COMMAND,
    (S.DATA_TRANSFER, E.DATA_REQUEST): S.TRANSFERRING,
    (S.DATA_TRANSFER, E.SWITCH_TO_COMMAND): S.AWAIT_COMMAND_SWITCH,
    (S.DATA_TRANSFER, E.COMMAND_RETURN): S.DATA_TRANSFER,  # a command refused in this state
    (S.DATA_TRANSFER, E.SWITCH_FAIL): S.DATA_TRANSFER,  # a refused switchState
    (S.DATA_TRANSFER, E.DATA_FAIL): S.COMMAND,  # a data request that could not be read
    (S.DATA_TRANSFER, E.ERROR): S.DATA_TRANSFER,
    (S.AWAIT_COMMAND_SWITCH, E.SWITCH_OK): S.COMMAND,
    (S.AWAIT_COMMAND_SWITCH, E.SWITCH_FAIL): S.DATA_TRANSFER,
    (S.TRANSFERRING, E.PACKET): S.TRANSFERRING,
    (S.TRANSFERRING, E.LAST_PACKET): S.COMMAND,
    (S.TRANSFERRING, E.DATA_FAIL): S.COMMAND,
}

CLIENT_EVENTS = frozenset(
    {
        E.COMMAND_REQUEST,
        E.SWITCH_TO_DATA,
        E.SWITCH_TO_COMMAND,
        E.DATA_REQUEST,
        E.WORKER_LIST_REQUEST,
    }
)

_RETURN_EVENTS = {
    Instruction.STATE_SWITCH_SUCCESS: E.SWITCH_OK,
    Instruction.STATE_SWITCH_FAIL: E.SWITCH_FAIL,
    Instruction.DATA_FAIL: E.DATA_FAIL,
    Instruction.ERROR: E.ERROR,
}


def classify(message: Message) -> Event:
    """The state-machine event a message stands for."""
    instruction = message.instruction
    mtype = message.message_type
    if mtype is MessageType.COMMAND:
        return E.COMMAND_REQUEST
    if mtype is MessageType.DATA_TRANSFER:
        return E.DATA_REQUEST
    if instruction is Instruction.GET_WORKER_LIST:
        return E.WORKER_LIST_REQUEST
    if instruction is Instruction.SWITCH_STATE:
        target = message.args[0]
        if target == ConnectionStateCode.DATA_TRANSFER:
            return E.SWITCH_TO_DATA
        if target == ConnectionStateCode.COMMAND:
            return E.SWITCH_TO_COMMAND
        raise ProtocolError(
            ErrorCode.BAD_ARGUMENT,
            f"switchState to {target!r}: the states are 0 (command) and 1 (data transfer)",
        )
    if instruction is Instruction.DATA:
        return E.LAST_PACKET if message.packet_number == message.packet_max else E.PACKET
    return _RETURN_EVENTS.get(instruction, E.COMMAND_RETURN)


def _wrong_state(state: State, message: Message) -> str:
    name = message.instruction.name
    if message.message_type is MessageType.DATA_TRANSFER:
        return (
            f"{name} is a data transfer instruction: send switchState(1) first "
            f"(state: {state.value})"
        )
    if message.message_type is MessageType.COMMAND:
        return f"{name} is only valid in the command state (state: {state.value})"
    return f"{name} is not valid in the {state.value} state"


class Connection:
    """One side of a client-worker (or client-master) connection."""

    def __init__(
        self,
        role: Role,
        max_data_size: int = DEFAULT_MAX_DATA_SIZE,
        receive_limit: int | None = None,
    ) -> None:
        """``max_data_size`` bounds what we send; ``receive_limit`` (default the same)
        what we accept: a server takes small requests and sends large answers."""
        self.role = role
        self.state = State.COMMAND
        self.max_data_size = max_data_size
        self._decoder = FrameDecoder(receive_limit or max_data_size)

    @property
    def mid_frame(self) -> bool:
        return self._decoder.mid_frame

    def receive_data(self, data: bytes) -> None:
        self._decoder.receive_data(data)

    def next_message(self) -> Message | NeedData:
        """The peer's next message, after moving the state machine.

        A message the peer may not send now raises ProtocolError(WRONG_STATE)
        with the state left as it was; the server answers it with
        ``failure_for`` and carries on.
        """
        message = self._decoder.next_message()
        if isinstance(message, NeedData):
            return message
        try:
            event = classify(message)
        except ProtocolError as exc:
            exc.header = _header_of(message)
            raise
        if (event in CLIENT_EVENTS) != (self.role is Role.SERVER):
            raise ProtocolError(
                ErrorCode.TYPE_MISMATCH,
                f"{message.instruction.name} is not something a {self._peer} sends",
                header=_header_of(message),
            )
        self._apply(event, message, ProtocolError)
        return message

    def send(self, message: Message) -> bytes:
        """Bytes for ``message``; LocalProtocolError if it may not be sent now."""
        try:
            event = classify(message)
        except ProtocolError as exc:
            raise LocalProtocolError(exc.code, exc.reason) from None
        if (event in CLIENT_EVENTS) != (self.role is Role.CLIENT):
            raise LocalProtocolError(
                ErrorCode.TYPE_MISMATCH,
                f"a {self.role.value} does not send {message.instruction.name}",
            )
        data = encode_message(message, self.max_data_size)
        self._apply(event, message, LocalProtocolError)
        return data

    def failure_for(self, error: ProtocolError) -> bytes:
        """The server's answer to a message it refused (keeps the framing in step)."""
        header = error.header
        reply = failure_reply(
            header.instruction if header else None,
            error.code,
            error.reason,
            header.request_id if header else 0,
        )
        return self.send(reply)

    @property
    def _peer(self) -> str:
        return "client" if self.role is Role.SERVER else "server"

    def _apply(self, event: Event, message: Message, error: type[ProtocolError]) -> None:
        target = TRANSITIONS.get((self.state, event))
        if target is None:
            raise error(
                ErrorCode.WRONG_STATE, _wrong_state(self.state, message), header=_header_of(message)
            )
        self.state = target


def _header_of(message: Message) -> Header:
    """A Header carrying just what a failure reply needs from ``message``."""
    return Header(
        message_type=message.message_type,
        instruction=message.instruction,
        argument_count=len(message.args),
        request_id=message.request_id,
        packet_number=message.packet_number,
        packet_max=message.packet_max,
        data_size=0,
        timestamp=message.timestamp,
        session_id=message.session_id,
        worker_uuid=message.worker_uuid,
        client_address=message.client_address,
    )
