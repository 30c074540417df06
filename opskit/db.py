"""Database steps: the two roles (`roles.psql`, on every deploy) and Alembic, the only tool that
changes the schema. Both run on the server, inside the release's own containers."""

from __future__ import annotations

import posixpath

from .secrets import Secret
from .steps import SERVER, Run

INIT_DIR = "/docker-entrypoint-initdb.d"  # where the release's postgres-init/ is mounted


def psql_quote(value: str) -> str:
    """A value for psql's `\\set name 'value'` (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def roles_input(env) -> Secret:
    """psql input: the passwords as variables, then the release's roles.psql (shared with first boot)."""
    s = env.secrets
    text = (f"\\set admin_password {psql_quote(s['postgres_admin_password'].reveal())}\n"
            f"\\set ui_password {psql_quote(s['postgres_ui_password'].reveal())}\n"
            f"\\i {INIT_DIR}/roles.psql\n")
    return Secret(text, "roles.psql input")


def compose(folder: str, *args) -> list[str]:
    """`docker compose` for the release in `folder` (the project name comes from the file)."""
    return ["docker", "compose", "--project-directory", folder, "-f", posixpath.join(folder, "docker-compose.yml"),
            *args]


def roles_step(env, folder: str) -> Run:
    """Create or update both roles and their grants, in one transaction; safe on every deploy.
    Passwords travel on stdin, never in argv or logs."""
    pg = env.postgres
    argv = compose(folder, "exec", "-T", "postgres", "psql", "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1",
                    "--username", pg.admin_role, "--dbname", pg.database, "--file", "-")
    return Run(f"roles {pg.admin_role} and {pg.ui_role}", argv, on=SERVER, stdin=roles_input(env), timeout=120)


def migrate_step(env, folder: str) -> Run:
    """`alembic upgrade head` once, in the new API image, as the admin role (its env file)."""
    argv = compose(folder, "run", "--rm", "--no-deps", "-T", "api", "alembic", "upgrade", "head")
    return Run("migrate: alembic upgrade head (new image, admin role)", argv, on=SERVER, stream=True, timeout=900)
