"""Routes each request arriving on a worker link to the module that serves it (spec 3.1.1).

Handlers return the complete answer (one return, or DATA packets 1..max).
An expected outage (database or Redis unreachable) becomes a failure return
with UNAVAILABLE and one log line; anything else unexpected becomes INTERNAL
with the traceback in the log, never on the wire.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg2
import redis
from loguru import logger

from papertrader.master import (
    accounts,
    competitions,
    credentials,
    deletion,
    equity,
    history,
    orders,
    portfolio,
    profiles,
    recovery,
    session_admin,
    signin,
    workers,
)
from papertrader.master.context import MasterContext
from papertrader.protocol import ErrorCode, Instruction, Message, failure_reply
from papertrader.store.pool import PoolTimeout

Handler = Callable[[MasterContext, Message], list[Message]]

ROUTES: dict[Instruction, Handler] = {
    Instruction.LOGIN: accounts.handle_login,
    Instruction.REGISTER: recovery.handle_register,
    # accounts a person can live with (issue 12)
    Instruction.LOGIN_OIDC: signin.handle_login_oidc,
    Instruction.GET_SIGN_IN_OPTIONS: signin.handle_sign_in_options,
    Instruction.PASSWORD_SET: credentials.handle_change,
    Instruction.PASSWORD_REMOVE: credentials.handle_change,
    Instruction.PROVIDER_LINK: credentials.handle_change,
    Instruction.PROVIDER_UNLINK: credentials.handle_change,
    Instruction.GET_SIGN_IN_METHODS: credentials.handle_sign_in_methods,
    Instruction.PASSWORD_FORGOT: recovery.handle_forgot,
    Instruction.PASSWORD_RESET: recovery.handle_change,
    Instruction.EMAIL_VERIFY: recovery.handle_change,
    Instruction.GET_SESSIONS: session_admin.handle_sessions,
    Instruction.SESSION_REVOKE: session_admin.handle_change,
    Instruction.LOGOUT_ALL: session_admin.handle_change,
    Instruction.LOGOUT: session_admin.handle_logout,
    Instruction.ACCOUNT_DELETE: deletion.handle_delete,
    Instruction.GET_USER_INFO: portfolio.handle_user_data,
    Instruction.GET_USER_PORTFOLIO: portfolio.handle_user_data,
    Instruction.GET_USER_TRANSACTION_HISTORY: portfolio.handle_user_data,
    Instruction.GET_ASSET_VALUE_DAY: history.handle_history,
    Instruction.GET_ASSET_VALUE_WEEK: history.handle_history,
    Instruction.GET_ASSET_VALUE_MONTH: history.handle_history,
    Instruction.GET_ASSET_VALUE_YEAR: history.handle_history,
    Instruction.GET_ASSET_VALUE_ALL_TIME: history.handle_history,
    Instruction.GET_ASSET_VALUE_PREDICTED: history.handle_forecast,
    Instruction.GET_ORDER: orders.handle_get_order,
    Instruction.GET_ORDERS: orders.handle_get_orders,
    Instruction.CANCEL_ORDER: orders.handle_cancel_order,
    Instruction.CANCEL_ALL_ORDERS: orders.handle_cancel_all,
    Instruction.SET_PROFILE_VISIBILITY: profiles.handle_set_visibility,
    Instruction.GET_EQUITY_HISTORY: equity.handle_equity_history,
    Instruction.GET_ACCOUNT_EQUITY_HISTORY: equity.handle_account_equity_history,
    # competitions and leaderboards (issue 13 item 7)
    Instruction.CREATE_COMPETITION: competitions.handle_create,
    Instruction.JOIN_COMPETITION: competitions.handle_join,
    Instruction.LEAVE_COMPETITION: competitions.handle_leave,
    Instruction.GET_COMPETITIONS: competitions.handle_list,
    Instruction.GET_COMPETITION: competitions.handle_get,
    Instruction.GET_LEADERBOARD: competitions.handle_leaderboard,
    # a worker asks for its browsers (the website client's failover, issue 14)
    Instruction.GET_WORKER_LIST: workers.handle_worker_list,
}


def route(ctx: MasterContext, request: Message) -> list[Message]:
    """The answer to one forwarded request, carrying its request id."""
    handler = ROUTES.get(request.instruction)
    if handler is None:
        return [
            failure_reply(
                request.instruction,
                ErrorCode.NOT_ALLOWED,
                f"{request.instruction.name} is not served by the master over a worker link",
                request.request_id,
            )
        ]
    try:
        return handler(ctx, request)
    except (psycopg2.OperationalError, psycopg2.InterfaceError, PoolTimeout) as exc:
        logger.warning("{} failed: the database is unavailable ({})", request.instruction.name, exc)
        reason = "the master's database is unavailable; try again shortly"
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        logger.warning("{} failed: Redis is unavailable ({})", request.instruction.name, exc)
        reason = "the master's session store is unavailable; try again shortly"
    except Exception:
        logger.exception("{} failed unexpectedly", request.instruction.name)
        return [
            failure_reply(
                request.instruction,
                ErrorCode.INTERNAL,
                "internal error on the master; it has been logged",
                request.request_id,
            )
        ]
    return [failure_reply(request.instruction, ErrorCode.UNAVAILABLE, reason, request.request_id)]
