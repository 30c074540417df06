"""The Postgres and Redis facts: SQL kept as files, passwords on stdin only, psql's rows."""

from __future__ import annotations

from opskit.facts import postgres, redis
from opskit.facts.base import HERE, Output
from opskit.secrets import Secret


def _all_secret_values(env):
    return [s.reveal() for s in env.secrets.values()]


def test_passwords_travel_on_stdin_only(make_env):
    env = make_env("local")
    for fact, secret in ((postgres.ui(env), "postgres_ui_password"), (redis.answers(env), "redis_password")):
        value = env.secrets[secret].reveal()
        assert value not in " ".join(fact.argv)
        assert value.encode() in fact.stdin
    admin = postgres.admin(env)
    assert not [v for v in _all_secret_values(env) if v in " ".join(admin.argv) or v.encode() in admin.stdin]
    ui = postgres.ui(env)
    assert env.secrets["postgres_ui_password"].reveal() not in repr(ui)  # a fact's repr leaves stdin out


def test_ui_probe_reads_the_password_line_before_psql(make_env):
    fact = postgres.ui(make_env("local"))
    assert "IFS= read -r PGPASSWORD" in fact.argv[-1]
    first, _, sql = fact.stdin.decode().partition("\n")
    assert "CREATE TABLE" in sql and "ROLLBACK" in sql and "COMMIT" not in sql
    assert f"probe={postgres.PROBE_TABLE}" in fact.argv[-1]


def test_the_admin_sql_is_the_file_beside_the_module(make_env):
    fact = postgres.admin(make_env("local"))
    assert fact.stdin == (HERE / "postgres_admin.sql").read_bytes()
    assert "postgres" in fact.argv and "psql" in fact.argv


def test_redis_password_is_quoted_for_redis_cli(make_env):
    env = make_env("local")
    env.secrets["redis_password"] = Secret('a"b\\c', "redis_password")
    assert redis.answers(env).stdin == b'AUTH "a\\"b\\\\c"\nPING\n'


def test_redis_answers():
    facts = redis.parse_answers("=====opskit:noauth=====\nNOAUTH Authentication required.\n=====opskit:auth=====\nOK\nPONG\n")
    assert facts.without_password.startswith("NOAUTH") and facts.with_password.split()[-1] == "PONG"


def test_psql_rows():
    out = "role\x1fjob_agent_ui\x1ff\x1ff\n\nalembic\x1f0002\n"
    assert postgres.psql_rows(out) == [["role", "job_agent_ui", "f", "f"], ["alembic", "0002"]]
    assert postgres.pg_bool("t") and not postgres.pg_bool("f")


def test_admin_rows_become_roles_grants_and_connections():
    sep = "\x1f"
    rows = [["role", "app_admin", "f", "f", "f", "t", "20", "f"], ["db_owner", "app_admin"],
            ["ui_priv", "schema_create", "f"], ["table", "runs", "app_admin", "t", "t", "t", "t", "f", "f", "f"],
            ["sequence", "runs_id_seq", "t"], ["default_acl", "r", "{app_ui=arwd/app_admin}"], ["connections", "3"],
            ["max_connections", "100"], ["role_connections", "app_admin", "2"], ["alembic", "0002"]]
    pg = postgres.parse_admin("\n".join(sep.join(r) for r in rows), "psql: ERROR: x")
    assert pg.roles["app_admin"] == {"super": False, "createdb": False, "createrole": False, "login": True,
                                     "connlimit": 20, "bypassrls": False}
    assert pg.tables["runs"]["select"] and not pg.tables["runs"]["truncate"] and pg.tables["runs"]["owner"] == "app_admin"
    assert (pg.db_owner, pg.connections, pg.max_connections, pg.alembic) == ("app_admin", 3, 100, ["0002"])
    assert pg.role_connections == {"app_admin": 2} and pg.errors == "psql: ERROR: x"


def test_ui_rows():
    ui = postgres.parse_ui(Output("login\x1fapp_ui\nread_runs\x1f0\n", "ERROR:  permission denied for schema public", 0))
    assert (ui.user, ui.read_ok, ui.created) == ("app_ui", True, False) and "permission denied" in ui.errors
