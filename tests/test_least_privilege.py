"""Issue 10: one compromised worker must not own every account.

Each attack of the issue is replayed here, as its own test named after it,
with exactly what one worker holds (its GPG key and UUID on the master link)
against a real master process, Redis and PostgreSQL; each must fail, and the
master must say why in its log. The Redis-side attacks, made with a worker's
own Redis user, are in ``test_least_privilege_redis.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from test_master_link import (
    MasterProcess,
    linked_worker,
    wait_logged,
    worker_list,
)
from test_master_link import master as master
from test_master_link import pool as pool
from test_workers_keys import PEER_ADDRESS, WorkerPeer, register

from papertrader.protocol import ErrorCode, Instruction
from papertrader.store.pool import ConnectionPool
from papertrader.store.worker_control import ask_master


@pytest.fixture
def peers() -> Iterator[list[WorkerPeer]]:
    """Worker links a test opened, closed at the end."""
    opened: list[WorkerPeer] = []
    yield opened
    for peer in opened:
        peer.close()


def handshaken(master: MasterProcess, worker_uuid: uuid.UUID, name: str, pool: ConnectionPool,
               peers: list[WorkerPeer]) -> WorkerPeer:  # fmt: skip
    """A link of the registered worker ``name`` that passed the GPG handshake."""
    from test_workers_keys import keys

    peer = WorkerPeer(master.port, worker_uuid, keys().key(name))
    peers.append(peer)
    peer.handshake()
    return peer


def test_attack_advertising_a_phishing_address_is_refused(
    master: MasterProcess, pool: ConnectionPool, peers: list[WorkerPeer]
) -> None:
    worker_uuid = uuid.uuid4()
    register(pool, "honest", worker_uuid, "eu", address="eu-1.example.net:2049")
    peer = handshaken(master, worker_uuid, "honest", pool, peers)
    refused = peer.hello("honest", "eu", "login-papertrader.example.com:2049")
    assert refused.instruction is Instruction.LINK_REFUSED
    assert refused.arg("code") == ErrorCode.NOT_ALLOWED
    assert peer.read() is None
    log = wait_logged(master, "login-papertrader")
    assert "announced the client address 'login-papertrader.example.com:2049'" in log
    assert "registered with 'eu-1.example.net:2049'" in log
    assert worker_list(master.port) == []


def test_attack_announcing_another_region_is_refused(
    master: MasterProcess, pool: ConnectionPool, peers: list[WorkerPeer]
) -> None:
    worker_uuid = uuid.uuid4()
    register(pool, "local", worker_uuid, "eu")
    peer = handshaken(master, worker_uuid, "local", pool, peers)
    refused = peer.hello("local", "us-east")
    assert refused.instruction is Instruction.LINK_REFUSED
    assert "announced the region 'us-east'" in wait_logged(master, "announced the region")
    assert worker_list(master.port) == []


def test_worker_registered_before_pinning_is_refused_until_registered_again(
    master: MasterProcess, pool: ConnectionPool, peers: list[WorkerPeer]
) -> None:
    worker_uuid = uuid.uuid4()
    register(pool, "old", worker_uuid, "test", address=None)  # as migration 0003 finds it
    peer = handshaken(master, worker_uuid, "old", pool, peers)
    assert peer.hello("old").instruction is Instruction.LINK_REFUSED
    assert "pt workers register old" in wait_logged(master, "has no registered address")

    register(pool, "old", worker_uuid, "test")  # pinned to PEER_ADDRESS now
    again = handshaken(master, worker_uuid, "old", pool, peers)
    assert again.hello("old").instruction is Instruction.LINK_WELCOME
    assert [w["address"] for w in worker_list(master.port)] == [PEER_ADDRESS]


def test_attack_linking_again_with_the_same_uuid_cannot_knock_the_worker_off(
    master: MasterProcess,
    pool: ConnectionPool,
    redis_client: redis.Redis,
    peers: list[WorkerPeer],
) -> None:
    first = linked_worker(master, pool, "w1")
    peers.append(first)
    second = handshaken(master, first.worker_uuid, "w1", pool, peers)
    first.send(Instruction.HEARTBEAT)  # the first link is alive
    refused = second.hello("w1", "eu-west", "worker1.example.com:2049")
    assert refused.instruction is Instruction.LINK_REFUSED
    assert refused.arg("code") == ErrorCode.ALREADY_LINKED
    assert second.read() is None
    assert "already linked from" in wait_logged(master, "already linked from")

    # The first link was not touched: it still gets answers.
    first.send(Instruction.LOGIN, "nobody", "password1", False, request_id=5)
    answer = first.read()
    assert answer is not None and answer.instruction is Instruction.LOGIN_FAIL
    assert [w["name"] for w in worker_list(master.port)] == ["w1"]

    # An operator replaces a link with `pt workers boot`.
    assert ask_master(redis_client, "boot", first.worker_uuid, timeout=8) == {"booted": True}
    assert first.closed_by_master()
    third = handshaken(master, first.worker_uuid, "w1", pool, peers)
    assert third.hello("w1", "eu-west", "worker1.example.com:2049").instruction is (
        Instruction.LINK_WELCOME
    )
