"""The roles on a real PostgreSQL: the rendered roles.psql applied exactly as `invoke db.roles`
applies it on the server, then the UI role tried for real over TCP with its SCRAM password."""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import subprocess
import time

import psycopg
import pytest
from psycopg import errors

from opskit import ROOT, db, scram
from opskit.postgres import roles_script

from .pg_server import ADMIN_PASSWORD, alembic, apply_roles, pg_env, pg_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.postgres
_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}_{next(_names)}"


def roles(server, env, folder) -> db.RolesResult:
    done = apply_roles(server, env, folder)
    assert done.returncode == 0, f"roles.psql failed:\n{done.stdout}\n{done.stderr}"
    return db.roles_result(done.stdout)


def as_ui(server, env, password=None, **kwargs):
    pg = env.postgres
    return server.connect(pg.ui_role, password or env.secrets["postgres_ui_password"].reveal(), pg.database, **kwargs)


def grants(server, database: str) -> str:
    """Owners and ACLs of the database, the schema, its tables and sequences, and default privileges."""
    return server.psql_value(
        "SELECT (SELECT concat_ws(' ', pg_get_userbyid(datdba), datacl) FROM pg_database WHERE datname = current_database())"
        " || ' / ' || (SELECT concat_ws(' ', pg_get_userbyid(nspowner), nspacl) FROM pg_namespace WHERE nspname = 'public')"
        " || ' / ' || coalesce((SELECT string_agg(concat_ws(' ', relname, pg_get_userbyid(relowner), relacl), ', ' ORDER BY relname)"
        "   FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S')), '')"
        " || ' / ' || coalesce((SELECT string_agg(concat_ws(' ', defaclobjtype, defaclacl), ', ' ORDER BY 1) FROM pg_default_acl), '')",
        dbname=database)


@pytest.fixture(scope="module")
def migrated(pg_server, tmp_path_factory):
    """A database whose roles exist first, then the sample app's Alembic migrations create the tables."""
    env = pg_env(unique("app"), unique("ui"))
    pg_server.create_database(env.postgres.database)
    first = roles(pg_server, env, tmp_path_factory.mktemp("roles"))
    assert first.is_changed
    done = alembic(pg_server, env.postgres.database, "upgrade", "head")
    assert done.returncode == 0, done.output
    return env


# -- the UI role reads and writes rows of tables created after it --------------------------------------


def test_the_ui_role_reads_and_writes_rows_of_tables_alembic_created_later(pg_server, migrated):
    with as_ui(pg_server, migrated) as conn:
        run = conn.execute("INSERT INTO runs (id, status) VALUES (gen_random_uuid(), 'queued') RETURNING id").fetchone()[0]
        conn.execute("UPDATE runs SET status = 'done', task_id = 't1' WHERE id = %s", (run,))
        # run_events.id is a BIGSERIAL: inserting uses its sequence
        event = conn.execute("INSERT INTO run_events (run_id, status) VALUES (%s, 'done') RETURNING id", (run,)).fetchone()[0]
        assert conn.execute("SELECT status FROM runs WHERE id = %s", (run,)).fetchone() == ("done",)
        assert conn.execute("SELECT count(*) FROM run_events WHERE id = %s", (event,)).fetchone() == (1,)
        conn.execute("DELETE FROM run_events WHERE run_id = %s", (run,))
        assert conn.execute("DELETE FROM runs WHERE id = %s", (run,)).rowcount == 1


@pytest.mark.parametrize("ddl", [
    "CREATE TABLE prisma_made (id int)",
    "ALTER TABLE runs ADD COLUMN prisma_col text",
    "DROP TABLE run_events",
    "TRUNCATE runs",
    "CREATE SCHEMA prisma",
    "CREATE INDEX prisma_idx ON runs (status)",
    "ALTER TABLE runs RENAME TO runs_old",
    "DROP TABLE alembic_version",
    "SELECT setval('run_events_id_seq', 1)",
])
def test_the_ui_role_cannot_change_the_schema(pg_server, migrated, ddl):
    with as_ui(pg_server, migrated) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(ddl)


def test_the_ui_role_owns_nothing_and_nobody_may_create_in_public(pg_server, migrated):
    pg = migrated.postgres
    owned = pg_server.psql_value(f"SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles "
                                 f"WHERE rolname = '{pg.ui_role}')", dbname=pg.database)
    assert owned == "0"
    with as_ui(pg_server, migrated) as conn:
        assert conn.execute("SELECT has_database_privilege(current_user, current_database(), 'CREATE'), "
                            "has_schema_privilege(current_user, 'public', 'CREATE')").fetchone() == (False, False)
    # PUBLIC lost CREATE on the schema, whatever the version's default
    public_acl = pg_server.psql_value("SELECT nspacl FROM pg_namespace WHERE nspname = 'public'", dbname=pg.database)
    assert [item for item in public_acl.strip("{}").split(",") if item.startswith("=")] == [f"=U/{pg.admin_role}"]


def test_a_second_run_changes_nothing(pg_server, migrated, tmp_path):
    before = grants(pg_server, migrated.postgres.database)
    result = roles(pg_server, migrated, tmp_path)
    assert result == db.RolesResult() and result.summary() == "roles: no change"
    assert grants(pg_server, migrated.postgres.database) == before


def test_the_script_sent_inline_does_what_the_installed_file_does(pg_server, migrated):
    """`invoke db.roles` between deploys sends the script on stdin instead of `\\i` of the server's copy."""
    done = pg_server.psql(argv=db.psql_argv(migrated.postgres), stdin=db.roles_input(migrated, script=None).reveal())
    assert db.roles_result(done.stdout) == db.RolesResult()


def test_connection_limits_are_the_inventorys(pg_server, tmp_path):
    env = pg_env(unique("limits"), unique("ui"), ui_connection_limit=2)
    pg_server.create_database(env.postgres.database)
    roles(pg_server, env, tmp_path)
    limits = pg_server.psql_value(f"SELECT string_agg(rolname || '=' || rolconnlimit, ' ' ORDER BY rolname) FROM pg_roles "
                                  f"WHERE rolname IN ('{env.postgres.admin_role}', '{env.postgres.ui_role}')")
    assert limits == f"{env.postgres.admin_role}=60 {env.postgres.ui_role}=2"
    with as_ui(pg_server, env), as_ui(pg_server, env):
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            as_ui(pg_server, env)


def memberships_of(server, role: str) -> list:
    return server.psql_value(f"SELECT coalesce(string_agg(m.roleid::regrole::text, ' '), '') FROM pg_auth_members m "
                             f"WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = '{role}')").split()


def test_a_ui_role_made_member_of_the_admin_role_loses_the_membership(pg_server, tmp_path):
    """Someone ran `GRANT admin TO ui` (a membership hands the UI role the owner's rights: DROP,
    ALTER). The next `db.roles` revokes it, says so, and the UI role can drop nothing again."""
    env = pg_env(unique("member"), unique("ui"))
    pg = env.postgres
    pg_server.create_database(pg.database)
    roles(pg_server, env, tmp_path)
    pg_server.psql("CREATE TABLE owned_by_admin (id int)", dbname=pg.database)
    pg_server.psql(f'GRANT "{pg.admin_role}" TO "{pg.ui_role}"')
    assert memberships_of(pg_server, pg.ui_role) == [pg.admin_role]
    with as_ui(pg_server, env) as conn:  # the control: the membership really is dangerous
        conn.execute("DROP TABLE owned_by_admin")
        conn.rollback()

    result = roles(pg_server, env, tmp_path)
    assert memberships_of(pg_server, pg.ui_role) == []
    assert "ui role attributes" in result.changed
    with as_ui(pg_server, env) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("DROP TABLE owned_by_admin")
    assert not roles(pg_server, env, tmp_path).is_changed


# -- passwords ---------------------------------------------------------------------------------------


def test_changing_the_ui_secret_takes_effect_and_is_reported(pg_server, tmp_path):
    env = pg_env(unique("pw"), unique("ui"), ui_password="first-secret")
    pg_server.create_database(env.postgres.database)
    roles(pg_server, env, tmp_path)
    as_ui(pg_server, env).close()

    changed = pg_env(env.postgres.database, env.postgres.ui_role, ui_password="second-secret")
    assert roles(pg_server, changed, tmp_path).changed == ("ui role password",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        as_ui(pg_server, changed, password="first-secret")
    as_ui(pg_server, changed, password="second-secret").close()
    assert not roles(pg_server, changed, tmp_path).is_changed


def test_passwords_are_stored_as_scram_and_never_printed_or_logged(pg_server, tmp_path):
    env = pg_env(unique("log"), unique("ui"), ui_password="never-in-the-log")
    pg = env.postgres
    pg_server.create_database(pg.database)
    # the database logs every statement: the script must still keep its own out of the log
    pg_server.psql(f"ALTER DATABASE {pg.database} SET log_statement = 'all'")
    done = apply_roles(pg_server, env, tmp_path)
    assert done.returncode == 0, done.stderr
    pg_server.psql("SELECT 'opskit-log-marker'", dbname=pg.database)
    stored = pg_server.psql_value(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{pg.ui_role}'")
    assert stored == scram.verifier("never-in-the-log", pg.ui_role)
    log = (pg_server.root / "server.log").read_text()
    assert "opskit-log-marker" in log  # statements of that database are logged...
    for secret in ("never-in-the-log", ADMIN_PASSWORD, stored, stored.split("$")[2]):
        assert secret not in log  # ...but not the script's
        assert secret not in done.stdout + done.stderr


@pytest.mark.parametrize("password", ["plain-ascii-9", "p\u00e4ssw\u00f6rd \u2168\u00ad"])
def test_our_scram_verifier_is_the_one_postgres_computes(pg_server, password):
    """Postgres hashes a plain password with a random salt; ours, given that salt, must agree
    (SASLprep of a non-ASCII password included), and a client logs in with the plain password."""
    role = unique("scram")
    pg_server.psql(f"SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} LOGIN PASSWORD $p${password}$p$")
    stored = pg_server.psql_value(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'")
    iterations, salt = stored.split("$")[1].split(":")
    assert scram.verifier_with_salt(scram.saslprep(password), base64.b64decode(salt), int(iterations)) == stored
    ours = scram.verifier(password, role)
    pg_server.psql(f"ALTER ROLE {role} PASSWORD '{ours}'")
    pg_server.connect(role, password, "postgres").close()


# -- names, old volumes, first boot ---------------------------------------------------------------------


def test_role_and_database_names_that_need_quoting_work(pg_server, tmp_path):
    env = pg_env(f'App "DB" {next(_names)}', f'ui "quoted" Role {next(_names)}')
    pg = env.postgres
    pg_server.create_database(pg.database)
    assert roles(pg_server, env, tmp_path).is_changed
    pg_server.psql("CREATE TABLE later (id serial PRIMARY KEY, note text)", dbname=pg.database)
    with as_ui(pg_server, env) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (pg.ui_role,)
        conn.execute("INSERT INTO later (note) VALUES ('ok')")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE later")
    assert not roles(pg_server, env, tmp_path).is_changed


def test_a_volume_older_than_the_roles_is_fixed(pg_server, tmp_path):
    """The admin role (POSTGRES_USER) made tables before any UI role existed, on a database where
    PUBLIC may still CREATE in public (the default before Postgres 15)."""
    env = pg_env(unique("old"), unique("ui"))
    pg = env.postgres
    pg_server.create_database(pg.database)
    pg_server.psql("GRANT CREATE ON SCHEMA public TO PUBLIC; "
                   "CREATE TABLE legacy (id bigserial PRIMARY KEY, note text); INSERT INTO legacy (note) VALUES ('old')",
                   dbname=pg.database)
    assert roles(pg_server, env, tmp_path).is_changed
    pg_server.psql("CREATE TABLE newer (id bigserial PRIMARY KEY)", dbname=pg.database)
    with as_ui(pg_server, env) as conn:
        assert conn.execute("SELECT note FROM legacy").fetchall() == [("old",)]
        conn.execute("INSERT INTO legacy (note) VALUES ('new')")  # the sequence predates the roles too
        conn.execute("INSERT INTO newer DEFAULT VALUES")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (id int)")


def test_objects_the_ui_role_made_before_pass_to_the_admin_role(pg_server, tmp_path):
    env = pg_env(unique("owned"), unique("ui"))
    pg = env.postgres
    pg_server.create_database(pg.database)
    pg_server.psql(f"CREATE ROLE {pg.ui_role} LOGIN PASSWORD 'x'; GRANT CREATE ON SCHEMA public TO {pg.ui_role}; "
                   f"SET ROLE {pg.ui_role}; CREATE TABLE prisma_made (id int)", dbname=pg.database)
    assert roles(pg_server, env, tmp_path).is_changed
    owner = pg_server.psql_value("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'prisma_made'",
                                 dbname=pg.database)
    assert owner == pg.admin_role
    with as_ui(pg_server, env) as conn:
        conn.execute("SELECT * FROM prisma_made")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE prisma_made")


def test_first_boot_gives_the_same_roles_and_grants(pg_server, tmp_path):
    """postgres-init/10-roles.sh, run as the image's entrypoint runs it (plain passwords from its
    environment), leaves what `db.roles` would: a later db.roles only re-stores the passwords as
    its own stable verifiers, and changes no grant."""
    env = pg_env(unique("boot"), unique("ui"), ui_password="boot-ui-secret")
    pg = env.postgres
    pg_server.create_database(pg.database)
    init = tmp_path / "docker-entrypoint-initdb.d"
    init.mkdir()
    shutil.copy(ROOT / "postgres-init/10-roles.sh", init / "10-roles.sh")
    (init / "roles.psql").write_text(roles_script(pg))
    done = subprocess.run([str(init / "10-roles.sh")], capture_output=True, text=True, timeout=60, env=pg_server.env(
        POSTGRES_USER=pg.admin_role, POSTGRES_DB=pg.database, POSTGRES_PASSWORD=ADMIN_PASSWORD,
        POSTGRES_UI_PASSWORD="boot-ui-secret", PATH=f"{pg_server.bindir}:/usr/bin:/bin"))
    assert done.returncode == 0, done.stderr
    assert db.roles_result(done.stdout).is_changed
    assert pg_server.psql_value(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{pg.ui_role}'").startswith(
        "SCRAM-SHA-256$4096:")
    as_ui(pg_server, env).close()

    after_boot = grants(pg_server, pg.database)
    assert roles(pg_server, env, tmp_path).changed == ("admin role password", "ui role password")
    assert grants(pg_server, pg.database) == after_boot


KIT_POSTGRES = "opskit/postgres:15"  # the offline image kit's stand-in for the official image


@pytest.mark.docker
@pytest.mark.slow
def test_first_boot_then_db_roles_in_the_kits_postgres_image(kit_images, tmp_path):
    """The whole path in a real image: its entrypoint runs 10-roles.sh on an empty volume, then
    `db.roles` goes in as `docker compose exec -T postgres psql` does. The kit is built when missing."""
    found = subprocess.run(["docker", "image", "inspect", KIT_POSTGRES], capture_output=True, text=True)
    assert found.returncode == 0, f"the kit was built but has no {KIT_POSTGRES}: {found.stderr}"
    env = pg_env("job_agent", "job_agent_ui", ui_password="kit-ui-secret")
    init = tmp_path / "init"
    init.mkdir(mode=0o755)
    shutil.copy(ROOT / "postgres-init/10-roles.sh", init / "10-roles.sh")
    (init / "roles.psql").write_text(roles_script(env.postgres))
    name = f"opskit-test-first-boot-{next(_names)}-{os.getpid()}"
    subprocess.run(["docker", "run", "--detach", "--name", name, "--network", "none",
                    "--env", f"POSTGRES_USER={env.postgres.admin_role}", "--env", f"POSTGRES_DB={env.postgres.database}",
                    "--env", f"POSTGRES_PASSWORD={ADMIN_PASSWORD}", "--env", "POSTGRES_UI_PASSWORD=kit-ui-secret",
                    "--volume", f"{init}:/docker-entrypoint-initdb.d:ro", KIT_POSTGRES], check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 120
        while not booted(logs := docker_logs(name)):
            assert time.monotonic() < deadline and "exited" not in container_state(name), logs
            time.sleep(0.5)
        assert db.roles_result(logs).is_changed  # 10-roles.sh ran roles.psql and reported
        runs = []
        for _ in range(3):  # the server restarts after init: retry until it answers
            done = subprocess.run(["docker", "exec", "-i", name, *db.psql_argv(env.postgres)],
                                  input=db.roles_input(env).reveal(), capture_output=True, text=True, timeout=60)
            if done.returncode == 0:
                runs.append(db.roles_result(done.stdout))
            if len(runs) == 2:
                break
            time.sleep(1)
        assert runs == [db.RolesResult(("admin role password", "ui role password")), db.RolesResult()], done.stderr
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)


def booted(logs: str) -> bool:
    """First boot is over: roles.psql reported, then the final server started after it."""
    report = logs.find("roles: ")
    return report >= 0 and "ready to accept connections" in logs[report:]


def docker_logs(name: str) -> str:
    done = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
    return done.stdout + done.stderr


def container_state(name: str) -> str:
    return subprocess.run(["docker", "inspect", "--format", "{{.State.Status}}", name],
                          capture_output=True, text=True).stdout


def test_first_boot_refuses_an_empty_ui_password(pg_server, tmp_path):
    done = subprocess.run(["sh", str(ROOT / "postgres-init/10-roles.sh")], capture_output=True, text=True,
                          env=pg_server.env(POSTGRES_USER="x", POSTGRES_DB="x", POSTGRES_PASSWORD="x",
                                            POSTGRES_UI_PASSWORD=""))
    assert done.returncode != 0 and "POSTGRES_UI_PASSWORD is empty" in done.stderr


# -- failures say what to do ----------------------------------------------------------------------------


def test_the_script_stops_when_a_password_variable_is_missing(pg_server, tmp_path):
    env = pg_env(unique("novar"), unique("ui"))
    pg_server.create_database(env.postgres.database)
    script = tmp_path / "roles.psql"
    script.write_text(roles_script(env.postgres))
    done = pg_server.psql(argv=db.psql_argv(env.postgres), stdin=f"\\i {script}\n", check=False)
    assert done.returncode != 0
    assert "the psql variable admin_password is not set" in done.stderr


def test_the_script_refuses_a_role_that_is_not_a_superuser(pg_server, migrated, tmp_path):
    pg = migrated.postgres
    script = tmp_path / "roles.psql"
    script.write_text(roles_script(pg))
    argv = ["--no-psqlrc", "--quiet", "--host", "127.0.0.1", "--username", pg.ui_role, "--dbname", pg.database,
            "--set", "admin_password=x", "--set", "ui_password=y", "--file", str(script)]
    done = pg_server.psql(argv=argv, check=False,
                          env=pg_server.env(PGPASSWORD=migrated.secrets["postgres_ui_password"].reveal()))
    assert done.returncode != 0
    assert "roles.psql must run as a superuser" in done.stderr
