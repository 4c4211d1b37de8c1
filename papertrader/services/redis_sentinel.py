"""Redis Sentinel processes watching the private Redis (Debian's ``redis-sentinel``).

Three Sentinels (quorum 2) watch the primary under a service name; when it is
down for ``down_after_ms`` they agree, promote its replica and repoint the
rest, and every PaperTrader process asks them where the primary is now
(store/redis_connect.py). Each Sentinel:

* logs in to the data nodes as ``pt-sentinel`` (``sentinel auth-user``), a user
  that may run only what Sentinel sends (store/redis_users.SENTINEL_RULES);
* has its own users (Sentinel speaks ACL since Redis 6.2): ``default`` off,
  ``pt-sentinel-peer`` for the other Sentinels (``sentinel sentinel-user``),
  ``pt-sentinel-client`` for PaperTrader's processes, which may only ask where
  the primary and replicas are (``redis_sentinel_username``), and ``pt-admin``
  for the operator (SENTINEL FAILOVER, SET...). One password serves the three
  (``SentinelRecord.password``: what ``redis_sentinel_password_file`` holds);
* speaks TLS only when the data nodes do (``tls-port``; ``tls-replication yes``
  makes its own connections to nodes and peers TLS too).

Sentinel rewrites its config file as it learns (peers, replicas, the current
primary), so the file is written once, at the first start, and kept after: a
restarted Sentinel must remember a failover it took part in. Files are 0600.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from papertrader.services.errors import ServicesError
from papertrader.services.ports import LOOPBACK, free_port
from papertrader.services.redis_server import RedisTls, _quote, answers_ping
from papertrader.services.state import (
    RedisRecord,
    ensure_private_dir,
    pid_alive,
    read_pid_file,
    tail,
    write_private_file,
)
from papertrader.store import redis_users

CONFIG_NAME = "sentinel.conf"
#: The service name the private Redis is monitored under (redis_sentinel_service).
DEFAULT_SERVICE = "papertrader"
PEER_USER = "pt-sentinel-peer"
CLIENT_USER = "pt-sentinel-client"
#: What a PaperTrader process asks a Sentinel (redis-py's Sentinel: SENTINEL MASTERS,
#: SENTINEL SLAVES; redis-cli and the docs: GET-MASTER-ADDR-BY-NAME), nothing it could change.
CLIENT_RULES: tuple[str, ...] = (
    "resetchannels", "-@all", "+auth", "+hello", "+ping", "+client|setname",
    "+client|getname", "+client|id",
    "+sentinel|masters", "+sentinel|master", "+sentinel|slaves", "+sentinel|replicas",
    "+sentinel|sentinels", "+sentinel|get-master-addr-by-name",
)  # fmt: skip


@dataclass
class SentinelRecord:
    """One Sentinel process: where it listens, its files and the password of its users."""

    port: int
    password: str
    data_dir: str
    pid: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None

    @property
    def config_file(self) -> str:
        return str(Path(self.data_dir) / CONFIG_NAME)

    @property
    def pid_file(self) -> str:
        return str(Path(self.data_dir) / "sentinel.pid")

    @property
    def log_file(self) -> str:
        return str(Path(self.data_dir) / "sentinel.log")

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"


@dataclass(frozen=True)
class Timing:
    """How fast the Sentinels act: ``down_after_ms`` without an answer marks the primary
    down; ``failover_timeout_ms`` bounds one failover attempt (Sentinel's own defaults are
    30 s and 180 s; tests use far less)."""

    down_after_ms: int = 5000
    failover_timeout_ms: int = 60000
    quorum: int = 2


def _user_line(user: str, password: str, rules: tuple[str, ...]) -> str:
    digest = hashlib.sha256(password.encode()).hexdigest()
    return " ".join(["user", user, "on", f"#{digest}", *rules])


def render_config(
    record: SentinelRecord, primary: RedisRecord, service: str, timing: Timing
) -> str:
    """The first sentinel.conf of ``record`` watching ``primary`` as ``service``."""
    tls = RedisTls.of(primary)
    if tls is None:
        listen = [f"port {record.port}"]
    else:
        listen = [
            "port 0",
            f"tls-port {record.port}",
            f"tls-cert-file {_quote(tls.cert)}",
            f"tls-key-file {_quote(tls.key)}",
            f"tls-ca-cert-file {_quote(tls.ca)}",
            "tls-auth-clients no",
            "tls-replication yes",
            'tls-protocols "TLSv1.2 TLSv1.3"',
        ]
    lines = [
        "# Written by PaperTrader at the first start; Sentinel rewrites it as it learns.",
        f"bind {LOOPBACK}",
        "protected-mode yes",
        *listen,
        "daemonize yes",
        f"dir {_quote(record.data_dir)}",
        f"pidfile {_quote(record.pid_file)}",
        f"logfile {_quote(record.log_file)}",
        "user default off resetpass -@all",
        _user_line(PEER_USER, record.password, ("~*", "&*", "+@all")),
        _user_line(CLIENT_USER, record.password, CLIENT_RULES),
        _user_line(redis_users.ADMIN_USER, record.password, ("~*", "&*", "+@all")),
        f"sentinel sentinel-user {PEER_USER}",
        f"sentinel sentinel-pass {_quote(record.password)}",
        f"sentinel monitor {service} {LOOPBACK} {primary.port} {timing.quorum}",
        f"sentinel auth-user {service} {redis_users.SENTINEL_USER}",
        f"sentinel auth-pass {service} {_quote(primary.sentinel_password)}",
        f"sentinel down-after-milliseconds {service} {timing.down_after_ms}",
        f"sentinel failover-timeout {service} {timing.failover_timeout_ms}",
        f"sentinel parallel-syncs {service} 1",
    ]
    return "\n".join(lines) + "\n"


def client(record: SentinelRecord, user: str = CLIENT_USER, timeout: float = 2.0) -> redis.Redis:
    """A client of one Sentinel (as ``pt-sentinel-client`` unless told otherwise)."""
    return redis.Redis(
        host=LOOPBACK,
        port=record.port,
        username=user,
        password=record.password,
        ssl=record.tls_ca is not None,
        ssl_ca_certs=record.tls_ca,
        ssl_cert_reqs="required",
        ssl_check_hostname=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def is_running(record: SentinelRecord) -> bool:
    """Whether the Sentinel answers on its port with its password."""
    return answers_ping(client(record))


def start_sentinel(
    record: SentinelRecord,
    primary: RedisRecord,
    sentinel_binary: Path,
    service: str = DEFAULT_SERVICE,
    timing: Timing = Timing(),
    timeout: float = 30.0,
) -> SentinelRecord:
    """Start the Sentinel of ``record`` (its config written only if it has none yet) and
    wait until it answers and watches ``service``. ``primary`` must have its Sentinel
    user (services/redis_replica.ensure_replication_users)."""
    if not primary.sentinel_password:
        raise ServicesError("the Redis primary has no Sentinel user: ensure_replication_users")
    if is_running(record):
        return record
    record.tls_cert, record.tls_key, record.tls_ca = (
        primary.tls_cert,
        primary.tls_key,
        primary.tls_ca,
    )
    ensure_private_dir(Path(record.data_dir))
    config = Path(record.config_file)
    if not config.exists():
        write_private_file(config, render_config(record, primary, service, timing))
    Path(record.pid_file).unlink(missing_ok=True)
    try:
        done = subprocess.run(
            [str(sentinel_binary), record.config_file],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
            # Sentinel rewrites its config (auth-pass inside) with the process's umask.
            umask=0o077,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServicesError(f"could not run {sentinel_binary}: {exc}") from exc
    if done.returncode != 0:
        raise ServicesError(
            f"redis-sentinel failed to start (exit {done.returncode}): "
            + (done.stderr.strip() or done.stdout.strip() or tail(Path(record.log_file)))
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running(record):
            record.pid = read_pid_file(Path(record.pid_file))
            if record.pid is not None:
                return record
        time.sleep(0.05)
    raise ServicesError(
        f"redis-sentinel did not answer on {record.address} within {timeout:.0f}s; "
        f"its log {record.log_file} says:\n{tail(Path(record.log_file))}"
    )


def start_sentinels(
    primary: RedisRecord,
    sentinel_binary: Path,
    root: Path,
    password: str,
    count: int = 3,
    service: str = DEFAULT_SERVICE,
    timing: Timing = Timing(),
    timeout: float = 30.0,
) -> list[SentinelRecord]:
    """Start ``count`` Sentinels under ``root``/sentinel-N on free ports, all watching
    ``primary``, with one ``password`` (write it to a 0600 file for
    redis_sentinel_password_file), and wait until each knows its peers."""
    records = [
        SentinelRecord(port=free_port(), password=password, data_dir=str(root / f"sentinel-{n}"))
        for n in range(1, count + 1)
    ]
    for record in records:
        start_sentinel(record, primary, sentinel_binary, service, timing, timeout)
    wait_peers(records, service, count - 1, timeout)
    return records


def wait_peers(records: list[SentinelRecord], service: str, peers: int, timeout: float) -> None:
    """Wait until every Sentinel sees ``peers`` others (they meet through the primary's
    hello channel every 2 s), so a quorum can form when the primary dies."""
    deadline = time.monotonic() + timeout
    for record in records:
        while True:
            conn = client(record)
            try:
                seen = len(conn.execute_command("SENTINEL", "SENTINELS", service))  # type: ignore[no-untyped-call]
            except redis.RedisError:
                seen = -1
            finally:
                conn.close()
            if seen >= peers:
                break
            if time.monotonic() > deadline:
                raise ServicesError(
                    f"the Sentinel on {record.address} sees {max(seen, 0)} of {peers} peers "
                    f"after {timeout:.0f}s; see {record.log_file}"
                )
            time.sleep(0.1)


def primary_address(record: SentinelRecord, service: str = DEFAULT_SERVICE) -> str | None:
    """host:port of the primary this Sentinel names for ``service`` (None: it cannot say)."""
    conn = client(record)
    try:
        answer = conn.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)  # type: ignore[no-untyped-call]
    except redis.RedisError:
        return None
    finally:
        conn.close()
    if not answer:
        return None
    host, port = answer
    host = host.decode() if isinstance(host, bytes) else str(host)
    return f"{host}:{int(port)}"


def stop_sentinel(record: SentinelRecord, timeout: float = 10.0) -> bool:
    """Stop the Sentinel (SIGTERM to its recorded pid); True if it was running."""
    pid = record.pid if record.pid is not None else read_pid_file(Path(record.pid_file))
    if pid is None or not pid_alive(pid):
        record.pid = None
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise ServicesError(f"redis-sentinel (pid {pid}) did not stop within {timeout:.0f}s")
        time.sleep(0.05)
    record.pid = None
    return True
