"""getAssetValueDay/Week/Month/Year/AllTime/Predicted on the worker: cache, else the master.

The worker checks what it can alone (a session, a known asset), then looks
in the history cache (``history_cache.py``); on a miss it forwards the
request to the master with the same instruction code, stamped like every
forwarded request, and caches the answer. The payload goes to the client as
the master encoded it, re-cut into packets of the client connection's size.

Cache lifetime (spec 3.2.6): a range that still contains the current update
period (today's day view, this week, all-time, every forecast) lives until
the end of the current interval; a range wholly in the past lives
``CLOSED_TTL``. The master's verdicts on a request (no data, invalid date)
live only until the end of the current interval: a client naming one
distinct date after another cannot fill the cache with refusals. A date
outside 1970-01-01..today is refused here, before any range or cache key is
made from it, and never reaches the master.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from papertrader.market.ranges import EPOCH, KINDS, date_problem, window
from papertrader.protocol import ErrorCode, Instruction, Message, reply_to, split_payload
from papertrader.store import keys
from papertrader.worker.cache import QuoteCache
from papertrader.worker.client_management import ClientInfo
from papertrader.worker.forwarding import for_master
from papertrader.worker.history_cache import CLOSED_TTL, Answer, HistoryCache
from papertrader.worker.link import Link, LinkError
from papertrader.worker.orders import normalise_symbol, unknown_asset_reason

#: Failures that are the master's verdict on the request itself: cached like data.
CACHEABLE_FAILURES = frozenset(
    {
        int(ErrorCode.NO_DATA),
        int(ErrorCode.INVALID_DATE),
        int(ErrorCode.UNKNOWN_ASSET),
        int(ErrorCode.BAD_ARGUMENT),
    }
)


def interval_bounds(now: datetime, interval: float) -> tuple[datetime, datetime]:
    """(start, end) of the update period containing ``now`` (the master's alignment)."""
    step = max(1, round(interval * 1_000_000))
    micros = (now - EPOCH) // timedelta(microseconds=1)
    start = EPOCH + timedelta(microseconds=micros - micros % step)
    return start, start + timedelta(microseconds=step)


class PriceHistory:
    """The worker's history and forecast requests."""

    def __init__(
        self,
        link: Link,
        cache: HistoryCache,
        quotes: QuoteCache,
        chunk_size: int,
        interval: float,
        timeout: float | None = None,
    ) -> None:
        self._link = link
        self._cache = cache
        self._quotes = quotes
        self._chunk_size = chunk_size
        self._interval = interval
        self._timeout = timeout

    def ttl(self, kind: str, argument: date | int, now: datetime) -> float:
        """Seconds an answer may be kept (see the module docstring)."""
        period_start, period_end = interval_bounds(now, self._interval)
        until_interval_end = (period_end - now).total_seconds()
        if kind in ("all", "predicted") or not isinstance(argument, date):
            return until_interval_end
        if window(kind, argument, now).is_open(period_start):
            return until_interval_end
        return CLOSED_TTL

    def fetch(self, request: Message, client: ClientInfo, stamp: int) -> list[Message]:
        instruction = request.instruction
        kind = KINDS[instruction]
        symbol = normalise_symbol(str(request.arg("asset")))
        if not self._quotes.is_known(symbol):
            reason = unknown_asset_reason(symbol, self._quotes.known_symbols)
            return [reply_to(request, Instruction.DATA_FAIL, int(ErrorCode.UNKNOWN_ASSET), reason)]
        argument = request.args[1] if len(request.args) > 1 else None
        assert argument is None or isinstance(argument, (date, int))
        now = datetime.now(timezone.utc)
        if isinstance(argument, date):
            problem = date_problem(argument, now.date())
            if problem is not None:
                code = int(ErrorCode.INVALID_DATE)
                return [reply_to(request, Instruction.DATA_FAIL, code, problem)]
        forwarded = Message(
            instruction,
            (symbol,) + request.args[1:],
            session_id=request.session_id,
        )
        shown = "-" if argument is None else str(argument)
        key_argument = argument.isoformat() if isinstance(argument, date) else shown
        key = keys.history_cache(kind, symbol, key_argument)
        ttl = self.ttl(kind, argument if argument is not None else 0, now)
        failure_ttl = min(ttl, (interval_bounds(now, self._interval)[1] - now).total_seconds())

        def ask_master() -> tuple[Answer, float | None]:
            try:
                answer = self._link.request(
                    for_master(forwarded, client, stamp, with_session=True), self._timeout
                )
            except LinkError as exc:
                return Answer(code=int(exc.code), reason=exc.reason), None
            if isinstance(answer, bytes):
                return Answer(payload=answer), ttl
            if answer.instruction is Instruction.DATA_FAIL:
                code, reason = answer.args[0], answer.args[1]
                assert isinstance(code, int) and isinstance(reason, str)
                kept = failure_ttl if code in CACHEABLE_FAILURES else None
                return Answer(code=code, reason=reason), kept
            return Answer(
                code=int(ErrorCode.INTERNAL),
                reason=f"the master answered {answer.instruction.name}",
            ), None

        result = self._cache.get_or_fetch(key, ask_master)
        if result.payload is not None:
            return split_payload(result.payload, self._chunk_size, request_id=request.request_id)
        return [reply_to(request, Instruction.DATA_FAIL, result.code, result.reason)]
