"""The one exception type of the services package.

Every problem a user can fix (a missing program, a port that never opened, a
state directory in a bad state) becomes a ``ServicesError`` whose message says
what went wrong and what to do, so the CLI can print it as one line instead of
a traceback.
"""

from __future__ import annotations


class ServicesError(Exception):
    """An expected failure of the embedded Redis/PostgreSQL, with an actionable message."""
