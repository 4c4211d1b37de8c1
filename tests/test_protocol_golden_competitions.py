"""Golden vectors of the competition instructions (docs/PROTOCOL.md, section 16).

Byte-exact frames for createCompetition, the competition record that answers
it, joinCompetition by code, getLeaderboard, a competitionFail and
getAccountEquityHistory; the same hex
must appear in docs/PROTOCOL.md, whose section 16 examples are printed by
this file from the real encoder (the JavaScript codec checks them too, through
tests/golden_export.py)::

    PYTHONPATH=. python tests/test_protocol_golden_competitions.py
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from test_protocol_golden import DOCS, SESSION, Vector, encoded, section_examples

from papertrader.client.models import Competition
from papertrader.protocol import ErrorCode, Instruction, Message, decode_all
from papertrader.protocol.records import from_record, to_record

DOCS_SECTION = "## 16. Competitions"
STARTS = datetime(2025, 1, 6, 14, 30, tzinfo=timezone.utc)
ENDS = datetime(2025, 3, 28, 21, 0, tzinfo=timezone.utc)
TERMS = to_record(
    {
        "name": "Class 7B",
        "starts_at": STARTS,
        "ends_at": ENDS,
        "starting_cash": Decimal("10000.00"),
        "symbols": ["AAPL", "MSFT"],
        "private": True,
    }
)
RECORD = to_record(
    {
        "name": "Class 7B",
        "status": "upcoming",
        "starts_at": STARTS,
        "ends_at": ENDS,
        "starting_cash": Decimal("10000.00"),
        "symbols": ["AAPL", "MSFT"],
        "private": True,
        "join_code": "K7QPM2XD",
        "members": 0,
        "joined": False,
        "created_by": "mslee",
    }
)

VECTORS = (
    Vector(
        "create-competition",
        "createCompetition(terms): a private class competition",
        "A teacher creates a private competition for her class: from 6 January to 28 March, "
        "10000.00 of starting cash each, AAPL and MSFT only. The terms are one record "
        "(section 6), request id 20.",
        (Message(Instruction.CREATE_COMPETITION, (TERMS,), session_id=SESSION, request_id=20),),
        (
            "5054010124010100140000000000000000000000b300000000000000000000005e55104d00004000"
            "800000000000a11c0000000000000000000000000000000000000000000000000000000000000000"
            "0906000000090200000001040000006e616d650108000000436c6173732037420902000000010900"
            "00007374617274735f617407000a9e760a2b060009020000000107000000656e64735f6174070014"
            "835a6d3106000902000000010d0000007374617274696e675f6361736803080031303030302e3030"
            "0902000000010700000073796d626f6c73090200000001040000004141504c01040000004d534654"
            "09020000000107000000707269766174650401",
        ),
    ),
    Vector(
        "competition",
        "competition(record): created",
        "The master's answer: the competition's record, with the join code (shown to its "
        "creator only) the students join with. The teacher is not a member until she joins.",
        (Message(Instruction.COMPETITION, (RECORD,), request_id=20),),
        (
            "50540104230401001400000000000000000000003a01000000000000000000000000000000000000"
            "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "090b000000090200000001040000006e616d650108000000436c6173732037420902000000010600"
            "000073746174757301080000007570636f6d696e67090200000001090000007374617274735f6174"
            "07000a9e760a2b060009020000000107000000656e64735f6174070014835a6d3106000902000000"
            "010d0000007374617274696e675f6361736803080031303030302e30300902000000010700000073"
            "796d626f6c73090200000001040000004141504c01040000004d5346540902000000010700000070"
            "7269766174650401090200000001090000006a6f696e5f636f646501080000004b3751504d325844"
            "090200000001070000006d656d62657273020000000000000000090200000001060000006a6f696e"
            "656404000902000000010a000000637265617465645f627901050000006d736c6565",
        ),
    ),
    Vector(
        "join-competition",
        "joinCompetition(competition, join_code): by code",
        "A student joins with the code; the name may be left empty. The answer is the "
        "competition record again (without the code), `joined` true.",
        (
            Message(
                Instruction.JOIN_COMPETITION, ("", "K7QPM2XD"), session_id=SESSION, request_id=21
            ),
        ),
        (
            "50540101250102001500000000000000000000001200000000000000000000005e55104d00004000"
            "800000000000a11c0000000000000000000000000000000000000000000000000000000000000000"
            "010000000001080000004b3751504d325844",
        ),
    ),
    Vector(
        "get-leaderboard",
        "getLeaderboard(competition, limit)",
        "In the data transfer state: the 10 best members of Class 7B. The answer is DATA "
        "packets of one leaderboard record (16.4).",
        (
            Message(
                Instruction.GET_LEADERBOARD, ("Class 7B", 10), session_id=SESSION, request_id=22
            ),
        ),
        (
            "50540102250202001600000000000000000000001600000000000000000000005e55104d00004000"
            "800000000000a11c0000000000000000000000000000000000000000000000000000000000000000"
            "0108000000436c617373203742020a00000000000000",
        ),
    ),
    Vector(
        "competition-fail",
        "competitionFail(code, reason)",
        "A join code nobody has: UNKNOWN_COMPETITION (146).",
        (
            Message(
                Instruction.COMPETITION_FAIL,
                (int(ErrorCode.UNKNOWN_COMPETITION), "no competition has this join code"),
                request_id=21,
            ),
        ),
        (
            "50540104250402001500000000000000000000002f00000000000000000000000000000000000000"
            "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "02920000000000000001210000006e6f20636f6d7065746974696f6e206861732074686973206a6f"
            "696e20636f6465",
        ),
    ),
    Vector(
        "get-account-equity-history",
        "getAccountEquityHistory(account, range)",
        "In the data transfer state: a member's account in Class 7B over the last month "
        "(an empty account: the practice account, as getEquityHistory). The answer is DATA "
        "packets of a list of points (13.9).",
        (
            Message(
                Instruction.GET_ACCOUNT_EQUITY_HISTORY,
                ("Class 7B", "month"),
                session_id=SESSION,
                request_id=23,
            ),
        ),
        (
            "50540102260202001700000000000000000000001700000000000000000000005e55104d00004000"
            "800000000000a11c0000000000000000000000000000000000000000000000000000000000000000"
            "0108000000436c61737320374201050000006d6f6e7468",
        ),
    ),
)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_encodes_to_golden_hex(vector: Vector) -> None:
    assert encoded(vector) == vector.hexes


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vectors_decode_back(vector: Vector) -> None:
    stream = b"".join(bytes.fromhex(h) for h in vector.hexes)
    assert decode_all(stream) == list(vector.messages)


def test_the_record_reads_back_as_the_client_library_model() -> None:
    (vector,) = [v for v in VECTORS if v.name == "competition"]
    (message,) = decode_all(bytes.fromhex(vector.hexes[0]))
    competition = Competition.from_record(from_record(message.arg("competition")))
    assert (competition.name, competition.join_code, competition.symbols) == (
        "Class 7B",
        "K7QPM2XD",
        ("AAPL", "MSFT"),
    )
    assert competition.starting_cash == Decimal("10000.00") and competition.private
    assert competition.account is None and not competition.joined


def test_docs_contain_every_competition_vector() -> None:
    docs = DOCS.read_text(encoding="utf-8").split(DOCS_SECTION)[1]
    for vector in VECTORS:
        for hex_string in vector.hexes:
            assert hex_string in docs, f"{vector.name}: {hex_string[:40]}... missing"


def examples_markdown() -> str:
    return section_examples(16, VECTORS)


if __name__ == "__main__":  # pragma: no cover - prints section 16's examples
    print(examples_markdown())
