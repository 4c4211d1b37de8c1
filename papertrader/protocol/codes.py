"""Message types and instruction codes: the numbers on the wire.

Codes are grouped by category in the high byte (0x01 command, 0x02 data
transfer, 0x03 control, 0x04 server return, 0x05 master-worker link), so a hex
dump reads at a glance.
docs/PROTOCOL.md lists the same table.
"""

from __future__ import annotations

from enum import IntEnum


class MessageType(IntEnum):
    """The message categories of spec 4.1, plus server returns."""

    COMMAND = 1
    DATA_TRANSFER = 2
    CONTROL = 3
    RETURN = 4
    LINK = 5  # master-worker link only: never accepted from a client


class Instruction(IntEnum):
    """Every instruction of NOTES.md with its code."""

    # Command state (MessageType.COMMAND)
    LOGIN = 0x0101  # login(username, password, remember)
    LOGIN_SESSION = 0x0102  # login(sessionID): session id in the header
    REGISTER = 0x0103  # register(username, email, password)
    PURCHASE_ASSET = 0x0104  # purchaseAsset(sessionID, symbol, quantity)
    SELL_ASSET = 0x0105  # sellAsset(sessionID, symbol, quantity)
    LOGOUT = 0x0106  # logout(sessionID): ends the session on every worker
    # Accounts (issue 12; docs/PROTOCOL.md section 12): answered by the master
    LOGIN_OIDC = 0x0110  # sign in with an OpenID Connect provider's ID token
    GET_SIGN_IN_OPTIONS = 0x0111  # the providers a client may offer, no session
    PASSWORD_SET = 0x0112  # add a password, or change it (current password)
    PASSWORD_REMOVE = 0x0113  # only while a provider remains linked
    PROVIDER_LINK = 0x0114  # link a provider to the signed-in account
    PROVIDER_UNLINK = 0x0115  # only while another way in remains
    PASSWORD_FORGOT = 0x0116  # mail a reset code; the same answer for everyone
    PASSWORD_RESET = 0x0117  # reset code + new password; every session ends
    SESSION_REVOKE = 0x0118  # end one of one's own sessions, by its handle
    LOGOUT_ALL = 0x0119  # end every session of the account (this one too, or not)
    ACCOUNT_DELETE = 0x011A  # with the password or a fresh provider sign-in
    EMAIL_VERIFY = 0x011B  # confirm the e-mail address with a mailed code
    PLACE_ORDER = 0x0120  # placeOrder(ticket): any order, with the client's order id
    CANCEL_ORDER = 0x0121  # cancelOrder(order_id): cancel one order still waiting
    CANCEL_ALL_ORDERS = 0x0122  # cancelAllOrders(account): every waiting order of an account
    SET_PROFILE_VISIBILITY = 0x0123  # setProfileVisibility(public): private by default
    # Competitions (issue 13 item 7; docs/PROTOCOL.md section 16): answered by the master
    CREATE_COMPETITION = 0x0124  # createCompetition(terms): a record; the creator is told the code
    JOIN_COMPETITION = 0x0125  # joinCompetition(competition, join_code): by name, or by code
    LEAVE_COMPETITION = 0x0126  # leaveCompetition(competition): its account is closed

    # Data transfer state (MessageType.DATA_TRANSFER)
    GET_ASSET_INFO = 0x0201
    GET_ASSET_VALUE_CURRENT = 0x0202
    GET_ASSET_VALUE_DAY = 0x0203
    GET_ASSET_VALUE_WEEK = 0x0204
    GET_ASSET_VALUE_MONTH = 0x0205
    GET_ASSET_VALUE_YEAR = 0x0206
    GET_ASSET_VALUE_ALL_TIME = 0x0207
    GET_ASSET_VALUE_PREDICTED = 0x0208
    GET_USER_INFO = 0x0209
    GET_USER_PORTFOLIO = 0x020A
    GET_USER_TRANSACTION_HISTORY = 0x020B
    GET_SESSIONS = 0x0210  # one's own sessions (issue 12)
    GET_SIGN_IN_METHODS = 0x0211  # password or not, linked providers (issue 12)
    GET_ORDER = 0x0220  # getOrder(order_id): one order's state
    GET_ORDERS = 0x0221  # getOrders(account, status, limit): an account's orders
    GET_EQUITY_HISTORY = 0x0222  # getEquityHistory(range): the account's value over time
    GET_COMPETITIONS = 0x0223  # getCompetitions(): the competitions the session may see
    GET_COMPETITION = 0x0224  # getCompetition(competition): one, with the session's own account
    GET_LEADERBOARD = 0x0225  # getLeaderboard(competition, limit): members ranked by return
    GET_ACCOUNT_EQUITY_HISTORY = 0x0226  # getAccountEquityHistory(account, range): any own account

    # Control (MessageType.CONTROL): valid in either state
    SWITCH_STATE = 0x0301  # switchState(sessionID, state)
    GET_WORKER_LIST = 0x0302  # master port only, no session

    # Server returns (MessageType.RETURN)
    LOGIN_FAIL = 0x0401
    SESSION_ID = 0x0402
    REGISTER_SUCCESS = 0x0403
    REGISTER_FAIL = 0x0404
    PURCHASE_SUCCESS = 0x0405
    PURCHASE_FAIL = 0x0406
    SELL_SUCCESS = 0x0407
    SELL_FAIL = 0x0408
    STATE_SWITCH_SUCCESS = 0x0409
    STATE_SWITCH_FAIL = 0x040A
    DATA = 0x040B
    DATA_FAIL = 0x040C
    LOGOUT_SUCCESS = 0x040D
    ERROR = 0x040E  # a message that matched no instruction's own failure return
    ACCOUNT_SUCCESS = 0x0410  # an account change was made (issue 12)
    ACCOUNT_FAIL = 0x0411  # an account change was refused (issue 12)
    SIGN_IN_OPTIONS = 0x0412  # the answer to GET_SIGN_IN_OPTIONS (issue 12)
    ORDER_STATUS = 0x0420  # an order's state (placed, canceled...)
    ORDER_FAIL = 0x0421  # an order refused, or its outcome unknown, with its client order id
    ORDERS_CANCELED = 0x0422  # how many orders cancelAllOrders canceled
    COMPETITION = 0x0423  # a competition record: created, or joined
    COMPETITION_SUCCESS = 0x0424  # a competition change without a record (left it)
    COMPETITION_FAIL = 0x0425  # a competition request refused (code, reason)

    # Master-worker link (MessageType.LINK): never valid on a client connection
    LINK_HELLO = 0x0501  # worker -> master, first frame: who I am
    LINK_WELCOME = 0x0502  # master -> worker: link accepted
    LINK_REFUSED = 0x0503  # master -> worker: link refused, then closed
    HEARTBEAT = 0x0504  # either way, keeps a quiet link known alive
    AUTHENTICATED = 0x0505  # master -> worker: a good LOGIN, and the session it minted
    LINK_START = 0x0506  # worker -> master, first frame: challenge me (plain)
    LINK_CHALLENGE = 0x0507  # master -> worker: challenge, master public key, X25519 share
    LINK_AUTH = 0x0508  # worker -> master: signed answer, X25519 share, sealed secret
    LINK_PROOF = 0x0509  # master -> worker: the master's signature; sealed frames follow
    LINK_STATUS_REQUEST = 0x050A  # master -> worker: live figures, please (sealed)
    LINK_STATUS = 0x050B  # worker -> master: the live figures (sealed)
    LINK_CANCEL = 0x0510  # worker -> master: I gave up request <request id>; drop its work
    # 0x0518-0x051F: least privilege (issue 10)
    LINK_SESSION_KEY = (
        0x0518  # master -> worker, after the welcome: the key sessions are signed with
    )
    # 0x0538-0x053F: the website client (issue 14)
    LINK_WEB_ORIGIN = 0x0538  # worker -> master, after the welcome: my page's web origin

    @property
    def message_type(self) -> MessageType:
        """The category is the high byte of the code."""
        return MessageType(self.value >> 8)


class ConnectionStateCode(IntEnum):
    """Argument ``state`` of switchState."""

    COMMAND = 0
    DATA_TRANSFER = 1
