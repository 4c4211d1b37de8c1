"""Database roles: who owns the schema, and what the master may do with it.

PaperTrader logs in to PostgreSQL with two roles (docs/SECURITY.md, "The
database"):

* the **owner** owns the database and every table, view, sequence and
  function in it. Migrations run as the owner (``pt db migrate``, ``pt up``);
  no server process holds its password.
* the **master** role is what the master server logs in as. It reads and
  writes rows (``MASTER_TABLE_PRIVILEGES``) and may only read
  ``schema_migrations``; it owns nothing, so it cannot create, alter, drop or
  truncate a table, and it is neither a superuser nor a member of the owner.

Workers have no role at all: they get no database URL (anything they need
from PostgreSQL comes through the master link).

``grant_master`` runs as the owner after every migration run. It grants on
what exists and sets the owner's default privileges, so a table a later
migration creates is granted to the master as it is created, and a migration
never has to name the role. ``check_master`` then verifies the result instead
of trusting it: a master role that is a superuser, owns something, inherits
the owner or may create in the schema is an error that says what to fix.

``ensure_login_role`` and ``adopt_database`` run as a superuser: the private
cluster's set-up (``papertrader/services``) uses them to make the roles and
to move a database made before the roles existed (everything owned by the
superuser the servers then logged in as) to the owner, keeping every row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

Cursor = psycopg2.extensions.cursor

#: What the master may do on every table and view of the schema.
MASTER_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
#: Tables the master only reads (it checks at start that the schema is current).
MASTER_READ_ONLY_TABLES = ("schema_migrations",)
#: On sequences: nextval() and currval(); setval() (UPDATE) is the owner's.
MASTER_SEQUENCE_PRIVILEGES = ("USAGE", "SELECT")
#: On the database: log in, and the temporary tables the drain's functions make.
MASTER_DATABASE_PRIVILEGES = ("CONNECT", "TEMPORARY")
#: pg_class.relkind -> the ALTER command that changes such a relation's owner.
_RELATION_KINDS = {
    "r": "TABLE",
    "p": "TABLE",
    "f": "FOREIGN TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "S": "SEQUENCE",
}


class RoleError(Exception):
    """The roles are not as least privilege wants them; the message says what to do."""


def login_name(url: str) -> str | None:
    """The user name a PostgreSQL URL or DSN logs in as (None when it names none)."""
    try:
        return psycopg2.extensions.parse_dsn(url).get("user") or None
    except psycopg2.ProgrammingError:
        return None


def _privileges(names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL(name) for name in names)


def grant_master(cur: Cursor, master: str) -> None:
    """Give the role ``master`` exactly the master's rights (run as the owner).

    Idempotent. Database-wide rights (who may connect) are set only when the
    owner owns the database; otherwise its owner keeps deciding that.
    """
    role = sql.Identifier(master)
    tables = _privileges(MASTER_TABLE_PRIVILEGES)
    sequences = _privileges(MASTER_SEQUENCE_PRIVILEGES)
    statements = [
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role),
        sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA public TO {}").format(tables, role),
        sql.SQL("GRANT {} ON ALL SEQUENCES IN SCHEMA public TO {}").format(sequences, role),
        sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {}").format(role),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {} ON TABLES TO {}").format(
            tables, role
        ),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {} ON SEQUENCES TO {}").format(
            sequences, role
        ),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO {}"
        ).format(role),
    ]
    statements += [
        sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(
            sql.Identifier(table), role
        )
        for table in MASTER_READ_ONLY_TABLES
    ]
    for statement in statements:
        cur.execute(statement)
    cur.execute(
        "SELECT pg_get_userbyid(datdba) = current_user, current_database()"
        " FROM pg_database WHERE datname = current_database()"
    )
    owns_database, database = cur.fetchone() or (False, "")
    if owns_database:
        name = sql.Identifier(database)
        cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(name))
        cur.execute(
            sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                _privileges(MASTER_DATABASE_PRIVILEGES), name, role
            )
        )
    cur.execute(
        "SELECT pg_get_userbyid(nspowner) = current_user OR pg_has_role(nspowner, 'USAGE')"
        " FROM pg_namespace WHERE nspname = 'public'"
    )
    row = cur.fetchone()
    if row is not None and row[0]:
        # PostgreSQL 15 already withholds CREATE from PUBLIC; older servers grant it.
        cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


@dataclass(frozen=True)
class RoleFacts:
    """What the catalogs say about one role, as ``check_master`` reads them."""

    superuser: bool
    creates_roles: bool
    creates_databases: bool
    member_of_owner: bool
    may_create_in_schema: bool
    owns: tuple[str, ...]


def role_facts(cur: Cursor, role: str, owner: str) -> RoleFacts | None:
    """The facts about ``role`` (None if no such role exists)."""
    cur.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, pg_has_role(%(role)s, %(owner)s, 'USAGE'),"
        " has_schema_privilege(%(role)s, 'public', 'CREATE')"
        " FROM pg_roles WHERE rolname = %(role)s",
        {"role": role, "owner": owner},
    )
    row = cur.fetchone()
    if row is None:
        return None
    cur.execute(
        "SELECT c.oid::regclass::text FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = %(role)s"
        " UNION ALL SELECT p.oid::regprocedure::text FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) = %(role)s"
        " UNION ALL SELECT 'database ' || datname FROM pg_database"
        " WHERE datname = current_database() AND pg_get_userbyid(datdba) = %(role)s"
        " ORDER BY 1",
        {"role": role},
    )
    owns = tuple(str(name) for (name,) in cur.fetchall())
    return RoleFacts(bool(row[0]), bool(row[1]), bool(row[2]), bool(row[3]), bool(row[4]), owns)


def master_role_problems(facts: RoleFacts, role: str) -> list[str]:
    """What is wrong with ``facts`` for a master role, one sentence each (empty: nothing)."""
    problems = []
    if facts.superuser:
        problems.append(f"{role} is a superuser")
    if facts.creates_roles or facts.creates_databases:
        problems.append(f"{role} may create roles or databases")
    if facts.member_of_owner:
        problems.append(f"{role} has the owner's rights (it is the owner or a member of it)")
    if facts.owns:
        shown = ", ".join(facts.owns[:3]) + (" and more" if len(facts.owns) > 3 else "")
        problems.append(f"{role} owns {shown}, so it could alter or drop it")
    if facts.may_create_in_schema:
        problems.append(
            f"{role} may create tables in schema public "
            "(as a superuser: REVOKE CREATE ON SCHEMA public FROM PUBLIC)"
        )
    return problems


def check_master(cur: Cursor, master: str) -> None:
    """Raise ``RoleError`` unless ``master`` has no more than the master's rights."""
    cur.execute("SELECT current_user")
    row = cur.fetchone()
    owner = str(row[0]) if row else ""
    facts = role_facts(cur, master, owner)
    if facts is None:
        raise RoleError(f"the master's role {master} does not exist: create it first (LOGIN)")
    problems = master_role_problems(facts, master)
    if problems:
        raise RoleError("; ".join(problems))


def ensure_login_role(cur: Cursor, name: str, password: str) -> None:
    """Create the login role ``name`` or set its password; it never keeps any power
    beyond logging in (run as a superuser)."""
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    cur.execute(
        sql.SQL(
            verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "NOBYPASSRLS PASSWORD %s"
        ).format(sql.Identifier(name)),
        (password,),
    )


def adopt_database(cur: Cursor, owner: str) -> list[str]:
    """Make ``owner`` the owner of the current database and of everything in its
    schema ``public`` (run as a superuser, connected to that database).

    This is how a database made before the roles existed, where everything
    belonged to the superuser the servers logged in as, moves to the owner:
    ownership changes, rows stay. Sequences that belong to a column move with
    their table. Returns what changed hands (empty when nothing had to).
    """
    owner_id = sql.Identifier(owner)
    cur.execute(
        "SELECT c.oid::regclass::text, c.relkind FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind = ANY(%s)"
        " AND pg_get_userbyid(c.relowner) <> %s"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
        "   AND d.objid = c.oid AND d.deptype IN ('a', 'i'))"
        " ORDER BY 1",
        (list(_RELATION_KINDS), owner),
    )
    moved = []
    for name, kind in cur.fetchall():
        cur.execute(
            sql.SQL("ALTER {} {} OWNER TO {}").format(
                sql.SQL(_RELATION_KINDS[kind]), sql.SQL(name), owner_id
            )
        )
        moved.append(str(name))
    cur.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> %s ORDER BY 1",
        (owner,),
    )
    for (name,) in cur.fetchall():
        cur.execute(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(sql.SQL(name), owner_id))
        moved.append(str(name))
    cur.execute(
        "SELECT current_database() FROM pg_database"
        " WHERE datname = current_database() AND pg_get_userbyid(datdba) <> %s",
        (owner,),
    )
    row = cur.fetchone()
    if row is not None:
        cur.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(row[0]), owner_id)
        )
        moved.append(f"database {row[0]}")
    return moved


def master_role_for(owner_url: str, master_url: str) -> str | None:
    """The role to grant the master's rights to: the master URL's user when it is not
    the owner's (None: one URL for both, as before the roles, so nothing to grant)."""
    master = login_name(master_url)
    if master is None or master == login_name(owner_url):
        return None
    return master


def own_problems(cur: Cursor) -> list[str]:
    """What the logged-in role could do beyond a master's (the master says so at start)."""
    cur.execute("SELECT current_user")
    row = cur.fetchone()
    role = str(row[0]) if row else ""
    facts = role_facts(cur, role, role)
    if facts is None:
        return []
    return master_role_problems(replace(facts, member_of_owner=False), role)


def problems_of(url: str) -> list[str]:
    """What the role ``url`` logs in as could do beyond a master's (``pt db status``)."""
    try:
        conn = psycopg2.connect(url, connect_timeout=5)
    except psycopg2.Error as exc:
        return [f"cannot log in ({' '.join(str(exc).split())})"]
    try:
        with conn, conn.cursor() as cur:
            return own_problems(cur)
    finally:
        conn.close()
