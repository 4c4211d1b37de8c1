"""The protocol's tables as a JavaScript module, generated from the Python ones.

The browser's codec (``static/js/protocol/``) is written by hand, like any
client written from docs/PROTOCOL.md, but the numbers it needs (instruction
codes and argument lists, failure returns, error codes, value tags, the state
table) come from ``papertrader/protocol/`` through this module, so an
instruction added in Python reaches the browser without anyone copying a
table. The worker serves the result as ``/js/protocol/tables.js``; the node
tests of the codec get the same text (tests/test_web_codec.py).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from papertrader.protocol import (
    DEFAULT_MAX_DATA_SIZE,
    FAILURE_RETURN,
    HEADER_SIZE,
    SCHEMAS,
    TRANSITIONS,
    ConnectionStateCode,
    ErrorCode,
    Instruction,
    MessageType,
    ValueType,
)
from papertrader.protocol.states import CLIENT_EVENTS, Event, State
from papertrader.protocol.transfer import CHUNK_OVERHEAD
from papertrader.protocol.values import MAX_DECIMAL_TEXT, MAX_LIST_DEPTH

#: Where the worker serves the module (the codec imports it by this relative name).
PATH = "/js/protocol/tables.js"


def tables() -> dict[str, Any]:
    """Every table, as plain JSON-able data."""
    return {
        "HEADER_SIZE": HEADER_SIZE,
        "DEFAULT_MAX_DATA_SIZE": DEFAULT_MAX_DATA_SIZE,
        "CHUNK_OVERHEAD": CHUNK_OVERHEAD,
        "MAX_DECIMAL_TEXT": MAX_DECIMAL_TEXT,
        "MAX_LIST_DEPTH": MAX_LIST_DEPTH,
        "MESSAGE_TYPES": {t.name: int(t) for t in MessageType},
        "VALUE_TYPES": {t.name: int(t) for t in ValueType},
        "ERROR_CODES": {c.name: int(c) for c in ErrorCode},
        "CONNECTION_STATES": {s.name: int(s) for s in ConnectionStateCode},
        "INSTRUCTIONS": {
            i.name: {
                "code": int(i),
                "args": [[name, kind.name] for name, kind in SCHEMAS[i].args],
                "session": SCHEMAS[i].needs_session,
                "failure": FAILURE_RETURN[i].name if i in FAILURE_RETURN else None,
            }
            for i in Instruction
        },
        "STATES": {s.name: s.value for s in State},
        "EVENTS": {e.name: e.value for e in Event},
        "CLIENT_EVENTS": sorted(e.name for e in CLIENT_EVENTS),
        "TRANSITIONS": [
            [state.name, event.name, target.name] for (state, event), target in TRANSITIONS.items()
        ],
    }


@lru_cache(maxsize=1)
def tables_js() -> str:
    """The ES module text: one frozen export per table."""
    lines = [
        "// Generated from papertrader/protocol/ by papertrader/web/tables.py: do not edit.",
        "// docs/PROTOCOL.md describes every number here.",
    ]
    for name, value in tables().items():
        text = json.dumps(value, sort_keys=False, separators=(",", ":"))
        lines.append(f"export const {name} = Object.freeze({text});")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m papertrader.web.tables > tables.js
    print(tables_js(), end="")
