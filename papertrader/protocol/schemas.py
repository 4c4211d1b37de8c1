"""The argument list of every instruction, and which failure return answers it.

One table, read by the decoder (argument count on the header, types on the
body), by the encoder, and by docs/PROTOCOL.md. Instructions that need a
session (the spec's ``sessionID`` argument) carry it in the header's session id
field, not in the data, so it is in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from papertrader.protocol.codes import Instruction
from papertrader.protocol.values import ValueType

I = Instruction  # noqa: E741 - short alias keeps the table readable
T = ValueType


@dataclass(frozen=True)
class Schema:
    """What an instruction carries and whether it needs a session."""

    args: tuple[tuple[str, ValueType], ...]
    needs_session: bool = False

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.args)


_DATE_REQUEST = Schema((("asset", T.STR), ("date", T.DATE)), needs_session=True)
_FAIL = Schema((("code", T.INT), ("reason", T.STR)))
_ORDER = Schema((("symbol", T.STR), ("quantity", T.INT)), needs_session=True)
_FILL = Schema(
    (
        ("order_id", T.ID),
        ("symbol", T.STR),
        ("quantity", T.INT),
        ("price", T.DECIMAL),
        ("executed_at", T.TIMESTAMP),
    )
)
_ORDER_FAIL = Schema((("code", T.INT), ("reason", T.STR), ("order_id", T.ID)))
_USER_REQUEST = Schema((("username", T.STR),), needs_session=True)
_PROVIDER_PROOF = Schema(
    (("provider", T.STR), ("id_token", T.STR), ("nonce", T.STR)), needs_session=True
)
_ORDER_RECORD = Schema((("order", T.LIST),))

SCHEMAS: dict[Instruction, Schema] = {
    I.LOGIN: Schema((("username", T.STR), ("password", T.STR), ("remember", T.BOOL))),
    I.LOGIN_SESSION: Schema((), needs_session=True),
    I.REGISTER: Schema((("username", T.STR), ("email", T.STR), ("password", T.STR))),
    I.PURCHASE_ASSET: _ORDER,
    I.SELL_ASSET: _ORDER,
    I.LOGOUT: Schema((), needs_session=True),
    I.LOGIN_OIDC: Schema(
        (
            ("provider", T.STR),
            ("id_token", T.STR),
            ("nonce", T.STR),
            ("remember", T.BOOL),
            ("username", T.STR),
        )
    ),
    I.GET_SIGN_IN_OPTIONS: Schema(()),
    I.PASSWORD_SET: Schema((("current", T.STR), ("new", T.STR)), needs_session=True),
    I.PASSWORD_REMOVE: Schema((("current", T.STR),), needs_session=True),
    I.PROVIDER_LINK: _PROVIDER_PROOF,
    I.PROVIDER_UNLINK: Schema((("provider", T.STR),), needs_session=True),
    I.PASSWORD_FORGOT: Schema((("who", T.STR),)),
    I.PASSWORD_RESET: Schema((("code", T.STR), ("new", T.STR))),
    I.SESSION_REVOKE: Schema((("handle", T.STR),), needs_session=True),
    I.LOGOUT_ALL: Schema((("keep_this", T.BOOL),), needs_session=True),
    I.ACCOUNT_DELETE: Schema(
        (("password", T.STR), ("provider", T.STR), ("id_token", T.STR), ("nonce", T.STR)),
        needs_session=True,
    ),
    I.EMAIL_VERIFY: Schema((("code", T.STR),)),
    I.PLACE_ORDER: Schema((("ticket", T.LIST),), needs_session=True),
    I.CANCEL_ORDER: Schema((("order_id", T.ID),), needs_session=True),
    I.CANCEL_ALL_ORDERS: Schema((("account", T.STR),), needs_session=True),
    I.SET_PROFILE_VISIBILITY: Schema((("public", T.BOOL),), needs_session=True),
    I.CREATE_COMPETITION: Schema((("terms", T.LIST),), needs_session=True),
    I.JOIN_COMPETITION: Schema((("competition", T.STR), ("join_code", T.STR)), needs_session=True),
    I.LEAVE_COMPETITION: Schema((("competition", T.STR),), needs_session=True),
    I.GET_ASSET_INFO: Schema((("asset", T.STR),), needs_session=True),
    I.GET_ASSET_VALUE_CURRENT: Schema((("asset", T.STR),), needs_session=True),
    I.GET_ASSET_VALUE_DAY: _DATE_REQUEST,
    I.GET_ASSET_VALUE_WEEK: _DATE_REQUEST,
    I.GET_ASSET_VALUE_MONTH: _DATE_REQUEST,
    I.GET_ASSET_VALUE_YEAR: _DATE_REQUEST,
    I.GET_ASSET_VALUE_ALL_TIME: Schema((("asset", T.STR),), needs_session=True),
    I.GET_ASSET_VALUE_PREDICTED: Schema((("asset", T.STR), ("horizon", T.INT)), needs_session=True),
    I.GET_USER_INFO: _USER_REQUEST,
    I.GET_USER_PORTFOLIO: _USER_REQUEST,
    I.GET_USER_TRANSACTION_HISTORY: _USER_REQUEST,
    I.GET_SESSIONS: Schema((), needs_session=True),
    I.GET_SIGN_IN_METHODS: Schema((), needs_session=True),
    I.GET_ORDER: Schema((("order_id", T.ID),), needs_session=True),
    I.GET_EQUITY_HISTORY: Schema((("range", T.STR),), needs_session=True),
    I.GET_ORDERS: Schema(
        (("account", T.STR), ("status", T.STR), ("limit", T.INT)), needs_session=True
    ),
    I.GET_COMPETITIONS: Schema((), needs_session=True),
    I.GET_COMPETITION: Schema((("competition", T.STR),), needs_session=True),
    I.GET_LEADERBOARD: Schema((("competition", T.STR), ("limit", T.INT)), needs_session=True),
    I.GET_ACCOUNT_EQUITY_HISTORY: Schema(
        (("account", T.STR), ("range", T.STR)), needs_session=True
    ),
    I.SWITCH_STATE: Schema((("state", T.INT),), needs_session=True),
    I.GET_WORKER_LIST: Schema(()),
    I.LOGIN_FAIL: _FAIL,
    I.SESSION_ID: Schema((("session_id", T.ID), ("expires_at", T.TIMESTAMP), ("username", T.STR))),
    I.REGISTER_SUCCESS: Schema((("username", T.STR),)),
    I.REGISTER_FAIL: _FAIL,
    I.PURCHASE_SUCCESS: _FILL,
    I.PURCHASE_FAIL: _ORDER_FAIL,
    I.SELL_SUCCESS: _FILL,
    I.SELL_FAIL: _ORDER_FAIL,
    I.STATE_SWITCH_SUCCESS: Schema((("state", T.INT),)),
    I.STATE_SWITCH_FAIL: _FAIL,
    I.DATA: Schema((("chunk", T.BYTES),)),
    I.DATA_FAIL: _FAIL,
    I.LOGOUT_SUCCESS: Schema(()),
    I.ERROR: _FAIL,
    I.ACCOUNT_SUCCESS: Schema((("message", T.STR),)),
    I.ACCOUNT_FAIL: _FAIL,
    I.SIGN_IN_OPTIONS: Schema((("providers", T.LIST),)),
    I.ORDER_STATUS: _ORDER_RECORD,
    I.ORDER_FAIL: _ORDER_FAIL,
    I.ORDERS_CANCELED: Schema((("canceled", T.INT),)),
    I.COMPETITION: Schema((("competition", T.LIST),)),
    I.COMPETITION_SUCCESS: Schema((("message", T.STR),)),
    I.COMPETITION_FAIL: _FAIL,
    I.LINK_HELLO: Schema((("name", T.STR), ("region", T.STR), ("client_address", T.STR))),
    I.LINK_WELCOME: Schema(
        (("name", T.STR), ("heartbeat_ms", T.INT), ("request_deadline_ms", T.INT))
    ),
    I.LINK_REFUSED: _FAIL,
    I.HEARTBEAT: Schema(()),
    I.AUTHENTICATED: Schema(
        (
            ("account_id", T.INT),
            ("username", T.STR),
            ("session_id", T.ID),
            ("expires_at", T.TIMESTAMP),
        )
    ),
    I.LINK_START: Schema(()),
    I.LINK_CHALLENGE: Schema(
        (("challenge", T.BYTES), ("master_key", T.BYTES), ("master_share", T.BYTES))
    ),
    I.LINK_AUTH: Schema(
        (
            ("signed_at", T.TIMESTAMP),
            ("nonce", T.BYTES),
            ("worker_share", T.BYTES),
            ("sealed_key", T.BYTES),
            ("signature", T.BYTES),
        )
    ),
    I.LINK_PROOF: Schema((("signature", T.BYTES),)),
    I.LINK_STATUS_REQUEST: Schema(()),
    I.LINK_STATUS: Schema((("status", T.BYTES),)),
    I.LINK_CANCEL: Schema(()),
    I.LINK_WEB_ORIGIN: Schema((("origin", T.STR),)),
    I.LINK_SESSION_KEY: Schema((("public_key", T.BYTES),)),
}

#: The failure return that answers each request instruction.
FAILURE_RETURN: dict[Instruction, Instruction] = {
    I.LOGIN: I.LOGIN_FAIL,
    I.LOGIN_SESSION: I.LOGIN_FAIL,
    I.REGISTER: I.REGISTER_FAIL,
    I.PURCHASE_ASSET: I.PURCHASE_FAIL,
    I.SELL_ASSET: I.SELL_FAIL,
    I.LOGOUT: I.ERROR,
    I.LOGIN_OIDC: I.LOGIN_FAIL,
    **{
        code: I.ACCOUNT_FAIL
        for code in (
            I.GET_SIGN_IN_OPTIONS,
            I.PASSWORD_SET,
            I.PASSWORD_REMOVE,
            I.PROVIDER_LINK,
            I.PROVIDER_UNLINK,
            I.PASSWORD_FORGOT,
            I.PASSWORD_RESET,
            I.SESSION_REVOKE,
            I.LOGOUT_ALL,
            I.ACCOUNT_DELETE,
            I.EMAIL_VERIFY,
        )
    },
    I.PLACE_ORDER: I.ORDER_FAIL,
    I.CANCEL_ORDER: I.ORDER_FAIL,
    I.CANCEL_ALL_ORDERS: I.ORDER_FAIL,
    I.SET_PROFILE_VISIBILITY: I.ACCOUNT_FAIL,
    I.CREATE_COMPETITION: I.COMPETITION_FAIL,
    I.JOIN_COMPETITION: I.COMPETITION_FAIL,
    I.LEAVE_COMPETITION: I.COMPETITION_FAIL,
    I.SWITCH_STATE: I.STATE_SWITCH_FAIL,
    I.GET_WORKER_LIST: I.DATA_FAIL,
    **{code: I.DATA_FAIL for code in Instruction if code.value >> 8 == 0x02},
}

MAX_ARGUMENTS = max(len(schema.args) for schema in SCHEMAS.values())

assert set(SCHEMAS) == set(Instruction), "every instruction needs a schema"
