"""Postgres: the roles and their grants (the admin role owns the schema and has no other power;
the UI role reads and writes rows, can create nothing and cannot move Alembic's revision; neither
is a superuser, the bootstrap superuser is the superuser role), Alembic at the image's head,
connections in use."""

from __future__ import annotations

import re
import shlex

import pytest

from opskit.facts import read
from opskit.facts.postgres import in_postgres, pg_bool, psql_rows
from opskit.postgres import ALEMBIC_VERSION_TABLE, BOOTSTRAP_OID

from .checks import listing, problem

pytestmark = pytest.mark.postgres

ROLE_KINDS = ("admin", "ui")
ROLES_FIX = "invoke db.roles -e ENV  (re-applies roles.psql: grants and revokes)"


def _role(env, kind):
    return env.postgres.admin_role if kind == "admin" else env.postgres.ui_role


def _psql(server, env, sql):
    return server.compose_hint("exec", "postgres", "psql", "-U", env.postgres.admin_role, "-d",
                               env.postgres.database, "-c", sql)


# -- powers: what a role an app uses could do beyond its own database -----------------------------------

_SEP = "\x1f"
_PSQL = ("psql", "-X", "-q", "-A", "-t", "-F", _SEP, "-v", "ON_ERROR_STOP=0")
POWERS = ("super", "createrole", "createdb", "replication", "bypassrls")

#: read as the admin role (any role may read pg_roles and ask has_table_privilege)
_POWERS_SQL = f"""
SELECT 'role', rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls
  FROM pg_roles WHERE rolname IN (:'admin', :'ui');
SELECT 'bootstrap', rolname FROM pg_roles WHERE oid = {BOOTSTRAP_OID};
SELECT 'alembic_ui', p, has_table_privilege(:'ui', c.oid, p)
  FROM pg_class c, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p
 WHERE c.oid = to_regclass('public.{ALEMBIC_VERSION_TABLE}') AND EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui');
"""

#: run as the UI role over TCP: a real UPDATE of Alembic's row, rolled back whatever happens
_UI_ALEMBIC_SQL = f"""
SELECT 'login', current_user;
BEGIN;
UPDATE public.{ALEMBIC_VERSION_TABLE} SET version_num = version_num;
SELECT 'updated';
ROLLBACK;
"""


def parse_powers(out) -> dict:
    """{"roles": {name: {power: bool}}, "bootstrap": name, "alembic_ui": {privilege: bool}, "errors": str}."""
    found = {"roles": {}, "bootstrap": None, "alembic_ui": {}, "errors": out.errors}
    for row in psql_rows(out.text):
        if row[0] == "role" and len(row) == 7:
            found["roles"][row[1]] = dict(zip(POWERS, map(pg_bool, row[2:])))
        elif row[0] == "bootstrap" and len(row) == 2:
            found["bootstrap"] = row[1]
        elif row[0] == "alembic_ui" and len(row) == 3:
            found["alembic_ui"][row[1]] = pg_bool(row[2])
    return found


def parse_ui_alembic(out) -> dict:
    """{"user", "updated": bool, "errors"} of `_UI_ALEMBIC_SQL`'s run."""
    rows = psql_rows(out.text)
    user = next((r[1] for r in rows if r[0] == "login" and len(r) > 1), None)
    return {"user": user, "updated": any(r[0] == "updated" for r in rows), "errors": out.errors}


@pytest.fixture(scope="module")
def pg_powers(server, env) -> dict:
    pg = env.postgres
    psql = (*_PSQL, "-v", f"admin={pg.admin_role}", "-v", f"ui={pg.ui_role}", "-U", pg.admin_role, "-d", pg.database,
            "-f", "-")
    fact = in_postgres(env, "postgres_powers", psql, _POWERS_SQL.encode(), parse_powers)
    return read(server.remote, fact, what=f"Postgres role attributes as {pg.admin_role}",
                more=server.compose_hint("logs", "--tail", "50", "postgres"), timeout=30)


@pytest.fixture(scope="module")
def ui_alembic_update(server, env) -> dict:
    """{"user", "updated": bool, "errors"}: the UI role logged in over TCP (its password the first
    line of stdin, never in argv) and tried to UPDATE alembic_version in a rolled-back transaction."""
    pg = env.postgres
    psql = (*_PSQL, "-h", "127.0.0.1", "-p", "5432", "-U", pg.ui_role, "-d", pg.database, "-w", "-f", "-")
    inner = "IFS= read -r PGPASSWORD; export PGPASSWORD; exec " + shlex.join(psql)
    stdin = (env.secrets["postgres_ui_password"].reveal() + "\n").encode() + _UI_ALEMBIC_SQL.encode()
    fact = in_postgres(env, "postgres_ui_alembic", ("sh", "-c", inner), stdin, parse_ui_alembic, ok=None)
    return read(server.remote, fact, what=f"UPDATE of {ALEMBIC_VERSION_TABLE} as {pg.ui_role}", timeout=30)


@pytest.mark.parametrize("kind", ROLE_KINDS)
def test_no_app_role_is_a_superuser(kind, pg_powers, env, server):
    name = _role(env, kind)
    role = pg_powers["roles"].get(name)
    assert role, problem(f"the {kind} role {name} was not found: {pg_powers['errors'].strip()[:200]}", ROLES_FIX)
    assert not role["super"], problem(
        f"the {kind} role {name} is a SUPERUSER: "
        + ("the API and Celery" if kind == "admin" else "the frontend")
        + " could run COPY ... TO PROGRAM on the database host", ROLES_FIX)


def test_the_bootstrap_superuser_is_no_app_role(pg_powers, env):
    """initdb's role can never lose SUPERUSER: it must be the superuser role, which no app uses
    (on a volume from before the superuser role it is the admin role until db.roles renames it)."""
    pg = env.postgres
    bootstrap = pg_powers["bootstrap"]
    assert bootstrap == pg.superuser_role, problem(
        f"the bootstrap superuser (oid {BOOTSTRAP_OID}) is {bootstrap}, not the inventory's postgres.superuser_role "
        f"{pg.superuser_role}" + (" (an app's role)" if bootstrap in (pg.admin_role, pg.ui_role) else ""), ROLES_FIX)


def test_admin_role_has_no_power_beyond_its_objects(pg_powers, env):
    admin = env.postgres.admin_role
    role = pg_powers["roles"].get(admin)
    assert role, problem(f"the admin role {admin} was not found: {pg_powers['errors'].strip()[:200]}", ROLES_FIX)
    extra = [k.upper() for k in ("createrole", "createdb", "replication", "bypassrls") if role[k]]
    assert not extra, problem(f"the admin role {admin} has {', '.join(extra)}: owning the schema needs none of it",
                              ROLES_FIX)


def test_ui_role_may_not_write_alembic_version(pg_powers, env):
    ui = env.postgres.ui_role
    privileges = pg_powers["alembic_ui"]
    assert privileges, problem(f"no {ALEMBIC_VERSION_TABLE} table, or no {ui} role: "
                               f"{pg_powers['errors'].strip()[:200]}", "invoke db.migrate -e ENV")
    granted = [p for p, ok in privileges.items() if ok and p != "SELECT"]
    assert not granted, problem(f"the UI role {ui} has {', '.join(granted)} on {ALEMBIC_VERSION_TABLE}: the frontend "
                                "could move the migration state Alembic owns", ROLES_FIX)


def test_ui_role_cannot_update_alembic_version(ui_alembic_update, env):
    ui = env.postgres.ui_role
    got = ui_alembic_update
    assert got["user"] == ui, problem(f"{ui} could not log in, so the UPDATE was not tried: {got['errors'].strip()[:200]}")
    assert not got["updated"], problem(
        f"{ui} could UPDATE {ALEMBIC_VERSION_TABLE} (rolled back): the frontend could corrupt Alembic's state", ROLES_FIX)
    assert "permission denied" in got["errors"], problem(
        f"the UPDATE of {ALEMBIC_VERSION_TABLE} as {ui} failed, but not for lack of permission: {got['errors'].strip()[:200]}")


@pytest.mark.parametrize("kind", ROLE_KINDS)
def test_postgres_role_exists(kind, pg_admin, env, server):
    name = _role(env, kind)
    role = pg_admin.roles.get(name)
    assert role and role["login"], problem(
        f"the {kind} role {name} " + ("cannot log in" if role else "does not exist")
        + (f" ({pg_admin.errors.strip()[:120]})" if pg_admin.errors.strip() else ""),
        _psql(server, env, "\\du"))


@pytest.mark.parametrize("kind", ROLE_KINDS)
def test_postgres_role_connection_limit(kind, pg_admin, env, server):
    name = _role(env, kind)
    want = env.postgres.admin_connection_limit if kind == "admin" else env.postgres.ui_connection_limit
    got = (pg_admin.roles.get(name) or {}).get("connlimit")
    assert got == want, problem(f"{name} has connection limit {got}, the inventory's "
                                f"postgres.connection_limit.{kind} is {want}", _psql(server, env, "\\du"))


def test_admin_role_owns_database_and_schema(pg_admin, env, server):
    admin = env.postgres.admin_role
    bad = ([f"database {env.postgres.database} is owned by {pg_admin.db_owner}"] if pg_admin.db_owner != admin else []) \
        + ([f"schema public is owned by {pg_admin.schema_owner}"] if pg_admin.schema_owner != admin else [])
    assert not bad, problem("; ".join(bad) + f" (want {admin})", ROLES_FIX)


def test_tables_owned_by_admin_role(pg_admin, env, server):
    admin = env.postgres.admin_role
    others = [f"{t} ({p['owner']})" for t, p in pg_admin.tables.items() if p["owner"] != admin]
    assert not others, problem(f"tables not owned by {admin} (only Alembic, as {admin}, creates tables): "
                               f"{listing(others)}", _psql(server, env, "\\dt"))


def test_ui_role_has_no_special_powers(pg_admin, env, server):
    ui = env.postgres.ui_role
    role = pg_admin.roles.get(ui)
    assert role, problem(f"the UI role {ui} does not exist", ROLES_FIX)
    powers = [k.upper() for k in ("super", "createdb", "createrole", "bypassrls") if role[k]]
    assert not powers, problem(f"the UI role {ui} has {', '.join(powers)}", ROLES_FIX)


def test_ui_role_has_no_create_privilege(pg_admin, env, server):
    ui = env.postgres.ui_role
    p = pg_admin.ui_privileges
    assert p, problem(f"no privileges read for {ui}: {pg_admin.errors.strip()[:200]}", ROLES_FIX)
    granted = (["CREATE on schema public"] if p.get("schema_create") else []) \
        + ([f"CREATE on database {env.postgres.database}"] if p.get("db_create") else [])
    assert not granted, problem(f"the UI role {ui} has {' and '.join(granted)}: Prisma could change the schema",
                                ROLES_FIX)


def test_ui_role_logs_in_with_its_password(pg_ui, env, server):
    ui = env.postgres.ui_role
    assert pg_ui.user == ui, problem(
        f"{ui} could not log in over TCP with the inventory's postgres_ui_password: "
        f"{pg_ui.errors.strip()[:200] or f'exit {pg_ui.returncode}'}",
        server.compose_hint("logs", "--tail", "50", "postgres"))


def test_ui_role_reads_app_tables(pg_ui, env, server):
    ui = env.postgres.ui_role
    assert pg_ui.read_ok, problem(f"{ui} cannot read table runs: {pg_ui.errors.strip()[:200]}", ROLES_FIX)


def test_ui_role_cannot_create_table(pg_ui, env, server):
    ui = env.postgres.ui_role
    assert pg_ui.user == ui, problem(f"{ui} could not log in, so CREATE TABLE was not tried")
    assert not pg_ui.created, problem(
        f"{ui} could CREATE TABLE in {env.postgres.database} (rolled back): the UI role has CREATE, so Prisma "
        "could change the schema", ROLES_FIX)
    assert "permission denied" in pg_ui.errors, problem(
        f"CREATE TABLE as {ui} failed, but not for lack of permission: {pg_ui.errors.strip()[:200]}")


def test_ui_role_reads_and_writes_every_table(pg_admin, env, server):
    ui = env.postgres.ui_role
    assert pg_admin.tables, problem(f"no table in schema public of {env.postgres.database} (migrations not run?)",
                                    "invoke db.migrate")
    # Alembic's table is the exception: readable only (test_ui_role_may_not_write_alembic_version)
    rows = {t: p for t, p in pg_admin.tables.items() if t != ALEMBIC_VERSION_TABLE}
    missing = [f"{t} ({', '.join(k.upper() for k in ('select', 'insert', 'update', 'delete') if not p[k])})"
               for t, p in rows.items() if not all(p[k] for k in ('select', 'insert', 'update', 'delete'))]
    extra = [f"{t} ({', '.join(k.upper() for k in ('truncate', 'references', 'trigger') if p[k])})"
             for t, p in pg_admin.tables.items() if any(p[k] for k in ('truncate', 'references', 'trigger'))]
    assert not missing and not extra, problem(
        "; ".join(([f"{ui} lacks {listing(missing)}"] if missing else [])
                  + ([f"{ui} has more than rows: {listing(extra)}"] if extra else [])), ROLES_FIX)


def test_ui_role_uses_every_sequence(pg_admin, env):
    ui = env.postgres.ui_role
    missing = [s for s, ok in pg_admin.sequences.items() if not ok]
    assert not missing, problem(f"{ui} cannot use sequences {listing(missing)} (INSERT would fail)", ROLES_FIX)


def _acl_privileges(acl: str, role: str) -> str:
    for item in acl.strip("{}").split(","):
        grantee, _, rest = item.strip().strip('"').partition("=")
        if grantee.strip('"') == role:
            return rest.partition("/")[0]
    return ""


def test_future_tables_granted_to_ui_role(pg_admin, env):
    ui, admin = env.postgres.ui_role, env.postgres.admin_role
    tables = _acl_privileges(pg_admin.default_acls.get("r", ""), ui)
    sequences = _acl_privileges(pg_admin.default_acls.get("S", ""), ui)
    bad = ([f"tables: {tables or 'nothing'} (want arwd)"] if set(tables) != set("arwd") else []) \
        + ([f"sequences: {sequences or 'nothing'} (want rU)"] if set(sequences) != set("rU") else [])
    assert not bad, problem(f"default privileges for what {admin} creates next give {ui} " + "; ".join(bad)
                            + ": the next migration's tables would be out of the UI's reach", ROLES_FIX)


def test_alembic_version_at_image_head(pg_admin, probe, env, server):
    alembic = probe.wait("alembic", timeout=probe.patience) or {}
    heads = alembic.get("heads") or []
    assert heads, problem(f"could not read the migrations' head in the api image: {alembic.get('error') or probe.stderr[-200:]}",
                          server.compose_hint("exec", "api", "alembic", "heads"))
    assert pg_admin.alembic == heads, problem(
        f"the database is at alembic revision {listing(pg_admin.alembic) or 'none (no alembic_version)'}, "
        f"the api image's head is {listing(heads)}: migrations did not run",
        "invoke db.migrate -e ENV  (or: " + server.compose_hint("run", "--rm", "api", "alembic", "upgrade", "head") + ")")


def test_db_connections_below_threshold(pg_admin, env, server):
    used, limit = pg_admin.connections, pg_admin.max_connections
    assert used is not None and limit, problem(f"could not count connections: {pg_admin.errors.strip()[:200]}")
    percent = 100.0 * used / limit
    threshold = env.smoke.max_db_connections_percent
    by_role = ", ".join(f"{r} {n}" for r, n in sorted(pg_admin.role_connections.items(), key=lambda x: -x[1]))
    assert percent < threshold, problem(
        f"{used} of {limit} Postgres connections in use ({percent:.0f}%, threshold smoke.max_db_connections_percent "
        f"= {threshold}%; by role: {by_role}): a connection leak makes the database crawl",
        _psql(server, env, "SELECT usename, application_name, client_addr, state, count(*) FROM pg_stat_activity "
                           "GROUP BY 1,2,3,4 ORDER BY 5 DESC"))


@pytest.mark.parametrize("kind", ROLE_KINDS)
def test_role_connections_below_its_limit(kind, pg_admin, env, server):
    name = _role(env, kind)
    limit = env.postgres.admin_connection_limit if kind == "admin" else env.postgres.ui_connection_limit
    if limit < 0:
        pytest.skip(f"{name} has no connection limit in the inventory")
    used = pg_admin.role_connections.get(name, 0)
    threshold = env.smoke.max_db_connections_percent
    assert 100.0 * used / limit < threshold, problem(
        f"{name} holds {used} of its {limit} connections (threshold {threshold}%): a leak in "
        + ("the API or Celery" if kind == "admin" else "the frontend"),
        _psql(server, env, f"SELECT application_name, client_addr, state, count(*) FROM pg_stat_activity "
                           f"WHERE usename = '{name}' GROUP BY 1,2,3"))


def test_no_unexpected_errors_reading_postgres(pg_admin):
    errors = [line for line in pg_admin.errors.splitlines() if re.match(r"^(psql:.*)?(ERROR|FATAL)", line.strip())]
    assert not errors, problem(f"reading Postgres facts as the admin role gave: {listing(errors, 3)}")
