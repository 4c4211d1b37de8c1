"""Every Redis key PaperTrader uses, named in one place (docs/REDIS.md explains each).

All keys start with ``pt:`` so `redis-cli --scan --pattern 'pt:*'` shows
everything of ours, and nothing else on a shared Redis is touched.
"""

from __future__ import annotations

PREFIX = "pt:"


#: Hash: one session (account_id, username, client_ip, remember, expires_at, created_at).
#: TTL = expiry.
def session(session_hex: str) -> str:
    return f"{PREFIX}session:{session_hex}"


#: Hash: when and from where a session was last used (``at`` ISO time, ``ip``), for its
#: owner's session list; written by workers at most once a minute per session. Same expiry
#: as the session.
def session_seen(session_hex: str) -> str:
    return f"{PREFIX}session-seen:{session_hex}"


#: Set of the session ids of one account, so logout-everywhere and audits can find them.
def account_sessions(account_id: int) -> str:
    return f"{PREFIX}account:{account_id}:sessions"


#: Pub/sub channel: the hex id of each session ended by logout, so workers drop
#: it from their in-memory session cache at once.
SESSIONS_ENDED = f"{PREFIX}sessions:ended"

#: Hash: symbol -> JSON quote {symbol, open, high, low, close, volume, time}, decimals as strings.
QUOTES = f"{PREFIX}quotes"

#: String: ISO time of the last market update, written after QUOTES.
QUOTES_UPDATED = f"{PREFIX}quotes:updated"

#: String: the highest epoch of an active master seen (its fencing token, migration 0008),
#: set at its take-over; the master's writes of quotes and order outcomes are refused when
#: it is later than their own, so a deposed master that wakes up writes nothing here either.
MASTER_EPOCH = f"{PREFIX}master:epoch"

#: Stream: pending buy and sell orders, drained by the master once per update interval.
ORDERS = f"{PREFIX}orders"

#: Consumer group of the master on ORDERS; its pending list survives a crash.
ORDERS_GROUP = "master"

#: The master's consumer name in ORDERS_GROUP (one master: a fixed name, so it finds its
#: own unacknowledged orders again after a restart).
ORDERS_CONSUMER = "master"


#: Sorted set: the orders of one account waiting for the next drain (order id hex -> ms
#: reserved), capped at max_pending_orders_per_account (``limits/pending_orders.py``).
#: Workers add (before XADD), the master removes after the drain decided them.
def pending_orders(account_id: int) -> str:
    return f"{PREFIX}orders:pending:{account_id}"


#: List holding the JSON outcome of one order, for the worker waiting on it. TTL 1 hour.
def order_result(reply_hex: str) -> str:
    """The result list of one queued order: named by the random ``reply`` id the worker
    queued it with (by the order id for entries without one). Workers need only BLPOP
    on this family (``pt:order:*``); the master writes it."""
    return f"{PREFIX}order:{reply_hex}:result"


#: Hash: live figures of a connected worker (name, region, address, clients, started_at).
def worker_live(worker_uuid_hex: str) -> str:
    return f"{PREFIX}worker:{worker_uuid_hex}"


#: Set of the UUIDs of the workers connected to the master right now.
WORKERS_CONNECTED = f"{PREFIX}workers:connected"

#: Hash: the market feed's health (provider, api, last_update, last_attempt, ok, last_error),
#: written by the master after each update attempt, read by `pt market status`.
MARKET_STATUS = f"{PREFIX}market:status"

#: Hash: the last order drain (at, applied, duration_ms, ok, error), written by the master
#: after each drain, read by `pt status`.
ORDERS_DRAIN = f"{PREFIX}orders:drain"

#: String (counter): requests sent to the quote API (retries included), INCRBY by the master.
MARKET_API_CALLS = f"{PREFIX}market:api_calls"

#: String (counter): price-history reads the master made in PostgreSQL; the worker cache
#: exists to keep it flat (tests and `pt market status` read it).
HISTORY_QUERIES = f"{PREFIX}history:queries"

#: Glob matching every cached history answer and the cache's index (deleted after a
#: backfill changes the past).
HISTORY_CACHE_PATTERN = f"{PREFIX}history:cache:*"

#: Sorted set: every shared history entry by the time it was put (ms, Redis clock); the
#: oldest are evicted first when the cache passes history_shared_cache_bytes.
HISTORY_CACHE_INDEX = f"{PREFIX}history:cache:~index"

#: Hash: shared history entry key -> the bytes it counts for (value + key + overhead).
HISTORY_CACHE_SIZES = f"{PREFIX}history:cache:~sizes"

#: String (counter): the bytes the shared history entries count for, at most the ceiling.
HISTORY_CACHE_BYTES = f"{PREFIX}history:cache:~bytes"


#: String: one cached history answer, shared by all workers. ``kind`` is day, week, month,
#: year, all or predicted; ``argument`` the date (ISO) or the horizon. TTL: the end of the
#: update interval while the range is still open, longer for closed periods.
def history_cache(kind: str, symbol: str, argument: str) -> str:
    return f"{PREFIX}history:cache:{kind}:{symbol}:{argument}"


#: Pub/sub channel: `pt workers` commands ask the running master to boot a worker or to
#: fetch live figures from it (JSON requests; papertrader.store.worker_control).
WORKERS_CONTROL = f"{PREFIX}workers:control"


#: List holding the master's JSON answer to one control request. TTL 60 s.
def worker_control_reply(request_hex: str) -> str:
    return f"{PREFIX}workers:control:{request_hex}:reply"


#: Glob of every rate-limit key (abuse limits, ``papertrader/limits``). Workers write them;
#: an ACL user of a worker needs read and write on this pattern.
RATE_PATTERN = f"{PREFIX}rate:*"


#: String: the GCRA theoretical arrival time (ms, Redis clock) of one limit rule and
#: subject, e.g. ``pt:rate:login-ip:203.0.113.7``. Expires when the budget is full again.
def rate(rule: str, subject: str) -> str:
    return f"{PREFIX}rate:{rule}:{subject}"


#: Glob of the login back-off's keys. The master writes them (it counts each password
#: check it makes, so a worker that skipped its own check gains nothing); a worker's ACL
#: user may only read them, through the read-only ``pt_login_wait`` (``FCALL_RO``).
LOGIN_PATTERN = f"{PREFIX}login:*"


#: Hash: failed logins of one username (hashed), ``n`` and ``until`` (ms); expires an hour
#: after the last failure or at the end of the wait (``limits/backoff.py``).
def login_failures(user_subject: str) -> str:
    return f"{PREFIX}login:fail:{user_subject}"


#: Set: the addresses that logged in to one username (hashed) successfully in the last 30
#: days; they skip the username's back-off wait.
def login_known_addresses(user_subject: str) -> str:
    return f"{PREFIX}login:known:{user_subject}"


#: Hash: failed logins of one username (hashed) from one of its known addresses, ``n`` and
#: ``until`` (ms), as ``login_failures``: a known address skips the username's wait but
#: has this one of its own, so a guesser claiming the owner's address waits too.
def login_known_failures(user_subject: str, address_subject: str) -> str:
    return f"{PREFIX}login:known-fail:{user_subject}:{address_subject}"


#: String: an OpenID Connect nonce already used in a sign-in (SHA-256 hex of the nonce and
#: issuer), kept until the ID token that carried it expires, so a replayed token is refused.
def oidc_nonce(digest_hex: str) -> str:
    return f"{PREFIX}oidc:nonce:{digest_hex}"


#: String: the id of the last ``pt:orders`` entry queued before orders carried their
#: session (set once, by the first master that checks sessions at the drain). Entries
#: up to it are applied without a session check; any later one without a session is
#: rejected. Workers cannot write it.
ORDERS_BEFORE_SESSIONS = f"{PREFIX}orders:before-sessions"
