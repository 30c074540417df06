"""The Postgres roles as one psql script: the single source of truth for roles and grants.

Three roles: the superuser (the image's POSTGRES_USER; opskit's role step and backups only), the
admin role (owns the database and schema, runs Alembic, no superuser or other power) and the UI
role (rows only; Alembic's version table read-only). The script also moves a volume made before
the superuser role existed, where the admin role is initdb's bootstrap superuser, to that shape.

The same `roles.psql` runs on first boot (`postgres-init/10-roles.sh`, plain passwords from the
container's secret files, stored as SCRAM by password_encryption) and on every deploy
(`invoke db.roles`, SCRAM verifiers on stdin, see `db.roles_input`). Role and database names are
quoted identifiers; passwords are psql variables (`:'ui_password'`), never part of the text.

The script reports what it did on its last line, `roles: no change` or
`roles: changed: <parts>` (`db.roles_result` reads it): it fingerprints the catalog rows it is
responsible for before and after its changes, inside its one transaction.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from . import ROOT

REPORT_PREFIX = "roles: "
TEMPLATE = "postgres-init/roles.psql.j2"
#: Alembic's version table (its default name): the UI role may read it, never write it
ALEMBIC_VERSION_TABLE = "alembic_version"
#: BOOTSTRAP_SUPERUSERID (src/include/catalog/pg_authid.dat): the role initdb makes, POSTGRES_USER
BOOTSTRAP_OID = 10
#: the throw-away superuser whose identity renames the bootstrap role (created and dropped in one transaction)
UPGRADE_ROLE = "opskit_role_upgrade"

#: What the fingerprint covers: (psql variable suffix, words for the report, SQL expression).
#: `{superuser}`, `{admin}`, `{ui}` are the role names as string literals. ACLs are sorted so that a REVOKE
#: followed by the same GRANT (which may reorder an aclitem[]) counts as no change.
_ACL = "(SELECT string_agg(a::text, ' ' ORDER BY a::text) FROM unnest({col}) a)"
_ROLE_ATTRS = ("(SELECT concat_ws('|', rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
               "rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil, "
               "(SELECT string_agg(m.roleid::regrole::text, ',' ORDER BY 1) FROM pg_auth_members m "
               "WHERE m.member = r.oid)) FROM pg_roles r WHERE rolname = {role})")
FINGERPRINT = (
    ("bootstrap", "bootstrap superuser renamed", f"(SELECT rolname FROM pg_roles WHERE oid = {BOOTSTRAP_OID})"),
    ("superuser_role", "superuser role attributes", _ROLE_ATTRS.replace("{role}", "{superuser}")),
    ("admin_role", "admin role attributes", _ROLE_ATTRS.replace("{role}", "{admin}")),
    ("ui_role", "ui role attributes", _ROLE_ATTRS.replace("{role}", "{ui}")),
    ("superuser_password", "superuser role password",
     "(SELECT rolpassword FROM pg_authid WHERE rolname = {superuser})"),
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
    ("routines_types", "function and type owners",
     "(SELECT string_agg(o, ',' ORDER BY o) FROM ("
     "SELECT p.oid::regprocedure::text || '|' || pg_get_userbyid(p.proowner) AS o FROM pg_proc p "
     "WHERE p.pronamespace = 'public'::regnamespace UNION ALL "
     "SELECT t.oid::regtype::text || '|' || pg_get_userbyid(t.typowner) FROM pg_type t "
     "WHERE t.typnamespace = 'public'::regnamespace) AS owned)"),
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


def _fingerprint(superuser_lit: str, admin_lit: str, ui_lit: str, prefix: str) -> str:
    """One query that stores a hash of each part in psql variables `<prefix><part>`.
    Hashed so that no password verifier is copied into a variable a mistake could echo."""
    cols = ",\n  ".join(
        f"encode(sha256(convert_to(coalesce({expr.format(superuser=superuser_lit, admin=admin_lit, ui=ui_lit)}, '<none>'), 'UTF8')), 'hex') AS {key}"
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


def roles_script(pg, templates: Path = ROOT) -> str:
    """psql script creating/updating the three roles and their grants, in one transaction
    (`postgres-init/roles.psql.j2`, with every name quoted here).

    Expects psql variables `admin_password` and `ui_password`, optionally `superuser_password`
    (plain text or SCRAM verifiers; without it the superuser's password is left as initdb set
    it), and a superuser connection to `pg.database`: the superuser role, or on a volume older
    than it the admin role, then initdb's bootstrap superuser, which the script renames to the
    superuser role before it makes a new, powerless admin role and hands it every object of the
    `public` schema. Fixes a database that predates the roles: tables already there get the UI
    role's grants, later ones get them through default privileges. Will not drop roles (but its
    own throw-away one), tables or data, touches only the `public` schema, and prints
    `roles: no change` or `roles: changed: ...` as its last line.
    """
    superuser_lit = quote_literal(pg.superuser_role)
    admin_lit, ui_lit = quote_literal(pg.admin_role), quote_literal(pg.ui_role)
    jinja = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), undefined=jinja2.StrictUndefined,
                               keep_trailing_newline=True, autoescape=False)
    return jinja.get_template(TEMPLATE).render(
        db=quote_ident(pg.database), admin=quote_ident(pg.admin_role), ui=quote_ident(pg.ui_role),
        superuser=quote_ident(pg.superuser_role), superuser_lit=superuser_lit,
        admin_lit=admin_lit, ui_lit=ui_lit, bootstrap_oid=BOOTSTRAP_OID, upgrade_role=quote_ident(UPGRADE_ROLE),
        alembic_table=ALEMBIC_VERSION_TABLE,
        admin_limit=_limit(pg.admin_connection_limit), ui_limit=_limit(pg.ui_connection_limit),
        fail_if_empty=_fail_if(
            "opskit_empty_password", "roles.psql: a role password is empty",
            "set postgres_superuser_password, postgres_admin_password and postgres_ui_password in the "
            "inventory's secrets (on first boot: the files /run/secrets/postgres_admin_password and "
            "postgres_ui_password)"),
        fail_both_exist=_fail_if(
            "opskit_superuser_exists", f"roles.psql: the admin role {pg.admin_role} is the bootstrap superuser "
            f"and a role {pg.superuser_role} exists too, so the bootstrap role cannot take that name",
            f"drop or rename the role {pg.superuser_role} (it should own nothing), or set "
            "postgres.superuser_role to a free name"),
        fingerprint_before=_fingerprint(superuser_lit, admin_lit, ui_lit, "before_"),
        fingerprint_after=_fingerprint(superuser_lit, admin_lit, ui_lit, "after_"),
        report=_report(),
    )
