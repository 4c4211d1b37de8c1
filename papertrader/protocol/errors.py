"""The one exception type of the protocol, and its error codes.

Every problem found in bytes from the network becomes a ``ProtocolError`` with a
numeric code (sent back to the peer in failure returns) and a reason a person
can read. ``fatal`` tells the server whether the framing is still trustworthy:
if it is, the connection stays open and the peer gets a failure return; if it
is not, the connection has to be closed because the next header cannot be found.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from papertrader.protocol.header import Header


class ErrorCode(IntEnum):
    """Error codes carried by every ``*Fail`` return (argument ``code``).

    1-49 are protocol errors, 100 and up are application errors.
    """

    BAD_MAGIC = 1
    BAD_VERSION = 2
    UNKNOWN_MESSAGE_TYPE = 3
    UNKNOWN_INSTRUCTION = 4
    TYPE_MISMATCH = 5
    FRAME_TOO_LARGE = 6
    TOO_MANY_ARGUMENTS = 7
    ARGUMENT_COUNT = 8
    BAD_ARGUMENT = 9
    TRAILING_DATA = 10
    BAD_PACKET_NUMBER = 11
    PACKET_OUT_OF_ORDER = 12
    PACKET_DUPLICATE = 13
    PACKET_MISSING = 14
    PACKET_MAX_CHANGED = 15
    WRONG_STATE = 16
    TIMEOUT = 17

    INVALID_SESSION = 100
    SESSION_IP_MISMATCH = 101
    INVALID_CREDENTIALS = 102
    USERNAME_TAKEN = 103
    EMAIL_TAKEN = 104
    INVALID_USERNAME = 105
    INVALID_EMAIL = 106
    INVALID_PASSWORD = 107
    UNKNOWN_ASSET = 108
    INVALID_QUANTITY = 109
    INSUFFICIENT_CASH = 110
    INSUFFICIENT_POSITION = 111
    UNKNOWN_USER = 112
    NO_DATA = 113
    INVALID_DATE = 114
    UNAVAILABLE = 115
    INTERNAL = 116
    NOT_ALLOWED = 117
    RATE_LIMITED = 118  # too many requests: the reason ends with "retry after N s"
    # 124-129: least privilege (issue 10)
    ALREADY_LINKED = 124
    SESSION_MISMATCH = 125
    SESSION_UNVERIFIED = 126
    # Accounts (issue 12)
    SIGN_IN_REFUSED = 130  # the provider's ID token was refused (the reason says why)
    UNKNOWN_PROVIDER = 131  # no sign-in provider of that name is configured
    USERNAME_NEEDED = 132  # first sign-in with a provider: choose a username
    LINK_REQUIRED = 133  # an account has this e-mail: sign in to it and link the provider
    EMAIL_UNVERIFIED = 134  # the provider has not verified the e-mail address
    LAST_WAY_IN = 135  # the change would leave the account with no way to sign in
    RESET_CODE_INVALID = 136  # the reset code is unknown, used or expired
    UNKNOWN_SESSION = 137  # no session of this account has that handle
    PROOF_REQUIRED = 138  # the password, or a fresh sign-in with a linked provider, is needed
    OUTCOME_UNKNOWN = 140  # the order may or may not go through: ask for its state by its id
    UNKNOWN_ORDER = 141  # no order with this id for this account
    ORDER_NOT_OPEN = 142  # cannot cancel: the order is filled, rejected, canceled or expired
    INVALID_ORDER = 143  # the order ticket is malformed (type, prices, time in force, fields)
    INVALID_PRICE = 144  # a limit or stop price that cannot be taken
    TOO_MANY_OPEN_ORDERS = 145  # the account has as many open orders as allowed
    # Competitions (issue 13 item 7)
    UNKNOWN_COMPETITION = 146  # no such competition, or a private one the user may not see
    NOT_A_MEMBER = 147  # the user has not joined the competition named
    COMPETITION_CLOSED = 148  # the competition has not started, or has ended
    ASSET_NOT_ALLOWED = 149  # the competition does not trade this asset
    TLS_REQUIRED = 150  # a plaintext client on a TLS port (the connection is then closed)
    # 160-169: failover (issue 17)
    MASTER_STANDBY = 160  # link only: this master is a standby; the reason names the active one


class ProtocolError(Exception):
    """Anything wrong with bytes or messages on a PaperTrader connection."""

    def __init__(
        self,
        code: ErrorCode,
        reason: str,
        *,
        fatal: bool = False,
        header: Header | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason
        self.fatal = fatal
        #: The header of the offending frame when it could be read, so the
        #: server can answer with the right failure return and request id.
        self.header = header


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol does not allow: a bug on our side."""
