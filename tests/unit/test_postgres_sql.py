"""The roles SQL as text, the SCRAM verifiers it is fed, and the reading of its report.
No server here: tests/integration/test_postgres_roles.py runs the same script on a real one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from opskit import db, scram
from opskit.errors import InventoryError, OpskitError
from opskit.inventory import Postgres
from opskit.postgres import quote_ident, quote_literal, roles_script
from opskit.secrets import Secret

PG = Postgres("job_agent", "job_agent_admin", "job_agent_ui", "127.0.0.1", 5433, 60, 20)
ODD = Postgres('App "DB"', "Admin Role", 'ui "quoted" Role', "127.0.0.1", 5433, -1, 7, 'Super "User"')


@pytest.fixture
def env(make_env):
    return make_env("production")


# -- the script -----------------------------------------------------------------------------------


def test_names_are_quoted_identifiers_and_literals():
    assert quote_ident('ui "quoted" Role') == '"ui ""quoted"" Role"'
    assert quote_literal("it's") == "'it''s'"
    sql = roles_script(ODD)
    assert 'ALTER ROLE "ui ""quoted"" Role" WITH LOGIN' in sql
    assert 'ALTER DATABASE "App ""DB""" OWNER TO "Admin Role";' in sql
    assert "format('CREATE ROLE %I LOGIN', 'ui \"quoted\" Role')" in sql


def test_passwords_are_psql_variables_never_text(env):
    # roles_script is given no secret at all (only env.postgres: names and limits), so no value can
    # leak into its text; what must hold is that the passwords come in as psql variables
    sql = roles_script(env.postgres)
    assert "PASSWORD :'admin_password'" in sql and "PASSWORD :'ui_password'" in sql
    assert "PASSWORD :'superuser_password'" in sql


def _statements(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def test_everything_happens_in_one_transaction_and_the_report_comes_after_it():
    sql = _statements(roles_script(PG))
    assert sql.count("\nBEGIN;") == 1 and sql.count("\nCOMMIT;") == 1
    begin, commit = sql.index("\nBEGIN;"), sql.index("\nCOMMIT;")
    for statement in ("CREATE ROLE", "ALTER ROLE", "GRANT ", "REVOKE ", "ALTER DEFAULT PRIVILEGES", "REASSIGN OWNED"):
        assert all(begin < m.start() < commit for m in re.finditer(re.escape(statement), sql)), statement
    assert "\\gset before_" in sql[begin:commit] and "\\gset after_" in sql[begin:commit]
    assert sql.rstrip().endswith("\\echo :roles_report")


def test_nothing_is_echoed_and_statement_logging_is_off_before_any_password():
    sql = roles_script(PG)
    first_password = sql.index(":'admin_password'")
    for setting in ("\\set ECHO none", "SET log_statement = 'none';", "SET log_min_error_statement = 'panic';"):
        assert sql.index(setting) < first_password, setting


def test_connection_limits_come_from_the_inventory():
    sql = roles_script(ODD)
    assert re.search(r'ALTER ROLE "Admin Role" WITH [^;]*CONNECTION LIMIT -1;', sql)
    assert "PASSWORD :'ui_password' CONNECTION LIMIT 7;" in sql


def test_the_ui_role_gets_rows_only_now_and_for_later_tables():
    sql = roles_script(PG)
    ui = '"job_agent_ui"'
    assert f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ui};" in sql
    assert f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ui};" in sql
    assert re.search(r'ALTER DEFAULT PRIVILEGES FOR ROLE "job_agent_admin" IN SCHEMA public\s+'
                     r'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "job_agent_ui";', sql)
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC, " in sql  # whatever the Postgres version
    assert "REVOKE CREATE ON DATABASE" in sql
    assert f"REASSIGN OWNED BY {ui} TO \"job_agent_admin\";" in sql
    assert "NOSUPERUSER NOCREATEDB NOCREATEROLE" in sql
    granted = re.findall(r"GRANT ([A-Z, ]+) ON [^;]* TO \"job_agent_ui\"", sql)
    assert granted and set(", ".join(granted).split(", ")) == {"SELECT", "INSERT", "UPDATE", "DELETE", "USAGE",
                                                              "CONNECT", "TEMPORARY"}


# -- the superuser, the admin role's powers, Alembic's table ------------------------------------------


def test_the_admin_and_ui_roles_lose_every_power_and_the_superuser_keeps_its_own():
    sql = _statements(roles_script(ODD))
    for role, password in (('"Admin Role"', "admin_password"), ('"ui ""quoted"" Role"', "ui_password")):
        attributes = re.search(rf"ALTER ROLE {re.escape(role)} WITH ([A-Z ]+)\s+PASSWORD :'{password}'", sql)
        assert attributes and set(attributes[1].split()) == {"LOGIN", "NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE",
                                                             "NOREPLICATION", "NOBYPASSRLS", "INHERIT"}, role
    assert 'ALTER ROLE "Super ""User""" WITH LOGIN SUPERUSER;' in sql
    assert "format('CREATE ROLE %I LOGIN SUPERUSER', 'Super \"User\"')" in sql
    # the superuser's password only when given: first boot leaves initdb's
    assert re.search(r"\\if :\{\?superuser_password\}\nALTER ROLE \"Super \"\"User\"\"\" WITH PASSWORD :'superuser_password';", sql)


def test_alembic_version_is_made_by_the_script_and_only_readable_for_the_ui_role():
    sql = _statements(roles_script(PG))
    made = sql.index("'CREATE TABLE public.alembic_version (version_num VARCHAR(32) NOT NULL, '")
    assert "WHERE to_regclass('public.alembic_version') IS NULL\\gexec" in sql
    # made before the admin role takes ownership, so it is the admin role's like Alembic's own
    assert made < sql.index("ALTER DATABASE") < sql.index("OWNER TO %I', kind, name")
    all_tables = sql.index('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "job_agent_ui";')
    revoke = sql.index('REVOKE ALL ON public.alembic_version FROM "job_agent_ui";')
    select = sql.index('GRANT SELECT ON public.alembic_version TO "job_agent_ui";')
    assert all_tables < revoke < select < sql.index("\nCOMMIT;")
    assert not re.search(r"GRANT [A-Z, ]*(INSERT|UPDATE|DELETE|TRUNCATE)[A-Z, ]* ON public\.alembic_version", sql)


def test_the_upgrade_renames_the_bootstrap_role_under_another_identity_in_the_transaction():
    sql = _statements(roles_script(PG))
    begin, commit = sql.index("\nBEGIN;"), sql.index("\nCOMMIT;")
    steps = ['CREATE ROLE "opskit_role_upgrade" NOLOGIN SUPERUSER;', 'SET SESSION AUTHORIZATION "opskit_role_upgrade";',
             'ALTER ROLE "job_agent_admin" RENAME TO "postgres";', "RESET SESSION AUTHORIZATION;",
             'DROP ROLE "opskit_role_upgrade";']
    at = [sql.index(s) for s in steps]
    assert at == sorted(at) and begin < at[0] and at[-1] < commit
    # only on a volume whose admin role is initdb's (oid 10), and before the admin role is made anew
    assert "rolname = 'job_agent_admin' AND oid = 10) AS opskit_admin_is_bootstrap" in sql
    assert sql.rindex("\\if :opskit_admin_is_bootstrap", 0, at[0]) > sql.index("\\gset before_")
    assert at[-1] < sql.index("format('CREATE ROLE %I LOGIN', 'job_agent_admin')")
    assert "roles.psql: the admin role job_agent_admin is the bootstrap superuser and a role postgres exists" in sql


def test_objects_of_the_superuser_pass_to_the_admin_role_kind_by_kind():
    sql = _statements(roles_script(PG))
    for kind in ("'VIEW'", "'MATERIALIZED VIEW'", "'FOREIGN TABLE'", "'SEQUENCE'", "'TABLE'", "'PROCEDURE'",
                 "'AGGREGATE'", "'FUNCTION'", "'DOMAIN'", "'TYPE'"):
        assert kind in sql, kind
    assert "WHERE o.owner = (SELECT oid FROM pg_roles WHERE rolname = 'postgres')" in sql
    assert "e.deptype = 'e'" in sql  # an extension's members stay the extension's
    assert "d.deptype IN ('a', 'i')" in sql  # serial and identity sequences follow their table
    # and nothing the superuser creates later is granted to the UI role
    assert 'ALTER DEFAULT PRIVILEGES FOR ROLE "postgres" IN SCHEMA public REVOKE ALL ON TABLES FROM "job_agent_ui";' in sql


def test_the_report_covers_the_superuser_and_the_bootstrap_role():
    sql = roles_script(PG)
    for words in ("bootstrap superuser renamed", "superuser role attributes", "superuser role password",
                  "function and type owners"):
        assert f"THEN '{words}' END" in sql


def test_psql_connects_as_the_superuser_or_on_an_old_volume_as_the_admin_role(env):
    argv = db.psql_argv(env.postgres)
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["opskit-roles", "postgres", "job_agent_admin", "job_agent"]
    program = argv[2]
    assert 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user' in program
    assert program.count('--username "$1"') == 1 and '|| role=$2' in program
    assert program.endswith('exec psql --no-psqlrc --quiet --set ON_ERROR_STOP=1 --username "$role" --dbname "$3" --file -')


# -- the inventory's superuser role -------------------------------------------------------------------


def test_the_superuser_role_defaults_to_postgres(make_env):
    assert make_env("production").postgres.superuser_role == "postgres"


@pytest.mark.parametrize("value, message", [
    ("job_agent_admin", "postgres.superuser_role: must differ from admin_role ('job_agent_admin')"),
    ("job_agent_ui", "postgres.superuser_role: must differ from ui_role ('job_agent_ui')"),
    ("x" * 64, "1 to 63 bytes"),
])
def test_the_superuser_role_is_validated_like_the_other_roles(make_env, value, message):
    def edit(raw):
        raw["defaults"]["postgres"]["superuser_role"] = value
    with pytest.raises(InventoryError, match=re.escape(message)):
        make_env("production", edit)


# -- SCRAM verifiers --------------------------------------------------------------------------------


def test_scram_matches_the_rfc_7677_example():
    """RFC 7677 section 3: user "user", password "pencil". Our keys must produce its proof and
    its server signature."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    v = scram.verifier_with_salt(b"pencil", salt, 4096)
    stored, server = (base64.b64decode(k) for k in v.split("$")[2].split(":"))
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}".encode()
    assert base64.b64encode(hmac.digest(server, auth, "sha256")).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(a ^ b for a, b in zip(proof, hmac.digest(stored, auth, "sha256")))
    assert hashlib.sha256(client_key).digest() == stored


def test_a_verifier_is_stable_per_secret_and_role_and_changes_with_either():
    v = scram.verifier("s3cret", "job_agent_ui")
    assert v == scram.verifier("s3cret", "job_agent_ui")
    assert v != scram.verifier("s3cret!", "job_agent_ui")
    assert v != scram.verifier("s3cret", "job_agent_admin")
    assert re.fullmatch(r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=", v)
    assert scram.is_verifier(v) and not scram.is_verifier("s3cret")


@pytest.mark.parametrize("password, prepared", [
    ("plain ASCII \x07 kept as is", b"plain ASCII \x07 kept as is"),
    ("I\u00adX", b"IX"),  # RFC 4013 examples: soft hyphen mapped to nothing
    ("\u2168", b"IX"),  # NFKC: ROMAN NUMERAL NINE
    ("a\u00a0b\u00e9", "a b\u00e9".encode()),  # a non-ASCII space becomes a space
    ("\u00e9\u0007", "\u00e9\u0007".encode()),  # prohibited control character: raw bytes, as Postgres
    ("\u0627\u0031", "\u0627\u0031".encode()),  # right-to-left not ending right-to-left: raw bytes
])
def test_saslprep_prepares_passwords_as_postgres_does(password, prepared):
    assert scram.saslprep(password) == prepared


def test_roles_input_sends_verifiers_not_passwords_and_prints_as_stars(env):
    text = db.roles_input(env).reveal()
    for name in ("postgres_superuser_password", "postgres_admin_password", "postgres_ui_password"):
        assert env.secrets[name].reveal() not in text
    ui = scram.verifier(env.secrets["postgres_ui_password"].reveal(), env.postgres.ui_role)
    assert f"\\set ui_password '{ui}'\n" in text
    superuser = scram.verifier(env.secrets["postgres_superuser_password"].reveal(), env.postgres.superuser_role)
    assert f"\\set superuser_password '{superuser}'\n" in text
    assert text.endswith("\\i /docker-entrypoint-initdb.d/roles.psql\n")
    assert str(db.roles_input(env)) == "***"
    assert db.roles_input(env).reveal() == text  # same secrets, same input: nothing new to set


def test_roles_input_can_carry_the_script_itself(env):
    text = db.roles_input(env, script=None).reveal()
    assert text.endswith(roles_script(env.postgres)) and "\\i " not in text
    assert "\\i " not in db.roles_step(env, "/r", inline=True).stdin.reveal()
    assert db.roles_step(env, "/r").stdin.reveal().endswith("\\i /docker-entrypoint-initdb.d/roles.psql\n")


def test_psql_quote_escapes_backslashes_and_quotes():
    assert db.psql_quote("a'b\\c") == "'a\\'b\\\\c'"


def test_the_roles_step_runs_psql_in_the_postgres_container_with_no_secret_in_argv(env):
    step = db.roles_step(env, "/srv/jobagent/releases/r1")
    assert step.argv[-len(db.psql_argv(env.postgres)):] == tuple(db.psql_argv(env.postgres))
    assert ("exec", "-T", "postgres") == step.argv[6:9]
    assert isinstance(step.stdin, Secret)
    fed = step.stdin.reveal()  # the control: the step really carries the SCRAM verifiers...
    verifiers = [scram.verifier(env.secrets[n].reveal(), role) for n, role in
                 (("postgres_superuser_password", env.postgres.superuser_role),
                  ("postgres_admin_password", env.postgres.admin_role), ("postgres_ui_password", env.postgres.ui_role))]
    assert all(v in fed for v in verifiers)
    printed = step.describe() + repr(step)  # ...and prints none of them, nor a password
    assert all(v not in printed for v in verifiers)
    assert all(s.reveal() not in printed for s in env.secrets.values())


# -- reading the output -----------------------------------------------------------------------------


def test_roles_result_reads_no_change_and_changed_parts():
    assert db.roles_result("roles: no change\n") == db.RolesResult()
    assert not db.roles_result("NOTICE: x\nroles: no change").is_changed
    changed = db.roles_result("roles: changed: ui role password, table and sequence owners and grants\n")
    assert changed.is_changed
    assert changed.changed == ("ui role password", "table and sequence owners and grants")
    assert changed.summary() == "roles: changed: ui role password, table and sequence owners and grants"


def test_roles_result_without_a_report_says_what_to_do():
    with pytest.raises(OpskitError, match="printed no `roles: ...` report.*render and deploy the release again"):
        db.roles_result("psql:<stdin>:3: ERROR:  permission denied\n")


ALEMBIC = """\
INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.
INFO  [alembic.runtime.migration] Will assume transactional DDL.
INFO  [alembic.runtime.migration] Running upgrade  -> 0001, create runs
INFO  [alembic.runtime.migration] Running upgrade 0001 -> 0002, track the celery task per run and keep a status history
"""


def test_migrate_result_lists_the_revisions_applied():
    result = db.migrate_result(ALEMBIC)
    assert [(r.source, r.target) for r in result.applied] == [(None, "0001"), ("0001", "0002")]
    assert result.summary() == ("migrations: applied 2: 0001 (create runs), "
                                "0002 (track the celery task per run and keep a status history)")


def test_migrate_result_at_head_applies_nothing():
    at_head = "\n".join(ALEMBIC.splitlines()[:2])
    assert db.migrate_result(at_head).applied == ()
    assert db.migrate_result(at_head).summary() == "migrations: already at head, nothing applied"
