"""The file where ``pt client login`` keeps the session for the next commands.

The session id is a bearer secret: whoever reads it can trade on the account
until it expires. So the file is created with mode 0600 from the very first
byte (``os.open`` with the mode, written to a temporary name and renamed into
place), never written first and restricted afterwards, and its directory is
created 0700.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import platformdirs

FILE_MODE = 0o600
DIR_MODE = 0o700


def default_session_file() -> Path:
    """``~/.config/papertrader/session.json`` on Linux (the platform's config dir)."""
    return Path(platformdirs.user_config_dir("papertrader")) / "session.json"


class SessionFileError(Exception):
    """The session file exists but cannot be read or understood."""


@dataclass(frozen=True)
class StoredSession:
    session_id: uuid.UUID
    username: str
    expires_at: datetime
    worker: str  # HOST:PORT the session was made on (informational: any worker accepts it)


def save_session(path: Path, session: StoredSession) -> None:
    """Write ``session`` to ``path`` atomically, readable by the owner only."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    text = json.dumps(
        {
            "session_id": str(session.session_id),
            "username": session.username,
            "expires_at": session.expires_at.isoformat(),
            "worker": session.worker,
        },
        indent=2,
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_session(path: Path) -> StoredSession | None:
    """The stored session, or None when there is no file (never logged in, or logged out)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SessionFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
        return StoredSession(
            session_id=uuid.UUID(data["session_id"]),
            username=str(data["username"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            worker=str(data.get("worker", "")),
        )
    except (ValueError, KeyError, TypeError):
        raise SessionFileError(
            f"{path} is not a session file written by `pt client login`; delete it and log in again"
        ) from None


def delete_session(path: Path) -> bool:
    """Remove the file; True if there was one."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
