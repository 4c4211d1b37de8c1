"""Every record a server answers with: field names, types, nullability, golden bytes.

``RECORDS`` is the one description of the answer records; docs/PROTOCOL.md's
record tables and record vectors are printed from it
(``PYTHONPATH=. python tests/test_protocol_records.py``), and the tests here
check three things against it:

* the docs show exactly these tables and these hex payloads;
* each sample encodes to its golden hex and decodes back (byte-exact);
* a real master and worker answer with exactly these fields, in this order,
  with these types, null only where a field is nullable
  (``test_servers_answer_with_the_documented_records``).

Types: STR, INT, DECIMAL, BOOL, ID, TIMESTAMP as in section 4; ``record X``
is a nested record; ``list of X`` a LIST whose items are X. On the wire a
null field is the empty LIST; a list field is never null, so an empty LIST
there is an empty list.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from test_e2e_support import Servers, new_user, running

from papertrader.client import PaperTraderClient
from papertrader.protocol import Instruction, Value, decode_payload, encode_payload
from papertrader.protocol.records import NULL, to_record

DOCS = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    nullable: bool
    meaning: str


@dataclass(frozen=True)
class Record:
    name: str
    answers: str  # which requests answer with it
    fields: tuple[Field, ...]
    sample: dict[str, Any]
    hex: str


def F(name: str, kind: str, meaning: str, nullable: bool = False) -> Field:
    return Field(name, kind, nullable, meaning)


T0 = datetime(2025, 1, 2, 14, 30, tzinfo=timezone.utc)
ORDER = uuid.UUID("0a7de5e1-0000-4000-8000-000000000001")

QUOTE_FIELDS = (
    F("symbol", "STR", "the asset"),
    F("open", "DECIMAL", "first price of the current bar"),
    F("high", "DECIMAL", "highest price of the bar"),
    F("low", "DECIMAL", "lowest price of the bar"),
    F("close", "DECIMAL", "last price: orders sent now fill at about this"),
    F("volume", "INT", "units traded in the bar"),
    F("time", "TIMESTAMP", "start of the bar (UTC)"),
)
QUOTE_SAMPLE = {
    "symbol": "AAPL", "open": Decimal("189.10"), "high": Decimal("189.80"),
    "low": Decimal("188.95"), "close": Decimal("189.25"), "volume": 12000, "time": T0,
}  # fmt: skip
POSITION_FIELDS = (
    F("symbol", "STR", "the asset"),
    F("quantity", "INT", "units held"),
    F("average_price", "DECIMAL", "what a unit cost on average"),
    F("cost_basis", "DECIMAL", "quantity × average price, to the cent"),
    F("reserved_quantity", "INT", "units held by open sell orders"),
    F("unrealized_pnl", "DECIMAL", "market value − cost basis", nullable=True),
    F("unrealized_pnl_percent", "DECIMAL", "of the cost basis, 2 places", nullable=True),
    F("price", "DECIMAL", "the current price", nullable=True),
    F("market_value", "DECIMAL", "quantity × price, to the cent", nullable=True),
)
_OWN_ONLY = {"average_price", "cost_basis", "reserved_quantity", "unrealized_pnl",
             "unrealized_pnl_percent"}  # fmt: skip

RECORDS: tuple[Record, ...] = (
    Record(
        "quote",
        "getAssetValueCurrent (and the `quote` of asset info)",
        QUOTE_FIELDS,
        QUOTE_SAMPLE,
        (
            "09070000000902000000010600000073796d626f6c01040000004141504c09020000000104000000"
            "6f70656e0306003138392e313009020000000104000000686967680306003138392e383009020000"
            "0001030000006c6f770306003138382e393509020000000105000000636c6f73650306003138392e"
            "323509020000000106000000766f6c756d6502e02e0000000000000902000000010400000074696d"
            "6507008a40ffb92a0600"
        ),
    ),
    Record(
        "asset info",
        "getAssetInfo",
        (
            F("symbol", "STR", "the asset"),
            F("name", "STR", "its name, when one is configured", nullable=True),
            F("currency", "STR", "currency of its prices (USD)"),
            F(
                "quote",
                "record quote",
                "the current bar; null before the first update",
                nullable=True,
            ),
            F(
                "updated_at",
                "TIMESTAMP",
                "when the worker's quotes were last refreshed",
                nullable=True,
            ),
            F("stale", "BOOL", "true when the master could not update prices lately"),
        ),  # fmt: skip
        {
            "symbol": "AAPL",
            "name": None,
            "currency": "USD",
            "quote": QUOTE_SAMPLE,
            "updated_at": T0,
            "stale": False,
        },  # fmt: skip
        "",
    ),
    Record(
        "user info (own)",
        "getUserInfo with your own username or the empty string",
        (
            F("username", "STR", "as registered (its case kept)"),
            F("email", "STR", "the account's e-mail address"),
            F("is_password", "BOOL", "true for a password account"),
            F("cash", "DECIMAL", "cash left, to the cent"),
            F("created_at", "TIMESTAMP", "when the account was registered"),
            F("public_profile", "BOOL", "others may see the portfolio (section 13.7)"),
        ),
        {
            "username": "alice",
            "email": "alice@example.com",
            "is_password": True,
            "cash": Decimal("98107.50"),
            "created_at": T0,
            "public_profile": False,
        },  # fmt: skip
        "",
    ),
    Record(
        "user info (another user)",
        "getUserInfo with another username",
        (
            F("username", "STR", "as registered"),
            F("created_at", "TIMESTAMP", "when the account was registered"),
        ),
        {"username": "bob", "created_at": T0},
        "",
    ),
    Record(
        "position",
        "an item of a portfolio's `positions`",
        POSITION_FIELDS,
        {
            "symbol": "AAPL",
            "quantity": 10,
            "average_price": Decimal("189.25"),
            "cost_basis": Decimal("1892.50"),
            "reserved_quantity": 0,
            "unrealized_pnl": Decimal("0.00"),
            "unrealized_pnl_percent": Decimal("0.00"),
            "price": Decimal("189.25"),
            "market_value": Decimal("1892.50"),
        },  # fmt: skip
        "",
    ),
    Record(
        "position (another user)",
        "an item of another user's portfolio `positions`",
        tuple(f for f in POSITION_FIELDS if f.name not in _OWN_ONLY),
        {"symbol": "AAPL", "quantity": 3, "price": None, "market_value": None},
        "",
    ),
    Record(
        "portfolio (own)",
        "getUserPortfolio with your own username or the empty string",
        (
            F("username", "STR", "as registered"),
            F("cash", "DECIMAL", "cash left, to the cent"),
            F("reserved_cash", "DECIMAL", "cash held by open buy orders"),
            F("available_cash", "DECIMAL", "cash less reservations"),
            F("positions", "list of record position", "one per asset held (empty: none)"),
            F("total_value", "DECIMAL", "cash plus every priced position, to the cent"),
            F("equity", "DECIMAL", "the same as total_value"),
            F("realized_pnl", "DECIMAL", "the sells' profit or loss against the average cost"),
            F("unrealized_pnl", "DECIMAL", "the positions' market value less their cost"),
            F(
                "day_change",
                "DECIMAL",
                "equity now less the last recorded before today (UTC)",
                nullable=True,
            ),
            F("day_change_percent", "DECIMAL", "of that equity, 2 places", nullable=True),
            F(
                "priced_at",
                "TIMESTAMP",
                "time of the prices used; null before the first update",
                nullable=True,
            ),
        ),  # fmt: skip
        {
            "username": "alice",
            "cash": Decimal("98107.50"),
            "reserved_cash": Decimal("0.00"),
            "available_cash": Decimal("98107.50"),
            "positions": [],
            "total_value": Decimal("98107.50"),
            "equity": Decimal("98107.50"),
            "realized_pnl": Decimal("0.00"),
            "unrealized_pnl": Decimal("0.00"),
            "day_change": None,
            "day_change_percent": None,
            "priced_at": T0,
        },  # fmt: skip
        "",
    ),
    Record(
        "portfolio (another user)",
        "getUserPortfolio with another username",
        (
            F("username", "STR", "as registered"),
            F("positions", "list of record position (another user)", "one per asset held"),
        ),
        {
            "username": "bob",
            "positions": [{"symbol": "AAPL", "quantity": 3, "price": None, "market_value": None}],
        },  # fmt: skip
        "",
    ),
    Record(
        "transaction (own)",
        "an item of getUserTransactionHistory (a LIST of them, oldest first) for yourself",
        (
            F("order_id", "ID", "the order, as purchaseSuccess/sellSuccess named it"),
            F("side", "STR", "`buy` or `sell`"),
            F("symbol", "STR", "the asset"),
            F("quantity", "INT", "units"),
            F("price", "DECIMAL", "fill price per unit"),
            F("amount", "DECIMAL", "quantity × price, to the cent"),
            F("received_at", "TIMESTAMP", "when the worker received the order", nullable=True),
            F("executed_at", "TIMESTAMP", "when it was filled"),
        ),  # fmt: skip
        {
            "order_id": ORDER,
            "side": "buy",
            "symbol": "AAPL",
            "quantity": 10,
            "price": Decimal("189.25"),
            "amount": Decimal("1892.50"),
            "received_at": T0,
            "executed_at": T0,
        },  # fmt: skip
        "",
    ),
    Record(
        "transaction (another user)",
        "an item of getUserTransactionHistory for another username",
        (
            F("side", "STR", "`buy` or `sell`"),
            F("symbol", "STR", "the asset"),
            F("quantity", "INT", "units"),
            F("price", "DECIMAL", "fill price per unit"),
            F("executed_at", "TIMESTAMP", "when it was filled"),
        ),
        {
            "side": "sell",
            "symbol": "MSFT",
            "quantity": 2,
            "price": Decimal("420.5"),
            "executed_at": T0,
        },  # fmt: skip
        "",
    ),
    Record(
        "worker",
        "an item of getWorkerList (a LIST of them, sent by the master, or by a worker for it)",
        (
            F("name", "STR", "the worker's registered name"),
            F("region", "STR", "its region", nullable=True),
            F("address", "STR", "host:port clients connect to (IPv6 as [addr]:port)"),
            F("web_url", "STR", "the origin of its web page (section 15)", nullable=True),
        ),
        {
            "name": "eu-1",
            "region": "eu",
            "address": "eu-1.example.com:2049",
            "web_url": "https://eu-1.example.com:8443",
        },  # fmt: skip
        "",
    ),
    Record(
        "bar",
        "an item of getAssetValueDay/Week/Month/Year/AllTime (a LIST, oldest first)",
        (
            F("period_start", "TIMESTAMP", "start of the bar: a minute, a day or a month (UTC)"),
            F("open", "DECIMAL", "first open of the period"),
            F("high", "DECIMAL", "highest high"),
            F("low", "DECIMAL", "lowest low"),
            F("close", "DECIMAL", "last close"),
            F("volume", "INT", "sum of the volumes"),
        ),
        {
            "period_start": T0,
            "open": Decimal("189.1"),
            "high": Decimal("189.8"),
            "low": Decimal("188.95"),
            "close": Decimal("189.25"),
            "volume": 12000,
        },  # fmt: skip
        "",
    ),
    Record(
        "forecast point",
        "an item of a forecast's `points`",
        (
            F("step", "INT", "update intervals ahead, from 1"),
            F("time", "TIMESTAMP", "when"),
            F("value", "DECIMAL", "the forecast, to the cent"),
            F("lower", "DECIMAL", "lower end of the ±1.96·σ·√step band"),
            F("upper", "DECIMAL", "upper end of the band"),
        ),
        {
            "step": 1,
            "time": T0,
            "value": Decimal("189.31"),
            "lower": Decimal("188.02"),
            "upper": Decimal("190.60"),
        },  # fmt: skip
        "",
    ),
    Record(
        "forecast",
        "getAssetValuePredicted",
        (
            F("symbol", "STR", "the asset"),
            F("method", "STR", "`holt-linear`"),
            F("horizon", "INT", "update intervals forecast, 1 to 500"),
            F("step_seconds", "DECIMAL", "seconds per step (the update interval)"),
            F("alpha", "DECIMAL", "level smoothing"),
            F("beta", "DECIMAL", "trend smoothing"),
            F("sigma", "DECIMAL", "RMS one-step error"),
            F("based_on", "INT", "stored bars used"),
            F("last_time", "TIMESTAMP", "time of the last bar used"),
            F("last_close", "DECIMAL", "its close"),
            F("points", "list of record forecast point", "one per step"),
            F("note", "STR", "that this is a naive model, not advice"),
        ),
        {
            "symbol": "AAPL",
            "method": "holt-linear",
            "horizon": 1,
            "step_seconds": Decimal("5"),
            "alpha": Decimal("0.5"),
            "beta": Decimal("0.1"),
            "sigma": Decimal("0.66"),
            "based_on": 120,
            "last_time": T0,
            "last_close": Decimal("189.25"),
            "points": [
                {
                    "step": 1,
                    "time": T0,
                    "value": Decimal("189.31"),
                    "lower": Decimal("188.02"),
                    "upper": Decimal("190.60"),
                }
            ],
            "note": "a naive model for practice, not investment advice",
        },  # fmt: skip
        "",
    ),
)
#: The records of the account instructions (section 12).
ACCOUNT_RECORDS: tuple[Record, ...] = (
    Record(
        "session",
        "an item of GET_SESSIONS (a LIST of them, newest first)",
        (
            F("handle", "STR", "12 hex digits naming the session (never its id)"),
            F("current", "BOOL", "true for the session of this request"),
            F("created_at", "TIMESTAMP", "when it was made"),
            F("expires_at", "TIMESTAMP", "when it ends unless used again"),
            F("last_used_at", "TIMESTAMP", "last request (kept to the minute)", nullable=True),
            F("last_ip", "STR", "address of the last request", nullable=True),
            F("login_ip", "STR", "address it was made from", nullable=True),
            F("remember", "BOOL", "made with remember-me"),
        ),
        {
            "handle": "3f9a0c51d2e7",
            "current": True,
            "created_at": T0,
            "expires_at": T0,
            "last_used_at": None,
            "last_ip": "203.0.113.7",
            "login_ip": "203.0.113.7",
            "remember": False,
        },  # fmt: skip
        "",
    ),
    Record(
        "linked provider",
        "an item of the sign-in methods' `providers`",
        (
            F("name", "STR", "the provider's name in the settings (`google`)"),
            F("display_name", "STR", "how users are told about it (`Google`)"),
            F("email", "STR", "the e-mail address the provider gave", nullable=True),
            F("linked_at", "TIMESTAMP", "when it was linked"),
            F("last_login_at", "TIMESTAMP", "last sign-in with it", nullable=True),
        ),
        {
            "name": "google",
            "display_name": "Google",
            "email": "alice@example.com",
            "linked_at": T0,
            "last_login_at": None,
        },  # fmt: skip
        "",
    ),
    Record(
        "sign-in methods",
        "GET_SIGN_IN_METHODS",
        (
            F("username", "STR", "as registered"),
            F("email", "STR", "the account's e-mail address"),
            F("email_verified", "BOOL", "the address was confirmed"),
            F("has_password", "BOOL", "a password signs in too"),
            F("providers", "list of record linked provider", "linked providers (empty: none)"),
        ),
        {
            "username": "alice",
            "email": "alice@example.com",
            "email_verified": False,
            "has_password": True,
            "providers": [],
        },  # fmt: skip
        "",
    ),
    Record(
        "sign-in option",
        "an item of SIGN_IN_OPTIONS' `providers` argument (a return, not a transfer)",
        (
            F("name", "STR", "what LOGIN_OIDC's `provider` names"),
            F("display_name", "STR", "for people"),
            F("issuer", "STR", "issuer URL (discovery: `/.well-known/openid-configuration`)"),
            F("client_id", "STR", "the client id to run the flow with"),
            F("client_secret", "STR", "an installed-app secret (public by design)", nullable=True),
            F("scopes", "STR", "space-separated scopes to ask for"),
            F(
                "web_client_id",
                "STR",
                "the web page's own client id (null: client_id)",
                nullable=True,
            ),
            F("web_flow", "STR", "how the web page signs in: `code` or `id_token`"),
        ),  # fmt: skip
        {
            "name": "google",
            "display_name": "Google",
            "issuer": "https://accounts.google.com",
            "client_id": "1234-abc.apps.googleusercontent.com",
            "client_secret": None,
            "scopes": "openid email profile",
            "web_client_id": None,
            "web_flow": "code",
        },  # fmt: skip
        "",
    ),
)
RECORDS = RECORDS + ACCOUNT_RECORDS
BY_NAME = {record.name: record for record in RECORDS}
_PYTHON = {"STR": str, "INT": int, "DECIMAL": Decimal, "BOOL": bool, "ID": uuid.UUID,
           "TIMESTAMP": datetime, "DATE": date}  # fmt: skip


def encode(record: Record) -> str:
    return encode_payload(to_record(record.sample)).hex()


# -- the checks ------------------------------------------------------------------------
def check(value: Value, record: Record, where: str = "") -> None:
    """``value`` (as decoded from the wire) is a ``record``: fields, order, types, nulls."""
    where = where or record.name
    assert isinstance(value, tuple), f"{where}: not a record"
    names = [pair[0] for pair in value]  # type: ignore[index]
    assert names == [f.name for f in record.fields], f"{where}: fields {names}"
    for (_, item), field in zip(value, record.fields, strict=True):  # type: ignore[misc, str-unpack]
        _check_value(item, field, f"{where}.{field.name}")


def _check_value(item: Value, field: Field, where: str) -> None:
    kind = field.type
    if kind.startswith("list of record "):
        assert isinstance(item, tuple), f"{where}: not a LIST"
        for index, element in enumerate(item):
            check(element, BY_NAME[kind.removeprefix("list of record ")], f"{where}[{index}]")
        return
    if item == NULL:
        assert field.nullable, f"{where}: null, but the field is never null"
        return
    if kind.startswith("record "):
        check(item, BY_NAME[kind.removeprefix("record ")], where)
        return
    expected = _PYTHON[kind]
    assert isinstance(item, expected), f"{where}: {type(item).__name__}, not {kind}"
    if expected is int:
        assert not isinstance(item, bool), f"{where}: BOOL, not INT"


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_each_sample_is_the_record_and_round_trips(record: Record) -> None:
    encoded = to_record(record.sample)
    check(encoded, record)
    assert decode_payload(bytes.fromhex(encode(record))) == encoded


def test_the_quote_is_byte_exact() -> None:
    assert encode(BY_NAME["quote"]) == BY_NAME["quote"].hex


def test_docs_show_every_record_table_and_payload() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for record in RECORDS:
        assert table(record) in docs, f"the {record.name} table of PROTOCOL.md is out of date"
        assert encode(record) in docs, f"the {record.name} payload is missing from PROTOCOL.md"


def test_servers_answer_with_the_documented_records(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    servers = Servers(tmp_path, redis_url, database_url, workers=1)
    with running(servers):
        servers.wait_quotes()
        with servers.client() as bob_client, servers.client() as alice:
            bob = new_user(bob_client, "bob")
            bob_client.buy("MSFT", 2)
            bob_client.set_profile(True)  # private by default: others would see nothing
            new_user(alice, "alice")
            alice.buy("AAPL", 3)

            def data(instruction: Instruction, *args: Value) -> Value:
                return PaperTraderClient._data_args(alice, instruction, *args)

            check(data(Instruction.GET_ASSET_VALUE_CURRENT, "AAPL"), BY_NAME["quote"])
            check(data(Instruction.GET_ASSET_INFO, "AAPL"), BY_NAME["asset info"])
            check(data(Instruction.GET_USER_INFO, ""), BY_NAME["user info (own)"])
            check(data(Instruction.GET_USER_INFO, bob), BY_NAME["user info (another user)"])
            own = data(Instruction.GET_USER_PORTFOLIO, "")
            check(own, BY_NAME["portfolio (own)"])
            other = data(Instruction.GET_USER_PORTFOLIO, bob)
            check(other, BY_NAME["portfolio (another user)"])
            history = data(Instruction.GET_USER_TRANSACTION_HISTORY, "")
            assert isinstance(history, tuple) and len(history) == 1
            check(history[0], BY_NAME["transaction (own)"])
            theirs = data(Instruction.GET_USER_TRANSACTION_HISTORY, bob)
            assert isinstance(theirs, tuple) and len(theirs) == 1
            check(theirs[0], BY_NAME["transaction (another user)"])
            today = datetime.now(timezone.utc).date()
            bars = data(Instruction.GET_ASSET_VALUE_DAY, "AAPL", today)
            assert isinstance(bars, tuple) and bars
            check(bars[0], BY_NAME["bar"])
            forecast = data(Instruction.GET_ASSET_VALUE_PREDICTED, "AAPL", 2)
            check(forecast, BY_NAME["forecast"])
            sessions = data(Instruction.GET_SESSIONS)
            assert isinstance(sessions, tuple) and sessions
            for session in sessions:
                check(session, BY_NAME["session"])
            check(data(Instruction.GET_SIGN_IN_METHODS), BY_NAME["sign-in methods"])
        listed = servers.worker_list()
        assert [list(w) for w in listed] == [["name", "region", "address", "web_url"]]
        check(to_record(listed[0]), BY_NAME["worker"])


# -- the docs' tables --------------------------------------------------------------------
def table(record: Record) -> str:
    rows = [
        f"**{record.name}**: {record.answers}.",
        "",
        "| field | type | null? | meaning |",
        "| --- | --- | --- | --- |",
    ]
    rows += [
        f"| `{f.name}` | {f.type} | {'may be null' if f.nullable else 'never'} | {f.meaning} |"
        for f in record.fields
    ]
    return "\n".join(rows)


def records_markdown() -> str:
    parts = [table(record) + "\n" for record in RECORDS]
    parts.append("Each sample record above, encoded (the payload a client reassembles):\n")
    parts.append("| record | payload (hex) |\n| --- | --- |")
    parts += [f"| {record.name} | `{encode(record)}` |" for record in RECORDS]
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover - prints the records section of the docs
    print(records_markdown())
