"""Postgres, from inside its container: the roles, grants, Alembic's revision and connections (read
as the admin role over the local socket), and what the UI role may do (logged in over TCP with
its password). The SQL is in `postgres_admin.sql` and `postgres_ui.sql` beside this module."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..layout import project_filter
from .base import HERE, Fact, Output, script, words

#: the table the UI role's probe tries to create (in a transaction that is rolled back)
PROBE_TABLE = "opskit_smoke_probe"
_SEP = "\x1f"
_PSQL = ("psql", "-X", "-q", "-A", "-t", "-F", _SEP, "-v", "ON_ERROR_STOP=0")


def in_postgres(env, name: str, command, stdin: bytes, parse_output, ok=(0,)) -> Fact:
    """A fact whose command runs in the running postgres container of `env`'s project."""
    return script("in_service.sh", words(project_filter(env.project, "postgres")), "postgres", *command,
                  name=name, stdin=stdin, parse_output=parse_output, ok=ok)


# -- as the admin role ----------------------------------------------------------------------------------


@dataclass
class PgAdmin:
    roles: dict  # name -> {super, createdb, createrole, login, connlimit, bypassrls}
    db_owner: str
    schema_owner: str
    ui_privileges: dict  # schema_create, schema_usage, db_create, db_connect -> bool
    tables: dict  # name -> {owner, select, insert, update, delete, truncate, references, trigger}
    sequences: dict  # name -> usage
    default_acls: dict  # objtype -> acl text
    connections: int | None
    max_connections: int | None
    reserved_connections: int | None
    role_connections: dict
    alembic: list
    errors: str


def admin(env) -> Fact:
    """The fact: PgAdmin, read by `postgres_admin.sql` as the admin role (no password: the
    container's local socket)."""
    pg = env.postgres
    psql = (*_PSQL, "-v", f"admin={pg.admin_role}", "-v", f"ui={pg.ui_role}", "-U", pg.admin_role, "-d", pg.database,
            "-f", "-")
    return in_postgres(env, "postgres_admin", psql, (HERE / "postgres_admin.sql").read_bytes(),
                       lambda out: parse_admin(out.text, out.errors))


_TABLE_PRIVILEGES = ("select", "insert", "update", "delete", "truncate", "references", "trigger")


def parse_admin(text: str, errors: str = "") -> PgAdmin:
    roles, ui_priv, tables, seqs, acls, role_conns, alembic = {}, {}, {}, {}, {}, {}, []
    db_owner = schema_owner = ""
    conns = maxc = reserved = None
    for row in psql_rows(text):
        kind, rest = row[0], row[1:]
        if kind == "role" and len(rest) == 7:
            roles[rest[0]] = {"super": pg_bool(rest[1]), "createdb": pg_bool(rest[2]), "createrole": pg_bool(rest[3]),
                              "login": pg_bool(rest[4]), "connlimit": int(rest[5]), "bypassrls": pg_bool(rest[6])}
        elif kind == "db_owner":
            db_owner = rest[0]
        elif kind == "schema_owner":
            schema_owner = rest[0]
        elif kind == "ui_priv" and len(rest) == 2:
            ui_priv[rest[0]] = pg_bool(rest[1])
        elif kind == "table" and len(rest) == 9:
            tables[rest[0]] = {"owner": rest[1], **{k: pg_bool(v) for k, v in zip(_TABLE_PRIVILEGES, rest[2:])}}
        elif kind == "sequence" and len(rest) == 2:
            seqs[rest[0]] = pg_bool(rest[1])
        elif kind == "default_acl" and len(rest) == 2:
            acls[rest[0]] = rest[1]
        elif kind == "connections":
            conns = int(rest[0])
        elif kind == "max_connections":
            maxc = int(rest[0])
        elif kind == "reserved_connections":
            reserved = int(rest[0])
        elif kind == "role_connections" and len(rest) == 2:
            role_conns[rest[0]] = int(rest[1])
        elif kind == "alembic":
            alembic.append(rest[0])
    return PgAdmin(roles, db_owner, schema_owner, ui_priv, tables, seqs, acls, conns, maxc, reserved, role_conns,
                   sorted(alembic), errors)


# -- as the UI role -------------------------------------------------------------------------------------


@dataclass
class PgUi:
    user: str | None
    read_ok: bool
    created: bool
    errors: str
    returncode: int


def ui(env) -> Fact:
    """The fact: PgUi, from `postgres_ui.sql` run as the UI role over TCP. Its password is the
    first line of stdin, never in argv."""
    pg = env.postgres
    psql = (*_PSQL, "-v", f"probe={PROBE_TABLE}", "-h", "127.0.0.1", "-p", "5432", "-U", pg.ui_role, "-d", pg.database,
            "-w", "-f", "-")
    inner = "IFS= read -r PGPASSWORD; export PGPASSWORD; exec " + shlex.join(psql)
    password = env.secrets["postgres_ui_password"].reveal()
    stdin = (password + "\n").encode() + (HERE / "postgres_ui.sql").read_bytes()
    return in_postgres(env, "postgres_ui", ("sh", "-c", inner), stdin, parse_ui, ok=None)


def parse_ui(out: Output) -> PgUi:
    user, read_ok, created = None, False, False
    for row in psql_rows(out.text):
        if row[0] == "login" and len(row) > 1:
            user = row[1]
        elif row[0] == "read_runs":
            read_ok = True
        elif row[0] == "created":
            created = True
    return PgUi(user, read_ok, created, out.errors, out.returncode)


# -- psql's output --------------------------------------------------------------------------------------


def psql_rows(text: str, sep: str = _SEP) -> list[list[str]]:
    """psql -A -t -F SEP output -> rows of fields (blank lines dropped)."""
    return [line.split(sep) for line in text.splitlines() if line.strip()]


def pg_bool(value: str) -> bool:
    return value.strip() in ("t", "true", "on", "1")
