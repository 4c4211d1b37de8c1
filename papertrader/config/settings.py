"""Deployment settings (spec 2.3): one frozen record, checked once, read everywhere.

Settings come from three layers, later ones winning: the defaults below, a flat
TOML file whose keys are the field names, and ``PT_<FIELD_NAME_UPPER>``
environment variables. Every value is checked when the record is built, so a
bad deployment fails at start-up with one line that names the setting, where it
came from and what is allowed, instead of failing hours later in a worker.

URLs may carry passwords, so a URL value is never echoed back: error messages
and ``repr(settings)`` show it with the password and query string masked.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import os
import re
import sys
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from papertrader.limits.rates import Rate, parse_rate
from papertrader.oidc.providers import OidcProvider, parse_providers

# tomllib is 3.11+; tomli has the same API. Imported by name so type checkers
# targeting 3.10 do not demand tomli's presence on 3.11+ machines.
_toml: Any = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")

ENV_PREFIX = "PT_"
"""Prefix of the environment variables; ``PT_CONFIG`` names the TOML file."""

DEFAULT_ASSETS: tuple[str, ...] = ("AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META", "SPY")

_SYMBOL_RE = re.compile(r"[A-Z0-9.\-^]{1,12}")
_NAME_RE = re.compile(r"[A-Za-z0-9._\-]{1,64}")
_HOST_PORT_RE = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>[0-9]{1,5})"
)

WORKER_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://papertrader.invalid/worker")
"""Namespace of the UUIDs derived from worker names (see :func:`derive_worker_uuid`)."""
#: A web origin: scheme, host (an IPv6 address in brackets) and an optional port.
_ORIGIN_TEXT = r"https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?::[0-9]{1,5})?"
_ORIGIN_RE = re.compile(_ORIGIN_TEXT)
_ORIGINS_RE = re.compile(rf"{_ORIGIN_TEXT}(?:\s*,\s*{_ORIGIN_TEXT})*")
_FINGERPRINT_RE = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
_CLOCK_RE = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]")
_MAX_SHOWN = 80
_HIDDEN = "<hidden>"
#: Settings whose values are secrets: masked in repr and in error messages.
SECRET_SETTINGS = frozenset({"market_api_key", "smtp_password"})
#: Settings whose bad values are never echoed in errors (they may hold secrets).
_HIDDEN_IN_ERRORS = SECRET_SETTINGS | {"oidc_providers"}


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message is meant for the operator."""

    def __init__(self, message: str, setting: str | None = None, source: str | None = None):
        super().__init__(message)
        self.setting = setting
        self.source = source


@dataclass(frozen=True)
class _Rule:
    """How one setting is parsed and what it may hold; ``allowed`` is shown in errors."""

    # int, float, bool, str, optstr, optpath, optuuid, opthostport, opthostports, optfpr,
    # decimal, assets, rate, providers, zone
    kind: str
    allowed: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the value must be strictly greater than ``low``
    choices: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None  # str values must match it entirely


_PORT = _Rule("int", "a port number from 1 to 65535", 1, 65535)
_HOST = _Rule("str", "a host name or IP address (no spaces)")
_NAME = _Rule("str", "1 to 64 characters from A-Z a-z 0-9 . _ -", pattern=_NAME_RE)
_RATE = _Rule("rate", "N/unit: requests per second, minute, hour or day, e.g. 30/minute")

_RULES: dict[str, _Rule] = {
    "assets": _Rule(
        "assets",
        "symbols of 1 to 12 characters from A-Z 0-9 . - ^, comma-separated, "
        "no duplicates, at least one",
    ),
    "assets_file": _Rule(
        "optpath", "a readable UTF-8 text file, one symbol per line, # starts a comment"
    ),
    "workers": _Rule("int", "a whole number of at least 1", 1),
    "log_memory_entries": _Rule("int", "a whole number of entries, at least 1", 1),
    "log_file": _Rule("optpath", "a file path, or unset for <state_dir>/logs/<process>.log"),
    "log_flush_seconds": _Rule("float", "seconds greater than 0", 0, low_open=True),
    "log_rotation_bytes": _Rule("int", "bytes from 65536 to 68719476736", 65536, 2**36),
    "log_retention_files": _Rule("int", "rotated files kept, 1 to 10000", 1, 10000),
    "log_repeat_limit": _Rule("int", "entries per line of code per 10 s, 1 to 100000", 1, 100000),
    "log_stderr": _Rule("bool", "true or false (also 1/0, yes/no, on/off)"),
    "update_interval": _Rule("float", "seconds between 0.05 and 86400", 0.05, 86400),
    "redis_url": _Rule(
        "optstr",
        "a URL starting with redis://, rediss:// or unix://, or unset for the embedded server",
        prefixes=("redis://", "rediss://", "unix://"),
    ),
    "redis_url_file": _Rule(
        "optpath",
        "a file (0600) holding this process's Redis URL, or unset to use redis_url",
    ),
    "redis_sentinels": _Rule(
        "opthostports",
        "host:port of each Redis Sentinel watching the primary, comma-separated "
        "(e.g. s1:26379,s2:26379,s3:26379), or unset: redis_url names the Redis server",
    ),
    "redis_sentinel_service": _Rule(
        "str",
        "the name the Sentinels monitor the primary under (sentinel monitor NAME ...): "
        "1 to 64 characters from A-Z a-z 0-9 . _ -",
        pattern=_NAME_RE,
    ),
    "redis_sentinel_username": _Rule(
        "optstr", "the user this process logs in to the Sentinels as, or unset: none"
    ),
    "redis_sentinel_password_file": _Rule(
        "optpath",
        "a file (0600) holding the Sentinels' password, or unset when they need none",
    ),
    "redis_min_replicas_ack": _Rule(
        "int",
        "replicas (0 to 16) that must hold an order before a worker reports it queued "
        "(WAIT); 0: do not wait",
        0,
        16,
    ),
    "redis_replica_ack_timeout": _Rule(
        "float", "seconds from 0.01 to 5 a worker waits for the replicas' ack", 0.01, 5
    ),
    "database_url": _Rule(
        "optstr",
        "a URL starting with postgresql:// or postgres://, or unset for the embedded server",
        prefixes=("postgresql://", "postgres://"),
    ),
    "database_owner_url": _Rule(
        "optstr",
        "a URL starting with postgresql:// or postgres://, or unset for database_url "
        "(or the embedded server's owner)",
        prefixes=("postgresql://", "postgres://"),
    ),
    "database_read_url": _Rule(
        "optstr",
        "a URL starting with postgresql:// or postgres:// (a streaming replica, e.g. with "
        "target_session_attrs=prefer-standby), or unset for database_url",
        prefixes=("postgresql://", "postgres://"),
    ),
    "master_host": _HOST,
    "master_port": _PORT,
    "worker_host": _HOST,
    "worker_port": _PORT,
    "worker_processes": _Rule("int", "processes from 0 (one per core) to 256", 0, 256),
    "worker_name": _NAME,
    "worker_uuid": _Rule(
        "optuuid",
        "a UUID other than the nil UUID, e.g. 6f1c2a7e-0b5d-4c1e-9a43-2d7b8e9f0a11, "
        "or unset to derive a stable one from worker_name",
    ),
    "region": _NAME,
    "worker_advertise": _Rule(
        "opthostport",
        "host:port (an IPv6 address as [addr]:port), or unset for worker_host:worker_port",
    ),
    "master_connect": _Rule(
        "opthostports",
        "host:port, or several separated by commas (every master: the active one and its "
        "standbys; an IPv6 address as [addr]:port), or unset for master_host:master_port",
    ),
    "master_advertise": _Rule(
        "opthostport",
        "host:port workers dial to reach this master (an IPv6 address as [addr]:port), "
        "or unset for master_host:master_port",
    ),
    "master_lease_seconds": _Rule("float", "seconds from 2 to 600", 2, 600),
    "starting_cash": _Rule(
        "decimal",
        'an amount >= 0 with at most 2 decimal places, written as a string, e.g. "100000.00"',
        0,
    ),
    "bcrypt_cost": _Rule("int", "a whole number from 4 to 31", 4, 31),
    "session_ttl_seconds": _Rule("int", "whole seconds, at least 1", 1),
    "session_remember_ttl_seconds": _Rule("int", "whole seconds, at least 1", 1),
    "session_ip_check": _Rule("bool", "true or false (also 1/0, yes/no, on/off)"),
    "min_password_length": _Rule("int", "a whole number of characters from 8 to 1024", 8, 1024),
    "min_password_score": _Rule("int", "a zxcvbn strength score from 0 to 4", 0, 4),
    "bcrypt_threads": _Rule("int", "threads from 0 (one per core) to 256", 0, 256),
    "bcrypt_queue": _Rule("int", "waiting password checks, 0 to 100000", 0, 100000),
    "request_deadline_seconds": _Rule("float", "seconds from 1 to 300", 1, 300),
    "max_data_size": _Rule("int", "bytes from 1024 to 16777216 (16 MiB)", 1024, 16 * 1024 * 1024),
    "client_idle_timeout": _Rule("float", "seconds greater than 0", 0, low_open=True),
    "client_preauth_idle_timeout": _Rule("float", "seconds greater than 0", 0, low_open=True),
    "max_request_size": _Rule("int", "bytes from 1024 to 16777216", 1024, 16 * 1024 * 1024),
    "max_connections": _Rule("int", "connections from 1 to 1000000", 1, 1_000_000),
    "max_connections_per_address": _Rule("int", "connections from 1 to 1000000", 1, 1_000_000),
    "client_send_buffer_bytes": _Rule("int", "bytes from 65536 to 1073741824", 65536, 2**30),
    "client_send_timeout": _Rule("float", "seconds greater than 0", 0, low_open=True),
    "web_enabled": _Rule("bool", "true or false (also 1/0, yes/no, on/off)"),
    "web_host": _Rule("optstr", "a host name or IP address, or unset for worker_host"),
    "web_port": _Rule("int", "a port number from 1 to 65535, or 0 for any free port", 0, 65535),
    "web_advertise": _Rule(
        "optstr",
        "an origin such as https://trade.example.org:8443 (scheme, host, optional port), "
        "or unset for https://<worker_advertise host>:<web_port>",
        pattern=_ORIGIN_RE,
    ),
    "web_origins": _Rule(
        "optstr",
        "origins separated by commas, e.g. https://trade.example.org,https://b.example.org, "
        "or unset for the web origins of the workers the master lists",
        pattern=_ORIGINS_RE,
    ),
    "market_provider": _Rule("str", "one of: sim, http, csv", choices=("sim", "http", "csv")),
    "market_seed": _Rule("int", "a whole number"),
    "market_http_api": _Rule("str", "one of: stooq", choices=("stooq",)),
    "market_http_url": _Rule(
        "optstr",
        "a URL starting with http:// or https://, or unset for the API's public address",
        prefixes=("http://", "https://"),
    ),
    "market_api_key": _Rule("optstr", "the API key (a secret: never shown), or unset for none"),
    "market_csv_path": _Rule(
        "optpath", "a CSV file (symbol,time,open,high,low,close,volume), or unset for the sample"
    ),
    "market_timeout": _Rule("float", "seconds from 0.1 to 120", 0.1, 120),
    "history_cache_bytes": _Rule(
        "int", "bytes of history a worker keeps in memory, 0 to 4294967296", 0, 2**32
    ),
    "history_shared_cache_bytes": _Rule(
        "int", "bytes of history shared in Redis, 1048576 to 68719476736", 2**20, 2**36
    ),
    "state_dir": _Rule("optpath", "a directory path, or unset for the user's state directory"),
    "master_gnupg_home": _Rule(
        "optpath", "a directory path, or unset for <state_dir>/gnupg-master"
    ),
    "master_fingerprint": _Rule(
        "optfpr",
        "the master key's fingerprint, 40 hex digits as `pt master keygen` prints it "
        "(needed by workers)",
    ),
    "worker_gnupg_home": _Rule(
        "optpath", "a directory path, or unset for <state_dir>/gnupg-<worker_name>"
    ),
    "worker_key_fingerprint": _Rule(
        "optfpr",
        "a key fingerprint (40 hex digits), or unset for the only key pair in worker_gnupg_home",
    ),
    "handshake_max_skew_seconds": _Rule("int", "whole seconds from 1 to 3600", 1, 3600),
    "tls": _Rule("bool", "true or false (also 1/0, yes/no, on/off); false only on loopback"),
    "tls_cert": _Rule(
        "optpath",
        "a PEM file: the server certificate then its chain, or unset for one issued by "
        "the private CA of <state_dir>/tls",
    ),
    "tls_key": _Rule("optpath", "the PEM private key of tls_cert (set both or neither)"),
    "tls_ca": _Rule(
        "optpath",
        "a PEM file of the CA certificates that issued the servers' certificates, or unset "
        "for <state_dir>/tls/ca.pem plus the system's trust store",
    ),
    "metrics_enabled": _Rule("bool", "true or false (also 1/0, yes/no, on/off)"),
    "metrics_host": _HOST,
    "metrics_port": _PORT,
    "login_rate_per_address": _RATE,
    "register_rate_per_address": _RATE,
    "register_rate_per_email": _RATE,
    "resume_rate_per_address": _RATE,
    "login_failures_before_backoff": _Rule("int", "a whole number from 0 to 1000", 0, 1000),
    "login_backoff_max_seconds": _Rule("int", "whole seconds from 1 to 86400", 1, 86400),
    "oidc_providers": _Rule(
        "providers",
        "a list of {name, issuer, client_id, client_secret?, display_name?, scopes?} tables "
        "(in PT_OIDC_PROVIDERS: the same as a JSON list); issuer an https:// URL",
    ),
    "oidc_clock_skew_seconds": _Rule("int", "whole seconds from 0 to 600", 0, 600),
    "oidc_fresh_seconds": _Rule("int", "whole seconds from 30 to 3600", 30, 3600),
    "oidc_rate_per_address": _RATE,
    "smtp_host": _Rule("optstr", "the mail server's host name, or unset: no mail is sent"),
    "smtp_port": _PORT,
    "smtp_security": _Rule(
        "str", "one of: starttls, tls, none", choices=("starttls", "tls", "none")
    ),
    "smtp_user": _Rule("optstr", "the SMTP user name, or unset to send without logging in"),
    "smtp_password": _Rule("optstr", "the SMTP password (a secret: never shown), or unset"),
    "smtp_sender": _Rule(
        "str", "the From address of PaperTrader's mail, e.g. PaperTrader <noreply@example.org>"
    ),
    "smtp_timeout": _Rule("float", "seconds from 1 to 120", 1, 120),
    "smtp_ca_file": _Rule(
        "optpath", "a PEM file of CA certificates for the mail server, or unset for the system's"
    ),
    "reset_code_minutes": _Rule("int", "whole minutes from 5 to 1440", 5, 1440),
    "email_verification": _Rule("bool", "true or false (also 1/0, yes/no, on/off)"),
    "username_retirement_days": _Rule("int", "whole days from 0 to 3650", 0, 3650),
    "forgot_rate_per_address": _RATE,
    "forgot_rate_per_account": _RATE,
    "reset_rate_per_address": _RATE,
    "max_order_quantity": _Rule(
        "int", "a whole number of units from 1 to 1000000000000", 1, 10**12
    ),
    "max_open_orders": _Rule("int", "a whole number of orders from 1 to 100000", 1, 100_000),
    "equity_snapshot_seconds": _Rule(
        "float", "seconds from 0 (every update interval) to 86400", 0, 86400
    ),
    "market_close": _Rule(
        "str", "a time of day as HH:MM (24 hours), e.g. 16:00", pattern=_CLOCK_RE
    ),
    "market_timezone": _Rule(
        "zone", "an IANA time zone name, e.g. America/New_York, Europe/London or UTC"
    ),
    "max_pending_orders_per_account": _Rule("int", "orders from 1 to 100000", 1, 100_000),
    "drain_lanes": _Rule("int", "a whole number of lanes from 1 to 16", 1, 16),
    "rejected_orders_retention_days": _Rule("int", "whole days from 1 to 36500", 1, 36500),
}

_PATH_KINDS = frozenset({"optpath"})
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, repr=False)
class Settings:
    """Every deployment variable of one PaperTrader process (spec 2.3), already validated.

    Build it with :func:`load_settings`; derive variants (CLI options) with
    :meth:`with_overrides`. Constructing it directly validates too. When
    ``assets_file`` is set the symbols are read from that file and replace
    ``assets``.
    """

    assets: tuple[str, ...] = DEFAULT_ASSETS
    assets_file: Path | None = None
    workers: int = 1
    log_memory_entries: int = 1000
    log_file: Path | None = None
    log_flush_seconds: float = 5.0
    #: The log file is rotated at this size; this many rotated files are kept.
    log_rotation_bytes: int = 10 * 1024 * 1024
    log_retention_files: int = 10
    #: Entries one line of code may log per 10 s; more are counted and summarised.
    log_repeat_limit: int = 20
    #: Copy log entries to stderr too (pt up turns it off: one file per process).
    log_stderr: bool = True
    update_interval: float = 5.0
    redis_url: str | None = None
    #: A file holding the Redis URL, with this process's own Redis user and password
    #: (a worker's, written by `pt workers register`); wins over ``redis_url``.
    redis_url_file: Path | None = None
    #: Redis Sentinel (docs/OPERATIONS.md, "Redis with Sentinel"): when set, the
    #: primary is whichever the Sentinels name for ``redis_sentinel_service``;
    #: redis_url then gives only the user, password, database and TLS (rediss://:
    #: the Sentinels speak TLS too), its host:port is not used.
    redis_sentinels: str | None = None
    redis_sentinel_service: str = "papertrader"
    redis_sentinel_username: str | None = None
    redis_sentinel_password_file: Path | None = None
    #: Durability of an acknowledged order (docs/OPERATIONS.md): a worker tells the
    #: client "queued" only once this many replicas hold it (Redis WAIT), else it
    #: answers "outcome unknown" with the order id.
    redis_min_replicas_ack: int = 0
    redis_replica_ack_timeout: float = 1.0
    database_url: str | None = None
    #: The schema owner's URL: only migrations use it (`pt db migrate`, `pt up`).
    database_owner_url: str | None = None
    #: Where the master reads price history (a streaming replica); None: database_url.
    database_read_url: str | None = None
    master_host: str = "127.0.0.1"
    master_port: int = 2048
    worker_host: str = "127.0.0.1"
    worker_port: int = 2049
    #: Processes serving a worker's ports (SO_REUSEPORT); 0 = one per core.
    worker_processes: int = 0
    #: The worker's name in the master's ``workers`` table and in its log file name.
    worker_name: str = "worker-1"
    #: The worker's identity on the master link; None derives it from ``worker_name``
    #: (:func:`derive_worker_uuid`), so `pt up` registers the UUID the worker will use.
    worker_uuid: str | None = None
    #: Where the worker stands, told to the master and shown in the worker list.
    region: str = "local"
    #: host:port clients should use to reach this worker (behind NAT or a proxy it
    #: differs from the bind address); None means worker_host:worker_port.
    worker_advertise: str | None = None
    #: host:port the worker dials to reach the master, or several separated by commas (the
    #: active master and its standbys: the worker links to whichever is active); None means
    #: master_host:master_port.
    master_connect: str | None = None
    #: host:port workers dial to reach this master (a standby names the active master's
    #: when it refuses a link); None means master_host:master_port.
    master_advertise: str | None = None
    #: How long an active master may go without pinging PostgreSQL before its lock (and
    #: with it the active role) passes to a standby (master/leadership.py).
    master_lease_seconds: float = 10.0
    starting_cash: Decimal = Decimal("100000.00")
    bcrypt_cost: int = 12
    session_ttl_seconds: int = 3600
    session_remember_ttl_seconds: int = 30 * 86400
    session_ip_check: bool = True
    #: Password policy (master/password_policy.py): NFKC characters, and the zxcvbn score.
    min_password_length: int = 10
    min_password_score: int = 3
    #: bcrypt's own pool on the master: threads (0 = one per core) and checks that may wait.
    bcrypt_threads: int = 0
    bcrypt_queue: int = 64
    #: How long a worker waits for the master's answer to a forwarded request; the master
    #: sends it in LINK_WELCOME and drops work whose request is older (master/deadlines.py).
    request_deadline_seconds: float = 10.0
    max_data_size: int = 65536
    client_idle_timeout: float = 300.0
    #: A client that has not presented a valid session is closed sooner when idle.
    client_preauth_idle_timeout: float = 30.0
    #: Largest data field a client (or a worker before its handshake) may send; the
    #: largest legal request, a REGISTER with a 1024-character password, is under 5 KiB.
    max_request_size: int = 8192
    #: Connections one server process holds in all, and from one address (IPv6: a /64).
    max_connections: int = 10_000
    max_connections_per_address: int = 100
    #: Answers a worker keeps for a client before it waits for the client to read them,
    #: and how long it waits before closing a client that does not read.
    client_send_buffer_bytes: int = 64 * 1024
    client_send_timeout: float = 30.0
    #: The website client: every worker serves the page and a WebSocket endpoint
    #: (docs/PROTOCOL.md section 15) on web_host (None: worker_host), web_port.
    web_enabled: bool = True
    web_host: str | None = None
    web_port: int = 8443
    #: The origin browsers use for this worker's page; None derives it (web_origin).
    web_advertise: str | None = None
    #: Origins whose pages may open the WebSocket (comma-separated); None: every
    #: worker's web origin as the master lists them (and this worker's own).
    web_origins: str | None = None
    market_provider: str = "sim"
    market_seed: int = 42
    #: Which quote API the ``http`` provider speaks (papertrader/market/providers/http.py).
    market_http_api: str = "stooq"
    #: Address of that API; None means its public address.
    market_http_url: str | None = None
    #: Key of the quote API, if it needs one. A secret: masked in repr, never logged.
    market_api_key: str | None = None
    #: OHLCV file the ``csv`` provider replays; None means the bundled sample.
    market_csv_path: Path | None = None
    #: Seconds one request to the quote API may take (connect and read each).
    market_timeout: float = 10.0
    #: Bytes of price history each worker keeps in process memory (LRU); 0 = Redis only.
    history_cache_bytes: int = 32 * 1024 * 1024
    #: Ceiling of the history answers all workers share in Redis (oldest evicted first;
    #: sessions and orders are never evicted).
    history_shared_cache_bytes: int = 64 * 1024 * 1024
    state_dir: Path | None = None
    #: The master's GnuPG home (its key pair; `pt master keygen`).
    master_gnupg_home: Path | None = None
    #: A worker pins its master's key: the handshake fails against any other key.
    master_fingerprint: str | None = None
    #: The worker's GnuPG home (its key pair; `pt workers keygen`).
    worker_gnupg_home: Path | None = None
    #: Which key pair of worker_gnupg_home signs; None = the only one there.
    worker_key_fingerprint: str | None = None
    #: How far the worker's handshake time may be from the master's clock.
    handshake_max_skew_seconds: int = 30
    #: TLS on the worker's client and web ports, the master's port and the worker's link
    #: to it (papertrader/tls). false: plaintext, refused on non-loopback addresses.
    tls: bool = True
    #: This server's certificate chain and key (PEM); None: issued by the private CA of
    #: <state_dir>/tls (what `pt up` uses).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: The CAs a worker (and `pt client`) trusts for the master and workers; None: the
    #: private CA of <state_dir>/tls and the system's trust store.
    tls_ca: Path | None = None
    #: Serve /metrics (Prometheus) and /healthz on metrics_host:metrics_port.
    metrics_enabled: bool = False
    #: Where /metrics and /healthz listen: loopback unless a scraper elsewhere needs them.
    metrics_host: str = "127.0.0.1"
    #: Their port; `pt up` gives the master this one and worker N the N-th after it.
    metrics_port: int = 9480
    #: Abuse limits (papertrader/limits): LOGIN attempts per client address (IPv6: per /64),
    login_rate_per_address: Rate = Rate(20, 60)
    #: REGISTER attempts per client address, and per e-mail address,
    register_rate_per_address: Rate = Rate(10, 3600)
    register_rate_per_email: Rate = Rate(3, 3600)
    #: session resumes (LOGIN_SESSION) per client address.
    resume_rate_per_address: Rate = Rate(60, 60)
    #: Failed logins of one username before it must wait 1 s, 2 s, 4 s ... (back-off),
    login_failures_before_backoff: int = 5
    #: and the longest wait (the owner's known addresses never wait).
    login_backoff_max_seconds: int = 300
    #: OpenID Connect providers users may sign in with (papertrader/oidc; README "Signing
    #: in with Google"). Empty: password accounts only.
    oidc_providers: tuple[OidcProvider, ...] = ()
    #: Leeway for the exp/iat of ID tokens, for clocks that differ a little.
    oidc_clock_skew_seconds: int = 60
    #: How recent a provider sign-in must be to prove ownership (account deletion).
    oidc_fresh_seconds: int = 300
    #: Sign-ins with a provider (LOGIN_OIDC) per client address.
    oidc_rate_per_address: Rate = Rate(30, 60)
    #: Mail (password reset, e-mail verification). No host: nothing is mailed, and the
    #: master's log says so when a reset is asked for.
    smtp_host: str | None = None
    smtp_port: int = 587
    #: starttls (port 587), tls (implicit TLS, port 465) or none (loopback relays only).
    smtp_security: str = "starttls"
    smtp_user: str | None = None
    #: A secret: masked in repr, never logged.
    smtp_password: str | None = None
    smtp_sender: str = "PaperTrader <noreply@papertrader.invalid>"
    smtp_timeout: float = 10.0
    smtp_ca_file: Path | None = None
    #: How long a mailed password-reset code works.
    reset_code_minutes: int = 30
    #: Ask new password accounts to confirm their e-mail with a mailed code.
    email_verification: bool = False
    #: Days the username of a deleted account stays unavailable to others.
    username_retirement_days: int = 90
    #: Password-reset requests per client address, and per account asked about,
    forgot_rate_per_address: Rate = Rate(5, 3600)
    forgot_rate_per_account: Rate = Rate(3, 3600)
    #: and attempts to use a reset code per client address.
    reset_rate_per_address: Rate = Rate(10, 3600)
    #: Orders (issue 13): the most units one order may ask for (checked by the worker),
    max_order_quantity: int = 1_000_000_000
    #: the most open (limit and stop) orders one account may have at a time,
    max_open_orders: int = 200
    #: How often the master records every account's equity (0: every update interval).
    equity_snapshot_seconds: float = 300.0
    #: and when day orders end: the first market close (HH:MM in market_timezone)
    #: after the order was accepted.
    market_close: str = "16:00"
    market_timezone: str = "America/New_York"
    #: Orders one account may have waiting for the next drain (limits/pending_orders.py).
    max_pending_orders_per_account: int = 20
    #: Lanes the master's drain applies accounts in at once, each on a database
    #: connection of its own (master/transactions.py): about the cores PostgreSQL has.
    drain_lanes: int = 2
    #: Days a rejected order is kept (its id must be remembered while it could be
    #: replayed after a crash: at least a day); then the master purges it.
    rejected_orders_retention_days: int = 30

    _DIRECT: ClassVar[str] = "Settings(...)"

    def __post_init__(self) -> None:
        self._validate({})

    def __repr__(self) -> str:
        """Like the dataclass repr, but URLs are masked so settings can be logged safely."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "url" in f.name and isinstance(value, str):
                parts.append(f"{f.name}={redact_url(value)!r}")
            elif f.name in SECRET_SETTINGS and value is not None:
                parts.append(f"{f.name}='***'")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    @property
    def worker_id(self) -> uuid.UUID:
        """This worker's UUID: the configured one, else the one derived from its name."""
        if self.worker_uuid is not None:
            return uuid.UUID(self.worker_uuid)
        return derive_worker_uuid(self.worker_name)

    @property
    def worker_client_address(self) -> str:
        """The host:port clients are told to use for this worker."""
        if self.worker_advertise is not None:
            return self.worker_advertise
        return join_host_port(self.worker_host, self.worker_port)

    def web_origin(self, tls: bool, port: int | None = None) -> str:
        """The origin of this worker's page: web_advertise, else https://<host of
        worker_advertise>:<port> (http:// when the port has no TLS); ``port`` is the one
        bound (web_port 0 picks any), web_port if not given."""
        if self.web_advertise is not None:
            return self.web_advertise
        host, _ = split_host_port(self.worker_client_address)
        port = self.web_port if port is None else port
        return ("https://" if tls else "http://") + join_host_port(host, port)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every configured Redis Sentinel; empty: no Sentinel."""
        if self.redis_sentinels is None:
            return []
        return [split_host_port(item) for item in self.redis_sentinels.split(",")]

    @property
    def master_address(self) -> tuple[str, int]:
        """(host, port) a worker connects to first for its master link."""
        return self.master_addresses[0]

    @property
    def master_addresses(self) -> list[tuple[str, int]]:
        """Every master a worker may link to (the active one and the standbys), in order."""
        if self.master_connect is not None:
            return [split_host_port(item) for item in self.master_connect.split(",")]
        return [(self.master_host, self.master_port)]

    @property
    def master_link_address(self) -> str:
        """host:port workers dial to reach this master (master_advertise, else its own)."""
        if self.master_advertise is not None:
            return self.master_advertise
        return join_host_port(self.master_host, self.master_port)

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with some fields replaced (e.g. ``--master-port``), re-validated.

        Giving ``assets`` alone drops ``assets_file``, so the explicit list is
        what takes effect.
        """
        for key in overrides:
            if key not in _RULES:
                raise _unknown_setting(key, "override")
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if "assets" in overrides and overrides.get("assets_file") is None:
            values["assets_file"] = None
        elif "assets" in overrides:
            raise ConfigError(
                "assets (from override): cannot be given together with assets_file; "
                "allowed: one of the two",
                "assets",
                "override",
            )
        values.update(overrides)
        return Settings._build(values, {key: "override" for key in overrides})

    @classmethod
    def _build(cls, values: Mapping[str, Any], sources: Mapping[str, str]) -> Settings:
        """Construct and validate, attributing each error to the layer the value came from."""
        obj = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            object.__setattr__(obj, f.name, values.get(f.name, f.default))
        obj._validate(sources)
        return obj

    def _validate(self, sources: Mapping[str, str]) -> None:
        for name, rule in _RULES.items():
            source = sources.get(name, self._DIRECT)
            value = _coerce(name, rule, getattr(self, name), source)
            _check(name, rule, value, source)
            object.__setattr__(self, name, value)
        if self.assets_file is not None:
            source = sources.get("assets_file", self._DIRECT)
            object.__setattr__(self, "assets", _read_assets_file(self.assets_file, source))


if set(_RULES) != {f.name for f in dataclasses.fields(Settings)}:  # a field added without a rule
    raise RuntimeError("papertrader.config: _RULES and the Settings fields disagree")


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read defaults, then the TOML file, then ``PT_*`` variables (environment wins).

    ``path`` falls back to ``PT_CONFIG``; a file named either way must exist.
    Relative paths inside the TOML file are taken relative to the file's
    directory, so a config file can sit beside its assets list. Unknown keys
    in the file are errors; unknown ``PT_*`` variables are ignored here (the
    commands warn about them: ``config/environment.py``).
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = Path(env[ENV_PREFIX + "CONFIG"]).expanduser()

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    file_keys: set[str] = set()
    if path is not None:
        for key, value in _read_toml(path).items():
            if key not in _RULES:
                extra = (
                    " (settings are flat keys; tables are not used)"
                    if isinstance(value, dict)
                    else ""
                )
                raise _unknown_setting(key, str(path), extra)
            if _RULES[key].kind in _PATH_KINDS and isinstance(value, str) and value:
                candidate = Path(value).expanduser()
                value = candidate if candidate.is_absolute() else path.parent / candidate
            values[key] = value
            sources[key] = str(path)
            file_keys.add(key)

    env_keys: set[str] = set()
    for name, rule in _RULES.items():
        var = ENV_PREFIX + name.upper()
        if var in env:
            values[name] = _parse_env(name, rule, env[var], var)
            sources[name] = var
            env_keys.add(name)

    # The list and the file are two spellings of one setting: the higher layer wins,
    # and one layer giving both is ambiguous.
    for layer in (file_keys, env_keys):
        if {"assets", "assets_file"} <= layer and values.get("assets_file") is not None:
            source = sources["assets_file"]
            raise ConfigError(
                f"assets_file (from {source}): cannot be given together with assets "
                f"(from {sources['assets']}); allowed: one of the two",
                "assets_file",
                source,
            )
    if "assets" in env_keys and "assets_file" not in env_keys:
        values["assets_file"] = None
    return Settings._build(values, sources)


def derive_worker_uuid(name: str) -> uuid.UUID:
    """The stable UUID of a worker that has none configured: uuid5 of its name.

    Deterministic, so `pt up` can register the worker on the master before
    starting it, and a restarted worker keeps its identity.
    """
    return uuid.uuid5(WORKER_UUID_NAMESPACE, name)


def split_host_port(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` as (host, port); ValueError if malformed."""
    match = _HOST_PORT_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not host:port")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not from 1 to 65535")
    return match["v6"] or match["host"], port


def join_host_port(host: str, port: int) -> str:
    """Inverse of :func:`split_host_port`: IPv6 addresses get their brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redact_url(url: str) -> str:
    """Return ``url`` with its password and query string masked, for logs and errors.

    Anything that does not parse as ``scheme://host...`` is hidden entirely: a
    malformed URL may well be a bare password pasted in the wrong place.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return _HIDDEN
    if not parts.scheme or not (parts.netloc or parts.path):
        return _HIDDEN
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    if parts.query:
        shown += "?***"
    return shown


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f'config file "{path}" does not exist', None, str(path)) from None
    except OSError as exc:
        raise ConfigError(
            f'config file "{path}" cannot be read ({exc.strerror or exc})', None, str(path)
        ) from None
    try:
        parsed: dict[str, Any] = _toml.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f'config file "{path}" is not UTF-8 text', None, str(path)) from None
    except _toml.TOMLDecodeError as exc:
        raise ConfigError(
            f'config file "{path}" is not valid TOML: {exc}', None, str(path)
        ) from None
    return parsed


def _unknown_setting(key: str, source: str, extra: str = "") -> ConfigError:
    matches = difflib.get_close_matches(key.lower(), list(_RULES), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(matches)}?" if matches else "; see the list of settings"
    return ConfigError(f'unknown setting "{key}" (from {source}){extra}{hint}', key, source)


def _show(name: str, value: Any) -> str:
    """Render a bad value for an error message; URLs and secrets are masked, long values cut."""
    if name in _HIDDEN_IN_ERRORS:
        return "the value (hidden)"
    if "url" in name:
        shown = redact_url(value) if isinstance(value, str) else _HIDDEN
        return "the value (hidden)" if shown == _HIDDEN else f'"{shown}"'
    if isinstance(value, (str, Path)):
        text = str(value)
        if len(text) > _MAX_SHOWN:
            text = text[:_MAX_SHOWN] + "..."
        return json.dumps(text, ensure_ascii=False)
    text = repr(value) if not isinstance(value, Decimal) else str(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _fail(name: str, rule: _Rule, value: Any, problem: str, source: str) -> ConfigError:
    return ConfigError(
        f"{name} (from {source}): {_show(name, value)} {problem}; allowed: {rule.allowed}",
        name,
        source,
    )


def _parse_env(name: str, rule: _Rule, text: str, var: str) -> Any:
    """Turn an environment string into the field's native type; checks come later."""
    stripped = text.strip()
    kind = rule.kind
    if (
        kind in ("optstr", "optpath", "optuuid", "opthostport", "opthostports", "optfpr")
        and stripped == ""
    ):
        return None  # an empty variable unsets the value from the file
    if kind == "int":
        try:
            return int(stripped, 10)
        except ValueError:
            raise _fail(name, rule, text, "is not a whole number", var) from None
    if kind == "float":
        try:
            return float(stripped)
        except ValueError:
            raise _fail(name, rule, text, "is not a number", var) from None
    if kind == "bool":
        lowered = stripped.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise _fail(name, rule, text, "is not true or false", var)
    if kind == "optpath":
        return Path(stripped).expanduser()
    # Strings, URLs, comma-separated assets and decimals stay text: _coerce parses
    # starting_cash from this text, never through float.
    return stripped


def _coerce(name: str, rule: _Rule, value: Any, source: str) -> Any:
    """Accept the native (TOML or Python) spellings of a value and normalise them."""
    kind = rule.kind
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(name, rule, value, "is not a whole number", source)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(name, rule, value, "is not a number", source)
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _fail(name, rule, value, "is not true or false", source)
        return value
    if kind == "zone":
        if not isinstance(value, str):
            raise _fail(name, rule, value, "is not a string", source)
        try:
            ZoneInfo(value.strip())
        except (ValueError, ZoneInfoNotFoundError):
            raise _fail(name, rule, value, "is not a known time zone", source) from None
        return value.strip()
    if kind == "str" or (kind == "optstr" and value is not None):
        if not isinstance(value, str):
            raise _fail(name, rule, value, "is not a string", source)
        return value
    if kind == "optpath" and value is not None:
        if not isinstance(value, (str, os.PathLike)) or str(value) == "" or "\0" in str(value):
            raise _fail(name, rule, value, "is not a usable path", source)
        return Path(value).expanduser()
    if kind == "optuuid" and value is not None:
        return _coerce_uuid(name, rule, value, source)
    if kind == "opthostport" and value is not None:
        if not isinstance(value, str):
            raise _fail(name, rule, value, "is not a string", source)
        try:
            return join_host_port(*split_host_port(value))
        except ValueError:
            raise _fail(name, rule, value, "is not host:port", source) from None
    if kind == "opthostports" and value is not None:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise _fail(name, rule, value, "is not a list of host:port", source)
        try:
            return ",".join(join_host_port(*split_host_port(str(item).strip())) for item in items)
        except ValueError:
            raise _fail(name, rule, value, "is not host:port[,host:port...]", source) from None
    if kind == "optfpr" and value is not None:
        return _coerce_fingerprint(name, rule, value, source)
    if kind == "decimal":
        return _coerce_decimal(name, rule, value, source)
    if kind == "rate":
        if isinstance(value, Rate):
            return value
        if not isinstance(value, str):
            raise _fail(name, rule, value, "is not a rate", source)
        try:
            return parse_rate(value)
        except ValueError:
            raise _fail(name, rule, value, "is not a rate", source) from None
    if kind == "assets":
        return _coerce_assets(name, rule, value, source)
    if kind == "providers":
        try:
            return parse_providers(value)
        except ValueError as exc:
            raise _fail(name, rule, value, f"is not usable ({exc})", source) from None
    return value


def _coerce_uuid(name: str, rule: _Rule, value: Any, source: str) -> str:
    """Any spelling of a UUID, kept as its canonical lower-case text."""
    if isinstance(value, uuid.UUID):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = uuid.UUID(value.strip())
        except ValueError:
            raise _fail(name, rule, value, "is not a UUID", source) from None
    else:
        raise _fail(name, rule, value, "is not a UUID", source)
    if parsed.int == 0:  # the nil UUID means "no worker" in frame headers
        raise _fail(name, rule, value, "is the nil UUID", source)
    return str(parsed)


def _coerce_fingerprint(name: str, rule: _Rule, value: Any, source: str) -> str:
    """A key fingerprint, spaces allowed, kept as upper-case hex."""
    if not isinstance(value, str):
        raise _fail(name, rule, value, "is not a string", source)
    cleaned = value.strip().replace(" ", "").upper()
    if not _FINGERPRINT_RE.fullmatch(cleaned):
        raise _fail(name, rule, value, "is not a key fingerprint", source)
    return cleaned


def _coerce_decimal(name: str, rule: _Rule, value: Any, source: str) -> Decimal:
    if isinstance(value, float):
        raise _fail(
            name,
            rule,
            value,
            "is a floating-point number, which cannot hold money exactly; "
            f'quote it, e.g. {name} = "100000.00"',
            source,
        )
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            raise _fail(name, rule, value, "is not a decimal number", source) from None
    raise _fail(name, rule, value, "is not a decimal amount", source)


def _coerce_assets(name: str, rule: _Rule, value: Any, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items: Iterable[Any] = [item for item in value.split(",") if item.strip()]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise _fail(name, rule, value, "is not a list of symbols", source)
    symbols = _normalise_symbols(name, rule, ((item, source) for item in items))
    if not symbols:
        raise _fail(name, rule, value, "lists no symbols", source)
    return symbols


def _normalise_symbols(name: str, rule: _Rule, items: Iterable[tuple[Any, str]]) -> tuple[str, ...]:
    """Upper-case, check and de-duplicate symbols; each item carries its own source."""
    seen: list[str] = []
    for item, source in items:
        if not isinstance(item, str):
            raise _fail(name, rule, item, "is not a symbol string", source)
        symbol = item.strip().upper()
        if not _SYMBOL_RE.fullmatch(symbol):
            raise _fail(name, rule, item, "is not a valid symbol", source)
        if symbol in seen:
            raise _fail(name, rule, item, "is listed twice", source)
        seen.append(symbol)
    return tuple(seen)


def _read_assets_file(path: Path, source: str) -> tuple[str, ...]:
    rule = _RULES["assets_file"]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _fail("assets_file", rule, path, f"cannot be read ({reason})", source) from None
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            items.append((entry, f"{path}, line {number}"))
    symbols = _normalise_symbols("assets_file", rule, items)
    if not symbols:
        raise _fail("assets_file", rule, path, "lists no symbols", source)
    return symbols


def _check(name: str, rule: _Rule, value: Any, source: str) -> None:
    """Range and shape checks shared by every layer, on already-typed values."""
    if value is None:
        return
    if rule.kind == "float" and not math.isfinite(value):
        raise _fail(name, rule, value, "is not a finite number", source)
    if rule.kind == "decimal":
        if not value.is_finite():
            raise _fail(name, rule, value, "is not a finite amount", source)
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -2:
            raise _fail(name, rule, value, "has more than 2 decimal places", source)
    if rule.kind in ("int", "float", "decimal"):
        too_low = rule.low is not None and (
            value <= rule.low if rule.low_open else value < rule.low
        )
        if too_low:
            raise _fail(name, rule, value, "is out of range", source)
        if rule.high is not None and value > rule.high:
            raise _fail(name, rule, value, "is out of range", source)
    if rule.kind == "str":
        if not value.strip() or (rule is _HOST and any(ch.isspace() for ch in value)):
            raise _fail(name, rule, value, "is not usable", source)
        if rule.choices and value not in rule.choices:
            raise _fail(name, rule, value, "is not a known choice", source)
    if rule.pattern is not None and isinstance(value, str) and not rule.pattern.fullmatch(value):
        raise _fail(name, rule, value, "is not usable", source)
    if rule.prefixes and not value.startswith(rule.prefixes):
        raise _fail(name, rule, value, f"does not start with {_or_list(rule.prefixes)}", source)


def _or_list(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
