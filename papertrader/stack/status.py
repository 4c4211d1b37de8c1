"""``pt status``: one look at everything of a state directory, and what is wrong.

Gathered from what each part already publishes, nothing new to run:

* processes: the stack's record (pid, uptime, restarts, last exit) and the
  servers announced in ``run/`` (a master started by hand is shown too); a
  process is healthy when it runs and its ``/healthz`` answers (or, with
  metrics off, its port accepts connections);
* services: the private Redis and PostgreSQL of the state directory, or the
  configured ones (reached with a short timeout);
* from Redis: the workers linked to the master with their client counts (the
  master is asked, as ``pt workers list`` does), the order queue's depth and
  the last drain, the market feed's freshness;
* from PostgreSQL: which master is the active one (``master_epoch``, and
  whether some master holds the leader lock now); each master process is
  marked active or standby.

``problems`` lists, in words, every reason the stack is not fully serving;
``pt status`` exits non-zero when it is not empty.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from papertrader.config import Settings
from papertrader.stack.processes import port_answers
from papertrader.stack.record import Child, StackRecord, load_record
from papertrader.stack.runfiles import RunningServer, running_servers

#: Seconds each network look (Redis, PostgreSQL, the master, a /healthz) may take.
LOOK_TIMEOUT = 3.0
#: A drain older than this many update intervals means the master is not draining.
DRAIN_STALE_INTERVALS = 3


@dataclass(frozen=True)
class StatusSources:
    """Where ``gather`` looks: Redis and PostgreSQL URLs (None: not configured)."""

    redis_url: str | None
    database_url: str | None
    private_services: bool  # the state directory's own Redis/PostgreSQL
    provider: str
    update_interval: float
    #: The Redis Sentinel settings (redis_sentinels...) when Redis is reached through them.
    settings: Settings | None = None


def _uptime(started_at: str | None, now: datetime) -> int | None:
    if not started_at:
        return None
    with contextlib.suppress(ValueError):
        return int((now - datetime.fromisoformat(started_at)).total_seconds())
    return None


def healthz(address: str | None, timeout: float = LOOK_TIMEOUT) -> bool | None:
    """GET http://address/healthz: True for 200, False otherwise; None without metrics."""
    if not address:
        return None
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _child_status(child: Child, now: datetime) -> dict[str, Any]:
    alive = child.alive()
    answering = alive and port_answers(child.host, child.port)
    healthy = healthz(child.metrics) if alive else None
    if child.state == "backoff":
        state = "restarting"
    elif not alive:
        state = "down" if child.state == "running" else child.state
    elif not answering or healthy is False:
        state = "unhealthy"
    else:
        state = "running"
    return {
        "name": child.name,
        "role": child.role,
        "state": state,
        "pid": child.pid if alive else None,
        "uptime_seconds": _uptime(child.started_at, now) if alive else None,
        "address": child.endpoint,
        "answers": answering,
        "healthz": healthy,
        "metrics": child.metrics,
        "restarts": child.restarts,
        "last_exit": child.last_exit,
        "last_exit_at": child.last_exit_at,
        "next_start_at": child.next_start_at,
        "log": child.log,
        "started_by": "pt up",
    }


def _announced_status(server: RunningServer, now: datetime) -> dict[str, Any]:
    host, _, port = server.address.rpartition(":")
    answering = port.isdigit() and port_answers(host.strip("[]"), int(port))
    healthy = healthz(server.metrics)
    return {
        "name": server.name,
        "role": server.role,
        "state": "running" if answering and healthy is not False else "unhealthy",
        "pid": server.pid,
        "uptime_seconds": _uptime(server.started_at, now),
        "address": server.address,
        "answers": answering,
        "healthz": healthy,
        "metrics": server.metrics,
        "restarts": 0,
        "last_exit": None,
        "last_exit_at": None,
        "next_start_at": None,
        "log": server.log,
        "started_by": "hand",
    }


def processes(record: StackRecord | None, state_dir: Path, now: datetime) -> list[dict[str, Any]]:
    """Every master and worker of the state directory, the stack's and the announced ones."""
    found = [] if record is None else [_child_status(c, now) for c in record.children]
    ours = set() if record is None else {c.process for c in record.children if c.process}
    for server in running_servers(state_dir):
        if server.process not in ours:
            found.append(_announced_status(server, now))
    return found


def _services(sources: StatusSources, state_dir: Path) -> dict[str, Any]:
    from papertrader.services import ServicesError, mask_url, services_status

    report: dict[str, Any] = {}
    private: dict[str, Any] = {}
    if sources.private_services:
        try:
            private = services_status(state_dir)
        except ServicesError as exc:
            private = {"error": str(exc)}
    for name, url in (("redis", sources.redis_url), ("postgres", sources.database_url)):
        if name in private:
            entry = dict(private[name])
            entry["external"] = False
        elif url is not None:
            entry = {
                "external": True,
                "url": mask_url(url),
                "running": _reachable(name, url, sources.settings),
            }
        else:
            entry = {"external": False, "initialized": False, "running": False}
        report[name] = entry
    if sources.private_services:
        from papertrader.stack.ha import ha_services_status

        report.update(ha_services_status(state_dir))
    return report


def _redis_client(url: str, settings: Settings | None, timeout: float) -> Any:
    """A short-timeout client (store/redis_connect.py: through the Sentinels when
    ``settings`` name them); a rediss:// URL names its CA."""
    from papertrader.store.redis_connect import connect

    return connect(
        url,
        settings if settings is not None else Settings(),
        socket_connect_timeout=LOOK_TIMEOUT,
        socket_timeout=timeout,
    )


def _reachable(name: str, url: str, settings: Settings | None = None) -> bool:
    if name == "redis":
        import redis

        try:
            client = _redis_client(url, settings, LOOK_TIMEOUT)
        except (ValueError, redis.RedisError):
            return False
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=int(LOOK_TIMEOUT)).close()
        return True
    except psycopg2.Error:
        return False


def active_master(url: str) -> dict[str, Any] | None:
    """The active master as PostgreSQL records it (None if it cannot be read)."""
    import psycopg2

    from papertrader.store import master_epoch

    try:
        conn = psycopg2.connect(url, connect_timeout=int(LOOK_TIMEOUT))
    except psycopg2.Error:
        return None
    try:
        with conn.cursor() as cur:
            active = master_epoch.read_active(cur)
            alive = master_epoch.leader_alive(cur)
    except psycopg2.Error:
        return None  # e.g. migrations not applied yet
    finally:
        conn.close()
    return {
        "epoch": active.epoch,
        "holder": active.holder or None,
        "address": active.address or None,
        "since": active.since.isoformat(timespec="seconds") if active.since else None,
        "lock_held": alive,
    }


def _mark_masters(procs: list[dict[str, Any]], active: dict[str, Any] | None) -> None:
    """Each master process: active (it is the one at the active address) or standby."""
    for proc in procs:
        if proc["role"] != "master" or active is None:
            continue
        is_active = bool(active["lock_held"]) and proc.get("address") == active["address"]
        proc["master_role"] = "active" if is_active else "standby"


def _from_redis(sources: StatusSources, now: datetime) -> dict[str, Any]:
    """Workers, orders and market, as the master publishes them in Redis."""

    from papertrader.store.drain_status import DrainStatusStore
    from papertrader.store.market_status import MarketStatusStore
    from papertrader.store.order_queue import OrderQueue
    from papertrader.store.worker_control import ControlError, ask_master

    assert sources.redis_url is not None
    client = _redis_client(sources.redis_url, sources.settings, LOOK_TIMEOUT + 2)
    try:
        market = (
            MarketStatusStore(client)
            .read()
            .describe(sources.provider, sources.update_interval, now)
        )
        drain = DrainStatusStore(client).read()
        depth = OrderQueue(client).pending_count()
        workers: list[dict[str, Any]] | None
        try:
            answer = ask_master(client, "list", None, LOOK_TIMEOUT)
            workers = _linked_workers(answer)
        except ControlError:
            workers = None  # no master answers
    finally:
        client.close()
    last_drain = None
    if drain is not None:
        last_drain = {
            "at": drain.at.isoformat() if drain.at else None,
            "age_seconds": None if drain.at is None else round((now - drain.at).total_seconds(), 3),
            "applied": drain.applied,
            "duration_ms": drain.duration_ms,
            "ok": drain.ok,
            "error": drain.error,
        }
    return {
        "workers": workers,
        "orders": {"queue_depth": depth, "last_drain": last_drain},
        "market": market,
    }


def _linked_workers(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The master's ``list`` answer (figures by worker UUID) as rows by name."""
    rows = []
    for worker_uuid, figures in answer.get("workers", {}).items():
        rows.append(
            {
                "name": figures.get("name") or worker_uuid,
                "uuid": worker_uuid,
                "region": figures.get("region"),
                "clients": figures.get("clients"),
                "logged_in": figures.get("logged_in"),
                "uptime_seconds": figures.get("uptime_seconds"),
                "error": figures.get("error"),
            }
        )
    return sorted(rows, key=lambda row: str(row["name"]))


def gather(state_dir: Path, sources: StatusSources) -> dict[str, Any]:
    """The whole status document (see the module doc); ``problems`` empty when all is well."""
    import redis

    now = datetime.now(timezone.utc)
    record = load_record(state_dir)
    document: dict[str, Any] = {
        "state_dir": str(state_dir),
        "checked_at": now.isoformat(timespec="seconds"),
        "supervisor": None,
        "processes": processes(record, state_dir, now),
        "services": _services(sources, state_dir),
        "active_master": None,
        "workers": None,
        "orders": None,
        "market": None,
    }
    postgres = [document["services"].get(n, {}) for n in ("postgres", "postgres replica")]
    if sources.database_url is not None and any(p.get("running") for p in postgres):
        document["active_master"] = active_master(sources.database_url)
        _mark_masters(document["processes"], document["active_master"])
    if record is not None:
        document["supervisor"] = {
            "pid": record.supervisor_pid,
            "running": record.supervised(),
            "detached": record.detached,
            "phase": record.phase,
        }
    problems: list[str] = []
    if sources.redis_url is not None and document["services"]["redis"].get("running"):
        try:
            document.update(_from_redis(sources, now))
        except redis.RedisError as exc:
            problems.append(f"Redis cannot be read: {exc}")
    document["problems"] = problems + diagnose(document, record, sources)
    document["ok"] = not document["problems"]
    return document


def diagnose(
    document: dict[str, Any], record: StackRecord | None, sources: StatusSources
) -> list[str]:
    """Every reason the stack does not fully serve, in words."""
    problems: list[str] = []
    procs = document["processes"]
    if not procs:
        problems.append("no master or worker runs for this state directory (start with `pt up`)")
    for proc in procs:
        if proc["state"] == "restarting":
            problems.append(
                f"{proc['name']} is down ({proc['last_exit']}); restarting at "
                f"{proc['next_start_at']}"
            )
        elif proc["state"] in ("down", "stopped", "planned"):
            problems.append(f"{proc['name']} is not running")
        elif proc["state"] == "unhealthy":
            problems.append(f"{proc['name']} runs but does not answer on {proc['address']}")
    if record is not None and record.detached and not record.supervised():
        problems.append(
            "the supervisor is gone: crashed servers are not restarted "
            "(`pt down` then `pt up --detach` brings it back)"
        )
    for name, service in document["services"].items():
        if not service.get("running"):
            problems.append(f"{name} is not running")
    masters = [p for p in procs if p["role"] == "master"]
    active = document.get("active_master")
    if masters and active is not None and not active["lock_held"]:
        problems.append("no master holds the active role (every master is down or starting)")
    workers = document["workers"]
    if masters and workers is None and document["market"] is not None:
        problems.append("the master does not answer requests sent through Redis")
    if workers is not None:
        linked = {w["name"] for w in workers}
        if masters and not linked:  # a worker started by hand may not have announced itself yet
            problems.append("no worker is linked to the master: clients have nowhere to connect")
        for proc in procs:
            if proc["role"] == "worker" and proc["state"] == "running":
                if proc["name"] not in linked:
                    problems.append(f"{proc['name']} runs but is not linked to the master")
    market = document["market"]
    if market is not None and procs:
        if not market["running"]:
            problems.append("no market update yet")
        elif market["stale"]:
            why = f": {market['last_error']}" if market["last_error"] else ""
            problems.append(f"market prices are stale ({market['age_seconds']:.0f} s old){why}")
    orders = document["orders"]
    if orders is not None and masters and orders["last_drain"] is not None:
        drain = orders["last_drain"]
        limit = DRAIN_STALE_INTERVALS * sources.update_interval + 5
        if not drain["ok"]:
            problems.append(f"the last order drain was postponed: {drain['error']}")
        elif drain["age_seconds"] is not None and drain["age_seconds"] > limit:
            problems.append(
                f"no order drain for {drain['age_seconds']:.0f} s "
                f"({orders['queue_depth']} orders queued)"
            )
    return problems
