"""What the client library hands back: small frozen records, money as Decimal."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

Side = Literal["buy", "sell"]


@dataclass(frozen=True)
class SessionInfo:
    """A session the worker gave us; the id is a secret (never print or log it whole)."""

    session_id: uuid.UUID
    expires_at: datetime
    username: str


@dataclass(frozen=True)
class Fill:
    """An order that went through, at the price of the interval it was applied in."""

    order_id: uuid.UUID
    side: Side
    symbol: str
    quantity: int
    price: Decimal
    executed_at: datetime
