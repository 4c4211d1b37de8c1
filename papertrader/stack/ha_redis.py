"""Redis under ``pt up --ha``: the private Redis, a replica and three Sentinels.

The launchers are ``services/redis_replica.py`` and ``services/redis_sentinel.py``;
this module runs them for a stack and keeps what they started in ``ha.json``
(``ha.py``). Every child then reaches Redis through the Sentinels
(``PT_REDIS_SENTINELS``...; the URLs keep their users and passwords, their
host:port is not used) with ``redis_min_replicas_ack = 1``: a worker calls an
order queued only once the replica has it, so an acknowledged order survives
the primary's loss (docs/OPERATIONS.md, "Redis with Sentinel").

Which node is the primary is the Sentinels' business: after a failover the
supervisor writes the roles the Sentinels report into the records
(``replicaof``), so a node it starts again, or the next ``pt up --ha``, comes
back as a replica of the current primary rather than as a second primary
with stale data.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from papertrader.services import ServicesError, redis_replica, redis_sentinel, redis_server
from papertrader.services.binaries import find_binary
from papertrader.services.state import (
    RedisRecord,
    load_state,
    locked,
    save_state,
    write_private_file,
)
from papertrader.stack.ha import HaServices, load_ha, save_ha
from papertrader.stack.record import StackError

if TYPE_CHECKING:
    from papertrader.stack.plan import Say, StackOptions
    from papertrader.stack.record import StackRecord

#: The Sentinels' password (their client and peer users), for every process: 0600.
PASSWORD_FILE = "sentinel-password"
SENTINELS = 3
#: A primary silent for 3 s is down; a failover takes seconds. Sentinel's defaults (30 s,
#: 3 min) suit a WAN; a trial on one machine wants to see the failover happen.
TIMING = redis_sentinel.Timing(down_after_ms=3000, failover_timeout_ms=15000, quorum=2)


def password_file(state_dir: Path) -> Path:
    return state_dir / PASSWORD_FILE


def _sentinel_password(state_dir: Path) -> str:
    """The Sentinels' password, made once (0600) and kept across runs."""
    path = password_file(state_dir)
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        password = secrets.token_urlsafe(24)
        write_private_file(path, password + "\n")
        return password


def _nodes(state_dir: Path, services: HaServices) -> list[RedisRecord]:
    primary = load_state(state_dir).redis
    return [n for n in (primary, services.redis_replica) if n is not None]


def replicated_redis(options: StackOptions, say: Say) -> dict[str, str]:
    """The replica and the Sentinels (made the first time, started again later); the
    environment every child reaches Redis with."""
    directory = options.state_dir
    binary, sentinel_binary = find_binary("redis-server"), find_binary("redis-sentinel")
    services = load_ha(directory)
    try:
        with locked(directory):
            state = load_state(directory)
            primary = state.redis
            if primary is None:
                raise StackError(f"no private Redis is recorded in {directory}")
            redis_replica.ensure_replication_users(primary)
            save_state(directory, state)
        replica = services.redis_replica
        if replica is not None and replica.replicaof is None:
            # The replica is the primary (a failover): start it so, then the other node.
            replica = redis_server.start(Path(replica.data_dir).parent, replica, binary, 60)
        else:
            replica = redis_replica.start_replica(primary, binary, options.timeout, replica)
        services.redis_replica = replica
        save_ha(directory, services)
        password = _sentinel_password(directory)
        if services.sentinels:
            for sentinel in services.sentinels:
                redis_sentinel.start_sentinel(
                    sentinel, primary, sentinel_binary, timing=TIMING, timeout=options.timeout
                )
            redis_sentinel.wait_peers(
                services.sentinels, redis_sentinel.DEFAULT_SERVICE, SENTINELS - 1, options.timeout
            )
        else:
            services.sentinels = redis_sentinel.start_sentinels(
                primary,
                sentinel_binary,
                directory / "sentinels",
                password,
                count=SENTINELS,
                timing=TIMING,
                timeout=options.timeout,
            )
        save_ha(directory, services)
    except ServicesError as exc:
        raise StackError(f"Redis with Sentinel: {exc}") from None
    first, second = (primary, replica) if replica.replicaof else (replica, primary)
    say(
        f"redis     primary 127.0.0.1:{first.port}, replica 127.0.0.1:{second.port}, "
        f"Sentinels {', '.join(s.address for s in services.sentinels)}"
    )
    return sentinel_environment(directory, services)


def sentinel_environment(state_dir: Path, services: HaServices) -> dict[str, str]:
    """PT_* settings that make a process reach Redis through the Sentinels."""
    return {
        "PT_REDIS_SENTINELS": ",".join(s.address for s in services.sentinels),
        "PT_REDIS_SENTINEL_SERVICE": redis_sentinel.DEFAULT_SERVICE,
        "PT_REDIS_SENTINEL_USERNAME": redis_sentinel.CLIENT_USER,
        "PT_REDIS_SENTINEL_PASSWORD_FILE": str(password_file(state_dir)),
        "PT_REDIS_MIN_REPLICAS_ACK": "1",
    }


def as_settings(environment: dict[str, str]) -> dict[str, Any]:
    """The settings (``Settings.with_overrides``) of ``sentinel_environment``'s variables."""
    return {
        name.removeprefix("PT_").lower(): value
        for name, value in environment.items()
        if name.startswith("PT_REDIS_SENTINEL")
    }


def current_primary(services: HaServices) -> str | None:
    """host:port of the primary as the first Sentinel that answers names it."""
    for sentinel in services.sentinels:
        address = redis_sentinel.primary_address(sentinel)
        if address is not None:
            return address
    return None


def sync_roles(state_dir: Path) -> str | None:
    """Write the roles the Sentinels report into both nodes' records (``replicaof``);
    returns the primary's address (None: no Sentinel answers, nothing changed)."""
    with locked(state_dir):
        services = load_ha(state_dir)
        replica = services.redis_replica
        state = load_state(state_dir)
        primary = state.redis
        address = current_primary(services)
        if replica is None or primary is None or address is None:
            return address
        changed = False
        for node in (primary, replica):
            role = None if address == f"127.0.0.1:{node.port}" else address
            if node.replicaof != role:
                node.replicaof, changed = role, True
        if changed:
            save_state(state_dir, state)
            save_ha(state_dir, services)
        return address


def look_at_redis(record: StackRecord, timeout: float) -> list[str]:
    """The supervisor's look: roles written down, stopped nodes and Sentinels started
    again in their roles. Notes for the log (what it did, what failed)."""
    directory = record.state_dir
    notes: list[str] = []
    address = None
    try:
        address = sync_roles(directory)
    except (ServicesError, OSError) as exc:
        notes.append(f"could not read the Redis roles from the Sentinels: {exc}")
    services = load_ha(directory)
    nodes = _nodes(directory, services)
    running = {n.port for n in nodes if redis_server.is_running(n)}
    binary = None
    # The primary first: a replica started before it would wait for it anyway.
    for node in sorted(nodes, key=lambda n: n.replicaof is not None):
        if node.port in running:
            continue
        if address == f"127.0.0.1:{node.port}" and running:
            # The Sentinels still name it: started now, it would come back as the primary
            # with its own (older) data and the replica, which holds every acknowledged
            # order, would copy it. They promote the replica within down-after-ms.
            notes.append(f"Redis on port {node.port} stopped; waiting for the Sentinels' failover")
            continue
        try:
            binary = binary or find_binary("redis-server")
            started = redis_server.start(Path(node.data_dir).parent, node, binary, timeout)
        except ServicesError as exc:
            notes.append(f"Redis on port {node.port} stopped and could not be started: {exc}")
            continue
        with contextlib.suppress(OSError, ServicesError):
            _save_node(directory, started)
        role = f"a replica of {started.replicaof}" if started.replicaof else "the primary"
        notes.append(f"Redis on port {started.port} stopped; started again as {role}")
    primary = load_state(directory).redis
    for sentinel in services.sentinels:
        if primary is None or redis_sentinel.is_running(sentinel):
            continue
        try:
            redis_sentinel.start_sentinel(
                sentinel, primary, find_binary("redis-sentinel"), timing=TIMING, timeout=timeout
            )
            notes.append(f"the Sentinel on {sentinel.address} stopped; started again")
        except ServicesError as exc:
            notes.append(f"the Sentinel on {sentinel.address} stopped and could not start: {exc}")
    return notes


def _save_node(state_dir: Path, node: RedisRecord) -> None:
    """A restarted node's record (its pid, maybe a new port) back where it came from."""
    with locked(state_dir):
        state = load_state(state_dir)
        if state.redis is not None and state.redis.data_dir == node.data_dir:
            state.redis = node
            save_state(state_dir, state)
            return
        services = load_ha(state_dir)
        services.redis_replica = node
        save_ha(state_dir, services)


def stop_sentinels(record: StackRecord, report: Any = None) -> None:
    """Before the data nodes stop: the roles written down, then the Sentinels stopped (a
    Sentinel watching the primary stop would fail over to the replica meanwhile)."""
    services = load_ha(record.state_dir)
    if not services.sentinels:
        return
    with contextlib.suppress(ServicesError, OSError):
        sync_roles(record.state_dir)
    for sentinel in services.sentinels:
        try:
            stopped = redis_sentinel.stop_sentinel(sentinel)
        except ServicesError as exc:
            stopped, outcome = False, str(exc)
        else:
            outcome = "stopped" if stopped else "was not running"
        if report is not None:
            report(f"sentinel {sentinel.address}", outcome)


def stop_replica(record: StackRecord, timeout: float, report: Any = None) -> None:
    """After the primary: the Redis replica."""
    replica = load_ha(record.state_dir).redis_replica
    if replica is None:
        return
    try:
        outcome = "stopped" if redis_server.stop(replica, timeout) else "was not running"
    except ServicesError as exc:
        raise StackError(f"stopping the Redis replica: {exc}") from None
    if report is not None:
        report("redis replica", outcome)


def redis_summary(state_dir: Path) -> dict[str, Any]:
    """For ``pt up``'s announcement and ``pt status``: the nodes and the Sentinels."""
    services = load_ha(state_dir)
    primary = None
    with contextlib.suppress(ServicesError, OSError):
        primary = current_primary(services)
    return {
        "primary": primary,
        "nodes": [f"127.0.0.1:{n.port}" for n in _nodes(state_dir, services)],
        "sentinels": [s.address for s in services.sentinels],
    }
