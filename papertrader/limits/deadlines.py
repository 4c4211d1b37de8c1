"""Every per-connection deadline of the servers, in one place.

Client ports (worker 2049, master 2048) and the master-worker link use these
so that no peer can hold a connection, a buffer or a greenlet longer than
they allow. Transport layers (TLS) apply :data:`HANDSHAKE_SECONDS` to their
own handshake too.

* **whole frame**: once a frame has started, all of it must arrive within
  ``frame_seconds`` (not "one byte per timeout": a byte every few seconds
  does not keep a connection alive, the slowloris trick);
* **first frame / handshake**: a new connection must complete its first
  frame (master port) or its TLS handshake within HANDSHAKE_SECONDS;
* **idle before a session**: a client that has not presented a valid
  session is closed after ``preauth_idle_seconds`` without a request;
* **idle**: any client, after ``client_idle_timeout``;
* **send**: a client that does not take our answers for ``send_seconds``
  is closed (and its unsent answers are bounded: ``client_send_buffer_bytes``);
* **link silence**: a master-worker link is dropped after
  :func:`link_silence_window` seconds without a frame.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

#: A new connection's first frame (master port), or its TLS handshake, must be done by then.
HANDSHAKE_SECONDS = 10.0
#: Heartbeats a link may miss before it counts as dead...
MISSED_HEARTBEATS = 5
#: ... but never fewer seconds than this, so a short stall (a busy machine, a
#: burst of closing sockets, a debugger) does not drop a healthy link.
MIN_SILENCE_SECONDS = 10.0


def link_silence_window(heartbeat: float) -> float:
    """Seconds without a frame after which a link is dropped (both sides use it)."""
    return max(MIN_SILENCE_SECONDS, MISSED_HEARTBEATS * heartbeat)


@dataclass(frozen=True)
class ConnectionDeadlines:
    """A connection's deadlines in seconds (see the module docstring)."""

    frame_seconds: float
    preauth_idle_seconds: float
    idle_seconds: float
    send_seconds: float

    def idle(self, authenticated: bool) -> float:
        return self.idle_seconds if authenticated else self.preauth_idle_seconds


class DeadlineExceeded(TimeoutError):
    """A peer did not finish in time; the message says what it did not finish."""


def recv_before(sock: socket.socket, size: int, deadline: float, what: str) -> bytes:
    """One ``recv`` that must return before ``deadline`` (time.monotonic)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded(what)
    sock.settimeout(remaining)
    try:
        return bytes(sock.recv(size))
    except TimeoutError:
        raise DeadlineExceeded(what) from None
