"""What every request handler of the master may use, in one object passed around.

Handlers take the context explicitly rather than reaching for globals, so a
test can build one around its own database and Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from papertrader.config import Settings
from papertrader.mail.smtp import Mailer
from papertrader.master.asset_retrieval import QuoteBook
from papertrader.master.workers import WorkerRegistry
from papertrader.oidc.verify import IdTokenVerifier
from papertrader.store.pool import ConnectionPool
from papertrader.store.sessions import SessionStore


@dataclass(frozen=True)
class MasterContext:
    settings: Settings
    pool: ConnectionPool
    redis: redis.Redis
    sessions: SessionStore
    quotes: QuoteBook
    workers: WorkerRegistry
    #: Third-party sign-in and mail (issue 12); None where a test needs neither.
    oidc: IdTokenVerifier | None = None
    mailer: Mailer | None = None
