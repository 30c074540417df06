"""The roles on a real PostgreSQL: the rendered roles.psql applied exactly as `invoke db.roles`
applies it on the server, then the UI and admin roles tried for real over TCP with their SCRAM
passwords; and the in-place upgrade of a cluster made the old way (the admin role as the
bootstrap superuser), rows counted before and after."""

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

from .pg_server import (ADMIN_PASSWORD, ADMIN_ROLE, SUPERUSER_PASSWORD, SUPERUSER_ROLE, alembic, apply_roles,  # noqa: F401
                        old_pg_server, pg_env, pg_server)

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


def as_admin(server, env, **kwargs):
    pg = env.postgres
    return server.connect(pg.admin_role, env.secrets["postgres_admin_password"].reveal(), pg.database, **kwargs)


def powers(server, role: str) -> dict:
    """The attributes that would make a role more than an owner of its objects."""
    row = server.psql_value(f"SELECT concat_ws(' ', rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls) "
                            f"FROM pg_roles WHERE rolname = '{role}'")
    return dict(zip(("super", "createrole", "createdb", "replication", "bypassrls"), (v == "t" for v in row.split())))


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
    done = pg_server.run(db.psql_argv(migrated.postgres), stdin=db.roles_input(migrated, script=None).reveal())
    assert done.returncode == 0, done.stderr
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
    pg_server.psql("CREATE TABLE owned_by_admin (id int)", dbname=pg.database, user=pg.admin_role)
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
    for secret in ("never-in-the-log", ADMIN_PASSWORD, SUPERUSER_PASSWORD, stored, stored.split("$")[2]):
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
    # as Alembic makes them: as the admin role
    pg_server.psql("CREATE TABLE later (id serial PRIMARY KEY, note text)", dbname=pg.database, user=pg.admin_role)
    with as_ui(pg_server, env) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (pg.ui_role,)
        conn.execute("INSERT INTO later (note) VALUES ('ok')")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE later")
    assert not roles(pg_server, env, tmp_path).is_changed


def test_a_volume_older_than_the_roles_is_fixed(pg_server, tmp_path):
    """The bootstrap superuser (POSTGRES_USER) made tables before any role existed, on a database
    where PUBLIC may still CREATE in public (the default before Postgres 15): they pass to the admin role."""
    env = pg_env(unique("old"), unique("ui"))
    pg = env.postgres
    pg_server.create_database(pg.database)
    pg_server.psql("GRANT CREATE ON SCHEMA public TO PUBLIC; "
                   "CREATE TABLE legacy (id bigserial PRIMARY KEY, note text); INSERT INTO legacy (note) VALUES ('old')",
                   dbname=pg.database)
    assert roles(pg_server, env, tmp_path).is_changed
    assert pg_server.psql_value("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'legacy'",
                                dbname=pg.database) == pg.admin_role
    pg_server.psql("CREATE TABLE newer (id bigserial PRIMARY KEY)", dbname=pg.database, user=pg.admin_role)
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


def secret_files(folder, admin: str = ADMIN_PASSWORD, ui: str = "boot-ui-secret", superuser: str = SUPERUSER_PASSWORD):
    """What Compose mounts under /run/secrets: one file per secret, its value and a newline."""
    folder.mkdir(mode=0o755, exist_ok=True)
    for name, value in (("postgres_superuser_password", superuser), ("postgres_admin_password", admin),
                        ("postgres_ui_password", ui)):
        (folder / name).write_text(value + "\n")
        (folder / name).chmod(0o644)  # the container's postgres user reads them (root owns them here)
    return folder


def first_boot(server, pg, init, secrets, **env):
    """postgres-init/10-roles.sh as the image's entrypoint runs it: connected as POSTGRES_USER (the
    superuser), the passwords in secret files whose paths the *_FILE variables give."""
    init.mkdir(exist_ok=True)
    shutil.copy(ROOT / "postgres-init/10-roles.sh", init / "10-roles.sh")
    (init / "roles.psql").write_text(roles_script(pg))
    return subprocess.run([str(init / "10-roles.sh")], capture_output=True, text=True, timeout=60, env=server.env(**{
        "POSTGRES_USER": pg.superuser_role, "POSTGRES_DB": pg.database,
        "POSTGRES_ADMIN_PASSWORD_FILE": str(secrets / "postgres_admin_password"),
        "POSTGRES_UI_PASSWORD_FILE": str(secrets / "postgres_ui_password"),
        "PATH": f"{server.bindir}:/usr/bin:/bin", **env}))


def test_first_boot_gives_the_same_roles_and_grants(pg_server, tmp_path):
    """postgres-init/10-roles.sh (plain passwords from the secret files) leaves what `db.roles`
    would: a later db.roles only re-stores the passwords as its own stable verifiers (the
    superuser's too: initdb stored one with a random salt), and changes no grant."""
    env = pg_env(unique("boot"), unique("ui"), ui_password="boot-ui-secret")
    pg = env.postgres
    pg_server.create_database(pg.database)
    done = first_boot(pg_server, pg, tmp_path / "docker-entrypoint-initdb.d", secret_files(tmp_path / "secrets"))
    assert done.returncode == 0, done.stderr
    assert db.roles_result(done.stdout).is_changed
    for role in (pg.admin_role, pg.ui_role):
        assert pg_server.psql_value(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'").startswith(
            "SCRAM-SHA-256$4096:")
    as_ui(pg_server, env).close()
    as_admin(pg_server, env).close()
    assert not any(powers(pg_server, pg.admin_role).values())

    after_boot = grants(pg_server, pg.database)
    assert set(roles(pg_server, env, tmp_path).changed) <= {"superuser role password", "admin role password",
                                                             "ui role password"}
    assert grants(pg_server, pg.database) == after_boot
    assert not roles(pg_server, env, tmp_path).is_changed


def test_first_boot_keeps_the_passwords_out_of_argv(pg_server, tmp_path):
    """psql reads the files itself (a `\\set ... `cat FILE`` line on its stdin): what the
    script's psql gets in argv names files, never values."""
    env = pg_env(unique("argv"), unique("ui"), ui_password="ui-not-in-argv")
    pg = env.postgres
    pg_server.create_database(pg.database)
    spy = tmp_path / "bin"
    spy.mkdir()
    (spy / "psql").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\nexec {pg_server.bindir}/psql "$@"\n')
    (spy / "psql").chmod(0o755)
    done = first_boot(pg_server, pg, tmp_path / "init", secret_files(tmp_path / "secrets", ui="ui-not-in-argv"),
                      PATH=f"{spy}:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "argv").read_text()
    assert "--username" in argv
    for secret in ("ui-not-in-argv", ADMIN_PASSWORD):
        assert secret not in argv and secret not in done.stdout + done.stderr


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
    secrets = secret_files(tmp_path / "secrets", ui="kit-ui-secret")
    name = f"opskit-test-trackA-first-boot-{next(_names)}-{os.getpid()}"
    # secrets as Compose mounts them: files under /run/secrets, the superuser's through *_FILE
    subprocess.run(["docker", "run", "--detach", "--name", name, "--network", "none",
                    "--env", f"POSTGRES_USER={env.postgres.superuser_role}", "--env", f"POSTGRES_DB={env.postgres.database}",
                    "--env", "POSTGRES_PASSWORD_FILE=/run/secrets/postgres_superuser_password",
                    "--volume", f"{secrets}:/run/secrets:ro",
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
        assert runs == [db.RolesResult(("superuser role password", "admin role password", "ui role password")),
                        db.RolesResult()], done.stderr
        inspect = subprocess.run(["docker", "inspect", name], capture_output=True, text=True).stdout
        environ = subprocess.run(["docker", "exec", name, "cat", "/proc/1/environ"], capture_output=True).stdout
        for secret in (SUPERUSER_PASSWORD, ADMIN_PASSWORD, "kit-ui-secret"):
            assert secret not in inspect and secret.encode() not in environ
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
    secrets = secret_files(tmp_path / "secrets", ui="")
    (secrets / "postgres_ui_password").write_text("")
    done = subprocess.run(["sh", str(ROOT / "postgres-init/10-roles.sh")], capture_output=True, text=True,
                          env=pg_server.env(POSTGRES_USER="x", POSTGRES_DB="x",
                                            POSTGRES_ADMIN_PASSWORD_FILE=str(secrets / "postgres_admin_password"),
                                            POSTGRES_UI_PASSWORD_FILE=str(secrets / "postgres_ui_password")))
    assert done.returncode != 0 and f"{secrets}/postgres_ui_password is missing or empty" in done.stderr


# -- failures say what to do ----------------------------------------------------------------------------


def test_the_script_stops_when_a_password_variable_is_missing(pg_server, tmp_path):
    env = pg_env(unique("novar"), unique("ui"))
    pg_server.create_database(env.postgres.database)
    script = tmp_path / "roles.psql"
    script.write_text(roles_script(env.postgres))
    done = pg_server.run(db.psql_argv(env.postgres), stdin=f"\\i {script}\n")
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


# -- the superuser role and a powerless admin role (a new volume) -------------------------------------


def test_no_role_an_app_uses_has_any_power(pg_server, migrated):
    pg = migrated.postgres
    assert powers(pg_server, pg.admin_role) == dict.fromkeys(("super", "createrole", "createdb", "replication",
                                                               "bypassrls"), False)
    assert not any(powers(pg_server, pg.ui_role).values())
    assert powers(pg_server, pg.superuser_role)["super"]
    assert pg_server.psql_value(f"SELECT rolname FROM pg_roles WHERE oid = {10}") == pg.superuser_role


def test_the_superuser_logs_in_with_its_secret(pg_server, migrated):
    pg = migrated.postgres
    with pg_server.connect(pg.superuser_role, SUPERUSER_PASSWORD, pg.database) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)


@pytest.mark.parametrize("sql", [
    "COPY (SELECT 1) TO PROGRAM 'true'",
    "CREATE ROLE sneaky_role",
    "CREATE DATABASE sneaky_db",
    "ALTER ROLE CURRENT_USER SUPERUSER",
    "ALTER ROLE CURRENT_USER BYPASSRLS",
    "SELECT pg_read_file('/etc/passwd')",
])
def test_the_admin_role_cannot_step_outside_its_database(pg_server, migrated, sql):
    with as_admin(pg_server, migrated, autocommit=True) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(sql)


def test_the_admin_role_still_changes_the_schema_it_owns(pg_server, migrated):
    """What Alembic does as the admin role: create, alter, index, drop, in a transaction."""
    with as_admin(pg_server, migrated) as conn:
        conn.execute("CREATE TABLE admin_made (id bigserial PRIMARY KEY, note text)")
        conn.execute("ALTER TABLE runs ADD COLUMN admin_col text")
        conn.execute("CREATE INDEX admin_idx ON runs (status)")
        conn.execute("CREATE TYPE admin_mood AS ENUM ('ok', 'not ok')")
        conn.execute("CREATE FUNCTION admin_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        conn.execute("DROP TABLE admin_made")
        conn.rollback()


@pytest.mark.parametrize("sql", [
    "UPDATE alembic_version SET version_num = 'forged'",
    "INSERT INTO alembic_version VALUES ('forged')",
    "DELETE FROM alembic_version",
    "TRUNCATE alembic_version",
])
def test_the_ui_role_cannot_change_alembic_version(pg_server, migrated, sql):
    with as_ui(pg_server, migrated) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(sql)


def test_alembic_version_is_never_born_writable_for_the_ui_role(pg_server, tmp_path):
    """A first deploy runs db.roles, then Alembic: Alembic's table must not get the UI role's
    default privileges on creation, with no later db.roles to take them back."""
    env = pg_env(unique("born"), unique("ui"))
    pg = env.postgres
    pg_server.create_database(pg.database)
    roles(pg_server, env, tmp_path)
    done = alembic(pg_server, pg.database, "upgrade", "head")
    assert done.returncode == 0, done.output
    assert pg_server.psql_value(
        f"SELECT concat_ws(' ', pg_get_userbyid(relowner), has_table_privilege('{pg.ui_role}', oid, 'SELECT'), "
        f"has_table_privilege('{pg.ui_role}', oid, 'INSERT, UPDATE, DELETE, TRUNCATE')) "
        f"FROM pg_class WHERE relname = 'alembic_version'", dbname=pg.database) == f"{pg.admin_role} t f"
    # the app's own tables, made by the same migrations, are the UI's to write
    with as_ui(pg_server, env) as conn:
        conn.execute("INSERT INTO runs (id, status) VALUES (gen_random_uuid(), 'queued')")
    assert not roles(pg_server, env, tmp_path).is_changed


def test_the_superuser_role_owns_nothing_in_the_schema(pg_server, tmp_path):
    """What a superuser session made in public (by hand, or the script itself) passes to the admin
    role, kind by kind; an extension's objects stay the extension's."""
    env = pg_env(unique("su_owned"), unique("ui"))
    pg = env.postgres
    pg_server.create_database(pg.database)
    pg_server.psql("CREATE TABLE t (id serial PRIMARY KEY, n int GENERATED ALWAYS AS IDENTITY); CREATE SEQUENCE s; "
                   "CREATE VIEW v AS SELECT id FROM t; CREATE MATERIALIZED VIEW mv AS SELECT id FROM t; "
                   "CREATE TABLE parted (k int) PARTITION BY RANGE (k); "
                   "CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (10); "
                   "CREATE TYPE mood AS ENUM ('a'); CREATE TYPE pair AS (a int, b int); CREATE DOMAIN pos AS int CHECK (VALUE > 0); "
                   "CREATE TYPE span AS RANGE (subtype = int4); "
                   "CREATE FUNCTION f(int) RETURNS int LANGUAGE sql AS 'SELECT $1'; "
                   "CREATE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'; "
                   "CREATE AGGREGATE agg(int) (sfunc = int4pl, stype = int); "
                   "CREATE EXTENSION IF NOT EXISTS pgcrypto", dbname=pg.database)
    first = roles(pg_server, env, tmp_path)
    assert {"table and sequence owners and grants", "function and type owners"} <= set(first.changed)
    su = pg_server.psql_value(
        "SELECT coalesce(string_agg(x, ' ' ORDER BY x), '') FROM ("
        " SELECT relname AS x FROM pg_class c WHERE relnamespace = 'public'::regnamespace AND relowner = 10"
        " UNION ALL SELECT proname FROM pg_proc p WHERE pronamespace = 'public'::regnamespace AND proowner = 10"
        "  AND NOT EXISTS (SELECT FROM pg_depend WHERE classid = 'pg_proc'::regclass AND objid = p.oid AND deptype = 'e')"
        " UNION ALL SELECT typname FROM pg_type t WHERE typnamespace = 'public'::regnamespace AND typowner = 10"
        "  AND NOT EXISTS (SELECT FROM pg_depend WHERE classid = 'pg_type'::regclass AND objid = t.oid AND deptype = 'e')"
        ") AS owned", dbname=pg.database)
    assert su == ""
    assert pg_server.psql_value("SELECT pg_get_userbyid(extowner) FROM pg_extension WHERE extname = 'pgcrypto'",
                                dbname=pg.database) == pg.superuser_role
    assert not roles(pg_server, env, tmp_path).is_changed


# -- the in-place upgrade of a volume made by a release before the superuser role ----------------------

#: what the previous release's roles.psql left (as the admin role, the bootstrap superuser): the
#: UI role with rows on every table, default privileges of the admin role, nothing on alembic_version apart
OLD_RELEASE_ROLES = """
SET password_encryption = 'scram-sha-256';
CREATE ROLE {ui} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD '{ui_verifier}' CONNECTION LIMIT 20;
ALTER ROLE {admin} WITH LOGIN PASSWORD '{admin_verifier}' CONNECTION LIMIT 60;
ALTER DATABASE {db} OWNER TO {admin};
ALTER SCHEMA public OWNER TO {admin};
REVOKE CREATE ON DATABASE {db} FROM PUBLIC, {ui};
REVOKE CREATE ON SCHEMA public FROM PUBLIC, {ui};
GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {ui};
GRANT USAGE ON SCHEMA public TO {ui};
ALTER DEFAULT PRIVILEGES FOR ROLE {admin} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ui};
ALTER DEFAULT PRIVILEGES FOR ROLE {admin} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {ui};
"""

#: the app's data and a few more kinds of objects, made as the old admin role (a superuser then)
OLD_DATA = """
INSERT INTO runs (id, status) SELECT gen_random_uuid(), 'done' FROM generate_series(1, 25);
INSERT INTO run_events (run_id, status) SELECT id, 'done' FROM runs;
CREATE VIEW done_runs AS SELECT id FROM runs WHERE status = 'done';
CREATE TYPE run_mood AS ENUM ('calm', 'busy');
CREATE FUNCTION run_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM runs';
CREATE SEQUENCE loose_seq;
"""


def counts(server, database: str, user: str) -> dict:
    return {table: server.psql_value(f"SELECT count(*) FROM {table}", dbname=database, user=user)
            for table in ("runs", "run_events", "alembic_version")}


@pytest.fixture
def old_volume(old_pg_server, tmp_path):
    """A cluster and database as the previous release left them on a server: the admin role is
    POSTGRES_USER (the bootstrap superuser, its password the admin secret), its roles.psql ran,
    Alembic ran as the admin role, the app wrote rows, and the UI role wrote one too."""
    env = pg_env("job_agent", "job_agent_ui")
    pg = env.postgres
    assert old_pg_server.superuser == pg.admin_role
    old_pg_server.create_database(pg.database)
    old_pg_server.psql(OLD_RELEASE_ROLES.format(
        ui=pg.ui_role, admin=pg.admin_role, db=pg.database,
        ui_verifier=scram.verifier(env.secrets["postgres_ui_password"].reveal(), pg.ui_role),
        admin_verifier=scram.verifier(ADMIN_PASSWORD, pg.admin_role)), dbname=pg.database)
    done = alembic(old_pg_server, pg.database, "upgrade", "head")
    assert done.returncode == 0, done.output
    old_pg_server.psql(OLD_DATA, dbname=pg.database)
    with as_ui(old_pg_server, env) as conn:
        conn.execute("INSERT INTO runs (id, status) VALUES (gen_random_uuid(), 'by-ui')")
    # the audit's findings, true of this volume: the apps' role is a superuser, the UI may write alembic_version
    assert powers(old_pg_server, pg.admin_role)["super"]
    assert old_pg_server.psql_value(f"SELECT has_table_privilege('{pg.ui_role}', 'alembic_version', 'UPDATE')",
                                    dbname=pg.database) == "t"
    return env


def test_an_old_volume_is_upgraded_in_place_with_no_data_lost(old_pg_server, old_volume, tmp_path):
    env, pg = old_volume, old_volume.postgres
    before = counts(old_pg_server, pg.database, pg.admin_role)
    assert before == {"runs": "26", "run_events": "25", "alembic_version": "1"}
    sample = old_pg_server.psql_value("SELECT string_agg(id::text, ',' ORDER BY id) FROM runs", dbname=pg.database,
                                      user=pg.admin_role)

    result = roles(old_pg_server, env, tmp_path)
    # owners are read by name, and the new admin role has the old one's name (and its stable verifier):
    # what changed there is the UI role's grant on alembic_version
    assert set(result.changed) == {"bootstrap superuser renamed", "superuser role attributes", "admin role attributes",
                                   "superuser role password", "table and sequence owners and grants"}

    # initdb's role is now the superuser role; the admin role is a new one, with no power
    assert old_pg_server.psql_value("SELECT rolname FROM pg_roles WHERE oid = 10", user=SUPERUSER_ROLE) == SUPERUSER_ROLE
    old_pg_server.superuser = SUPERUSER_ROLE  # psql's default user from here on
    assert not any(powers(old_pg_server, pg.admin_role).values())
    assert old_pg_server.psql_value("SELECT count(*) FROM pg_roles WHERE rolname = 'opskit_role_upgrade'") == "0"
    # no data lost
    assert counts(old_pg_server, pg.database, pg.superuser_role) == before
    assert old_pg_server.psql_value("SELECT string_agg(id::text, ',' ORDER BY id) FROM runs", dbname=pg.database) == sample
    # the admin role owns the database, the schema and every object in it
    owners = old_pg_server.psql_value(
        "SELECT string_agg(DISTINCT o, ' ') FROM ("
        " SELECT pg_get_userbyid(datdba) AS o FROM pg_database WHERE datname = current_database()"
        " UNION ALL SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
        " UNION ALL SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        " UNION ALL SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        " UNION ALL SELECT pg_get_userbyid(typowner) FROM pg_type WHERE typnamespace = 'public'::regnamespace"
        ") AS owners", dbname=pg.database)
    assert owners == pg.admin_role
    # default privileges: the new admin role's, none left for the renamed bootstrap role
    assert old_pg_server.psql_value("SELECT string_agg(DISTINCT pg_get_userbyid(defaclrole), ' ') FROM pg_default_acl",
                                    dbname=pg.database) == pg.admin_role

    # every role logs in with its own secret; the apps' roles do their work, and no more
    with old_pg_server.connect(pg.superuser_role, SUPERUSER_PASSWORD, pg.database) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
    with as_admin(old_pg_server, env) as conn:
        assert conn.execute("SELECT run_count()").fetchone() == (26,)
        conn.execute("ALTER TABLE runs ADD COLUMN after_upgrade text")
        conn.execute("CREATE TABLE after_upgrade (id bigserial PRIMARY KEY)")
        conn.execute("DROP VIEW done_runs")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("COPY (SELECT 1) TO PROGRAM 'true'")
        conn.rollback()
    with as_ui(old_pg_server, env) as conn:
        assert conn.execute("SELECT count(*) FROM done_runs").fetchone() == (25,)
        conn.execute("UPDATE runs SET status = 'seen' WHERE status = 'by-ui'")
        conn.execute("INSERT INTO run_events (run_id, status) SELECT id, 'seen' FROM runs WHERE status = 'seen'")
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0002",)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE alembic_version SET version_num = 'forged'")
    # Alembic, as the new admin role, finds its head and has nothing to do
    again = alembic(old_pg_server, pg.database, "upgrade", "head")
    assert again.returncode == 0, again.output
    assert db.migrate_result(again.output).applied == ()


def test_the_upgrade_runs_once_then_reports_no_change(old_pg_server, old_volume, tmp_path):
    env, pg = old_volume, old_volume.postgres
    assert roles(old_pg_server, env, tmp_path).is_changed
    old_pg_server.superuser = SUPERUSER_ROLE
    state = grants(old_pg_server, pg.database)
    second = roles(old_pg_server, env, tmp_path)  # now psql_argv finds the superuser role and connects as it
    assert second == db.RolesResult() and second.summary() == "roles: no change"
    assert grants(old_pg_server, pg.database) == state


def test_the_upgrade_refuses_when_the_superuser_name_is_taken(old_pg_server, old_volume, tmp_path):
    """A role named like the superuser exists beside the bootstrap admin role: the script stops,
    says what to do, and leaves the volume exactly as it was (one transaction)."""
    env, pg = old_volume, old_volume.postgres
    old_pg_server.psql(f"CREATE ROLE {pg.superuser_role} LOGIN")
    state = grants(old_pg_server, pg.database)
    done = apply_roles(old_pg_server, env, tmp_path)
    assert done.returncode != 0
    assert f"the admin role {pg.admin_role} is the bootstrap superuser and a role {pg.superuser_role} exists" in done.stderr
    assert powers(old_pg_server, pg.admin_role)["super"]
    assert grants(old_pg_server, pg.database) == state


# -- the smoke suite's Postgres checks, on a real server: green as db.roles leaves it, red when broken ----

from opskit.facts.base import Output  # noqa: E402
from tests.smoke import test_postgres as smoke  # noqa: E402


def smoke_facts(server, env) -> tuple:
    """What the smoke suite's `pg_powers` and `ui_alembic_update` read on the server, read here."""
    pg = env.postgres
    flags = smoke._PSQL[1:]
    done = server.psql(argv=[*flags, "-v", f"admin={pg.admin_role}", "-v", f"ui={pg.ui_role}", "-U", pg.admin_role,
                             "-d", pg.database, "-f", "-"], stdin=smoke._POWERS_SQL, check=False)
    powers = smoke.parse_powers(Output(done.stdout, done.stderr, done.returncode))
    done = server.psql(argv=[*flags, "-h", "127.0.0.1", "-U", pg.ui_role, "-d", pg.database, "-w", "-f", "-"],
                       stdin=smoke._UI_ALEMBIC_SQL, check=False,
                       env=server.env(PGPASSWORD=env.secrets["postgres_ui_password"].reveal()))
    return powers, smoke.parse_ui_alembic(Output(done.stdout, done.stderr, done.returncode))


def smoke_checks(powers, ui_update, env) -> list:
    """Each check's name, or name and its message when it fails."""
    checks = [(f"no_app_role_is_a_superuser[{k}]", lambda k=k: smoke.test_no_app_role_is_a_superuser(k, powers, env, None))
              for k in smoke.ROLE_KINDS]
    checks += [("bootstrap", lambda: smoke.test_the_bootstrap_superuser_is_no_app_role(powers, env)),
               ("admin_powers", lambda: smoke.test_admin_role_has_no_power_beyond_its_objects(powers, env)),
               ("alembic_privileges", lambda: smoke.test_ui_role_may_not_write_alembic_version(powers, env)),
               ("alembic_update", lambda: smoke.test_ui_role_cannot_update_alembic_version(ui_update, env))]
    failed = []
    for name, check in checks:
        try:
            check()
        except AssertionError as exc:
            failed.append((name, str(exc).splitlines()[0]))
    return failed


@pytest.mark.parametrize("breakage, red", [
    ("ALTER ROLE {admin} SUPERUSER", {"no_app_role_is_a_superuser[admin]"}),
    # a superuser passes every privilege check: Alembic's table too
    ("ALTER ROLE {ui} SUPERUSER", {"no_app_role_is_a_superuser[ui]", "alembic_privileges", "alembic_update"}),
    ("ALTER ROLE {admin} CREATEROLE", {"admin_powers"}),
    ("ALTER ROLE {admin} CREATEDB", {"admin_powers"}),
    ("ALTER ROLE {admin} REPLICATION", {"admin_powers"}),
    ("ALTER ROLE {admin} BYPASSRLS", {"admin_powers"}),
    ("GRANT UPDATE ON alembic_version TO {ui}", {"alembic_privileges", "alembic_update"}),
])
def test_the_smoke_checks_are_green_after_db_roles_and_red_when_broken(pg_server, migrated, tmp_path, breakage, red):
    pg = migrated.postgres
    assert smoke_checks(*smoke_facts(pg_server, migrated), migrated) == []
    pg_server.psql(breakage.format(admin=f'"{pg.admin_role}"', ui=f'"{pg.ui_role}"'), dbname=pg.database)
    try:
        failed = smoke_checks(*smoke_facts(pg_server, migrated), migrated)
        assert {name for name, _ in failed} == red, failed
    finally:
        assert roles(pg_server, migrated, tmp_path).is_changed  # the fix the checks name: db.roles
    assert smoke_checks(*smoke_facts(pg_server, migrated), migrated) == []


def test_the_smoke_checks_are_red_on_an_old_volume_and_green_after_the_upgrade(old_pg_server, old_volume, tmp_path):
    before = {name for name, _ in smoke_checks(*smoke_facts(old_pg_server, old_volume), old_volume)}
    assert before == {"no_app_role_is_a_superuser[admin]", "bootstrap", "admin_powers", "alembic_privileges",
                      "alembic_update"}
    roles(old_pg_server, old_volume, tmp_path)
    old_pg_server.superuser = SUPERUSER_ROLE
    assert smoke_checks(*smoke_facts(old_pg_server, old_volume), old_volume) == []


# -- the upgrade in the kit's image: a volume of the previous release, the new release's container --------

OLD_TABLES = """
CREATE TABLE runs (id uuid PRIMARY KEY, status text NOT NULL);
CREATE TABLE run_events (id bigserial PRIMARY KEY, run_id uuid REFERENCES runs (id), status text);
CREATE TABLE alembic_version (version_num varchar(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
INSERT INTO alembic_version VALUES ('0002');
INSERT INTO runs SELECT gen_random_uuid(), 'done' FROM generate_series(1, 40);
INSERT INTO run_events (run_id, status) SELECT id, 'done' FROM runs;
"""


def docker_psql(name: str, user: str, database: str, sql: str) -> str:
    done = subprocess.run(["docker", "exec", "-i", name, "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-U", user,
                           "-d", database, "-f", "-"], input=sql, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def start_postgres(name: str, volume: str, init, secrets, *env: str) -> None:
    argv = ["docker", "run", "--detach", "--name", name, "--network", "none", "--volume", f"{volume}:/var/lib/postgresql/data",
            "--volume", f"{init}:/docker-entrypoint-initdb.d:ro"]
    if secrets is not None:
        argv += ["--volume", f"{secrets}:/run/secrets:ro"]
    for item in env:
        argv += ["--env", item]
    subprocess.run([*argv, KIT_POSTGRES], check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while subprocess.run(["docker", "exec", name, "pg_isready", "-q", "-h", "127.0.0.1"]).returncode != 0 \
            or "init complete" not in docker_logs(name) and "initialised already" not in docker_logs(name):
        assert time.monotonic() < deadline and "exited" not in container_state(name), docker_logs(name)
        time.sleep(0.5)


@pytest.mark.docker
@pytest.mark.slow
def test_a_volume_of_the_previous_release_is_upgraded_by_the_next_deploy(kit_images, tmp_path):
    """The previous release's container (POSTGRES_USER the admin role, password in its environment)
    made the volume; the new release's container (POSTGRES_USER the superuser role, its password a
    secret file) starts on it, initialises nothing, and `db.roles` goes in as `docker compose exec
    -T postgres` does: it falls back to the admin role, upgrades, then finds the superuser."""
    env = pg_env("job_agent", "job_agent_ui", ui_password="kit-ui-secret")
    pg = env.postgres
    tag = f"{next(_names)}-{os.getpid()}"
    volume, old, new = f"opskit-test-trackA-pgdata-{tag}", f"opskit-test-trackA-old-{tag}", f"opskit-test-trackA-new-{tag}"
    empty, init = tmp_path / "empty", tmp_path / "init"
    empty.mkdir(mode=0o755)
    init.mkdir(mode=0o755)
    shutil.copy(ROOT / "postgres-init/10-roles.sh", init / "10-roles.sh")
    (init / "roles.psql").write_text(roles_script(pg))
    secrets = secret_files(tmp_path / "secrets", ui="kit-ui-secret")
    try:
        start_postgres(old, volume, empty, None, f"POSTGRES_USER={pg.admin_role}", f"POSTGRES_DB={pg.database}",
                       f"POSTGRES_PASSWORD={ADMIN_PASSWORD}")
        docker_psql(old, pg.admin_role, pg.database, OLD_TABLES + OLD_RELEASE_ROLES.format(
            ui=pg.ui_role, admin=pg.admin_role, db=pg.database,
            ui_verifier=scram.verifier("kit-ui-secret", pg.ui_role),
            admin_verifier=scram.verifier(ADMIN_PASSWORD, pg.admin_role))
            + f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {pg.ui_role};"
            + f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {pg.ui_role};")
        rows = docker_psql(old, pg.admin_role, pg.database, "SELECT (SELECT count(*) FROM runs) || ' ' || (SELECT count(*) FROM run_events)")
        assert rows == "40 40"
        subprocess.run(["docker", "rm", "--force", old], check=True, capture_output=True)

        start_postgres(new, volume, init, secrets, f"POSTGRES_USER={pg.superuser_role}", f"POSTGRES_DB={pg.database}",
                       "POSTGRES_PASSWORD_FILE=/run/secrets/postgres_superuser_password")
        assert "initialised already" in docker_logs(new)
        runs = []
        for _ in range(2):
            done = subprocess.run(["docker", "exec", "-i", new, *db.psql_argv(pg)], input=db.roles_input(env).reveal(),
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            runs.append(db.roles_result(done.stdout))
        assert "bootstrap superuser renamed" in runs[0].changed and runs[1] == db.RolesResult()
        check = (f"SELECT concat_ws(' ', (SELECT count(*) FROM runs), (SELECT count(*) FROM run_events), "
                 f"(SELECT rolname FROM pg_roles WHERE oid = 10), (SELECT rolsuper FROM pg_roles WHERE rolname = '{pg.admin_role}'), "
                 f"(SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'runs'), "
                 f"has_table_privilege('{pg.ui_role}', 'alembic_version', 'UPDATE'), has_table_privilege('{pg.ui_role}', 'runs', 'UPDATE'))")
        assert docker_psql(new, pg.superuser_role, pg.database, check) == f"40 40 {pg.superuser_role} f {pg.admin_role} f t"
    finally:
        for name in (old, new):
            subprocess.run(["docker", "rm", "--force", name], capture_output=True)
        subprocess.run(["docker", "volume", "rm", "--force", volume], capture_output=True)
