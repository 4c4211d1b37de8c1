"""The private Redis server: configure, start, check, stop.

Redis holds the sessions and the pending orders queue, so it runs with an
append-only file (losing queued orders on a crash is not acceptable), binds
only to 127.0.0.1 on a port of its own, and knows only the users of its ACL
file (``users.acl``, ``store/redis_users.py``): ``default`` switched off,
``pt-admin`` for the operator (the record's password), ``pt-master`` for the
master, and one user per registered worker, added by `pt workers register`
(``ACL SAVE`` keeps them in the file). Every start rewrites the three fixed
users' lines and keeps the workers' as they are, so an install from before
the users moves to them on its next start with nothing else to do.

With certificate files (`pt services up --redis-tls-cert/--redis-tls-key/
--redis-tls-ca`, what the Ansible redis role passes) it speaks TLS only: the
port is Redis's ``tls-port`` and the plaintext port is off, so even a local
process cannot talk to it in clear; the URLs are ``rediss://`` naming the CA.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from papertrader.services.errors import ServicesError
from papertrader.services.ports import LOOPBACK, free_port, port_is_free
from papertrader.services.state import (
    RedisRecord,
    ensure_private_dir,
    log_since,
    pid_alive,
    process_name,
    read_pid_file,
    tail,
    write_private_file,
)
from papertrader.store import redis_users

CONFIG_NAME = "redis.conf"
PING_TIMEOUT = 1.0
#: Seconds between SIGTERMs to a server that has not stopped yet.
ASK_AGAIN_SECONDS = 1.0


@dataclass(frozen=True)
class RedisTls:
    """The server's certificate and key, and the CA that issued it (clients verify with it)."""

    cert: str
    key: str
    ca: str

    @classmethod
    def of(cls, record: RedisRecord) -> RedisTls | None:
        if record.tls_cert is None or record.tls_key is None or record.tls_ca is None:
            return None
        return cls(record.tls_cert, record.tls_key, record.tls_ca)


def _quote(value: str) -> str:
    """A value for redis.conf: double-quoted, so paths with spaces survive."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(record: RedisRecord) -> str:
    """The redis.conf text for ``record`` (rewritten on every start, since the port may change)."""
    lines = [
        "# Written by PaperTrader (`pt services up`) on every start; edits are lost.",
        f"bind {LOOPBACK}",
        "protected-mode yes",
        *_listen(record),
        f"aclfile {_quote(record.acl_file)}",
        f"dir {_quote(record.data_dir)}",
        f"pidfile {_quote(record.pid_file)}",
        f"logfile {_quote(record.log_file)}",
        "daemonize yes",
        "appendonly yes",
        "appendfsync everysec",
        # Nothing is ever evicted (sessions, queued orders); the history cache keeps its
        # own ceiling (history_shared_cache_bytes).
        "maxmemory-policy noeviction",
        "databases 16",
        *_replication(record),
    ]
    return "\n".join(lines) + "\n"


def _replication(record: RedisRecord) -> list[str]:
    """Every node can be a replica (a Sentinel turns a returning primary into one), so
    every node knows how to log in to a primary; a replica names its primary."""
    lines = []
    if record.replication_password:
        lines += [
            f"masteruser {redis_users.REPLICATION_USER}",
            f"masterauth {_quote(record.replication_password)}",
        ]
        if RedisTls.of(record) is not None:
            lines.append("tls-replication yes")
    if record.replicaof is not None:
        host, _, port = record.replicaof.rpartition(":")
        lines.append(f"replicaof {host} {port}")
    if record.min_replicas_to_write > 0:
        lines += [
            f"min-replicas-to-write {record.min_replicas_to_write}",
            "min-replicas-max-lag 10",
        ]
    return lines


def render_acl(record: RedisRecord, existing: str = "") -> str:
    """The ACL file: ``default`` off, ``pt-admin`` and ``pt-master`` as the record says,
    then every other user line of ``existing`` (the workers') unchanged."""
    fixed = {
        "default",
        redis_users.ADMIN_USER,
        redis_users.MASTER_USER,
        redis_users.REPLICATION_USER,
        redis_users.SENTINEL_USER,
    }
    lines = [
        # Off: nobody can log in as it. Its rights stay whole: Redis (before redis#14545)
        # replays the MULTI/EXEC blocks of the AOF as this user and silently drops what it
        # may not do, so a restricted default user would lose data at every restart.
        "user default off resetpass ~* &* +@all",
        _acl_line(redis_users.ADMIN_USER, record.password, redis_users.ADMIN_RULES),
        _acl_line(redis_users.MASTER_USER, record.master_password, redis_users.MASTER_RULES),
    ]
    if record.replication_password:
        lines.append(
            _acl_line(
                redis_users.REPLICATION_USER,
                record.replication_password,
                redis_users.REPLICATION_RULES,
            )
        )
    if record.sentinel_password:
        lines.append(
            _acl_line(
                redis_users.SENTINEL_USER, record.sentinel_password, redis_users.SENTINEL_RULES
            )
        )
    for line in existing.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "user" and words[1] not in fixed:
            lines.append(line.strip())
    return "\n".join(lines) + "\n"


def _acl_line(user: str, password: str, rules: tuple[str, ...]) -> str:
    digest = hashlib.sha256(password.encode()).hexdigest()
    return " ".join(["user", user, "on", f"#{digest}", *rules])


def _write_acl(record: RedisRecord) -> None:
    if not record.master_password:
        record.master_password = secrets.token_urlsafe(24)
    path = Path(record.acl_file)
    try:
        existing = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        existing = ""
    write_private_file(path, render_acl(record, existing))


def _listen(record: RedisRecord) -> list[str]:
    """The plaintext port, or (TLS) the TLS port alone: TLS 1.2+, no client certificates
    (clients prove themselves with their password, inside TLS)."""
    tls = RedisTls.of(record)
    if tls is None:
        return [f"port {record.port}"]
    return [
        "port 0",
        f"tls-port {record.port}",
        f"tls-cert-file {_quote(tls.cert)}",
        f"tls-key-file {_quote(tls.key)}",
        f"tls-ca-cert-file {_quote(tls.ca)}",
        "tls-auth-clients no",
        'tls-protocols "TLSv1.2 TLSv1.3"',
        "tls-prefer-server-ciphers yes",
    ]


def new_record(state_dir: Path) -> RedisRecord:
    """A record for a Redis that was never started in ``state_dir``: fresh password, free port."""
    data_dir = state_dir / "redis"
    return RedisRecord(
        port=free_port(),
        password=secrets.token_urlsafe(24),
        master_password=secrets.token_urlsafe(24),
        data_dir=str(data_dir),
        config_file=str(data_dir / CONFIG_NAME),
        pid_file=str(data_dir / "redis.pid"),
        log_file=str(data_dir / "redis.log"),
    )


def client(record: RedisRecord, timeout: float = PING_TIMEOUT, legacy: bool = False) -> redis.Redis:
    """A client for the private server (short timeouts: it is local), as ``pt-admin``;
    ``legacy``: as the ``default`` user a server started before the users had."""
    tls = RedisTls.of(record)
    return redis.Redis(
        host=LOOPBACK,
        port=record.port,
        username="default" if legacy else redis_users.ADMIN_USER,
        password=record.password,
        ssl=tls is not None,
        ssl_ca_certs=None if tls is None else tls.ca,
        ssl_cert_reqs="required",
        ssl_check_hostname=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # redis-py retries refused connections with backoff (seconds) by default;
        # "is it up?" must get a quick no, and our wait loops do the retrying.
        retry=Retry(NoBackoff(), 0),
    )


def server_pid(record: RedisRecord) -> int | None:
    """The pid of the Redis answering on the recorded port with our password, else None.

    Asked from the server itself (INFO) rather than the pid file: the file
    appears a moment after the server answers, and a file can be stale.
    Only our server knows our random password, so an answer proves it is ours.
    """
    for legacy in (False, True):
        conn = client(record, legacy=legacy)
        try:
            info = conn.info("server")
            return int(info["process_id"])
        except (redis.RedisError, KeyError, ValueError, TypeError):
            continue
        finally:
            conn.close()
    return None


def answers_ping(conn: redis.Redis) -> bool:
    """Whether ``conn``'s server answers PING (any Redis error: no); closes ``conn``."""
    try:
        return bool(conn.ping())
    except redis.RedisError:
        return False
    finally:
        conn.close()


def _admin_answers(record: RedisRecord) -> bool:
    return answers_ping(client(record))


def is_running(record: RedisRecord | None) -> bool:
    """Whether our Redis answers on the recorded port (and so which pid it has now)."""
    if record is None:
        return False
    pid = server_pid(record)
    if pid is not None:
        record.pid = pid
    return pid is not None


def start(
    state_dir: Path,
    record: RedisRecord | None,
    redis_server: Path,
    timeout: float,
    tls: RedisTls | None = None,
) -> RedisRecord:
    """Start Redis for ``state_dir`` (or keep the running one) and return the updated record.

    A stopped server is restarted on the same data with the same password; its
    old port is reused when still free, otherwise a new one is picked. ``tls``:
    serve TLS only with these files (a running server without them, or with
    others, is restarted); None keeps what the record has.
    """
    if record is not None and is_running(record):
        if tls is not None and RedisTls.of(record) != tls:
            stop(record, timeout)  # restarted below with the TLS files
        elif _admin_answers(record):
            return record
        else:
            # Started before the ACL users (only ``default`` answers): restart it on the same
            # data, so it comes back with the users file.
            stop(record, timeout)
    if record is None:
        record = new_record(state_dir)
    elif not port_is_free(record.port):
        record.port = free_port()
    if tls is not None:
        record.tls_cert, record.tls_key, record.tls_ca = tls.cert, tls.key, tls.ca
    ensure_private_dir(Path(record.data_dir))
    try:
        return _launch(record, redis_server, timeout)
    except _PortLost:
        # Someone took the port between our check and Redis binding it: once more.
        record.port = free_port()
        return _launch(record, redis_server, timeout)


class _PortLost(Exception):
    """The chosen port was taken before Redis could bind it."""


def _launch(record: RedisRecord, redis_server: Path, timeout: float) -> RedisRecord:
    """Write the config, run the daemon and wait until it answers PING."""
    write_private_file(Path(record.config_file), render_config(record))
    _write_acl(record)
    pid_file = Path(record.pid_file)
    log_file = Path(record.log_file)
    pid_file.unlink(missing_ok=True)  # a stale one would make us trust a dead pid
    log_offset = log_file.stat().st_size if log_file.exists() else 0
    try:
        done = subprocess.run(
            [str(redis_server), record.config_file],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # not killed by the terminal's Ctrl-C
            check=False,
            # Files Redis writes itself (CONFIG REWRITE by a Sentinel: masterauth inside,
            # ACL SAVE) stay private like the ones written here.
            umask=0o077,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServicesError(f"could not run {redis_server}: {exc}") from exc
    if done.returncode != 0:
        raise ServicesError(
            f"redis-server failed to start (exit {done.returncode}): "
            + (done.stderr.strip() or done.stdout.strip() or tail(log_file))
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running(record):
            return record
        pid = read_pid_file(pid_file)
        if pid is not None and not pid_alive(pid):
            break
        time.sleep(0.05)
    new_log = log_since(log_file, log_offset)
    if "Address already in use" in new_log:
        raise _PortLost()
    raise ServicesError(
        f"redis-server did not answer PING on {LOOPBACK}:{record.port} within {timeout:.0f}s; "
        f"its log {log_file} says:\n{new_log.strip() or tail(log_file)}"
    )


def stop(record: RedisRecord, timeout: float) -> bool:
    """Stop Redis (SHUTDOWN, which saves; SIGTERM if that fails); True if it was running.

    A server that does not answer is only sent SIGTERM if the recorded pid is
    alive and still a redis-server: by now a stale pid may belong to an
    unrelated process.
    """
    pid = server_pid(record)
    if pid is None:
        pid = record.pid if record.pid is not None else read_pid_file(Path(record.pid_file))
        name = process_name(pid) if pid is not None else None
        if pid is None or not pid_alive(pid) or (name is not None and "redis" not in name):
            record.pid = None
            return False
        os.kill(pid, signal.SIGTERM)
    else:
        legacy = not _admin_answers(record)  # a server from before the users
        conn = client(record, timeout=max(timeout, PING_TIMEOUT), legacy=legacy)
        try:
            conn.shutdown()
        except redis.RedisError:
            os.kill(pid, signal.SIGTERM)
        finally:
            conn.close()
    deadline = time.monotonic() + timeout
    asked = time.monotonic()
    while pid_alive(pid):
        now = time.monotonic()
        if now > deadline:
            raise ServicesError(
                f"redis-server (pid {pid}) did not stop within {timeout:.0f}s; "
                f"see {record.log_file}"
            )
        if now - asked >= ASK_AGAIN_SECONDS:
            # Redis refuses to stop while it writes its first AOF (a replica right after
            # its initial sync: "Writing initial AOF, can't exit"): ask again.
            os.kill(pid, signal.SIGTERM)
            asked = now
        time.sleep(0.05)
    record.pid = None
    return True


def remove(record: RedisRecord) -> None:
    """Delete the data directory (config, AOF, log) of a stopped server."""
    shutil.rmtree(record.data_dir, ignore_errors=True)
