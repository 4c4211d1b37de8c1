"""Redis ACL users, one per role: what each process may do in Redis (docs/REDIS.md).

Every process used to connect as Redis's full-rights ``default`` user, so one
compromised worker could read every session, forge one, queue orders for any
account or flush everything. Now:

* ``pt-admin``: everything (the operator: `pt services`, `pt workers
  register/disable/remove`, `pt db migrate`, tests). Never given to a server.
* ``pt-master``: every command on ``pt:*`` keys and channels except the
  dangerous ones (no KEYS, FLUSH*, CONFIG, ACL, DEBUG, SHUTDOWN...). It loads
  the FUNCTION library the workers call.
* ``pt-worker-<name>``: one per registered worker, created by `pt workers
  register`, switched off by `disable` (its connections killed) and deleted by
  `remove`. Only what serving clients takes: read sessions and quotes, append
  (``XADD``) to the order stream and nothing else on it, pop its orders'
  outcomes, read and write the shared history cache and the abuse-limit
  counters, read the login back-off (the master counts it, so a worker
  cannot clear a username's wait), call the master's FUNCTIONs, record a session's last use and
  listen for ended sessions. No SCAN/KEYS, EVAL, FLUSH*, CONFIG, PUBLISH, and
  no writes to sessions, quotes or the order stream's group.
* ``default``: switched off in the private Redis and the Ansible role.

Key permissions: ``%R~`` read only, ``~`` read and write; the order stream
is reachable only through a selector that allows ``XADD`` on that one key.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import redis

from papertrader.store import keys

ADMIN_USER = "pt-admin"
MASTER_USER = "pt-master"
WORKER_PREFIX = "pt-worker-"
#: Replicas log in to their primary as this user (``masteruser``).
REPLICATION_USER = "pt-replication"
#: The Sentinels log in to every data node as this user (``sentinel auth-user``).
SENTINEL_USER = "pt-sentinel"

ADMIN_RULES: tuple[str, ...] = ("~*", "&*", "+@all")

MASTER_RULES: tuple[str, ...] = (
    f"~{keys.PREFIX}*",
    f"&{keys.PREFIX}*",
    "+@all",
    "-@dangerous",  # KEYS, FLUSH*, CONFIG, ACL, DEBUG, SHUTDOWN, MONITOR, CLIENT KILL...
)

#: Exactly what a replica sends its primary to sync (Redis's ACL documentation).
REPLICATION_RULES: tuple[str, ...] = (
    "resetkeys", "resetchannels", "-@all", "+psync", "+replconf", "+ping",
)  # fmt: skip
#: Exactly what a Sentinel sends a data node: watch it (INFO, ROLE, PING, the hello
#: channel) and, in a failover, promote or repoint it (REPLICAOF/SLAVEOF, CONFIG
#: REWRITE, MULTI/EXEC) and cut its clients off (CLIENT KILL, SCRIPT KILL).
SENTINEL_RULES: tuple[str, ...] = (
    "resetkeys", "resetchannels", "&__sentinel__:hello", "-@all",
    "+multi", "+exec", "+slaveof", "+replicaof", "+ping", "+info", "+role",
    "+subscribe", "+publish", "+config|rewrite", "+client|setname", "+client|kill",
    "+script|kill",
)  # fmt: skip

#: What any connection needs: log in, pick the logical database, pipelines.
_CONNECTION = (
    "+auth", "+hello", "+ping", "+select", "+reset", "+quit", "+echo",
    "+client|setname", "+client|getname", "+client|id",
    "+multi", "+exec", "+discard", "+acl|whoami",
)  # fmt: skip
#: Reads (sessions, quotes, cache entries) and the commands the FUNCTIONs call.
_WORKER_COMMANDS = (
    "+get", "+hget", "+hgetall", "+hmget", "+exists", "+pttl", "+ttl",
    "+hset", "+expireat",  # a session's last use (pt:session-seen:*)
    "+blpop", "+lpop",  # its orders' outcomes (its process's result list)
    "+wait",  # an order is kept once a replica has it (redis_min_replicas_ack)
    "+fcall", "+fcall_ro",
    "+subscribe", "+unsubscribe",
    # inside the functions (run under this user's ACL, keys checked):
    "+time", "+set", "+del", "+incrby", "+decrby", "+hincrby", "+hdel",
    "+zadd", "+zrem", "+zrange", "+zcard", "+zremrangebyscore",
    "+sadd", "+srem", "+scard", "+sismember", "+srandmember", "+pexpire",
)  # fmt: skip
WORKER_RULES: tuple[str, ...] = (
    "resetkeys",
    "resetchannels",
    "-@all",
    *_CONNECTION,
    *_WORKER_COMMANDS,
    f"%R~{keys.session('*')}",
    f"%R~{keys.QUOTES}",
    f"%R~{keys.QUOTES_UPDATED}",
    f"~{keys.session_seen('*')}",
    f"~{keys.order_result('*')}",
    f"~{keys.pending_orders('*')}",  # type: ignore[arg-type]
    f"~{keys.HISTORY_CACHE_PATTERN}",
    f"~{keys.RATE_PATTERN}",
    f"%R~{keys.LOGIN_PATTERN}",  # the login back-off: the master counts it
    f"&{keys.SESSIONS_ENDED}",
    f"(%W~{keys.ORDERS} +xadd)",  # append orders; never read, ack, delete or trim them
)


#: One server, or every data node of a primary and its replicas: ACL users do not
#: replicate, so a user is defined on each (the first is the primary: reads ask it).
Nodes = redis.Redis | Sequence[redis.Redis]


def _command(client: redis.Redis, *args: str) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _each(nodes: Nodes) -> list[redis.Redis]:
    return [nodes] if isinstance(nodes, redis.Redis) else list(nodes)


def _on_each(nodes: Nodes, *args: str) -> Any:
    """Run one ACL command on every node; the primary's answer."""
    answers = [_command(node, *args) for node in _each(nodes)]
    return answers[0]


class UsersUnavailable(Exception):
    """The connection may not manage ACL users (not the admin user) or Redis is too old."""


def worker_user(name: str) -> str:
    """The Redis user of the worker registered as ``name``."""
    return f"{WORKER_PREFIX}{name}"


def url_for(base_url: str, user: str, password: str) -> str:
    """``base_url`` (any user, or none) with ``user`` and ``password`` in it instead."""
    parts = urlsplit(base_url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def user_of(url: str) -> str | None:
    """The user name a Redis URL logs in with (None: the default user)."""
    parts = urlsplit(url)
    return unquote(parts.username) if parts.username else None


def set_user(client: Nodes, user: str, password: str, rules: Sequence[str]) -> None:
    """Create or redefine ``user`` (on every node): on, with exactly ``password`` and ``rules``."""
    try:
        _on_each(client, "ACL", "SETUSER", user, "reset", "on", f">{password}", *rules)
    except redis.ResponseError as exc:
        raise UsersUnavailable(f"cannot define the Redis user {user}: {exc}") from None
    save(client)


def disable_user(client: Nodes, user: str) -> bool:
    """Switch ``user`` off and close its connections; False if there is no such user."""
    try:
        if _command(_each(client)[0], "ACL", "GETUSER", user) is None:
            return False
        _on_each(client, "ACL", "SETUSER", user, "off")
        _on_each(client, "CLIENT", "KILL", "USER", user)
    except redis.ResponseError as exc:
        raise UsersUnavailable(f"cannot switch off the Redis user {user}: {exc}") from None
    save(client)
    return True


def enable_user(client: Nodes, user: str) -> bool:
    """Switch ``user`` on again; False if there is no such user."""
    try:
        if _command(_each(client)[0], "ACL", "GETUSER", user) is None:
            return False
        _on_each(client, "ACL", "SETUSER", user, "on")
    except redis.ResponseError as exc:
        raise UsersUnavailable(f"cannot switch on the Redis user {user}: {exc}") from None
    save(client)
    return True


def delete_user(client: Nodes, user: str) -> bool:
    """Delete ``user`` (Redis closes its connections); False if there was none."""
    try:
        deleted = int(_on_each(client, "ACL", "DELUSER", user))
    except redis.ResponseError as exc:
        raise UsersUnavailable(f"cannot delete the Redis user {user}: {exc}") from None
    save(client)
    return deleted > 0


def save(client: Nodes) -> bool:
    """Write the users to each server's ACL file; False when it has none (users then
    last until Redis restarts: configure ``aclfile``, as the private Redis and the
    Ansible role do)."""
    try:
        _on_each(client, "ACL", "SAVE")
    except redis.ResponseError as exc:
        if "ACL file" in str(exc) or "aclfile" in str(exc).lower():
            return False
        raise UsersUnavailable(f"cannot save the Redis users: {exc}") from None
    return True


def _password_in(path: Path, user: str) -> str | None:
    """The password of ``user`` in a URL file written earlier, to keep it across runs."""
    try:
        url = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    parts = urlsplit(url)
    if parts.username is None or unquote(parts.username) != user or not parts.password:
        return None
    return unquote(parts.password)


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600, directory 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = tmp.open("x", encoding="utf-8")
    try:
        tmp.chmod(0o600)
        fd.write(text)
    finally:
        fd.close()
    tmp.replace(path)


def provision(admin: Nodes, base_url: str, user: str, rules: Sequence[str], url_file: Path) -> bool:
    """Define ``user`` with ``rules`` and write its URL (0600) to ``url_file``; True if
    anything was new (the user, or its password).

    The password already in ``url_file`` is kept (a re-run neither locks out a
    running process nor needs its file copied again); else a new random one.
    """
    kept = _password_in(url_file, user)
    existed = kept is not None and _command(_each(admin)[0], "ACL", "GETUSER", user) is not None
    password = kept or secrets.token_urlsafe(32)
    set_user(admin, user, password, rules)
    url = url_for(base_url, user, password)
    try:
        current = url_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        current = None
    if current != url:  # new, or the server moved (a private Redis on another port)
        write_secret(url_file, url + "\n")
        return True
    return not existed


def url_file(state_dir: Path, user: str) -> Path:
    """Where `pt up` and `pt workers register` keep a user's URL on this host (0600)."""
    return state_dir / "redis-users" / f"{user}.url"


def read_url_file(path: Path) -> str:
    """The Redis URL in a file written by :func:`provision` (OSError, ValueError)."""
    url = path.read_text(encoding="utf-8").strip()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{path} does not hold a Redis URL")
    return url
