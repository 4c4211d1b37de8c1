"""What every request handler of the master may use, in one object passed around.

Handlers take the context explicitly rather than reaching for globals, so a
test can build one around its own database and Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import redis

from papertrader.config import Settings
from papertrader.limits.backoff import LoginBackoff
from papertrader.mail.smtp import Mailer
from papertrader.master.asset_retrieval import QuoteBook
from papertrader.master.bcrypt_pool import BcryptPool
from papertrader.master.workers import WorkerRegistry
from papertrader.oidc.verify import IdTokenVerifier
from papertrader.store.pool import ConnectionPool
from papertrader.store.sessions import SessionStore

if TYPE_CHECKING:
    from papertrader.master.leadership import Leadership
    from papertrader.master.order_intake import OrderIntake


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
    #: The orders read from the stream and not yet drained (None: not reading it).
    intake: OrderIntake | None = None
    #: bcrypt's own bounded pool (bcrypt_threads, bcrypt_queue).
    bcrypt: BcryptPool = field(default_factory=BcryptPool)
    #: Whether this master is the active one (None: always active, as in tests).
    leadership: Leadership | None = None
    #: Read-only work that may lag a moment (price history): a replica's pool, if any.
    read_pool: ConnectionPool | None = None

    @cached_property
    def login_backoff(self) -> LoginBackoff:
        """The usernames' back-off after failed logins, counted here, where the passwords
        are checked (``limits/backoff.py``)."""
        return LoginBackoff(
            self.redis,
            self.settings.login_failures_before_backoff,
            self.settings.login_backoff_max_seconds,
        )

    @property
    def history_pool(self) -> ConnectionPool:
        """Where price history is read: the replica when configured, else the primary."""
        return self.read_pool if self.read_pool is not None else self.pool
