"""Deployment settings (spec 2.3): one frozen record, checked once, read everywhere.

Settings come from three layers, later ones winning: the defaults below, a flat
TOML file whose keys are the field names, and ``PT_<FIELD_NAME_UPPER>``
environment variables. Every value is checked when the record is built, so a
bad deployment fails at start-up with one line that names the setting, where it
came from and what is allowed, instead of failing hours later in a worker.

The rule of each setting is in rules.py, the parsing and checking of values in
values.py, and the spelling of addresses in addresses.py; this module is the
record and its layering. What other code imports from here stays importable here.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from papertrader.config.addresses import join_host_port, redact_url, split_host_port
from papertrader.config.rules import ENV_PREFIX, RULES, SECRET_SETTINGS, ConfigError
from papertrader.config.values import check, coerce, parse_env, read_assets_file, unknown_setting
from papertrader.limits.rates import Rate
from papertrader.oidc.providers import OidcProvider

__all__ = [
    "DEFAULT_ASSETS",
    "ENV_PREFIX",
    "SECRET_SETTINGS",
    "WORKER_UUID_NAMESPACE",
    "ConfigError",
    "Settings",
    "derive_worker_uuid",
    "join_host_port",
    "load_settings",
    "redact_url",
    "split_host_port",
]

# tomllib is 3.11+; tomli has the same API. Imported by name so type checkers
# targeting 3.10 do not demand tomli's presence on 3.11+ machines.
_toml: Any = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")

DEFAULT_ASSETS: tuple[str, ...] = ("AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META", "SPY")

WORKER_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://papertrader.invalid/worker")
"""Namespace of the UUIDs derived from worker names (see :func:`derive_worker_uuid`)."""

_PATH_KINDS = frozenset({"optpath"})


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
            if key not in RULES:
                raise unknown_setting(key, "override")
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
        for name, rule in RULES.items():
            source = sources.get(name, self._DIRECT)
            value = coerce(name, rule, getattr(self, name), source)
            check(name, rule, value, source)
            object.__setattr__(self, name, value)
        if self.assets_file is not None:
            source = sources.get("assets_file", self._DIRECT)
            object.__setattr__(self, "assets", read_assets_file(self.assets_file, source))


if set(RULES) != {f.name for f in dataclasses.fields(Settings)}:  # a field added without a rule
    raise RuntimeError("papertrader.config: RULES and the Settings fields disagree")


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
            if key not in RULES:
                extra = (
                    " (settings are flat keys; tables are not used)"
                    if isinstance(value, dict)
                    else ""
                )
                raise unknown_setting(key, str(path), extra)
            if RULES[key].kind in _PATH_KINDS and isinstance(value, str) and value:
                candidate = Path(value).expanduser()
                value = candidate if candidate.is_absolute() else path.parent / candidate
            values[key] = value
            sources[key] = str(path)
            file_keys.add(key)

    env_keys: set[str] = set()
    for name, rule in RULES.items():
        var = ENV_PREFIX + name.upper()
        if var in env:
            values[name] = parse_env(name, rule, env[var], var)
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
