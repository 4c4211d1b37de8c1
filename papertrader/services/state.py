"""The state directory and its ``services.json`` record.

The state directory holds everything ``pt services up`` creates: the Redis
config and data, usually the PostgreSQL cluster, and ``services.json``, which
records ports, pids, data directories and the generated passwords. Later runs
(``pt services status``, ``pt db migrate``, the servers) read the URLs from
there, so nothing has to be configured for local use.

Because the record holds passwords it is written with mode 0600, atomically
(write a temporary file, then rename) so a crash never leaves half a record,
and under an exclusive lock so two ``pt services up`` cannot race.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import platformdirs

from papertrader.services.errors import ServicesError

STATE_FILE = "services.json"
LOCK_FILE = "services.lock"
STATE_VERSION = 1
LOOPBACK = "127.0.0.1"
DATABASE_NAME = "papertrader"
#: The cluster's superuser in clusters made before the database roles (issue 10); it
#: was also the role every process logged in as.
LEGACY_ADMIN_USER = "papertrader"
#: The superuser of a new private cluster: it creates the roles and the database,
#: and no PaperTrader process logs in as it.
ADMIN_USER = "postgres"
#: Owns the database and its objects; migrations run as it (docs/SECURITY.md).
OWNER_ROLE = "papertrader_owner"
#: The master's login: reads and writes rows, changes no schema.
MASTER_ROLE = "papertrader_master"


def default_state_dir() -> Path:
    """The per-user state directory (``~/.local/state/papertrader`` on Linux)."""
    return Path(platformdirs.user_state_dir("papertrader"))


def resolve_state_dir(state_dir: Path | str | None) -> Path:
    """Absolute, symlink-free path of ``state_dir`` (or the default).

    Resolving matters because the path is hashed to name PostgreSQL's data
    directory when it has to live outside the state directory: two spellings
    of one directory must give one cluster.
    """
    path = default_state_dir() if state_dir is None else Path(state_dir)
    return path.expanduser().resolve()


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed; a directory we create is 0700."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True)
    elif not path.is_dir():
        raise ServicesError(f"{path} exists and is not a directory")
    return path


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 (it may hold passwords).

    The temporary file is created 0600 from the start, so the secret is never
    readable by others, not even for a moment.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o600)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``****``, for status output and logs.

    A multi-host URL (``postgresql://u:p@h1:5432,h2:5432/db``) keeps its hosts: only
    the user information before the last ``@`` of the authority is rewritten.
    """
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:****@{hosts}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists and is not a zombie.

    A daemon whose parent exited is reaped by init, but in some containers PID
    1 never reaps, and a zombie still answers ``kill(pid, 0)``; so ``/proc`` is
    consulted where it exists.
    """
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user (e.g. the postgres system user)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name, which may hold spaces.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def process_name(pid: int) -> str | None:
    """The command name of ``pid`` from ``/proc`` (None where unknown)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def read_pid_file(path: Path) -> int | None:
    """First line of a pid file as an integer (also PostgreSQL's ``postmaster.pid``)."""
    try:
        first = path.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    return int(first) if first.isdigit() else None


def log_since(path: Path, offset: int) -> str:
    """What a server logged since ``offset``: the part of its log about this start attempt."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages that show what the server said."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class RedisRecord:
    """What ``services.json`` remembers about the private Redis."""

    port: int
    password: str
    data_dir: str
    config_file: str
    pid_file: str
    log_file: str
    pid: int | None = None
    #: The password of the master's own Redis user (``pt-master``); made at the first
    #: start of a record that has none (also a record from before the users existed).
    master_password: str = ""
    #: TLS (`pt services up --redis-tls-cert/--redis-tls-key/--redis-tls-ca`): ``port`` is
    #: then Redis's ``tls-port`` and the plaintext port is off. None: plaintext on loopback.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    #: Redis with Sentinel (services/redis_replica.py, redis_sentinel.py): the passwords of
    #: the replication user (``pt-replication``: replicas log in to the primary with it)
    #: and of the Sentinels' user on the data nodes (``pt-sentinel``); every node has the
    #: same users. Empty: made at the next start.
    replication_password: str = ""
    sentinel_password: str = ""
    #: A replica's primary as host:port (``replicaof``); None: this server is a primary.
    replicaof: str | None = None
    #: ``min-replicas-to-write`` of a primary: refuse writes unless this many replicas
    #: are connected (0: never refuse).
    min_replicas_to_write: int = 0

    @property
    def url(self) -> str:
        """The operator's connection URL (the ``pt-admin`` user), logical database 0.

        The user name is spelled out: ``redis-cli -u`` of Redis 7.0 sends an
        empty user name for ``redis://:PASSWORD@`` and is refused. With TLS:
        ``rediss://`` naming the CA that verifies the server.
        """
        return self._url("pt-admin", self.password)

    @property
    def master_url(self) -> str:
        """The master's connection URL (its own ``pt-master`` user)."""
        return self._url("pt-master", self.master_password)

    def _url(self, user: str, password: str) -> str:
        where = f"{user}:{quote(password, safe='')}@{LOOPBACK}:{self.port}/0"
        if self.tls_ca is None:
            return f"redis://{where}"
        return f"rediss://{where}?ssl_ca_certs={quote(self.tls_ca, safe='')}"

    @property
    def acl_file(self) -> str:
        """The users file (``aclfile``): the fixed users and every worker's."""
        return str(Path(self.data_dir) / "users.acl")


@dataclass
class PostgresRecord:
    """What ``services.json`` remembers about the private PostgreSQL cluster.

    ``root`` is the directory holding the cluster (``data``) and its log. It is
    inside the state directory unless the server runs as the ``postgres``
    system user and cannot reach it; then it is under /var/tmp, and this
    record is how later runs find it.

    Three logins: ``user``/``password`` is the cluster's superuser (it makes
    the roles and the database, nothing else); ``owner``, the owner of the
    database, which migrations run as; ``master``, the master server's role.
    A record written before the roles existed has no owner or master password
    yet: until ``pt services up`` or ``pt db migrate`` creates them, every URL
    is the superuser's, as it was then.
    """

    port: int
    password: str
    root: str
    data_dir: str
    log_file: str
    socket_dir: str
    run_as: str | None = None
    pid: int | None = None
    user: str = LEGACY_ADMIN_USER
    database: str = DATABASE_NAME
    owner: str = OWNER_ROLE
    owner_password: str = ""
    master: str = MASTER_ROLE
    master_password: str = ""

    def _url(self, user: str, password: str) -> str:
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@{LOOPBACK}:{self.port}/{quote(self.database, safe='')}"
        )

    @property
    def has_roles(self) -> bool:
        """Whether the owner and master roles were made (clusters of before issue 10 not yet)."""
        return bool(self.owner_password and self.master_password)

    @property
    def admin_url(self) -> str:
        """The superuser's URL of the application database (set-up and tests only)."""
        return self._url(self.user, self.password)

    @property
    def owner_url(self) -> str:
        """The owner role's URL: what migrations run as."""
        if not self.has_roles:
            return self.admin_url
        return self._url(self.owner, self.owner_password)

    @property
    def url(self) -> str:
        """The master's URL of the application database (what the servers use)."""
        if not self.has_roles:
            return self.admin_url
        return self._url(self.master, self.master_password)


@dataclass
class ServicesState:
    """The whole ``services.json``: either service may be absent (never started)."""

    redis: RedisRecord | None = None
    postgres: PostgresRecord | None = None
    version: int = field(default=STATE_VERSION)

    def to_json(self) -> str:
        """Serialise with stable key order, so diffs of the file stay readable."""
        document: dict[str, Any] = {
            "version": self.version,
            "redis": None if self.redis is None else asdict(self.redis),
            "postgres": None if self.postgres is None else asdict(self.postgres),
        }
        if self.redis is not None:
            document["redis"]["url"] = self.redis.url
            document["redis"]["master_url"] = self.redis.master_url
        if self.postgres is not None:
            document["postgres"]["url"] = self.postgres.url
            document["postgres"]["owner_url"] = self.postgres.owner_url
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Path) -> ServicesState:
        """Parse ``services.json``; a damaged file is a ``ServicesError`` that names it."""
        try:
            document = json.loads(text)
            if not isinstance(document, dict):
                raise TypeError("not a JSON object")
            version = int(document.get("version", STATE_VERSION))
            if version != STATE_VERSION:
                raise ValueError(f"unsupported version {version}")
            redis_doc = document.get("redis")
            pg_doc = document.get("postgres")
            return cls(
                redis=None if not redis_doc else RedisRecord(**_known(RedisRecord, redis_doc)),
                postgres=None if not pg_doc else PostgresRecord(**_known(PostgresRecord, pg_doc)),
                version=version,
            )
        except (ValueError, TypeError) as exc:
            raise ServicesError(
                f"{source} is damaged ({exc}); stop the servers it describes by hand and "
                "move it away, then run `pt services up` again"
            ) from exc


def _known(cls: type[Any], document: dict[str, Any]) -> dict[str, Any]:
    """Only the keys ``cls`` declares: derived keys such as ``url`` are recomputed."""
    names = set(cls.__dataclass_fields__)
    return {key: value for key, value in document.items() if key in names}


def state_file(state_dir: Path) -> Path:
    """Path of ``services.json`` in ``state_dir``."""
    return state_dir / STATE_FILE


def load_state(state_dir: Path) -> ServicesState:
    """The recorded state, or an empty one if nothing was ever started here."""
    path = state_file(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ServicesState()
    except OSError as exc:
        raise ServicesError(f"cannot read {path}: {exc.strerror}") from exc
    return ServicesState.from_json(text, path)


def save_state(state_dir: Path, state: ServicesState) -> None:
    """Write ``services.json`` (0600, atomic)."""
    write_private_file(state_file(state_dir), state.to_json())


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the state directory for the ``with`` body.

    Starting and stopping read, change and write ``services.json`` and the
    data directories; two concurrent ``pt services up`` would otherwise start
    two Redis servers on one data directory.
    """
    ensure_private_dir(state_dir)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
