"""Competition orders in the drain: which account each one trades in, or why not.

A worker queues a competition order under the user's own account id (the
order id is derived from it, as for every order: docs/PROTOCOL.md 13.1) with
the competition's name beside it. Before a chunk is staged the master looks
up, in one query for the whole drain, each (user, competition) pair: the
member's competition account, the window and the asset list. An order that
may trade is staged for the competition account, so the set-based drain fills
it against that account's own cash and positions; one that may not (not a
member, no such competition, before the start or after the end, an asset the
competition does not trade) is recorded as rejected with the reason.

An order id already recorded (a retry, a replay after a crash, an order
canceled while queued) is staged for the account it was recorded under, so
the drain answers with its recorded state whatever changed since.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from papertrader.competitions import membership_refusal
from papertrader.store import competitions as store
from papertrader.store.order_queue import Entry
from papertrader.store.orders import Refusal
from papertrader.store.pool import ConnectionPool
from papertrader.store.stream_order import StagedOrder


@dataclass
class Routing:
    """Per stream id: the account a competition order is staged for, and refusals."""

    accounts: dict[bytes, str] = field(default_factory=dict)
    refusals: dict[bytes, Refusal] = field(default_factory=dict)

    def staged(self, entry: Entry) -> StagedOrder:
        assert entry.staged is not None
        account = self.accounts.get(entry.stream_id)
        return entry.staged if account is None else entry.staged._replace(account_id=account)


def route(pool: ConnectionPool, entries: Sequence[Entry], now: datetime) -> Routing:
    """The routing of the competition orders among ``entries`` (none: no query)."""
    routing = Routing()
    ours = [e for e in entries if e.staged is not None and e.staged.competition]
    if not ours:
        return routing
    wanted = {(int(e.staged.account_id), e.staged.competition.lower()) for e in ours if e.staged}
    found = store.memberships(pool, wanted)
    recorded = store.order_accounts(pool, [e.staged.order_id for e in ours if e.staged])
    for entry in ours:
        staged = entry.staged
        assert staged is not None
        known = recorded.get(staged.order_id)
        if known is not None:
            routing.accounts[entry.stream_id] = str(known)
            continue
        membership = found.get((int(staged.account_id), staged.competition.lower()))
        refusal = membership_refusal(membership, staged.competition, staged.symbol, now)
        if refusal is not None:
            routing.refusals[entry.stream_id] = (int(refusal[0]), refusal[1])
        elif membership is not None:
            routing.accounts[entry.stream_id] = str(membership.account_id)
    return routing


def competition_account(pool: ConnectionPool, user_id: int, competition: str) -> int | None:
    """The user's account in the competition named (None: not a member)."""
    membership = store.memberships(pool, [(user_id, competition.lower())]).get(
        (user_id, competition.lower())
    )
    return None if membership is None else membership.account_id
