"""Competitions: the rules, shared by the master's handlers and `pt competitions`.

What a teacher and a class need, as Investopedia's simulator does it: a
competition has a name, a window (start, end), a starting cash and the assets
it trades (or every asset); a private one is joined with its join code, a
public one by its name. Each member trades in a competition account of its
own, apart from their practice account (``store/competitions.py``).

The leaderboard ranks members by return, (equity - starting cash) / starting
cash, with equity = cash + every position at the master's current price (its
average cost when the master has no price for it). Every member starts with
the same cash, so the ranking is exactly the order of equity, compared as
Decimals with nothing rounded; members with equal equity share a rank and keep
the order they joined in. The return shown is rounded to 8 places (a fraction)
and 2 (a percent) only for display.

A private competition is visible to its creator and its members only: to
anyone else it is answered exactly like one that does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from papertrader.protocol import ErrorCode
from papertrader.store import competitions as store
from papertrader.store.competitions import Competition, CompetitionConflict, Standing
from papertrader.store.pool import ConnectionPool

NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 _.\-]{0,46}[A-Za-z0-9_.\-])?")
MAX_STARTING_CASH = Decimal("1000000000.00")
MIN_STARTING_CASH = Decimal("1.00")
MAX_SYMBOLS = 500
MAX_LENGTH = timedelta(days=3660)
#: How far in the past a user may start a competition (a clock a little behind).
START_GRACE = timedelta(hours=1)
#: Competitions a user may have created that have not ended.
MAX_OPEN_CREATED = 20
#: Members of one competition.
MAX_MEMBERS = 10_000
#: Leaderboard entries one answer carries at most (0 asks for the default).
MAX_LEADERBOARD = 1000
DEFAULT_LEADERBOARD = 100
MAX_LISTED = 200
CENT = Decimal("0.01")
_RETURN_PLACES = Decimal("0.00000001")
_TERMS = {
    "name": str,
    "starts_at": datetime,
    "ends_at": datetime,
    "starting_cash": Decimal,
    "symbols": tuple,
    "private": bool,
}


class CompetitionError(Exception):
    """A competition request refused: ``code`` and ``reason`` go to the user."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def unknown(name: str) -> CompetitionError:
    return CompetitionError(ErrorCode.UNKNOWN_COMPETITION, f"there is no competition {name[:48]!r}")


@dataclass(frozen=True)
class Terms:
    name: str
    starts_at: datetime
    ends_at: datetime
    starting_cash: Decimal
    symbols: tuple[str, ...] | None
    private: bool


def check_terms(
    fields: Mapping[str, Any],
    now: datetime,
    known_symbols: Sequence[str] | None,
    default_cash: Decimal,
    operator: bool = False,
) -> Terms:
    """The checked terms of a new competition, or CompetitionError saying what is wrong.

    ``known_symbols`` None skips the check of the asset list (no prices known)."""
    bad = ErrorCode.BAD_ARGUMENT
    unknown_fields = sorted(set(fields) - set(_TERMS))
    if unknown_fields:
        raise CompetitionError(
            bad, f"unknown field {unknown_fields[0][:24]!r}; the fields are {', '.join(_TERMS)}"
        )
    for key, kind in _TERMS.items():
        value = fields.get(key)
        if value is not None and (
            not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)
        ):
            raise CompetitionError(bad, f"field {key} must be a {kind.__name__}")
    name = str(fields.get("name") or "").strip()
    if not NAME_RE.fullmatch(name):
        raise CompetitionError(
            bad,
            "a competition name is 1 to 48 letters, digits, spaces, '_', '.' or '-', "
            "starting with a letter or digit",
        )
    starts_at = fields.get("starts_at") or now
    ends_at = fields.get("ends_at")
    if ends_at is None:
        raise CompetitionError(bad, "a competition needs an end (ends_at)")
    if not operator and starts_at < now - START_GRACE:
        raise CompetitionError(bad, "a competition cannot start in the past")
    if ends_at <= starts_at or ends_at <= now:
        raise CompetitionError(bad, "a competition must end after it starts, and in the future")
    if ends_at - starts_at > MAX_LENGTH:
        raise CompetitionError(bad, "a competition lasts at most ten years")
    cash = fields.get("starting_cash")
    cash = default_cash if cash is None else cash
    if (
        not cash.is_finite()
        or cash != cash.quantize(CENT)
        or not (MIN_STARTING_CASH <= cash <= MAX_STARTING_CASH)
    ):
        raise CompetitionError(
            bad, f"the starting cash is {MIN_STARTING_CASH} to {MAX_STARTING_CASH}, in cents"
        )
    raw = fields.get("symbols") or ()
    if len(raw) > MAX_SYMBOLS:
        raise CompetitionError(bad, f"a competition lists at most {MAX_SYMBOLS} assets")
    symbols: list[str] = []
    for item in raw:
        if not isinstance(item, str):
            raise CompetitionError(bad, "symbols is a list of asset symbols")
        symbol = item.strip().upper()
        if known_symbols is not None and symbol not in known_symbols:
            raise CompetitionError(
                ErrorCode.UNKNOWN_ASSET,
                f"unknown asset {symbol[:12]!r}; the assets are {', '.join(sorted(known_symbols))}",
            )
        if symbol not in symbols:
            symbols.append(symbol)
    private = bool(fields.get("private"))
    return Terms(name, starts_at, ends_at, cash.quantize(CENT), tuple(symbols) or None, private)


def create(
    pool: ConnectionPool, terms: Terms, created_by: int | None, now: datetime
) -> Competition:
    """Create it (CompetitionError if the name is taken or the user has too many)."""
    if created_by is not None and store.open_count(pool, created_by, now) >= MAX_OPEN_CREATED:
        raise CompetitionError(
            ErrorCode.NOT_ALLOWED,
            f"you have {MAX_OPEN_CREATED} competitions that have not ended: no more for now",
        )
    try:
        return store.create(
            pool, terms.name, terms.starts_at, terms.ends_at, terms.starting_cash,
            terms.symbols, terms.private, created_by,
        )  # fmt: skip
    except CompetitionConflict:
        raise CompetitionError(
            ErrorCode.NOT_ALLOWED, f"there is a competition named {terms.name!r} already"
        ) from None


def may_see(competition: Competition, user_id: int | None) -> bool:
    """Public ones to everyone; private ones to their creator and members (and an
    operator, ``user_id`` None)."""
    return (
        user_id is None
        or not competition.private
        or competition.joined
        or competition.created_by == user_id
    )


def find(pool: ConnectionPool, name: str, user_id: int | None) -> Competition:
    """The competition of that name the user may see, or UNKNOWN_COMPETITION."""
    name = name.strip()
    competition = store.by_name(pool, name, user_id) if NAME_RE.fullmatch(name) else None
    if competition is None or not may_see(competition, user_id):
        raise unknown(name)
    return competition


def join(
    pool: ConnectionPool, name: str, code: str, user_id: int, now: datetime
) -> tuple[Competition, bool]:
    """Join by name (public) or by join code (private); joining again changes nothing.
    Returns the competition and whether the user joined just now."""
    if code.strip():
        competition = store.by_code(pool, code, user_id)
        if competition is None or (
            name.strip() and competition.name.lower() != name.strip().lower()
        ):
            raise CompetitionError(
                ErrorCode.UNKNOWN_COMPETITION, "no competition has this join code"
            )
    else:
        # A private one is found by name only by its creator (who needs no code).
        competition = find(pool, name, user_id)
    if competition.joined:
        return competition, False
    if competition.status(now) == "ended":
        raise CompetitionError(
            ErrorCode.COMPETITION_CLOSED, f"competition {competition.name!r} has ended"
        )
    if competition.members >= MAX_MEMBERS:
        raise CompetitionError(
            ErrorCode.NOT_ALLOWED, f"competition {competition.name!r} is full ({MAX_MEMBERS})"
        )
    joined = store.join(pool, competition, user_id)
    refreshed = store.by_name(pool, competition.name, user_id)
    return (refreshed or competition), joined


def leave(pool: ConnectionPool, name: str, user_id: int) -> Competition:
    competition = find(pool, name, user_id)
    if not store.leave(pool, competition.id, user_id):
        raise CompetitionError(
            ErrorCode.NOT_A_MEMBER, f"you have not joined competition {competition.name!r}"
        )
    return competition


def record(competition: Competition, now: datetime, user_id: int | None) -> dict[str, Any]:
    """A competition as the protocol's record (docs/PROTOCOL.md section 16.2); the join
    code only for its creator (and an operator)."""
    shows_code = user_id is None or competition.created_by == user_id
    return {
        "name": competition.name,
        "status": competition.status(now),
        "starts_at": competition.starts_at,
        "ends_at": competition.ends_at,
        "starting_cash": competition.starting_cash,
        "symbols": list(competition.symbols or ()),
        "private": competition.private,
        "join_code": competition.join_code if shows_code else None,
        "members": competition.members,
        "joined": competition.joined,
        "created_by": competition.creator_name,
    }


@dataclass(frozen=True)
class Place:
    """One member's place on a leaderboard."""

    rank: int
    username: str
    user_id: int
    cash: Decimal
    equity: Decimal
    gain: Decimal  # equity - starting cash
    return_: Decimal  # gain / starting cash, rounded to 8 places (display only)
    return_percent: Decimal  # the same x 100, 2 places
    positions: tuple[tuple[str, int, Decimal, Decimal | None, Decimal], ...]
    # symbol, units, average cost, price (None: no price), market value


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def _place(standing: Standing, prices: Mapping[str, Decimal], starting_cash: Decimal) -> Place:
    equity = standing.cash
    held = []
    for symbol, units, average in standing.positions:
        price = prices.get(symbol)
        value = _money(units * (average if price is None else price))
        equity += value
        held.append((symbol, units, average, price, value))
    gain = equity - starting_cash
    fraction = gain / starting_cash
    return Place(
        rank=0,
        username=standing.username,
        user_id=standing.user_id,
        cash=standing.cash,
        equity=equity,
        gain=gain,
        return_=fraction.quantize(_RETURN_PLACES, rounding=ROUND_HALF_EVEN),
        return_percent=(fraction * 100).quantize(CENT, rounding=ROUND_HALF_EVEN),
        positions=tuple(held),
    )


def leaderboard(
    pool: ConnectionPool, competition: Competition, prices: Mapping[str, Decimal]
) -> list[Place]:
    """Every member ranked by return (exactly: by equity, as all start equal); equal
    equity shares a rank, in the order the members joined."""
    places = [
        _place(s, prices, competition.starting_cash) for s in store.standings(pool, competition.id)
    ]
    # sorted() is stable: standings come in join order, which ties keep.
    places.sort(key=lambda p: p.equity, reverse=True)
    ranked: list[Place] = []
    for index, place in enumerate(places):
        rank = index + 1
        if ranked and ranked[-1].equity == place.equity:
            rank = ranked[-1].rank
        ranked.append(replace(place, rank=rank))
    return ranked


def place_record(place: Place) -> dict[str, Any]:
    return {
        "rank": place.rank,
        "username": place.username,
        "equity": _money(place.equity),
        "gain": _money(place.gain),
        "return": place.return_,
        "return_percent": place.return_percent,
    }


def positions_record(place: Place) -> list[dict[str, Any]]:
    return [
        {
            "symbol": symbol,
            "quantity": units,
            "average_price": average,
            "price": price,
            "market_value": value,
        }
        for symbol, units, average, price, value in place.positions
    ]


def membership_refusal(
    membership: store.Membership | None, name: str, symbol: str, now: datetime
) -> tuple[ErrorCode, str] | None:
    """Why the drain refuses a competition order (None: it may trade)."""
    if membership is None:
        return (
            ErrorCode.NOT_A_MEMBER,
            f"you have not joined competition {name[:48]!r} (or there is no such competition)",
        )
    if now < membership.starts_at:
        return (
            ErrorCode.COMPETITION_CLOSED,
            f"competition {name[:48]!r} starts at {membership.starts_at.isoformat()}",
        )
    if now >= membership.ends_at:
        return ErrorCode.COMPETITION_CLOSED, f"competition {name[:48]!r} has ended"
    if membership.symbols is not None and symbol.upper() not in membership.symbols:
        return (
            ErrorCode.ASSET_NOT_ALLOWED,
            f"competition {name[:48]!r} trades only {', '.join(membership.symbols)}",
        )
    return None
