"""Postgres: the two roles and their grants (the admin role owns the schema; the UI role reads
and writes rows and can create nothing), Alembic at the image's head, connections in use."""

from __future__ import annotations

import re

import pytest

from .checks import listing, problem

pytestmark = pytest.mark.postgres

ROLE_KINDS = ("admin", "ui")
ROLES_FIX = "invoke db.roles -e ENV  (re-applies roles.psql: grants and revokes)"


def _role(env, kind):
    return env.postgres.admin_role if kind == "admin" else env.postgres.ui_role


def _psql(server, env, sql):
    return server.compose_hint("exec", "postgres", "psql", "-U", env.postgres.admin_role, "-d",
                               env.postgres.database, "-c", sql)


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
    missing = [f"{t} ({', '.join(k.upper() for k in ('select', 'insert', 'update', 'delete') if not p[k])})"
               for t, p in pg_admin.tables.items() if not all(p[k] for k in ('select', 'insert', 'update', 'delete'))]
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
