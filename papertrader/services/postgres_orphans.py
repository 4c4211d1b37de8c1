"""Clusters left in /var/tmp by state directories that were temporary and are gone.

When PaperTrader runs as root, PostgreSQL runs as the postgres user, which cannot
reach a state directory under root's private temporary directories (pytest's, a
trial stack's): the cluster then lives in /var/tmp/papertrader-pg-<hash>
(``postgres_cluster.cluster_root``). Deleting the state directory does not delete
that cluster, and every test run or trial left ~70 MB behind. Each such cluster
root records its owner as a symlink; making a new cluster removes the clusters
whose owner lived in the system's temporary directory and is gone, and whose
postmaster no longer runs. An owner elsewhere (a real deployment's state
directory, perhaps renamed or on a volume not mounted yet) is never judged gone:
its cluster is kept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from papertrader.services.state import pid_alive, read_pid_file

#: Where clusters of unreachable state directories live.
VAR_TMP = Path("/var/tmp")
#: In such a cluster root: a symlink to what it belongs to (the state directory, or a
#: replica's primary root).
OWNER_LINK = "owner"


def mark_owner(root: Path, owner: Path) -> None:
    """Record in a /var/tmp cluster root what it belongs to (a symlink owned by us),
    then remove the orphaned clusters (``prune_orphans``)."""
    if root.parent != VAR_TMP:
        return  # inside its state directory: it goes with it
    link = root / OWNER_LINK
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(owner.resolve())
    prune_orphans()


def _temporary(path: str) -> bool:
    """Whether ``path`` lies in a temporary directory (not /var/tmp itself, where the
    clusters are: a replica's owner is its primary's root there)."""
    roots = {Path(tempfile.gettempdir()).resolve(), Path("/tmp"), VAR_TMP}
    return any(Path(path).is_relative_to(root) for root in roots)


def prune_orphans(base: Path = VAR_TMP) -> list[Path]:
    """Remove our clusters under ``base`` whose temporary owner is gone and whose
    postmaster is not running; the removed roots.

    Only what we made is touched: a real directory named papertrader-pg-*, holding an
    owner symlink that belongs to us. Primaries sort before their ``-replicaN``
    directories, so a replica whose primary goes in a pass goes in the same pass.
    """
    removed: list[Path] = []
    for root in sorted(base.glob("papertrader-pg-*")):
        link = root / OWNER_LINK
        with contextlib.suppress(OSError):
            if root.is_symlink() or not link.is_symlink() or link.exists():
                continue
            if link.lstat().st_uid != os.getuid() or not _temporary(os.readlink(link)):
                continue
            if pid_alive(read_pid_file(root / "data" / "postmaster.pid")):
                continue
            shutil.rmtree(root)
            removed.append(root)
    return removed
