"""Competitions and leaderboards over the protocol (issue 13 item 7), answered by the master.

createCompetition, joinCompetition and leaveCompetition are commands (answered
COMPETITION, COMPETITION_SUCCESS or COMPETITION_FAIL); getCompetitions,
getCompetition and getLeaderboard are data requests. The rules are in
``papertrader/competitions.py``; the leaderboard is computed here, from the
master's own price book, when it is asked for.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from papertrader import competitions as rules
from papertrader.competitions import CompetitionError
from papertrader.master.context import MasterContext
from papertrader.master.orders import stamped_ip
from papertrader.protocol import (
    ErrorCode,
    Instruction,
    Message,
    max_chunk_size,
    packets_for,
    reply_to,
)
from papertrader.protocol.errors import ProtocolError
from papertrader.protocol.records import from_record, to_record
from papertrader.store import competitions as competition_store
from papertrader.store.sessions import Session, SessionError


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _session(ctx: MasterContext, request: Message) -> Session:
    try:
        return ctx.sessions.get(request.session_id, stamped_ip(request))
    except SessionError as exc:
        raise CompetitionError(exc.code, exc.reason) from None


def _fail(request: Message, exc: CompetitionError) -> list[Message]:
    return [reply_to(request, Instruction.COMPETITION_FAIL, int(exc.code), exc.reason)]


def _data(ctx: MasterContext, request: Message, value: Any) -> list[Message]:
    return packets_for(
        value, max_chunk_size(ctx.settings.max_data_size), request_id=request.request_id
    )


def _data_fail(request: Message, exc: CompetitionError) -> list[Message]:
    return [reply_to(request, Instruction.DATA_FAIL, int(exc.code), exc.reason)]


def handle_create(ctx: MasterContext, request: Message) -> list[Message]:
    """CREATE_COMPETITION(terms): COMPETITION with its record (and join code)."""
    now = _now()
    try:
        session = _session(ctx, request)
        try:
            fields = from_record(request.arg("terms"))
        except ProtocolError as exc:
            raise CompetitionError(ErrorCode.BAD_ARGUMENT, exc.reason) from None
        known = sorted(ctx.quotes.snapshot().quotes) or None
        terms = rules.check_terms(fields, now, known, ctx.settings.starting_cash)
        created = rules.create(ctx.pool, terms, session.account_id, now)
    except CompetitionError as exc:
        return _fail(request, exc)
    record = rules.record(created, now, session.account_id)
    return [reply_to(request, Instruction.COMPETITION, to_record(record))]


def handle_join(ctx: MasterContext, request: Message) -> list[Message]:
    """JOIN_COMPETITION(competition, join_code): COMPETITION (joined, or already a member)."""
    now = _now()
    name, code = str(request.arg("competition")), str(request.arg("join_code"))
    try:
        session = _session(ctx, request)
        if not name.strip() and not code.strip():
            raise CompetitionError(
                ErrorCode.BAD_ARGUMENT, "name a public competition, or give a join code"
            )
        competition, _ = rules.join(ctx.pool, name, code, session.account_id, now)
    except CompetitionError as exc:
        return _fail(request, exc)
    except LookupError:
        gone = CompetitionError(ErrorCode.INVALID_SESSION, "the session's account no longer exists")
        return _fail(request, gone)
    record = rules.record(competition, now, session.account_id)
    return [reply_to(request, Instruction.COMPETITION, to_record(record))]


def handle_leave(ctx: MasterContext, request: Message) -> list[Message]:
    """LEAVE_COMPETITION(competition): COMPETITION_SUCCESS; its account is closed."""
    try:
        session = _session(ctx, request)
        left = rules.leave(ctx.pool, str(request.arg("competition")), session.account_id)
    except CompetitionError as exc:
        return _fail(request, exc)
    message = f"you left competition {left.name!r}: its account, positions and orders are closed"
    return [reply_to(request, Instruction.COMPETITION_SUCCESS, message)]


def handle_list(ctx: MasterContext, request: Message) -> list[Message]:
    """GET_COMPETITIONS(): the records of the competitions the session may see."""
    now = _now()
    try:
        session = _session(ctx, request)
    except CompetitionError as exc:
        return _data_fail(request, exc)
    found = competition_store.visible(ctx.pool, session.account_id, rules.MAX_LISTED)
    return _data(
        ctx, request, tuple(to_record(rules.record(c, now, session.account_id)) for c in found)
    )


def handle_get(ctx: MasterContext, request: Message) -> list[Message]:
    """GET_COMPETITION(competition): its record, with ``account`` (the session's own
    account in it: rank, cash, equity, return, positions) for a member."""
    now = _now()
    try:
        session = _session(ctx, request)
        competition = rules.find(ctx.pool, str(request.arg("competition")), session.account_id)
    except CompetitionError as exc:
        return _data_fail(request, exc)
    record = rules.record(competition, now, session.account_id)
    record["account"] = None
    if competition.joined:
        places = rules.leaderboard(ctx.pool, competition, ctx.quotes.prices())
        mine = next((p for p in places if p.user_id == session.account_id), None)
        if mine is not None:
            record["account"] = {
                **rules.place_record(mine),
                "cash": mine.cash,
                "positions": rules.positions_record(mine),
            }
    return _data(ctx, request, to_record(record))


def handle_leaderboard(ctx: MasterContext, request: Message) -> list[Message]:
    """GET_LEADERBOARD(competition, limit): members ranked by return, best first."""
    now = _now()
    limit = request.arg("limit")
    assert isinstance(limit, int)
    try:
        session = _session(ctx, request)
        if limit < 0 or limit > rules.MAX_LEADERBOARD:
            raise CompetitionError(
                ErrorCode.BAD_ARGUMENT, f"limit is 0 to {rules.MAX_LEADERBOARD} (0: the default)"
            )
        competition = rules.find(ctx.pool, str(request.arg("competition")), session.account_id)
    except CompetitionError as exc:
        return _data_fail(request, exc)
    snapshot = ctx.quotes.snapshot()
    places = rules.leaderboard(ctx.pool, competition, ctx.quotes.prices())
    mine = next((p for p in places if p.user_id == session.account_id), None)
    shown = places[: limit or rules.DEFAULT_LEADERBOARD]
    value = {
        "competition": competition.name,
        "status": competition.status(now),
        "starting_cash": competition.starting_cash,
        "members": len(places),
        "priced_at": snapshot.updated_at,
        "your_rank": None if mine is None else mine.rank,
        "entries": [rules.place_record(p) for p in shown],
    }
    return _data(ctx, request, to_record(value))
