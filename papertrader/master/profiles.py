"""Public or private profiles (issue 13): setProfileVisibility, answered by the master.

Profiles are private by default: another user sees nothing of a private
profile, and cannot tell it from a user who does not exist
(``master/portfolio.py``). Making it public shows the public part of the
portfolio and the history (no cash, no e-mail, no order ids).
"""

from __future__ import annotations

from papertrader.master.context import MasterContext
from papertrader.master.orders import stamped_ip
from papertrader.protocol import ErrorCode, Instruction, Message, reply_to
from papertrader.store import profiles
from papertrader.store.sessions import SessionError


def handle_set_visibility(ctx: MasterContext, request: Message) -> list[Message]:
    """SET_PROFILE_VISIBILITY(public): ACCOUNT_SUCCESS saying what it is now, or ACCOUNT_FAIL."""
    public = request.arg("public")
    assert isinstance(public, bool)
    try:
        session = ctx.sessions.get(request.session_id, stamped_ip(request))
    except SessionError as exc:
        return [reply_to(request, Instruction.ACCOUNT_FAIL, int(exc.code), exc.reason)]
    if not profiles.set_public(ctx.pool, session.account_id, public):
        reason = "the session's account no longer exists"
        return [reply_to(request, Instruction.ACCOUNT_FAIL, int(ErrorCode.INVALID_SESSION), reason)]
    message = (
        "your profile is public: other users see your positions and trades (not your cash)"
        if public
        else "your profile is private: other users cannot see it, nor tell that it exists"
    )
    return [reply_to(request, Instruction.ACCOUNT_SUCCESS, message)]
