"""Every Prometheus metric of the master and the workers, in one place.

A process exposes its metrics at ``/metrics`` (and its health at
``/healthz``) on its own HTTP port when ``metrics_enabled`` is set
(``papertrader/metrics_server.py``). Each role has its own registry, so a
worker's endpoint shows worker metrics only and the master's master metrics
only; both also carry the standard ``process_*`` and ``python_*`` series.

Adding a metric is one line here, beside its siblings, in the registry of the
process that counts it, named as Prometheus wants it (``papertrader_``, a unit
suffix, ``_total`` added to counters by the library), and one row in
docs/OPERATIONS.md. Label values must come from a small fixed set (an
instruction name, an error code name, a side): never a user name, a symbol
or an address.

Counting is done where the event happens (``observe_request`` wraps the
worker's request routing, the drain counts its outcomes); figures that
already live somewhere (linked workers, feed age) are read at scrape time
through ``set_function``, so nothing has to remember to update them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from papertrader.protocol import ErrorCode, Instruction, Message

#: Seconds: from a cached quote (well under a millisecond) to an order waiting for the drain.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
)  # fmt: skip
DRAIN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


#: The master's metrics (``pt master run``).
MASTER = _registry()
#: A worker's metrics (``pt worker run``).
WORKER = _registry()

# -- both --------------------------------------------------------------------------------
MASTER_INFO = Gauge(
    "papertrader_build_info", "Always 1; labels say what runs.", ["version", "role", "name"],
    registry=MASTER,
)  # fmt: skip
WORKER_INFO = Gauge(
    "papertrader_build_info", "Always 1; labels say what runs.", ["version", "role", "name"],
    registry=WORKER,
)  # fmt: skip

# -- worker: clients ---------------------------------------------------------------------
CLIENT_CONNECTIONS_OPEN = Gauge(
    "papertrader_client_connections_open", "Client connections open now.", registry=WORKER
)
CLIENT_CONNECTIONS = Counter(
    "papertrader_client_connections", "Client connections accepted.", registry=WORKER
)
CLIENTS_TURNED_AWAY = Counter(
    "papertrader_clients_turned_away",
    "Client connections turned away: the worker is out of service, or the client's "
    "address is over its connection limit.",
    registry=WORKER,
)
# The per-request series (papertrader_requests_total, papertrader_request_duration_seconds,
# papertrader_rate_limit_refusals_total, papertrader_session_cache_lookups_total) are
# REQUEST_FIGURES below: counted as plain integers, turned into series when scraped.
ORDERS_QUEUED = Counter(
    "papertrader_orders_queued", "Orders this worker put on the queue, by side.", ["side"],
    registry=WORKER,
)  # fmt: skip
ORDER_OUTCOMES = Counter(
    "papertrader_order_outcomes",
    "What this worker told its clients about their orders: the order's status (filled, "
    "rejected, open for a resting limit or stop order...) or unknown (no answer in time).",
    ["side", "outcome"],
    registry=WORKER,
)
MASTER_LINK_UP = Gauge(
    "papertrader_master_link_up", "1 while the link to the master is up.", registry=WORKER
)
MASTER_LINK_CONNECTS = Counter(
    "papertrader_master_link_connects", "Links to the master established.", registry=WORKER
)
QUOTE_CACHE_AGE = Gauge(
    "papertrader_quote_cache_age_seconds",
    "Age of the quotes this worker serves (since the master's last update it loaded).",
    registry=WORKER,
)

# -- master --------------------------------------------------------------------------------
LINKED_WORKERS = Gauge(
    "papertrader_linked_workers", "Workers linked to the master now.", registry=MASTER
)
LINK_REQUESTS = Counter(
    "papertrader_link_requests",
    "Requests the master answered over worker links and for getWorkerList, by instruction "
    "and outcome.",
    ["instruction", "outcome"],
    registry=MASTER,
)
LINK_REQUEST_DURATION = Histogram(
    "papertrader_link_request_duration_seconds",
    "Time the master took to answer a forwarded request, by instruction.",
    ["instruction"],
    buckets=LATENCY_BUCKETS,
    registry=MASTER,
)
HANDSHAKES = Counter(
    "papertrader_worker_handshakes",
    "Worker link handshakes, by outcome (accepted, refused).",
    ["outcome"],
    registry=MASTER,
)
ORDERS_DECIDED = Counter(
    "papertrader_orders_decided",
    "Orders the drain decided, by side and status (filled, rejected, open...).",
    ["side", "status"], registry=MASTER,
)  # fmt: skip
ORDER_DRAIN_DURATION = Histogram(
    "papertrader_order_drain_duration_seconds",
    "Time one order drain took (read, apply in PostgreSQL, publish).",
    buckets=DRAIN_BUCKETS,
    registry=MASTER,
)
ORDER_DRAIN_FAILURES = Counter(
    "papertrader_order_drain_failures",
    "Drains postponed because Redis or PostgreSQL was unavailable (or failed).",
    registry=MASTER,
)
ORDER_QUEUE_DEPTH = Gauge(
    "papertrader_order_queue_depth",
    "Orders in the queue after the last drain (waiting for the next one).",
    registry=MASTER,
)
MARKET_UPDATES = Counter(
    "papertrader_market_updates", "Market data updates, by outcome (ok, failed).", ["outcome"],
    registry=MASTER,
)  # fmt: skip
MARKET_FEED_AGE = Gauge(
    "papertrader_market_feed_age_seconds",
    "Seconds since the last good market update (how old the prices are).",
    registry=MASTER,
)


_CODE_NAMES = {int(code): code.name for code in ErrorCode}


def outcome_of(replies: Iterable[Message]) -> str:
    """``ok``, or the error code's name of the failure return among ``replies``."""
    for reply in replies:
        name = reply.instruction.name
        if reply.instruction is Instruction.ERROR or name.endswith("_FAIL"):
            code = reply.args[0] if reply.args else None
            if isinstance(code, int) and code in _CODE_NAMES:
                return _CODE_NAMES[code]
            return "failed"
    return "ok"


class RequestFigures:
    """A worker's per-request counters and latency histogram, kept as plain integers.

    prometheus_client's labelled metrics take a lock and look their child up on
    every call: an eighth of a quote's cost in the worker's profile
    (bench/README.md). A worker is one thread of greenlets, so these are plain
    dict and list updates, turned into the same series when scraped.
    """

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.requests: dict[tuple[str, str], int] = {}
        self.refusals: dict[str, int] = {}
        self.session_lookups = {"hit": 0, "miss": 0}
        #: Per instruction: the count in each bucket (the last is +Inf), and the sum.
        self.durations: dict[str, list[int]] = {}
        self.duration_sums: dict[str, float] = {}

    def observe(self, instruction: str, outcome: str, seconds: float) -> None:
        """One request answered, with its outcome and how long the answer took."""
        self.observe_each((instruction,), outcome, seconds)

    def observe_each(self, instructions: tuple[str, ...], outcome: str, seconds: float) -> None:
        """Requests answered together (a quote's two frames), each with the outcome and
        the time of the whole answer."""
        requests, durations, sums = self.requests, self.durations, self.duration_sums
        bucket = bisect_left(self.buckets, seconds)
        for instruction in instructions:
            key = (instruction, outcome)
            requests[key] = requests.get(key, 0) + 1
            counts = durations.get(instruction)
            if counts is None:
                counts = durations[instruction] = [0] * (len(self.buckets) + 1)
                sums[instruction] = 0.0
            counts[bucket] += 1
            sums[instruction] += seconds
            if outcome == "RATE_LIMITED":
                self.refusals[instruction] = self.refusals.get(instruction, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "papertrader_requests",
            "Client requests answered, by instruction and outcome (ok, or the error code's name).",
            labels=["instruction", "outcome"],
        )
        for (instruction, outcome), count in list(self.requests.items()):
            requests.add_metric([instruction, outcome], count)
        yield requests
        durations = HistogramMetricFamily(
            "papertrader_request_duration_seconds",
            "Time from a request's arrival to its answer being ready, by instruction.",
            labels=["instruction"],
        )
        bounds = [
            floatToGoString(bound)  # type: ignore[no-untyped-call]
            for bound in (*self.buckets, float("inf"))
        ]
        for instruction, counts in list(self.durations.items()):
            running, cumulative = 0, []
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                cumulative.append((bound, running))
            durations.add_metric([instruction], cumulative, self.duration_sums[instruction])
        yield durations
        refusals = CounterMetricFamily(
            "papertrader_rate_limit_refusals",
            "Requests refused with RATE_LIMITED (abuse limits), by instruction.",
            labels=["instruction"],
        )
        for instruction, count in list(self.refusals.items()):
            refusals.add_metric([instruction], count)
        yield refusals
        lookups = CounterMetricFamily(
            "papertrader_session_cache_lookups",
            "Session checks of market-data requests: hit (answered from memory) or miss (Redis).",
            labels=["result"],
        )
        for result, count in self.session_lookups.items():
            lookups.add_metric([result], count)
        yield lookups

    def describe(self) -> Iterator[Metric]:
        """The names, for the registry's duplicate check (no samples needed)."""
        for family in self.collect():
            family.samples = []
            yield family


REQUEST_FIGURES = RequestFigures(LATENCY_BUCKETS)
WORKER.register(REQUEST_FIGURES)


def observe_request(instruction: Instruction, seconds: float, replies: list[Message]) -> None:
    """Count one client request answered by a worker, and how long it took."""
    REQUEST_FIGURES.observe(instruction.name, outcome_of(replies), seconds)


def observe_link_request(instruction: Instruction, seconds: float, reply: Message | None) -> None:
    """Count one request the master answered."""
    outcome = outcome_of([reply]) if reply is not None else "ok"
    LINK_REQUESTS.labels(instruction.name, outcome).inc()
    LINK_REQUEST_DURATION.labels(instruction.name).observe(seconds)


def version() -> str:
    """The installed package's version, for papertrader_build_info."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("papertrader")
    except PackageNotFoundError:
        return "unknown"


def read_at_scrape(gauge: Gauge, read: Callable[[], float | None]) -> None:
    """``gauge`` shows ``read()`` at every scrape (NaN while it is None)."""

    def value() -> float:
        figure = read()
        return float("nan") if figure is None else float(figure)

    gauge.set_function(value)
