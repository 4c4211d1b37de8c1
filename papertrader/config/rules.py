"""What each deployment setting may hold (spec 2.3): one rule per setting.

A rule says how a setting's value is parsed (its kind) and what range, choices,
prefixes or pattern it must fit; its ``allowed`` text ends every error about the
setting, so a bad deployment fails at start-up with one line that says what to
write instead. ``Settings`` (settings.py) has one field per rule and checks at
import that the two agree; values.py applies the rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENV_PREFIX = "PT_"
"""Prefix of the environment variables; ``PT_CONFIG`` names the TOML file."""

NAME_RE = re.compile(r"[A-Za-z0-9._\-]{1,64}")
#: An OpenPGP key fingerprint: 40 (v4) or 64 (v5) upper-case hex digits.
FINGERPRINT_RE = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
#: A web origin: scheme, host (an IPv6 address in brackets) and an optional port.
_ORIGIN_TEXT = r"https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?::[0-9]{1,5})?"
_ORIGIN_RE = re.compile(_ORIGIN_TEXT)
_ORIGINS_RE = re.compile(rf"{_ORIGIN_TEXT}(?:\s*,\s*{_ORIGIN_TEXT})*")
_CLOCK_RE = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]")
#: Settings whose values are secrets: masked in repr and in error messages.
SECRET_SETTINGS = frozenset({"market_api_key", "smtp_password"})


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message is meant for the operator."""

    def __init__(self, message: str, setting: str | None = None, source: str | None = None):
        super().__init__(message)
        self.setting = setting
        self.source = source


@dataclass(frozen=True)
class Rule:
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


_PORT = Rule("int", "a port number from 1 to 65535", 1, 65535)
HOST = Rule("str", "a host name or IP address (no spaces)")
_NAME = Rule("str", "1 to 64 characters from A-Z a-z 0-9 . _ -", pattern=NAME_RE)
_RATE = Rule("rate", "N/unit: requests per second, minute, hour or day, e.g. 30/minute")

RULES: dict[str, Rule] = {
    "assets": Rule(
        "assets",
        "symbols of 1 to 12 characters from A-Z 0-9 . - ^, comma-separated, "
        "no duplicates, at least one",
    ),
    "assets_file": Rule(
        "optpath", "a readable UTF-8 text file, one symbol per line, # starts a comment"
    ),
    "workers": Rule("int", "a whole number of at least 1", 1),
    "log_memory_entries": Rule("int", "a whole number of entries, at least 1", 1),
    "log_file": Rule("optpath", "a file path, or unset for <state_dir>/logs/<process>.log"),
    "log_flush_seconds": Rule("float", "seconds greater than 0", 0, low_open=True),
    "log_rotation_bytes": Rule("int", "bytes from 65536 to 68719476736", 65536, 2**36),
    "log_retention_files": Rule("int", "rotated files kept, 1 to 10000", 1, 10000),
    "log_repeat_limit": Rule("int", "entries per line of code per 10 s, 1 to 100000", 1, 100000),
    "log_stderr": Rule("bool", "true or false (also 1/0, yes/no, on/off)"),
    "update_interval": Rule("float", "seconds between 0.05 and 86400", 0.05, 86400),
    "redis_url": Rule(
        "optstr",
        "a URL starting with redis://, rediss:// or unix://, or unset for the embedded server",
        prefixes=("redis://", "rediss://", "unix://"),
    ),
    "redis_url_file": Rule(
        "optpath",
        "a file (0600) holding this process's Redis URL, or unset to use redis_url",
    ),
    "redis_sentinels": Rule(
        "opthostports",
        "host:port of each Redis Sentinel watching the primary, comma-separated "
        "(e.g. s1:26379,s2:26379,s3:26379), or unset: redis_url names the Redis server",
    ),
    "redis_sentinel_service": Rule(
        "str",
        "the name the Sentinels monitor the primary under (sentinel monitor NAME ...): "
        "1 to 64 characters from A-Z a-z 0-9 . _ -",
        pattern=NAME_RE,
    ),
    "redis_sentinel_username": Rule(
        "optstr", "the user this process logs in to the Sentinels as, or unset: none"
    ),
    "redis_sentinel_password_file": Rule(
        "optpath",
        "a file (0600) holding the Sentinels' password, or unset when they need none",
    ),
    "redis_min_replicas_ack": Rule(
        "int",
        "replicas (0 to 16) that must hold an order before a worker reports it queued "
        "(WAIT); 0: do not wait",
        0,
        16,
    ),
    "redis_replica_ack_timeout": Rule(
        "float", "seconds from 0.01 to 5 a worker waits for the replicas' ack", 0.01, 5
    ),
    "database_url": Rule(
        "optstr",
        "a URL starting with postgresql:// or postgres://, or unset for the embedded server",
        prefixes=("postgresql://", "postgres://"),
    ),
    "database_owner_url": Rule(
        "optstr",
        "a URL starting with postgresql:// or postgres://, or unset for database_url "
        "(or the embedded server's owner)",
        prefixes=("postgresql://", "postgres://"),
    ),
    "database_read_url": Rule(
        "optstr",
        "a URL starting with postgresql:// or postgres:// (a streaming replica, e.g. with "
        "target_session_attrs=prefer-standby), or unset for database_url",
        prefixes=("postgresql://", "postgres://"),
    ),
    "master_host": HOST,
    "master_port": _PORT,
    "worker_host": HOST,
    "worker_port": _PORT,
    "worker_processes": Rule("int", "processes from 0 (one per core) to 256", 0, 256),
    "worker_name": _NAME,
    "worker_uuid": Rule(
        "optuuid",
        "a UUID other than the nil UUID, e.g. 6f1c2a7e-0b5d-4c1e-9a43-2d7b8e9f0a11, "
        "or unset to derive a stable one from worker_name",
    ),
    "region": _NAME,
    "worker_advertise": Rule(
        "opthostport",
        "host:port (an IPv6 address as [addr]:port), or unset for worker_host:worker_port",
    ),
    "master_connect": Rule(
        "opthostports",
        "host:port, or several separated by commas (every master: the active one and its "
        "standbys; an IPv6 address as [addr]:port), or unset for master_host:master_port",
    ),
    "master_advertise": Rule(
        "opthostport",
        "host:port workers dial to reach this master (an IPv6 address as [addr]:port), "
        "or unset for master_host:master_port",
    ),
    "master_lease_seconds": Rule("float", "seconds from 2 to 600", 2, 600),
    "starting_cash": Rule(
        "decimal",
        'an amount >= 0 with at most 2 decimal places, written as a string, e.g. "100000.00"',
        0,
    ),
    "bcrypt_cost": Rule("int", "a whole number from 4 to 31", 4, 31),
    "session_ttl_seconds": Rule("int", "whole seconds, at least 1", 1),
    "session_remember_ttl_seconds": Rule("int", "whole seconds, at least 1", 1),
    "session_ip_check": Rule("bool", "true or false (also 1/0, yes/no, on/off)"),
    "min_password_length": Rule("int", "a whole number of characters from 8 to 1024", 8, 1024),
    "min_password_score": Rule("int", "a zxcvbn strength score from 0 to 4", 0, 4),
    "bcrypt_threads": Rule("int", "threads from 0 (one per core) to 256", 0, 256),
    "bcrypt_queue": Rule("int", "waiting password checks, 0 to 100000", 0, 100000),
    "request_deadline_seconds": Rule("float", "seconds from 1 to 300", 1, 300),
    "max_data_size": Rule("int", "bytes from 1024 to 16777216 (16 MiB)", 1024, 16 * 1024 * 1024),
    "client_idle_timeout": Rule("float", "seconds greater than 0", 0, low_open=True),
    "client_preauth_idle_timeout": Rule("float", "seconds greater than 0", 0, low_open=True),
    "max_request_size": Rule("int", "bytes from 1024 to 16777216", 1024, 16 * 1024 * 1024),
    "max_connections": Rule("int", "connections from 1 to 1000000", 1, 1_000_000),
    "max_connections_per_address": Rule("int", "connections from 1 to 1000000", 1, 1_000_000),
    "client_send_buffer_bytes": Rule("int", "bytes from 65536 to 1073741824", 65536, 2**30),
    "client_send_timeout": Rule("float", "seconds greater than 0", 0, low_open=True),
    "web_enabled": Rule("bool", "true or false (also 1/0, yes/no, on/off)"),
    "web_host": Rule("optstr", "a host name or IP address, or unset for worker_host"),
    "web_port": Rule("int", "a port number from 1 to 65535, or 0 for any free port", 0, 65535),
    "web_advertise": Rule(
        "optstr",
        "an origin such as https://trade.example.org:8443 (scheme, host, optional port), "
        "or unset for https://<worker_advertise host>:<web_port>",
        pattern=_ORIGIN_RE,
    ),
    "web_origins": Rule(
        "optstr",
        "origins separated by commas, e.g. https://trade.example.org,https://b.example.org, "
        "or unset for the web origins of the workers the master lists",
        pattern=_ORIGINS_RE,
    ),
    "market_provider": Rule("str", "one of: sim, http, csv", choices=("sim", "http", "csv")),
    "market_seed": Rule("int", "a whole number"),
    "market_http_api": Rule("str", "one of: stooq", choices=("stooq",)),
    "market_http_url": Rule(
        "optstr",
        "a URL starting with http:// or https://, or unset for the API's public address",
        prefixes=("http://", "https://"),
    ),
    "market_api_key": Rule("optstr", "the API key (a secret: never shown), or unset for none"),
    "market_csv_path": Rule(
        "optpath", "a CSV file (symbol,time,open,high,low,close,volume), or unset for the sample"
    ),
    "market_timeout": Rule("float", "seconds from 0.1 to 120", 0.1, 120),
    "history_cache_bytes": Rule(
        "int", "bytes of history a worker keeps in memory, 0 to 4294967296", 0, 2**32
    ),
    "history_shared_cache_bytes": Rule(
        "int", "bytes of history shared in Redis, 1048576 to 68719476736", 2**20, 2**36
    ),
    "state_dir": Rule("optpath", "a directory path, or unset for the user's state directory"),
    "master_gnupg_home": Rule("optpath", "a directory path, or unset for <state_dir>/gnupg-master"),
    "master_fingerprint": Rule(
        "optfpr",
        "the master key's fingerprint, 40 hex digits as `pt master keygen` prints it "
        "(needed by workers)",
    ),
    "worker_gnupg_home": Rule(
        "optpath", "a directory path, or unset for <state_dir>/gnupg-<worker_name>"
    ),
    "worker_key_fingerprint": Rule(
        "optfpr",
        "a key fingerprint (40 hex digits), or unset for the only key pair in worker_gnupg_home",
    ),
    "handshake_max_skew_seconds": Rule("int", "whole seconds from 1 to 3600", 1, 3600),
    "tls": Rule("bool", "true or false (also 1/0, yes/no, on/off); false only on loopback"),
    "tls_cert": Rule(
        "optpath",
        "a PEM file: the server certificate then its chain, or unset for one issued by "
        "the private CA of <state_dir>/tls",
    ),
    "tls_key": Rule("optpath", "the PEM private key of tls_cert (set both or neither)"),
    "tls_ca": Rule(
        "optpath",
        "a PEM file of the CA certificates that issued the servers' certificates, or unset "
        "for <state_dir>/tls/ca.pem plus the system's trust store",
    ),
    "metrics_enabled": Rule("bool", "true or false (also 1/0, yes/no, on/off)"),
    "metrics_host": HOST,
    "metrics_port": _PORT,
    "login_rate_per_address": _RATE,
    "register_rate_per_address": _RATE,
    "register_rate_per_email": _RATE,
    "resume_rate_per_address": _RATE,
    "login_failures_before_backoff": Rule("int", "a whole number from 0 to 1000", 0, 1000),
    "login_backoff_max_seconds": Rule("int", "whole seconds from 1 to 86400", 1, 86400),
    "oidc_providers": Rule(
        "providers",
        "a list of {name, issuer, client_id, client_secret?, display_name?, scopes?} tables "
        "(in PT_OIDC_PROVIDERS: the same as a JSON list); issuer an https:// URL",
    ),
    "oidc_clock_skew_seconds": Rule("int", "whole seconds from 0 to 600", 0, 600),
    "oidc_fresh_seconds": Rule("int", "whole seconds from 30 to 3600", 30, 3600),
    "oidc_rate_per_address": _RATE,
    "smtp_host": Rule("optstr", "the mail server's host name, or unset: no mail is sent"),
    "smtp_port": _PORT,
    "smtp_security": Rule(
        "str", "one of: starttls, tls, none", choices=("starttls", "tls", "none")
    ),
    "smtp_user": Rule("optstr", "the SMTP user name, or unset to send without logging in"),
    "smtp_password": Rule("optstr", "the SMTP password (a secret: never shown), or unset"),
    "smtp_sender": Rule(
        "str", "the From address of PaperTrader's mail, e.g. PaperTrader <noreply@example.org>"
    ),
    "smtp_timeout": Rule("float", "seconds from 1 to 120", 1, 120),
    "smtp_ca_file": Rule(
        "optpath", "a PEM file of CA certificates for the mail server, or unset for the system's"
    ),
    "reset_code_minutes": Rule("int", "whole minutes from 5 to 1440", 5, 1440),
    "email_verification": Rule("bool", "true or false (also 1/0, yes/no, on/off)"),
    "username_retirement_days": Rule("int", "whole days from 0 to 3650", 0, 3650),
    "forgot_rate_per_address": _RATE,
    "forgot_rate_per_account": _RATE,
    "reset_rate_per_address": _RATE,
    "max_order_quantity": Rule("int", "a whole number of units from 1 to 1000000000000", 1, 10**12),
    "max_open_orders": Rule("int", "a whole number of orders from 1 to 100000", 1, 100_000),
    "equity_snapshot_seconds": Rule(
        "float", "seconds from 0 (every update interval) to 86400", 0, 86400
    ),
    "market_close": Rule("str", "a time of day as HH:MM (24 hours), e.g. 16:00", pattern=_CLOCK_RE),
    "market_timezone": Rule(
        "zone", "an IANA time zone name, e.g. America/New_York, Europe/London or UTC"
    ),
    "max_pending_orders_per_account": Rule("int", "orders from 1 to 100000", 1, 100_000),
    "drain_lanes": Rule("int", "a whole number of lanes from 1 to 16", 1, 16),
    "rejected_orders_retention_days": Rule("int", "whole days from 1 to 36500", 1, 36500),
}
