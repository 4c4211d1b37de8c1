"""The private PostgreSQL cluster: initdb, start, check, stop.

``initdb`` and ``postgres`` refuse to run as root. When PaperTrader runs as
root, the cluster is therefore run by the unprivileged ``postgres`` system
user (which the Debian/Ubuntu package creates). That user must be able to
reach the data directory; a state directory under /root or pytest's 0700
temporary directories is not reachable, so the cluster then lives in
``/var/tmp/papertrader-pg-<hash of the state dir path>`` (owned by postgres,
mode 0700) and ``services.json`` records where. An ordinary user runs the
cluster as themself, inside the state directory.

Authentication is scram-sha-256 with a random superuser password for both
TCP and the Unix socket: the server listens only on 127.0.0.1, but other
local users exist.

The superuser only sets the cluster up. ``ensure_roles`` (on every start)
makes the owner role, which owns the database and runs the migrations, and
the master's role, which the master logs in as (``store/roles.py``); each has
a password of its own in ``services.json`` (0600). A cluster made before
those roles existed is moved to them on its next start: the database and its
objects change owner, rows stay.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from papertrader.services.errors import ServicesError
from papertrader.services.ports import LOOPBACK, free_port, port_is_free
from papertrader.services.postgres_orphans import VAR_TMP, mark_owner
from papertrader.services.state import (
    ADMIN_USER,
    PostgresRecord,
    ensure_private_dir,
    log_since,
    pid_alive,
    process_name,
    read_pid_file,
    tail,
)
from papertrader.store import roles

SERVICE_USER = "postgres"
EXTRA_CONF = "papertrader.conf"
# sun_path is 108 bytes on Linux (104 on BSD/macOS); the socket is "<dir>/.s.PGSQL.<port>".
SOCKET_PATH_MAX = 103
CONNECT_TIMEOUT = 2


@dataclass(frozen=True)
class RunAs:
    """The system user the cluster runs as when we are root."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def service_user() -> RunAs | None:
    """None for an ordinary user (run as ourselves); the postgres user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise ServicesError(
            "running as root, but PostgreSQL refuses to run as root and there is no "
            f"`{SERVICE_USER}` system user to run it as: install PostgreSQL from the "
            "distribution (`apt-get install postgresql`, which creates that user) or run "
            "`pt services up` as an ordinary user"
        ) from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def _can_traverse(path: Path, user: RunAs) -> bool:
    """Whether ``user`` may search every directory from / down to ``path``.

    Computed from the permission bits (as the kernel does, without ACLs) so no
    process has to be spawned to ask.
    """
    current = Path(path.anchor)
    for component in path.parts[1:]:
        current = current / component
        try:
            info = current.stat()
        except OSError:
            return False
        if info.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif info.st_gid in user.groups or info.st_gid == user.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def cluster_root(state_dir: Path, user: RunAs | None) -> Path:
    """Where the cluster lives: ``<state_dir>/postgres`` or, if the postgres user
    cannot reach the state directory, a per-state-dir directory under /var/tmp.

    The /var/tmp name is derived from a hash of the resolved state directory
    path, so the same state directory always finds its cluster again.
    """
    if user is None or _can_traverse(state_dir, user):
        return state_dir / "postgres"
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
    return VAR_TMP / f"papertrader-pg-{digest}"


def _prepare_root(root: Path, user: RunAs | None) -> None:
    """Create the cluster root, 0700 and owned by the user that runs the cluster.

    /var/tmp is writable by everyone, so a pre-existing directory is accepted
    only if it is a real directory (not a symlink) owned by that user: another
    local user could otherwise plant it and read or swap our cluster.
    """
    if user is None:
        ensure_private_dir(root)
        root.chmod(0o700)
        return
    try:
        root.mkdir(mode=0o700)
        os.chown(root, user.uid, user.gid)
    except FileExistsError:
        pass
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (user.uid, 0):
        raise ServicesError(
            f"{root} exists but is not a directory owned by `{user.name}`; "
            "it was not made by PaperTrader: remove it and run `pt services up` again"
        )
    os.chown(root, user.uid, user.gid)
    root.chmod(0o700)


def _give(path: Path, user: RunAs | None) -> None:
    """Hand a file we wrote (as root) to the user that runs the cluster."""
    if user is not None:
        os.chown(path, user.uid, user.gid)


def socket_dir_for(data_dir: Path) -> str:
    """The data directory as socket directory, or '' (no Unix socket) if its path is too long."""
    if len(os.fsencode(str(data_dir))) + len("/.s.PGSQL.65535") > SOCKET_PATH_MAX:
        return ""
    return str(data_dir)


def new_record(state_dir: Path, user: RunAs | None) -> PostgresRecord:
    """A record for a cluster not yet created: fresh password, free port, location by user."""
    root = cluster_root(state_dir, user)
    data_dir = root / "data"
    return PostgresRecord(
        port=free_port(),
        password=secrets.token_urlsafe(24),
        root=str(root),
        data_dir=str(data_dir),
        log_file=str(root / "postgres.log"),
        socket_dir=socket_dir_for(data_dir),
        run_as=None if user is None else user.name,
        user=ADMIN_USER,
    )


def _run(
    args: Sequence[str], user: RunAs | None, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program, as the postgres user when we are root.

    Supplementary groups are set to the postgres user's own: otherwise the
    child would keep root's groups. PG* variables are dropped so a PGDATA or
    PGPORT of the caller's environment cannot redirect the programs.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"  # we search the output for English messages
    try:
        return subprocess.run(
            list(args),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # the server must not die with our terminal's Ctrl-C
            check=False,
            user=None if user is None else user.uid,
            group=None if user is None else user.gid,
            extra_groups=None if user is None else list(user.groups),
        )
    except subprocess.TimeoutExpired as exc:
        raise ServicesError(f"{args[0]} did not finish within {timeout:.0f}s") from exc
    except OSError as exc:
        raise ServicesError(f"could not run {args[0]}: {exc}") from exc


def _conf_quote(value: str) -> str:
    """A string value for postgresql.conf (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def _initdb(
    record: PostgresRecord, bins: dict[str, Path], user: RunAs | None, timeout: float
) -> None:
    """Create the cluster: UTF8, scram-sha-256, the recorded superuser and password.

    The character type is C.UTF-8 (so ``lower()`` works beyond ASCII, which
    the case-insensitive username/email indexes rely on) with C collation;
    where that locale does not exist the cluster is made without a locale.
    """
    root = Path(record.root)
    data_dir = Path(record.data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ServicesError(
            f"{data_dir} is not empty but holds no PostgreSQL cluster; "
            "remove it and run `pt services up` again"
        )
    pwfile = root / ".pwfile"
    pwfile.unlink(missing_ok=True)
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(record.password + "\n")
    _give(pwfile, user)
    base = [
        str(bins["initdb"]),
        "-D",
        str(data_dir),
        "-U",
        record.user,
        f"--pwfile={pwfile}",
        "--auth=scram-sha-256",
        "--encoding=UTF8",
    ]
    try:
        done = _run([*base, "--lc-collate=C", "--lc-ctype=C.UTF-8"], user, root, timeout)
        if done.returncode != 0 and "locale" in (done.stdout + done.stderr).lower():
            shutil.rmtree(data_dir, ignore_errors=True)
            done = _run([*base, "--no-locale"], user, root, timeout)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise ServicesError(
            f"initdb failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}"
        )
    conf = data_dir / "postgresql.conf"
    with conf.open("a", encoding="utf-8") as handle:
        handle.write(
            f"\n# Added by PaperTrader: port and addresses, rewritten on every start.\n"
            f"include {_conf_quote(EXTRA_CONF)}\n"
        )


def _write_extra_conf(record: PostgresRecord, user: RunAs | None) -> None:
    """The settings that may change between starts (the port) in their own included file."""
    path = Path(record.data_dir) / EXTRA_CONF
    path.write_text(
        "# Written by PaperTrader (`pt services up`) on every start; edits are lost.\n"
        f"listen_addresses = {_conf_quote(LOOPBACK)}\n"
        f"port = {record.port}\n"
        f"unix_socket_directories = {_conf_quote(record.socket_dir)}\n",
        encoding="utf-8",
    )
    path.chmod(0o600)
    _give(path, user)


def _connect(record: PostgresRecord, dbname: str) -> psycopg2.extensions.connection:
    """A superuser connection over TCP with the recorded password."""
    return psycopg2.connect(
        host=LOOPBACK,
        port=record.port,
        user=record.user,
        password=record.password,
        dbname=dbname,
        connect_timeout=CONNECT_TIMEOUT,
    )


def answers(record: PostgresRecord) -> bool:
    """Whether our cluster accepts our password on the recorded port."""
    try:
        conn = _connect(record, "postgres")
    except psycopg2.Error:
        return False
    conn.close()
    return True


def postmaster_pid(record: PostgresRecord) -> int | None:
    """The pid in the data directory's postmaster.pid (None if there is none)."""
    return read_pid_file(Path(record.data_dir) / "postmaster.pid")


def is_alive(record: PostgresRecord) -> bool:
    """Whether the postmaster of the data directory lives (answering or not)."""
    return pid_alive(postmaster_pid(record))


def is_running(record: PostgresRecord | None) -> bool:
    """Running means: the postmaster of our data directory is alive and accepts our password."""
    return record is not None and pid_alive(postmaster_pid(record)) and answers(record)


def _remove_stale_pid_file(record: PostgresRecord) -> None:
    """Drop a postmaster.pid whose pid now belongs to another program.

    After a reboot (common in containers) the recorded pid is often reused by
    an unrelated process, and PostgreSQL would refuse to start, believing
    another postmaster runs. A dead pid PostgreSQL handles by itself.
    """
    pid = postmaster_pid(record)
    if pid is None or not pid_alive(pid):
        return
    name = process_name(pid)
    if name is not None and name not in ("postgres", "postmaster"):
        (Path(record.data_dir) / "postmaster.pid").unlink(missing_ok=True)


def start(
    state_dir: Path, record: PostgresRecord | None, bins: dict[str, Path], timeout: float
) -> PostgresRecord:
    """Start the cluster for ``state_dir`` (creating it the first time) and return the record.

    Idempotent: a running cluster is left alone; a stopped one is started on
    its data with its password, on its old port if still free.
    """
    if record is not None and is_running(record):
        record.pid = postmaster_pid(record)
        ensure_roles(record)
        return record
    user = service_user()
    if record is None:
        record = new_record(state_dir, user)
        if (Path(record.data_dir) / "PG_VERSION").exists():
            raise ServicesError(
                f"a PostgreSQL cluster exists in {record.data_dir} but {state_dir}/services.json "
                "does not record its password; remove that directory to start afresh"
            )
    elif not port_is_free(record.port):
        record.port = free_port()
    if (record.run_as or None) != (None if user is None else user.name):
        raise ServicesError(
            f"the cluster in {record.data_dir} was set up to run as "
            f"{record.run_as or 'the invoking user'}; run `pt services up` as the same user"
        )
    root = Path(record.root)
    _prepare_root(root, user)
    mark_owner(root, state_dir)
    if not (Path(record.data_dir) / "PG_VERSION").exists():
        _initdb(record, bins, user, timeout)
    _remove_stale_pid_file(record)
    try:
        _launch(record, bins, user, timeout)
    except _PortLost:
        record.port = free_port()
        _launch(record, bins, user, timeout)
    ensure_roles(record)
    record.pid = postmaster_pid(record)
    return record


class _PortLost(Exception):
    """The chosen port was taken before PostgreSQL could bind it."""


def _launch(
    record: PostgresRecord, bins: dict[str, Path], user: RunAs | None, timeout: float
) -> None:
    """``pg_ctl start`` and wait until a password login works."""
    _write_extra_conf(record, user)
    log_file = Path(record.log_file)
    log_offset = log_file.stat().st_size if log_file.exists() else 0
    done = _run(
        [
            str(bins["pg_ctl"]),
            "start",
            "-D",
            record.data_dir,
            "-l",
            record.log_file,
            "-w",
            "-t",
            str(max(1, int(timeout))),
            "-s",
        ],
        user,
        Path(record.root),
        timeout + 5,
    )
    if done.returncode != 0:
        new_log = log_since(log_file, log_offset)
        if "could not bind" in new_log or "Address already in use" in new_log:
            raise _PortLost()
        raise ServicesError(
            f"PostgreSQL failed to start (pg_ctl exit {done.returncode}); "
            f"its log {log_file} says:\n{new_log.strip() or tail(log_file)}"
            + (f"\n{done.stderr.strip()}" if done.stderr.strip() else "")
        )
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            _connect(record, "postgres").close()
            return
        except psycopg2.Error as exc:
            last_error = str(exc).strip()
        time.sleep(0.1)
    raise ServicesError(
        f"PostgreSQL started but refused connections on {LOOPBACK}:{record.port} for "
        f"{timeout:.0f}s ({last_error}); see {log_file}"
    )


def ensure_roles(record: PostgresRecord) -> list[str]:
    """The owner and master roles, the database owned by the owner, and nobody else let
    into the maintenance databases; returns what changed owner (a cluster of before
    the roles). Idempotent; passwords are made once and kept in the record."""
    for field in ("owner_password", "master_password"):
        if not getattr(record, field):
            setattr(record, field, secrets.token_urlsafe(24))
    conn = _connect(record, "postgres")
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            roles.ensure_login_role(cur, record.owner, record.owner_password)
            roles.ensure_login_role(cur, record.master, record.master_password)
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (record.database,))
            if cur.fetchone() is None:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(record.database), sql.Identifier(record.owner)
                    )
                )
            for maintenance in ("postgres", "template1"):
                cur.execute(
                    sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(
                        sql.Identifier(maintenance)
                    )
                )
        conn.close()
        conn = _connect(record, record.database)
        with conn, conn.cursor() as cur:
            return roles.adopt_database(cur, record.owner)
    except psycopg2.Error as exc:
        raise ServicesError(
            f"could not set up the database {record.database!r} and its roles: "
            f"{' '.join(str(exc).split())}"
        ) from exc
    finally:
        conn.close()


def stop(record: PostgresRecord, bins: dict[str, Path] | None, timeout: float) -> bool:
    """``pg_ctl stop -m fast`` (ends sessions, then a clean shutdown); True if it was running."""
    pid = postmaster_pid(record)
    if not pid_alive(pid):
        record.pid = None
        return False
    if bins is None:
        raise ServicesError("pg_ctl is needed to stop PostgreSQL")
    user = service_user() if record.run_as else None
    done = _run(
        [
            str(bins["pg_ctl"]),
            "stop",
            "-D",
            record.data_dir,
            "-m",
            "fast",
            "-w",
            "-t",
            str(max(1, int(timeout))),
            "-s",
        ],
        user,
        Path(record.root),
        timeout + 5,
    )
    if done.returncode != 0 and pid_alive(postmaster_pid(record)):
        raise ServicesError(
            f"PostgreSQL did not stop (pg_ctl exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()}; see {record.log_file}"
        )
    record.pid = None
    return True


def remove(record: PostgresRecord) -> None:
    """Delete the cluster root (for throwaway clusters such as the test suite's)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(record.root)
