"""The two Postgres roles as one psql script: the single source of truth for roles and grants.

The same `roles.psql` runs on first boot (`postgres-init/10-roles.sh`, plain passwords from the
container's environment, stored as SCRAM by password_encryption) and on every deploy
(`invoke db.roles`, SCRAM verifiers on stdin, see `db.roles_input`). Role and database names are
quoted identifiers; passwords are psql variables (`:'ui_password'`), never part of the text.

The script reports what it did on its last line, `roles: no change` or
`roles: changed: <parts>` (`db.roles_result` reads it): it fingerprints the catalog rows it is
responsible for before and after its changes, inside its one transaction.
"""

from __future__ import annotations

REPORT_PREFIX = "roles: "

#: What the fingerprint covers: (psql variable suffix, words for the report, SQL expression).
#: `{admin}`, `{ui}` are the role names as string literals. ACLs are sorted so that a REVOKE
#: followed by the same GRANT (which may reorder an aclitem[]) counts as no change.
_ACL = "(SELECT string_agg(a::text, ' ' ORDER BY a::text) FROM unnest({col}) a)"
_ROLE_ATTRS = ("(SELECT concat_ws('|', rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
               "rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil, "
               "(SELECT string_agg(m.roleid::regrole::text, ',' ORDER BY 1) FROM pg_auth_members m "
               "WHERE m.member = r.oid)) FROM pg_roles r WHERE rolname = {role})")
FINGERPRINT = (
    ("admin_role", "admin role attributes", _ROLE_ATTRS.replace("{role}", "{admin}")),
    ("ui_role", "ui role attributes", _ROLE_ATTRS.replace("{role}", "{ui}")),
    ("admin_password", "admin role password", "(SELECT rolpassword FROM pg_authid WHERE rolname = {admin})"),
    ("ui_password", "ui role password", "(SELECT rolpassword FROM pg_authid WHERE rolname = {ui})"),
    ("database", "database owner and grants",
     "(SELECT concat_ws('|', pg_get_userbyid(datdba), " + _ACL.format(col="datacl") + ") "
     "FROM pg_database WHERE datname = current_database())"),
    ("schema", "schema owner and grants",
     "(SELECT concat_ws('|', pg_get_userbyid(nspowner), " + _ACL.format(col="nspacl") + ") "
     "FROM pg_namespace WHERE nspname = 'public')"),
    ("tables", "table and sequence owners and grants",
     "(SELECT string_agg(concat_ws('|', relname, relkind, pg_get_userbyid(relowner), "
     + _ACL.format(col="relacl") + "), ',' ORDER BY relname, relkind) "
     "FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'f', 'S'))"),
    ("defaults", "default privileges",
     "(SELECT string_agg(concat_ws('|', pg_get_userbyid(defaclrole), defaclnamespace, defaclobjtype, "
     + _ACL.format(col="defaclacl") + "), ',' ORDER BY 1) FROM pg_default_acl)"),
)


def quote_ident(name: str) -> str:
    """A Postgres identifier, quoted so any name (spaces, quotes, capitals) is taken literally."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A Postgres string literal (standard_conforming_strings is on since 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def _limit(n: int) -> str:
    return f"CONNECTION LIMIT {n}"


def _fingerprint(admin_lit: str, ui_lit: str, prefix: str) -> str:
    """One query that stores a hash of each part in psql variables `<prefix><part>`.
    Hashed so that no password verifier is copied into a variable a mistake could echo."""
    cols = ",\n  ".join(
        f"encode(sha256(convert_to(coalesce({expr.format(admin=admin_lit, ui=ui_lit)}, '<none>'), 'UTF8')), 'hex') AS {key}"
        for key, _, expr in FINGERPRINT)
    return f"SELECT\n  {cols}\n\\gset {prefix}"


def _report() -> str:
    parts = ",\n    ".join(f"CASE WHEN :'before_{key}' <> :'after_{key}' THEN {quote_literal(words)} END"
                           for key, words, _ in FINGERPRINT)
    return (f"SELECT CASE WHEN changed = '' THEN '{REPORT_PREFIX}no change' "
            f"ELSE '{REPORT_PREFIX}changed: ' || changed END AS roles_report\n"
            f"FROM (SELECT concat_ws(', ',\n    {parts}) AS changed) AS diff\n\\gset")


def _fail_if(condition_var: str, message: str, hint: str) -> str:
    """Stop the script with an error (ON_ERROR_STOP) when the psql boolean `condition_var` is true."""
    return (f"\\if :{condition_var}\n"
            f"  DO $$BEGIN RAISE EXCEPTION USING MESSAGE = {quote_literal(message)}, HINT = {quote_literal(hint)}; END$$;\n"
            f"\\endif")


def roles_script(pg) -> str:
    """psql script creating/updating both roles and their grants, in one transaction.

    Expects psql variables `admin_password` and `ui_password` (plain text or SCRAM verifiers),
    and a superuser connection to `pg.database` (the official image's POSTGRES_USER, which is
    the admin role). Fixes a database that predates the roles: tables already there get the UI
    role's grants, later ones get them through default privileges. Will not drop roles, tables
    or data, touches only the `public` schema, and prints `roles: no change` or
    `roles: changed: ...` as its last line.
    """
    db, admin, ui = quote_ident(pg.database), quote_ident(pg.admin_role), quote_ident(pg.ui_role)
    admin_lit, ui_lit = quote_literal(pg.admin_role), quote_literal(pg.ui_role)
    return f"""\
-- Rendered by opskit (opskit/postgres.py). The admin role owns the schema and runs Alembic;
-- the UI role (the frontend, Prisma) reads and writes rows and can change no schema.
\\set ON_ERROR_STOP on
\\set QUIET on
-- nothing below may be echoed: the password variables are interpolated into ALTER ROLE
\\set ECHO none
\\set ECHO_HIDDEN off
\\if :{{?admin_password}}
\\else
  DO $$BEGIN RAISE EXCEPTION 'roles.psql: the psql variable admin_password is not set' USING HINT = 'run it through `invoke db.roles` or postgres-init/10-roles.sh, which set it'; END$$;
\\endif
\\if :{{?ui_password}}
\\else
  DO $$BEGIN RAISE EXCEPTION 'roles.psql: the psql variable ui_password is not set' USING HINT = 'run it through `invoke db.roles` or postgres-init/10-roles.sh, which set it'; END$$;
\\endif

DO $$BEGIN
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE EXCEPTION 'roles.psql must run as a superuser, not as %', current_user
      USING HINT = 'connect as the admin role, which the official image creates as POSTGRES_USER (a superuser)';
  END IF;
END$$;
-- keep this session's statements (ALTER ROLE ... PASSWORD) out of the server log, whatever
-- log_statement says, and out of the log's STATEMENT line should one of them fail
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
-- plain passwords (first boot) are stored as SCRAM; SCRAM verifiers (db.roles) are kept as they are
SET password_encryption = 'scram-sha-256';

SELECT :'admin_password' = '' OR :'ui_password' = '' AS opskit_empty_password
\\gset
{_fail_if("opskit_empty_password", "roles.psql: a role password is empty",
          "set postgres_admin_password and postgres_ui_password in the inventory's secrets (or POSTGRES_PASSWORD and POSTGRES_UI_PASSWORD on first boot)")}

BEGIN;
{_fingerprint(admin_lit, ui_lit, "before_")}

-- create what is missing (CREATE ROLE has no IF NOT EXISTS)
SELECT format('CREATE ROLE %I LOGIN', {admin_lit}) WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {admin_lit})\\gexec
SELECT format('CREATE ROLE %I LOGIN', {ui_lit}) WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {ui_lit})\\gexec

ALTER ROLE {admin} WITH LOGIN PASSWORD :'admin_password' {_limit(pg.admin_connection_limit)};
ALTER ROLE {ui} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT
  PASSWORD :'ui_password' {_limit(pg.ui_connection_limit)};
-- a membership in the admin role would hand the UI role the owner's rights (DROP, ALTER)
SELECT format('REVOKE %I FROM %I', {admin_lit}, {ui_lit}) FROM pg_auth_members
  WHERE roleid = (SELECT oid FROM pg_roles WHERE rolname = {admin_lit})
    AND member = (SELECT oid FROM pg_roles WHERE rolname = {ui_lit}) LIMIT 1\\gexec

-- the admin role owns the database and the schema, so everything Alembic creates is its own
ALTER DATABASE {db} OWNER TO {admin};
ALTER SCHEMA public OWNER TO {admin};
-- the UI role owns nothing: what it created before these grants (PUBLIC could CREATE in public
-- before Postgres 15) passes to the admin role, so it can neither ALTER nor DROP it
REASSIGN OWNED BY {ui} TO {admin};

-- the UI role: connect and use, never create (PUBLIC lost CREATE on public only in Postgres 15)
REVOKE CREATE ON DATABASE {db} FROM PUBLIC, {ui};
REVOKE CREATE ON SCHEMA public FROM PUBLIC, {ui};
GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {ui};
GRANT USAGE ON SCHEMA public TO {ui};
-- tables already there (a volume older than the roles), exactly rows: no TRUNCATE, REFERENCES, TRIGGER
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ui};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ui};
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {ui};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ui};

-- and the same on every table and sequence the admin role creates later (Alembic migrations)
ALTER DEFAULT PRIVILEGES FOR ROLE {admin} IN SCHEMA public REVOKE ALL ON TABLES FROM {ui};
ALTER DEFAULT PRIVILEGES FOR ROLE {admin} IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ui};
ALTER DEFAULT PRIVILEGES FOR ROLE {admin} IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {ui};
ALTER DEFAULT PRIVILEGES FOR ROLE {admin} IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO {ui};

{_fingerprint(admin_lit, ui_lit, "after_")}
{_report()}
COMMIT;
\\echo :roles_report
"""
