"""Every core: one worker served by N processes on the same ports (``worker_processes``).

A gevent worker is one thread: it uses one core, however many the host has.
``pt worker run --processes N`` (default: one per core) starts process 0,
which binds the client and web ports with SO_REUSEPORT, holds the master link
and relays the others' requests over it (``link_relay.py``), then starts
processes 1..N-1 with the same command line: each binds the same ports (the
kernel spreads new connections over them) and serves its clients alone.

What the processes share needs no new mechanism, because it already lives in
Redis: sessions (a session made by one process is found by the others; a
logout is announced on ``pt:sessions:ended`` and every process's session
cache drops it), quotes (each process refreshes its cache from Redis once per
update interval, as separate workers do), orders, history and the abuse
limits. Connection caps (``max_connections``, ``max_connections_per_address``)
hold per process. Only process 0 serves ``/metrics`` and ``/healthz``, with its
own figures (the others would need a port each).

Process 0 restarts a serving process that dies (with back-off); a serving
process whose parent is gone stops by itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable

import gevent
from loguru import logger

from papertrader.config import Settings

#: How often a serving process checks that process 0 is still its parent.
PARENT_CHECK = 1.0
RESTART_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STOP_WAIT = 10.0


def process_count(settings: Settings) -> int:
    """``worker_processes``, 0 meaning one per core."""
    return settings.worker_processes or os.cpu_count() or 1


def reuse_port_listener(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening socket several processes may bind at once (SO_REUSEPORT: the kernel
    spreads connections over them; only processes of the same user may join)."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class ServingProcesses:
    """Process 0's children: started with ``command(index)``, restarted if they die."""

    def __init__(self, count: int, command: Callable[[int], tuple[list[str], dict[str, str]]]):
        self.count = count
        self.command = command
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._failures: dict[int, int] = {}
        self._runner: gevent.Greenlet | None = None
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self._children.values()]

    def start(self) -> None:
        for index in range(1, self.count):
            self._spawn(index)
        if self.count > 1:
            logger.info(f"serving from {self.count} processes: {self.pids} beside {os.getpid()}")
            self._runner = gevent.spawn(self._supervise)

    def _spawn(self, index: int) -> None:
        argv, env = self.command(index)
        self._children[index] = subprocess.Popen(argv, env=env)

    def _supervise(self) -> None:
        restart_at: dict[int, float] = {}
        while not self._stopping:
            gevent.sleep(0.5)
            for index, child in list(self._children.items()):
                if child.poll() is None or self._stopping:
                    continue
                now = time.monotonic()
                if index not in restart_at:
                    failures = self._failures.get(index, 0)
                    delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
                    self._failures[index] = failures + 1
                    restart_at[index] = now + delay
                    logger.warning(
                        f"serving process {index} exited ({child.returncode}); "
                        f"restarting in {delay:g} s"
                    )
                elif now >= restart_at[index]:
                    del restart_at[index]
                    self._spawn(index)

    def stop(self) -> None:
        """SIGTERM every child, then wait for them (SIGKILL after STOP_WAIT)."""
        self._stopping = True
        if self._runner is not None:
            self._runner.kill(block=False)
        for child in self._children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + STOP_WAIT
        for child in self._children.values():
            while child.poll() is None and time.monotonic() < deadline:
                gevent.sleep(0.05)
            if child.poll() is None:
                child.kill()
                child.wait()


def watch_parent(stop: Callable[[], None]) -> gevent.Greenlet:
    """In a serving process: call ``stop`` once process 0 is gone (killed with -9, say)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            gevent.sleep(PARENT_CHECK)
        logger.warning("process 0 of this worker is gone: stopping")
        stop()

    return gevent.spawn(watch)
