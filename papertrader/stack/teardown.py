"""Stopping a stack: what runs for a state directory, in order, however it was started.

Used by the supervisor when it stops (SIGTERM, Ctrl-C, a failed start) and by
``pt down`` when no supervisor is left to ask. The order: every worker at
once (they hold the clients; stopping them together keeps ``pt down`` short),
then the master (which finishes its current update and drain), then any
server still announced in ``run/`` (one an operator started by hand with
``--state-dir``), then the gpg-agents of the stack's GnuPG homes (a server
stops its own, but one killed and not restarted cannot), then Redis and
PostgreSQL if this stack started them (under ``pt up --ha``: the Sentinels
first, the replicas after their primaries), and the record last, so an
interrupted stop can be run again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from papertrader.stack.ha import stop_ha_services, stop_ha_watchers
from papertrader.stack.processes import terminate
from papertrader.stack.record import Child, StackError, StackRecord, remove_record
from papertrader.stack.runfiles import RunningServer, running_servers

Report = Callable[[str, str], None]


def _together(items: list[Child], stop: Callable[[Child], str]) -> list[tuple[str, str]]:
    """Stop ``items`` in parallel; outcomes in the items' order."""
    outcomes: dict[str, str] = {}

    def one(child: Child) -> None:
        outcomes[child.name] = stop(child)

    threads = [threading.Thread(target=one, args=(c,), daemon=True) for c in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [(c.name, outcomes.get(c.name, "unknown")) for c in items]


def stop_announced(
    state_dir_record: StackRecord, timeout: float, report: Report | None
) -> dict[str, str]:
    """Stop servers announced in ``run/`` that the record does not account for."""
    ours = {c.process for c in state_dir_record.children if c.process is not None}
    strays: list[RunningServer] = [
        s for s in running_servers(state_dir_record.state_dir) if s.process not in ours
    ]
    strays.sort(key=lambda s: s.role == "master")  # workers first
    stopped: dict[str, str] = {}
    for server in strays:
        label = f"{server.name} (pid {server.pid})"
        stopped[label] = terminate(server.process, timeout)
        if report is not None:
            report(label, stopped[label])
    return stopped


def stop_agents_of(state_dir: Path) -> None:
    """Stop the gpg-agents of the stack's own GnuPG homes (``<state_dir>/gnupg-*``, where
    ``pt up`` keeps them), once their servers are stopped. A server that stops stops its
    own agent; one killed (SIGKILL, a crash) and not started again leaves it running
    after the stack is gone. Only homes with an agent's socket are asked."""
    from papertrader.keyring import KeyringError, stop_agent

    for home in sorted(state_dir.glob("gnupg-*")):
        if (home / "S.gpg-agent").exists():
            try:
                stop_agent(home)
            except KeyringError:  # its short path is taken by something else: leave it
                pass


def stop_services_of(record: StackRecord, timeout: float, report: Report | None) -> None:
    """Stop Redis and PostgreSQL if this stack started them (else they are someone else's)."""
    if not record.services_started:
        return
    from papertrader.services import ServicesError, stop_services

    try:
        result = stop_services(record.state_dir, timeout=timeout)
    except ServicesError as exc:
        raise StackError(f"stopping the services: {exc}") from None
    if report is not None:
        for name, was_running in result.items():
            report(name, "stopped" if was_running else "was not running")


def teardown(
    record: StackRecord,
    stop: Callable[[Child], str],
    timeout: float,
    report: Report | None = None,
    forget: bool = True,
) -> None:
    """Stop everything of ``record`` in order (module doc); remove the record if ``forget``."""
    record.phase = "stopping"
    workers = [c for c in record.children if c.role != "master"]
    masters = [c for c in record.children if c.role == "master"]
    for group in (workers, masters):
        for name, outcome in _together(group, stop):
            if report is not None:
                report(name, outcome)
    stop_announced(record, timeout, report)
    stop_agents_of(record.state_dir)
    stop_ha_watchers(record, report)
    stop_services_of(record, timeout, report)
    stop_ha_services(record, timeout, report)
    if forget:
        remove_record(record.state_dir)
