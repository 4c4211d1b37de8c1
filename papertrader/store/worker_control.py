"""`pt workers` asking the running master for something, through Redis.

Booting a worker off and reading a worker's live figures need the master: it
holds the links. The CLI publishes one JSON request on ``WORKERS_CONTROL``;
``PUBLISH`` returns how many subscribers got it, so 0 means at once that no
master is running. The master answers on a reply list the request names, and
the CLI waits for it with ``BLPOP`` and a timeout. A request nobody answers
leaves nothing behind (the reply list has a TTL).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from papertrader.store import keys

#: How long the master keeps an answer nobody picked up.
REPLY_TTL_SECONDS = 60
ACTIONS = frozenset({"status", "boot", "list"})


class ControlError(Exception):
    """The master could not be asked (not running, no answer in time)."""


@dataclass(frozen=True)
class ControlRequest:
    request_id: str
    action: str
    worker: uuid.UUID | None
    reply_to: str


def ask_master(
    client: redis.Redis, action: str, worker: uuid.UUID | None, timeout: float
) -> dict[str, Any]:
    """Send one request to the master and wait for its answer (ControlError otherwise)."""
    request_id = uuid.uuid4().hex
    reply_to = keys.worker_control_reply(request_id)
    document = {
        "id": request_id,
        "action": action,
        "worker": None if worker is None else str(worker),
        "reply_to": reply_to,
    }
    receivers = int(client.publish(keys.WORKERS_CONTROL, json.dumps(document)))
    if receivers == 0:
        raise ControlError("the master is not running (nobody listens for worker commands)")
    answer = client.blpop([reply_to], timeout=timeout)
    if answer is None:
        raise ControlError(f"the master did not answer within {timeout:g} s")
    raw = answer[1]
    parsed: dict[str, Any] = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    return parsed


def parse_request(raw: bytes | str) -> ControlRequest | None:
    """A request as the master receives it; None for anything malformed."""
    try:
        document = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        action = str(document["action"])
        reply_to = str(document["reply_to"])
        worker = document.get("worker")
        worker_id = None if worker is None else uuid.UUID(str(worker))
        request_id = str(document["id"])
    except (ValueError, KeyError, TypeError):
        return None
    if action not in ACTIONS or not reply_to.startswith(keys.PREFIX + "workers:control:"):
        return None
    return ControlRequest(request_id, action, worker_id, reply_to)


def answer(client: redis.Redis, request: ControlRequest, document: dict[str, Any]) -> None:
    """The master's answer to ``request``."""
    pipe = client.pipeline(transaction=True)
    pipe.rpush(request.reply_to, json.dumps(document, default=str))
    pipe.expire(request.reply_to, REPLY_TTL_SECONDS)
    pipe.execute()
