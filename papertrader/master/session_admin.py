"""Sessions a user controls (issue 12): list them, end one, end them all.

A session is named to its owner by its *handle* (12 hex digits of the
SHA-256 of its id, :func:`~papertrader.store.sessions.session_handle`): the
id itself is a bearer secret that never leaves the client that holds it, so
the list shows handles and ``SESSION_REVOKE`` takes one.

* GET_SESSIONS: DATA, a list of {handle, current, created_at, expires_at,
  last_used_at, last_ip, login_ip, remember}, newest first.
* SESSION_REVOKE(handle): that session ends on every worker at once (the
  SESSIONS_ENDED announcement empties the workers' caches).
* LOGOUT_ALL(keep_this): every session of the account ends, the caller's
  own too unless ``keep_this``.
"""

from __future__ import annotations

from loguru import logger

from papertrader.master.account_common import done, own_session, refused
from papertrader.master.accounts import AccountError
from papertrader.master.context import MasterContext
from papertrader.protocol import (
    ErrorCode,
    Instruction,
    Message,
    max_chunk_size,
    packets_for,
    reply_to,
)
from papertrader.protocol.records import to_record
from papertrader.store.sessions import SessionError


def handle_sessions(ctx: MasterContext, request: Message) -> list[Message]:
    try:
        session, account = own_session(ctx, request)
    except AccountError as exc:
        return [
            Message(
                Instruction.DATA_FAIL, (int(exc.code), exc.reason), request_id=request.request_id
            )
        ]
    rows = [
        {
            "handle": view.session.handle,
            "current": view.session.session_id == session.session_id,
            "created_at": view.session.created_at,
            "expires_at": view.session.expires_at,
            "last_used_at": view.last_used_at,
            "last_ip": view.last_ip,
            "login_ip": view.session.client_ip,
            "remember": view.session.remember,
        }
        for view in ctx.sessions.of_account(account.id)
    ]
    return packets_for(
        tuple(to_record(row) for row in rows),
        chunk_size=max_chunk_size(ctx.settings.max_data_size),
        request_id=request.request_id,
    )


def revoke(ctx: MasterContext, request: Message) -> str:
    session, account = own_session(ctx, request)
    handle = str(request.arg("handle")).strip().lower()
    for view in ctx.sessions.of_account(account.id):
        if handle and view.session.handle == handle:
            ctx.sessions.end(view.session)
            logger.info("session {} of {} revoked by its owner", handle, account.username)
            if view.session.session_id == session.session_id:
                return f"session {handle} (this one) ended: you are signed out"
            return f"session {handle} ended"
    raise AccountError(
        ErrorCode.UNKNOWN_SESSION,
        f"no live session of yours has the handle {handle[:16]!r} (`pt client sessions list`)",
    )


def logout_all(ctx: MasterContext, request: Message) -> str:
    session, account = own_session(ctx, request)
    keep = session.session_id if bool(request.arg("keep_this")) else None
    ended = ctx.sessions.end_all(account.id, keep=keep)
    logger.info("{} signed out everywhere ({} sessions)", account.username, ended)
    if keep is not None:
        return f"{ended} other session(s) signed out; this one stays"
    return f"{ended} session(s) signed out, this one included"


_CHANGES = {Instruction.SESSION_REVOKE: revoke, Instruction.LOGOUT_ALL: logout_all}


def handle_logout(ctx: MasterContext, request: Message) -> list[Message]:
    """LOGOUT, forwarded by the worker (which may not delete a session itself): the
    session, checked against the client address the worker stamped, ends everywhere."""
    client_ip = str(request.client_address) if request.client_address is not None else None
    try:
        session = ctx.sessions.get(request.session_id, client_ip)
    except SessionError as exc:
        return [reply_to(request, Instruction.ERROR, int(exc.code), exc.reason)]
    ctx.sessions.end(session)
    return [reply_to(request, Instruction.LOGOUT_SUCCESS)]


def handle_change(ctx: MasterContext, request: Message) -> list[Message]:
    try:
        return done(request, _CHANGES[request.instruction](ctx, request))
    except AccountError as exc:
        return refused(request, exc)
