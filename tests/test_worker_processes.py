"""One worker served by two processes (``worker_processes = 2``), against a real master.

Both processes take clients on the same port; logins made through the second
one reach the master over the first one's link (the master sees one worker,
one link); a session opened in one process works in the other, and a logout
in one ends it in the other; a serving process that dies is started again,
and stopping the worker stops both.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from test_e2e_support import PASSWORD, Servers, running
from test_worker_support import wait_for

from papertrader.client import ClientError, PaperTraderClient
from papertrader.protocol import ErrorCode

CLIENTS = 16


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def tcp_sockets(port: int) -> dict[str, tuple[str, int]]:
    """inode -> (state, remote port) of the IPv4/IPv6 sockets bound to local ``port``."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port:
                found[inode] = (state, int(remote.rsplit(":", 1)[1], 16))
    return found


def serving_pid(pids: list[int], port: int, client: PaperTraderClient) -> int:
    """Which process holds the server side of ``client``'s connection."""
    sock = client._conn._sock
    assert isinstance(sock, socket.socket)
    mine = sock.getsockname()[1]
    table = tcp_sockets(port)
    for pid in pids:
        for inode in socket_inodes(pid):
            if inode in table and table[inode] == ("01", mine):  # ESTABLISHED
                return pid
    raise AssertionError("no process holds the connection")


def listening(pid: int, port: int) -> bool:
    table = tcp_sockets(port)
    return any(table.get(inode, ("",))[0] == "0A" for inode in socket_inodes(pid))


def test_two_processes_serve_one_worker_through_one_link(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    servers = Servers(tmp_path, redis_url, database_url, env_extra={"PT_WORKER_PROCESSES": "2"})
    with running(servers):
        servers.wait_quotes()
        worker = servers.procs["worker-1"]
        assert worker.popen is not None
        first, port = worker.popen.pid, worker.port
        (second,) = wait_for(lambda: children(first))
        wait_for(lambda: listening(second, port))

        clients = [servers.client() for _ in range(CLIENTS)]
        try:
            names = []
            for index, client in enumerate(clients):  # each logs in through its own process
                name = f"p{index}{os.getpid()}"
                client.register(name, f"{name}@example.org", PASSWORD)
                client.login(name, PASSWORD)
                assert client.quote("AAPL").symbol == "AAPL"
                names.append(name)
            served = {serving_pid([first, second], port, client) for client in clients}
            assert served == {first, second}  # 16 connections never all land on one

            # A session from one process, used in the other, then ended there.
            a = next(c for c in clients if serving_pid([first, second], port, c) == first)
            b = next(c for c in clients if serving_pid([first, second], port, c) == second)
            b.session_id, b.session = a.session_id, a.session
            assert b.quote("MSFT").symbol == "MSFT"
            assert b.user_info().username == a.user_info().username
            b.logout()

            def ended() -> bool:
                try:
                    a.quote("AAPL")
                except ClientError as exc:
                    assert exc.code is ErrorCode.INVALID_SESSION
                    return True
                return False

            wait_for(ended)
        finally:
            for client in clients:
                client.close()

        # The master saw one worker with one link all along.
        log = servers.procs["master"].log.read_text(errors="replace")
        assert "ALREADY_LINKED" not in log and "already linked" not in log

        # A serving process that dies is started again; the port keeps answering.
        os.kill(second, 9)
        (third,) = wait_for(lambda: [p for p in children(first) if p != second], timeout=30)
        wait_for(lambda: listening(third, port))
        with servers.client() as late:
            late.register(f"late{os.getpid()}", f"late{os.getpid()}@example.org", PASSWORD)
    wait_for(lambda: not Path(f"/proc/{third}").exists())  # stopped with process 0
