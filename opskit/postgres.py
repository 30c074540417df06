"""The two Postgres roles as one psql script: the single source of truth for roles and grants.

The same `roles.psql` runs on first boot (`postgres-init/10-roles.sh`, passwords from the
container's environment) and on every deploy (`invoke db.roles`, passwords on stdin). Role and
database names are quoted identifiers; passwords are psql variables (`:'ui_password'`), never
interpolated into the text.
"""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """A Postgres identifier, quoted so any name (spaces, quotes, capitals) is taken literally."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A Postgres string literal (standard_conforming_strings is on since 9.1)."""
    return "'" + text.replace("'", "''") + "'"


def _limit(n: int) -> str:
    return f"CONNECTION LIMIT {n}"


def roles_script(pg) -> str:
    """psql script creating/updating both roles and their grants, in one transaction.

    Expects psql variables `admin_password` and `ui_password`, and a connection to `pg.database`
    as a role that may create roles (the admin role on first boot, it is POSTGRES_USER).
    Will not drop roles, tables or data, and touches only the `public` schema.
    """
    db, admin, ui = quote_ident(pg.database), quote_ident(pg.admin_role), quote_ident(pg.ui_role)
    admin_lit, ui_lit = quote_literal(pg.admin_role), quote_literal(pg.ui_role)
    return f"""\
-- Rendered by opskit (opskit/postgres.py). The admin role owns the schema and runs Alembic;
-- the UI role (the frontend, Prisma) reads and writes rows and can change no schema.
\\set ON_ERROR_STOP on
SET password_encryption = 'scram-sha-256';
BEGIN;

-- create what is missing (CREATE ROLE has no IF NOT EXISTS)
SELECT format('CREATE ROLE %I LOGIN', {admin_lit}) WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {admin_lit})\\gexec
SELECT format('CREATE ROLE %I LOGIN', {ui_lit}) WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {ui_lit})\\gexec

ALTER ROLE {admin} WITH LOGIN PASSWORD :'admin_password' {_limit(pg.admin_connection_limit)};
ALTER ROLE {ui} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT
  PASSWORD :'ui_password' {_limit(pg.ui_connection_limit)};

-- the admin role owns the database and the schema, so everything Alembic creates is its own
ALTER DATABASE {db} OWNER TO {admin};
ALTER SCHEMA public OWNER TO {admin};

-- the UI role: connect and use, never create (PUBLIC lost CREATE on public only in Postgres 15)
REVOKE CREATE ON DATABASE {db} FROM PUBLIC, {ui};
REVOKE CREATE ON SCHEMA public FROM PUBLIC, {ui};
GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {ui};
GRANT USAGE ON SCHEMA public TO {ui};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ui};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ui};

-- and the same on every table and sequence the admin role creates later (Alembic migrations)
ALTER DEFAULT PRIVILEGES FOR ROLE {admin} IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ui};
ALTER DEFAULT PRIVILEGES FOR ROLE {admin} IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO {ui};

COMMIT;
"""
