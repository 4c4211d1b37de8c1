"""Free loopback ports for the private servers.

The ports are picked by the operating system (bind to port 0) so two state
directories, or a machine-wide Redis on 6379 and PostgreSQL on 5432, never
collide with ours. There is a small window between picking a port and the
server binding it; the callers retry the start once on a new port if that
window is ever lost.

Within one process the window would be lost every few thousand picks without
help: a port picked and released is free again, and the kernel hands it out
again now and then (4 in 20,000 back-to-back pairs here), so two servers
planned together (a stack's Redis and PostgreSQL, a test's two workers) got
the same port and the second could not listen. ``free_port`` therefore never
hands out a port it handed out recently in this process.
"""

from __future__ import annotations

import socket
import threading
from collections import deque

LOOPBACK = "127.0.0.1"

#: How many of this process's recent picks ``free_port`` will not repeat: far
#: more than a stack or a test plans at once, far fewer than the ~28,000
#: ephemeral ports the kernel chooses from.
RECENT_PICKS = 4096

_recent: deque[int] = deque(maxlen=RECENT_PICKS)
_recent_lock = threading.Lock()


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now, and that this
    process has not been handed in its last ``RECENT_PICKS`` picks."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        with _recent_lock:
            if port not in _recent:
                _recent.append(port)
                return port


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether ``port`` on ``host`` can be bound now (used to reuse a recorded port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do: otherwise our own closed connections (TIME_WAIT)
        # would make the port look taken for a minute after a stop.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
