"""The PaperTrader client library: blocking, plain sockets, no gevent.

    from papertrader.client import PaperTraderClient, ClientError

    with PaperTraderClient("127.0.0.1", 2049, ca="/path/to/ca.pem") as client:
        client.login("alice", "correct horse")
        fill = client.buy("AAPL", 10)

Connections are TLS, the server's certificate verified against ``ca`` (a PEM
file), an ``ssl_context`` of your own, or the system's trust store.
Every refusal is a ``ClientError`` with the server's ``code`` and ``reason``.
"""

from papertrader.client.address import format_address, parse_address
from papertrader.client.base import DEFAULT_TIMEOUT
from papertrader.client.client import PaperTraderClient, get_worker_list
from papertrader.client.errors import (
    ClientError,
    OrderOutcomeUnknown,
    ServerUnreachable,
    TlsError,
)
from papertrader.client.failover import FailoverClient
from papertrader.client.models import (
    AccountSession,
    AssetInfo,
    Bar,
    Competition,
    EquityPoint,
    Fill,
    Forecast,
    Leaderboard,
    LeaderboardEntry,
    OrderStatus,
    Portfolio,
    Position,
    SessionInfo,
    SignInMethods,
    Trade,
    UserInfo,
)

__all__ = [
    "AccountSession",
    "AssetInfo",
    "Bar",
    "Forecast",
    "SignInMethods",
    "Portfolio",
    "Position",
    "Trade",
    "UserInfo",
    "Competition",
    "Leaderboard",
    "LeaderboardEntry",
    "DEFAULT_TIMEOUT",
    "EquityPoint",
    "ClientError",
    "FailoverClient",
    "Fill",
    "OrderOutcomeUnknown",
    "OrderStatus",
    "PaperTraderClient",
    "ServerUnreachable",
    "SessionInfo",
    "TlsError",
    "format_address",
    "get_worker_list",
    "parse_address",
]
