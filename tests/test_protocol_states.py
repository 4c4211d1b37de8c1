"""The connection state machine (spec 4.2), driven on both sides at once.

A client and a server ``Connection`` exchange real bytes; after every message
both must be in the same state. A request the state does not allow is refused
locally by a client, and answered by a server with the instruction's own
failure return, keeping the connection open.
"""

from __future__ import annotations

import uuid
from collections import deque
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from papertrader.protocol import (
    FAILURE_RETURN,
    NEED_DATA,
    NIL,
    TRANSITIONS,
    Connection,
    ErrorCode,
    Event,
    Instruction,
    LocalProtocolError,
    Message,
    MessageType,
    ProtocolError,
    Reassembler,
    Role,
    State,
    decode_all,
    encode_message,
    packets_for,
    reply_to,
)
from papertrader.protocol.states import CLIENT_EVENTS, classify

SID = uuid.UUID("5e55104d-0000-4000-8000-00000000a11c")
EXPIRES = datetime(2025, 1, 2, tzinfo=timezone.utc)
PRICE_HISTORY = tuple(
    (("day", date(2025, 1, d)), ("close", Decimal(f"{180 + d}.{d:02}"))) for d in range(1, 29)
)


class Pair:
    """A client and a server connected back to back."""

    def __init__(self) -> None:
        self.client = Connection(Role.CLIENT)
        self.server = Connection(Role.SERVER)

    @property
    def states(self) -> tuple[State, State]:
        return self.client.state, self.server.state

    def request(self, message: Message) -> Message:
        self.server.receive_data(self.client.send(message))
        received = self.server.next_message()
        assert received == message
        assert self.server.next_message() is NEED_DATA
        return received

    def answer(self, message: Message) -> Message:
        self.client.receive_data(self.server.send(message))
        received = self.client.next_message()
        assert received == message
        return received

    def step(self, event: Event) -> None:
        message = EXAMPLES[event]
        (self.request if event in CLIENT_EVENTS else self.answer)(message)
        assert self.client.state is self.server.state


EXAMPLES: dict[Event, Message] = {
    Event.COMMAND_REQUEST: Message(Instruction.PURCHASE_ASSET, ("AAPL", 3), session_id=SID),
    Event.SWITCH_TO_DATA: Message(Instruction.SWITCH_STATE, (1,), session_id=SID),
    Event.SWITCH_TO_COMMAND: Message(Instruction.SWITCH_STATE, (0,), session_id=SID),
    Event.DATA_REQUEST: Message(Instruction.GET_ASSET_INFO, ("AAPL",), session_id=SID),
    Event.WORKER_LIST_REQUEST: Message(Instruction.GET_WORKER_LIST),
    Event.COMMAND_RETURN: Message(Instruction.PURCHASE_FAIL, (110, "no cash", NIL)),
    Event.SWITCH_OK: Message(Instruction.STATE_SWITCH_SUCCESS, (1,)),
    Event.SWITCH_FAIL: Message(Instruction.STATE_SWITCH_FAIL, (100, "invalid session")),
    Event.PACKET: Message(Instruction.DATA, (b"part",), packet_number=1, packet_max=2),
    Event.LAST_PACKET: Message(Instruction.DATA, (b"all",), packet_number=1, packet_max=1),
    Event.DATA_FAIL: Message(Instruction.DATA_FAIL, (113, "no data")),
    Event.ERROR: Message(Instruction.ERROR, (116, "internal")),
}


def test_examples_stand_for_their_events() -> None:
    assert set(EXAMPLES) == set(Event)
    for event, message in EXAMPLES.items():
        assert classify(message) is event


def _paths() -> dict[State, list[Event]]:
    """The shortest event path from the start to every reachable state."""
    paths: dict[State, list[Event]] = {State.COMMAND: []}
    queue = deque([State.COMMAND])
    while queue:
        state = queue.popleft()
        for (source, event), target in TRANSITIONS.items():
            if source is state and target not in paths:
                paths[target] = [*paths[state], event]
                queue.append(target)
    return paths


PATHS = _paths()


def pair_in(state: State) -> Pair:
    pair = Pair()
    for event in PATHS[state]:
        pair.step(event)
    assert pair.states == (state, state)
    return pair


# --- the table -------------------------------------------------------------------------


def test_table_is_well_formed() -> None:
    for (source, event), target in TRANSITIONS.items():
        assert isinstance(source, State)
        assert isinstance(event, Event)
        assert isinstance(target, State)
    assert set(PATHS) == set(State), "every state is reachable from the command state"
    assert {source for source, _ in TRANSITIONS} == set(State), "no state is a dead end"
    # every state leads back to the command state
    for state in State:
        seen, queue = {state}, deque([state])
        while queue:
            current = queue.popleft()
            for (source, _), target in TRANSITIONS.items():
                if source is current and target not in seen:
                    seen.add(target)
                    queue.append(target)
        assert State.COMMAND in seen


@pytest.mark.parametrize(
    ("source", "event"), list(TRANSITIONS), ids=lambda x: getattr(x, "name", str(x))
)
def test_every_transition_is_reachable_with_real_bytes(source: State, event: Event) -> None:
    pair = pair_in(source)
    pair.step(event)
    assert pair.states == (TRANSITIONS[source, event],) * 2


ILLEGAL = [
    (state, event) for state in State for event in Event if (state, event) not in TRANSITIONS
]


@pytest.mark.parametrize(("source", "event"), ILLEGAL, ids=lambda x: getattr(x, "name", str(x)))
def test_every_other_pair_is_refused_on_both_sides(source: State, event: Event) -> None:
    pair = pair_in(source)
    message = EXAMPLES[event]
    sender, receiver = (
        (pair.client, pair.server) if event in CLIENT_EVENTS else (pair.server, pair.client)
    )
    with pytest.raises(LocalProtocolError) as local:
        sender.send(message)
    assert local.value.code is ErrorCode.WRONG_STATE
    receiver.receive_data(encode_message(message))  # a peer that does not check
    with pytest.raises(ProtocolError) as remote:
        receiver.next_message()
    assert remote.value.code is ErrorCode.WRONG_STATE
    assert not remote.value.fatal
    assert pair.states == (source, source)


# --- whole flows -----------------------------------------------------------------------


def test_full_flow() -> None:
    pair = Pair()
    assert pair.states == (State.COMMAND, State.COMMAND)
    login = pair.request(Message(Instruction.LOGIN, ("alice", "pw", True), request_id=1))
    pair.answer(reply_to(login, Instruction.SESSION_ID, SID, EXPIRES, "alice"))
    assert pair.states == (State.COMMAND, State.COMMAND)

    switch = pair.request(Message(Instruction.SWITCH_STATE, (1,), session_id=SID, request_id=2))
    assert pair.states == (State.AWAIT_DATA_SWITCH, State.AWAIT_DATA_SWITCH)
    pair.answer(reply_to(switch, Instruction.STATE_SWITCH_SUCCESS, 1))
    assert pair.states == (State.DATA_TRANSFER, State.DATA_TRANSFER)

    request = pair.request(
        Message(
            Instruction.GET_ASSET_VALUE_MONTH,
            ("AAPL", date(2025, 1, 1)),
            session_id=SID,
            request_id=3,
        )
    )
    assert pair.states == (State.TRANSFERRING, State.TRANSFERRING)
    packets = packets_for(PRICE_HISTORY, 100, request_id=request.request_id)
    assert len(packets) > 3
    reassembler = Reassembler()
    result = None
    for packet in packets:
        assert pair.states == (State.TRANSFERRING, State.TRANSFERRING)
        received = pair.answer(packet)
        assert received.request_id == 3
        done, value = reassembler.finish_value(received)
        if done:
            result = value
    assert result == PRICE_HISTORY
    assert pair.states == (State.COMMAND, State.COMMAND), "the last packet ends the data state"

    order = pair.request(Message(Instruction.SELL_ASSET, ("AAPL", 1), session_id=SID, request_id=4))
    pair.answer(reply_to(order, Instruction.SELL_FAIL, 111, "no position", NIL))
    assert pair.states == (State.COMMAND, State.COMMAND)


def test_single_packet_transfer_returns_to_command() -> None:
    pair = pair_in(State.DATA_TRANSFER)
    pair.request(Message(Instruction.GET_ASSET_VALUE_CURRENT, ("AAPL",), session_id=SID))
    (packet,) = packets_for((("price", Decimal("1.5")),))
    pair.answer(packet)
    assert pair.states == (State.COMMAND, State.COMMAND)


def test_data_fail_ends_a_transfer() -> None:
    pair = pair_in(State.DATA_TRANSFER)
    pair.request(Message(Instruction.GET_USER_PORTFOLIO, ("alice",), session_id=SID))
    packets = packets_for(PRICE_HISTORY, 50)
    reassembler = Reassembler()
    assert reassembler.feed(pair.answer(packets[0])) is None
    pair.answer(Message(Instruction.DATA_FAIL, (ErrorCode.UNAVAILABLE, "master went away")))
    assert pair.states == (State.COMMAND, State.COMMAND)
    with pytest.raises(ProtocolError) as info:
        reassembler.abandon()
    assert info.value.code is ErrorCode.PACKET_MISSING


def test_data_fail_answers_a_data_request() -> None:
    pair = pair_in(State.DATA_TRANSFER)
    pair.request(Message(Instruction.GET_ASSET_INFO, ("NOPE",), session_id=SID))
    pair.answer(Message(Instruction.DATA_FAIL, (ErrorCode.UNKNOWN_ASSET, "no such asset")))
    assert pair.states == (State.COMMAND, State.COMMAND)


def test_switch_state_0_returns_to_command() -> None:
    pair = pair_in(State.DATA_TRANSFER)
    switch = pair.request(Message(Instruction.SWITCH_STATE, (0,), session_id=SID))
    assert pair.states == (State.AWAIT_COMMAND_SWITCH, State.AWAIT_COMMAND_SWITCH)
    pair.answer(reply_to(switch, Instruction.STATE_SWITCH_SUCCESS, 0))
    assert pair.states == (State.COMMAND, State.COMMAND)


def test_refused_switches_leave_the_state() -> None:
    pair = Pair()
    pair.request(Message(Instruction.SWITCH_STATE, (1,), session_id=SID))
    pair.answer(Message(Instruction.STATE_SWITCH_FAIL, (ErrorCode.INVALID_SESSION, "expired")))
    assert pair.states == (State.COMMAND, State.COMMAND)
    pair = pair_in(State.DATA_TRANSFER)
    pair.request(Message(Instruction.SWITCH_STATE, (0,), session_id=SID))
    pair.answer(Message(Instruction.STATE_SWITCH_FAIL, (ErrorCode.INVALID_SESSION, "expired")))
    assert pair.states == (State.DATA_TRANSFER, State.DATA_TRANSFER)


def test_worker_list_is_a_transfer_from_the_command_state() -> None:
    pair = Pair()
    pair.request(Message(Instruction.GET_WORKER_LIST, request_id=1))
    assert pair.states == (State.TRANSFERRING, State.TRANSFERRING)
    for packet in packets_for(((("name", "eu-west"), ("port", 2049)),), 10, request_id=1):
        pair.answer(packet)
    assert pair.states == (State.COMMAND, State.COMMAND)


# --- the wrong state -------------------------------------------------------------------

REQUESTS = [
    Message(Instruction.LOGIN, ("alice", "pw", False), request_id=11),
    Message(Instruction.LOGIN_SESSION, session_id=SID, request_id=12),
    Message(Instruction.REGISTER, ("alice", "a@example.com", "pw"), request_id=13),
    Message(Instruction.PURCHASE_ASSET, ("AAPL", 2), session_id=SID, request_id=14),
    Message(Instruction.SELL_ASSET, ("AAPL", 2), session_id=SID, request_id=15),
    Message(Instruction.LOGOUT, session_id=SID, request_id=16),
    # accounts (issue 12)
    Message(Instruction.LOGIN_OIDC, ("google", "h.p.s", "n" * 16, True, ""), request_id=50),
    Message(Instruction.GET_SIGN_IN_OPTIONS, request_id=51),
    Message(Instruction.PASSWORD_SET, ("", "new pw"), session_id=SID, request_id=52),
    Message(Instruction.PASSWORD_REMOVE, ("pw",), session_id=SID, request_id=53),
    Message(
        Instruction.PROVIDER_LINK, ("google", "h.p.s", "n" * 16), session_id=SID, request_id=54
    ),
    Message(Instruction.PROVIDER_UNLINK, ("google",), session_id=SID, request_id=55),
    Message(Instruction.PASSWORD_FORGOT, ("alice",), request_id=56),
    Message(Instruction.PASSWORD_RESET, ("code", "new pw"), request_id=57),
    Message(Instruction.SESSION_REVOKE, ("0123456789ab",), session_id=SID, request_id=58),
    Message(Instruction.LOGOUT_ALL, (True,), session_id=SID, request_id=59),
    Message(Instruction.ACCOUNT_DELETE, ("pw", "", "", ""), session_id=SID, request_id=60),
    Message(Instruction.EMAIL_VERIFY, ("code",), request_id=61),
    Message(Instruction.GET_SESSIONS, session_id=SID, request_id=62),
    Message(Instruction.GET_SIGN_IN_METHODS, session_id=SID, request_id=63),
    # orders (issue 13)
    Message(
        Instruction.PLACE_ORDER,
        ((("client_order_id", SID), ("side", "buy"), ("symbol", "AAPL"), ("quantity", 1)),),
        session_id=SID,
        request_id=70,
    ),
    Message(Instruction.CANCEL_ORDER, (SID,), session_id=SID, request_id=71),
    Message(Instruction.CANCEL_ALL_ORDERS, ("",), session_id=SID, request_id=72),
    Message(Instruction.GET_ORDER, (SID,), session_id=SID, request_id=73),
    Message(Instruction.GET_ORDERS, ("", "open", 10), session_id=SID, request_id=74),
    Message(Instruction.SET_PROFILE_VISIBILITY, (True,), session_id=SID, request_id=75),
    Message(Instruction.GET_EQUITY_HISTORY, ("week",), session_id=SID, request_id=76),
    # competitions (issue 13 item 7)
    Message(
        Instruction.CREATE_COMPETITION,
        ((("name", "Class 7B"),),),
        session_id=SID,
        request_id=77,
    ),
    Message(Instruction.JOIN_COMPETITION, ("", "K7QPM2XD"), session_id=SID, request_id=78),
    Message(Instruction.LEAVE_COMPETITION, ("Class 7B",), session_id=SID, request_id=79),
    Message(Instruction.GET_COMPETITIONS, session_id=SID, request_id=80),
    Message(Instruction.GET_COMPETITION, ("Class 7B",), session_id=SID, request_id=81),
    Message(Instruction.GET_LEADERBOARD, ("Class 7B", 10), session_id=SID, request_id=82),
    Message(
        Instruction.GET_ACCOUNT_EQUITY_HISTORY, ("Class 7B", "week"), session_id=SID, request_id=83
    ),
    Message(Instruction.GET_ASSET_INFO, ("AAPL",), session_id=SID, request_id=21),
    Message(Instruction.GET_ASSET_VALUE_CURRENT, ("AAPL",), session_id=SID, request_id=22),
    Message(
        Instruction.GET_ASSET_VALUE_DAY, ("AAPL", date(2025, 1, 2)), session_id=SID, request_id=23
    ),
    Message(
        Instruction.GET_ASSET_VALUE_WEEK, ("AAPL", date(2025, 1, 2)), session_id=SID, request_id=24
    ),
    Message(
        Instruction.GET_ASSET_VALUE_MONTH, ("AAPL", date(2025, 1, 2)), session_id=SID, request_id=25
    ),
    Message(
        Instruction.GET_ASSET_VALUE_YEAR, ("AAPL", date(2025, 1, 2)), session_id=SID, request_id=26
    ),
    Message(Instruction.GET_ASSET_VALUE_ALL_TIME, ("AAPL",), session_id=SID, request_id=27),
    Message(Instruction.GET_ASSET_VALUE_PREDICTED, ("AAPL", 7), session_id=SID, request_id=28),
    Message(Instruction.GET_USER_INFO, ("alice",), session_id=SID, request_id=29),
    Message(Instruction.GET_USER_PORTFOLIO, ("alice",), session_id=SID, request_id=30),
    Message(Instruction.GET_USER_TRANSACTION_HISTORY, ("alice",), session_id=SID, request_id=31),
    Message(Instruction.SWITCH_STATE, (0,), session_id=SID, request_id=41),
    Message(Instruction.SWITCH_STATE, (1,), session_id=SID, request_id=42),
    Message(Instruction.GET_WORKER_LIST, request_id=43),
]


def test_requests_cover_every_request_instruction() -> None:
    assert {m.instruction for m in REQUESTS} == set(FAILURE_RETURN)
    client_types = {MessageType.COMMAND, MessageType.DATA_TRANSFER, MessageType.CONTROL}
    assert {m.instruction for m in REQUESTS} == {
        i for i in Instruction if i.message_type in client_types
    }


WRONG = [
    (state, message)
    for state in (State.COMMAND, State.DATA_TRANSFER)
    for message in REQUESTS
    if (state, classify(message)) not in TRANSITIONS
]


def _id(value: object) -> str:
    if isinstance(value, Message):
        if value.instruction is Instruction.SWITCH_STATE:
            return f"SWITCH_STATE{value.args}"
        return value.instruction.name
    return getattr(value, "name", str(value))


def test_wrong_state_cases_include_the_classic_ones() -> None:
    instructions = {(state, m.instruction) for state, m in WRONG}
    assert (State.COMMAND, Instruction.GET_ASSET_INFO) in instructions
    assert (State.DATA_TRANSFER, Instruction.PURCHASE_ASSET) in instructions
    assert (State.DATA_TRANSFER, Instruction.LOGIN) in instructions
    # every data request is wrong in the command state, every command in the data state
    for message in REQUESTS:
        if message.message_type is MessageType.DATA_TRANSFER:
            assert (State.COMMAND, message.instruction) in instructions
        if message.message_type is MessageType.COMMAND:
            assert (State.DATA_TRANSFER, message.instruction) in instructions


@pytest.mark.parametrize(("state", "message"), WRONG, ids=_id)
def test_wrong_state_gets_the_instructions_own_failure_return(
    state: State, message: Message
) -> None:
    pair = pair_in(state)
    pair.server.receive_data(encode_message(message))  # a client that does not check
    with pytest.raises(ProtocolError) as info:
        pair.server.next_message()
    error = info.value
    assert error.code is ErrorCode.WRONG_STATE
    assert not error.fatal
    assert pair.server.state is state, "a refused request does not move the state"

    reply_bytes = pair.server.failure_for(error)
    (reply,) = decode_all(reply_bytes)
    assert reply.instruction is FAILURE_RETURN[message.instruction]
    assert reply.arg("code") == ErrorCode.WRONG_STATE
    assert isinstance(reply.arg("reason"), str) and reply.arg("reason")
    assert reply.request_id == message.request_id

    pair.client.receive_data(reply_bytes)
    assert pair.client.next_message() == reply, "the client accepts the failure return"
    assert pair.client.state is pair.server.state

    # the connection stays usable
    target = 1 if pair.server.state is State.COMMAND else 0
    pair.request(Message(Instruction.SWITCH_STATE, (target,), session_id=SID))
    assert pair.client.state is pair.server.state


def test_specific_failure_returns() -> None:
    expected = {
        (State.COMMAND, Instruction.GET_ASSET_VALUE_DAY): Instruction.DATA_FAIL,
        (State.DATA_TRANSFER, Instruction.PURCHASE_ASSET): Instruction.PURCHASE_FAIL,
        (State.DATA_TRANSFER, Instruction.SELL_ASSET): Instruction.SELL_FAIL,
        (State.DATA_TRANSFER, Instruction.LOGIN): Instruction.LOGIN_FAIL,
        (State.DATA_TRANSFER, Instruction.REGISTER): Instruction.REGISTER_FAIL,
        (State.COMMAND, Instruction.SWITCH_STATE): Instruction.STATE_SWITCH_FAIL,
        (State.DATA_TRANSFER, Instruction.LOGOUT): Instruction.ERROR,
    }
    for (state, instruction), failure in expected.items():
        (message,) = [m for s, m in WRONG if s is state and m.instruction is instruction]
        pair = pair_in(state)
        pair.server.receive_data(encode_message(message))
        with pytest.raises(ProtocolError) as info:
            pair.server.next_message()
        (reply,) = decode_all(pair.server.failure_for(info.value))
        assert reply.instruction is failure


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
def test_client_refuses_locally_to_send_out_of_state(state: State) -> None:
    refused = 0
    for message in REQUESTS:
        pair = pair_in(state)
        if (state, classify(message)) in TRANSITIONS:
            pair.client.send(message)
            continue
        with pytest.raises(LocalProtocolError) as info:
            pair.client.send(message)
        assert info.value.code is ErrorCode.WRONG_STATE
        assert pair.client.state is state
        refused += 1
    assert refused > 0


@pytest.mark.parametrize(
    "state", [State.AWAIT_DATA_SWITCH, State.AWAIT_COMMAND_SWITCH, State.TRANSFERRING]
)
def test_server_refuses_every_request_while_it_owes_an_answer(state: State) -> None:
    for message in REQUESTS:
        pair = pair_in(state)
        pair.server.receive_data(encode_message(message))
        with pytest.raises(ProtocolError) as info:
            pair.server.next_message()
        assert info.value.code is ErrorCode.WRONG_STATE
        assert pair.server.state is state


# --- roles and bad arguments ------------------------------------------------------------


def test_roles_are_enforced() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError) as info:
        client.send(EXAMPLES[Event.COMMAND_RETURN])
    assert info.value.code is ErrorCode.TYPE_MISMATCH
    with pytest.raises(LocalProtocolError) as info:
        server.send(EXAMPLES[Event.COMMAND_REQUEST])
    assert info.value.code is ErrorCode.TYPE_MISMATCH

    # a "client" sending a server return: refused, answered with ERROR, connection kept
    server.receive_data(encode_message(Message(Instruction.LOGIN_FAIL, (1, "x"), request_id=9)))
    with pytest.raises(ProtocolError) as remote:
        server.next_message()
    assert remote.value.code is ErrorCode.TYPE_MISMATCH and not remote.value.fatal
    (reply,) = decode_all(server.failure_for(remote.value))
    assert reply.instruction is Instruction.ERROR and reply.request_id == 9
    assert server.state is State.COMMAND

    # a "server" sending a request to a client
    client.receive_data(encode_message(EXAMPLES[Event.COMMAND_REQUEST]))
    with pytest.raises(ProtocolError) as remote:
        client.next_message()
    assert remote.value.code is ErrorCode.TYPE_MISMATCH


@pytest.mark.parametrize("target", [2, -1, 2**40])
def test_switch_state_to_an_unknown_state(target: int) -> None:
    pair = Pair()
    bad = Message(Instruction.SWITCH_STATE, (target,), session_id=SID, request_id=77)
    with pytest.raises(LocalProtocolError) as local:
        pair.client.send(bad)
    assert local.value.code is ErrorCode.BAD_ARGUMENT
    pair.server.receive_data(encode_message(bad))
    with pytest.raises(ProtocolError) as remote:
        pair.server.next_message()
    assert remote.value.code is ErrorCode.BAD_ARGUMENT
    assert pair.server.state is State.COMMAND
    reply_bytes = pair.server.failure_for(remote.value)
    pair.client.receive_data(reply_bytes)
    reply = pair.client.next_message()
    assert isinstance(reply, Message)
    assert reply.instruction is Instruction.STATE_SWITCH_FAIL and reply.request_id == 77
    assert pair.states == (State.COMMAND, State.COMMAND)


def test_unreadable_data_request_in_data_state_is_answered_with_data_fail() -> None:
    """A data request the server cannot read ends the data state on both sides alike."""
    pair = pair_in(State.DATA_TRANSFER)
    request = Message(Instruction.GET_ASSET_INFO, ("AAPL",), session_id=SID, request_id=5)
    pair.client.send(request)  # the client believes it sent a good request...
    frame = bytearray(encode_message(request))
    frame[80] = 0x63  # ...but the bytes arrive with a broken type tag
    pair.server.receive_data(bytes(frame))
    with pytest.raises(ProtocolError) as info:
        pair.server.next_message()
    assert info.value.code is ErrorCode.BAD_ARGUMENT
    pair.client.receive_data(pair.server.failure_for(info.value))
    reply = pair.client.next_message()
    assert isinstance(reply, Message) and reply.instruction is Instruction.DATA_FAIL
    assert pair.states == (State.COMMAND, State.COMMAND)
