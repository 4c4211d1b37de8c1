"""Lua that runs inside Redis, as Redis FUNCTIONs: loaded by the master, called with FCALL.

The workers' atomic steps (abuse limits, the pending-order cap, the shared
history cache's puts) are Lua. Sent with EVAL, a script is whatever the caller
writes, so a worker allowed EVAL could run any code Redis runs; a FUNCTION is
code the master loaded (``FUNCTION LOAD``, its Redis user's right), and a
worker's ACL user gets ``FCALL`` and nothing else of scripting. A function runs
under the caller's ACL: every key it is given and every command it calls are
checked against the worker's rights, so a function cannot be turned into a
way around them.

Each :class:`Function` is defined beside the code that calls it (its body is
ordinary script text using ``KEYS`` and ``ARGV``); :func:`library_code` wraps
them into the one library ``papertrader``, which the master loads with
``FUNCTION LOAD REPLACE`` at start-up (``master/redis_functions.py`` lists
them). Functions live server-wide, in the AOF/RDB, across every logical
database and restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

#: The one library every PaperTrader function belongs to (``FUNCTION LIST``).
LIBRARY = "papertrader"


@dataclass(frozen=True)
class Function:
    """One Redis FUNCTION: its name (``pt_`` prefix) and its Lua body (``KEYS``, ``ARGV``)."""

    name: str
    body: str
    #: Registered with the ``no-writes`` flag and called with ``FCALL_RO``, whose keys
    #: ACL checks for reading only: a caller with read-only rights on them may call it.
    read_only: bool = False

    def bind(self, client: redis.Redis) -> BoundFunction:
        """A callable with ``register_script``'s shape: ``f(keys=[...], args=[...])``."""
        return BoundFunction(client, self.name, self.read_only)


@dataclass(frozen=True)
class BoundFunction:
    client: redis.Redis
    name: str
    read_only: bool = False

    def __call__(
        self,
        keys: Sequence[str] = (),
        args: Sequence[str | bytes | int | float] = (),
        client: redis.Redis | Pipeline | None = None,
    ) -> Any:
        """Call it (or, given a pipeline as ``client``, add the call to the pipeline)."""
        target = self.client if client is None else client  # an empty pipeline is falsy
        call = target.fcall_ro if self.read_only else target.fcall
        return call(self.name, len(keys), *keys, *args)


def library_code(functions: Iterable[Function]) -> str:
    """The library's source: each body becomes a function of (KEYS, ARGV)."""
    parts = [f"#!lua name={LIBRARY}"]
    for function in functions:
        flags = ", flags={'no-writes'}" if function.read_only else ""
        parts.append(
            f"redis.register_function{{function_name='{function.name}', "
            f"callback=function(KEYS, ARGV)\n{function.body.strip()}\nend{flags}}}"
        )
    return "\n\n".join(parts) + "\n"


def load(client: redis.Redis, functions: Iterable[Function]) -> None:
    """Load (or replace) the library: the master at start-up, with its own user's rights."""
    client.function_load(library_code(functions), replace=True)
