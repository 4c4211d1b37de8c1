"""Free loopback ports for the private servers.

The ports are picked by the operating system (bind to port 0) so two state
directories, or a machine-wide Redis on 6379 and PostgreSQL on 5432, never
collide with ours. There is a small window between picking a port and the
server binding it; the callers retry the start once on a new port if that
window is ever lost.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
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
