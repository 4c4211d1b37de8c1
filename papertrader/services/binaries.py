"""Finding the server programs the embedded services run.

Debian and Ubuntu install ``initdb``, ``pg_ctl`` and ``postgres`` under
``/usr/lib/postgresql/<version>/bin`` and not on ``PATH``, so the search looks
there too (highest version first) after ``PATH``.

``PT_SERVICES_PATH`` replaces the whole search (``PATH`` and the Debian
directories) with its own ``os.pathsep``-separated list. It exists so a user
can point PaperTrader at a particular PostgreSQL build, and so tests can
simulate a machine without the programs without patching anything.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from papertrader.services.errors import ServicesError

SEARCH_PATH_ENV = "PT_SERVICES_PATH"
"""Environment variable that replaces the whole program search path."""

DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")

POSTGRES_PROGRAMS = ("initdb", "pg_ctl", "postgres")

_INSTALL_HINTS = {
    "redis-server": "install Redis (Debian/Ubuntu: `apt-get install redis-server`)",
    "redis-sentinel": "install Redis Sentinel (Debian/Ubuntu: `apt-get install redis-sentinel`)",
    "initdb": "install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`)",
    "pg_ctl": "install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`)",
    "postgres": "install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`)",
}


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>``: 9.6 < 10 < 15 < 16."""
    return tuple(int(part) for part in re.findall(r"\d+", path.name)) or (-1,)


def debian_postgres_bin_dirs(root: Path = DEBIAN_POSTGRES_ROOT) -> list[Path]:
    """``<root>/<version>/bin`` directories, highest version first."""
    if not root.is_dir():
        return []
    versions = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"\d+(\.\d+)?", p.name)]
    versions.sort(key=_version_key, reverse=True)
    return [p / "bin" for p in versions if (p / "bin").is_dir()]


def search_dirs(search_path: str | None = None) -> list[Path]:
    """Directories searched, in order.

    ``search_path`` (or ``PT_SERVICES_PATH`` when set, even to the empty
    string) is the complete list; otherwise ``PATH`` followed by the Debian
    PostgreSQL directories.
    """
    if search_path is None:
        search_path = os.environ.get(SEARCH_PATH_ENV)
    if search_path is not None:
        return [Path(p) for p in search_path.split(os.pathsep) if p]
    dirs = [Path(p) for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p]
    return dirs + debian_postgres_bin_dirs()


def find_binary(name: str, search_path: str | None = None) -> Path:
    """Absolute path of program ``name``, or a ``ServicesError`` that says how to install it."""
    dirs = search_dirs(search_path)
    found = shutil.which(name, path=os.pathsep.join(str(d) for d in dirs))
    if found is None:
        hint = _INSTALL_HINTS.get(name, f"install the package that provides {name}")
        raise ServicesError(
            f"`{name}` was not found on PATH"
            + (" or under /usr/lib/postgresql/*/bin" if name in POSTGRES_PROGRAMS else "")
            + f": {hint}, or set {SEARCH_PATH_ENV} to the directory that holds it"
        )
    # Not resolved: redis-server is often a symlink to redis-check-rdb, and the
    # binary decides what to be from the name it was started as.
    return Path(found).absolute()


def find_postgres_binaries(search_path: str | None = None) -> dict[str, Path]:
    """``initdb``, ``pg_ctl`` and ``postgres``, preferably from one installation.

    Mixing versions breaks: ``pg_ctl`` of one release cannot manage a cluster
    made by another's ``initdb``. So once ``initdb`` is found, its own
    directory is preferred for the other two.
    """
    initdb = find_binary("initdb", search_path)
    found = {"initdb": initdb}
    for name in ("pg_ctl", "postgres"):
        sibling = initdb.parent / name
        found[name] = sibling if os.access(sibling, os.X_OK) else find_binary(name, search_path)
    return found


def check_all(search_path: str | None = None, names: Sequence[str] | None = None) -> None:
    """Raise one ``ServicesError`` naming every missing program, so one install fixes all.

    Checked before anything starts, so a half-installed machine never ends up
    with Redis running and PostgreSQL missing.
    """
    missing: list[str] = []
    for name in names or ("redis-server", *POSTGRES_PROGRAMS):
        try:
            find_binary(name, search_path)
        except ServicesError:
            missing.append(name)
    if not missing:
        return
    where = (
        "the directories in " + SEARCH_PATH_ENV
        if search_path is not None or os.environ.get(SEARCH_PATH_ENV) is not None
        else "PATH and /usr/lib/postgresql/*/bin"
    )
    hints = sorted({_INSTALL_HINTS[m] for m in missing})
    raise ServicesError(
        "program "
        + ", ".join(f"`{m}`" for m in missing)
        + f" not found in {where}: "
        + "; ".join(hints)
        + f" (or set {SEARCH_PATH_ENV} to the directory that holds it)"
    )
