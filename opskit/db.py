"""Database steps: the roles (`roles.psql`, on every deploy) and Alembic, the only tool that
changes the schema. Both run on the server, inside the release's own containers.

`roles_result` and `migrate_result` read those steps' output into what `invoke db.roles` and
`invoke db.migrate` report; they are pure.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import scram
from .errors import OpskitError
from .postgres import REPORT_PREFIX, roles_script
from .secrets import Secret
from .layout import compose_argv as compose
from .steps import SERVER, Run

INIT_DIR = "/docker-entrypoint-initdb.d"  # where the release's postgres-init/ is mounted
ROLES_SCRIPT = f"{INIT_DIR}/roles.psql"


def psql_quote(value: str) -> str:
    """A value for psql's `\\set name 'value'` (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def roles_input(env, script: str | None = ROLES_SCRIPT) -> Secret:
    """psql input: the three passwords as SCRAM verifiers, then roles.psql (shared with first boot):
    `\\i script` (the file the release installed), or with `script=None` its text rendered from
    this inventory (for a run between deploys, when the server's copy may be older).

    Verifiers, not plain text: Postgres stores them as they are, and the same secret always gives
    the same verifier (see `scram.verifier`), so a second run changes nothing and says so.
    """
    s, pg = env.secrets, env.postgres
    superuser = scram.verifier(s["postgres_superuser_password"].reveal(), pg.superuser_role)
    admin = scram.verifier(s["postgres_admin_password"].reveal(), pg.admin_role)
    ui = scram.verifier(s["postgres_ui_password"].reveal(), pg.ui_role)
    text = (f"\\set superuser_password {psql_quote(superuser)}\n"
            f"\\set admin_password {psql_quote(admin)}\n"
            f"\\set ui_password {psql_quote(ui)}\n"
            + (f"\\i {script}\n" if script is not None else roles_script(pg)))
    return Secret(text, "roles.psql input")


#: `sh -c` program: psql as the superuser role ($1) when it logs in as a superuser, else as the
#: admin role ($2): on a volume older than the superuser role, the admin role is the bootstrap
#: superuser (roles.psql renames it). When neither can log in, the admin's psql says why.
_PSQL_AS_SUPERUSER = (
    'role=$1; '
    '[ "$(psql --no-psqlrc --quiet --no-align --tuples-only --username "$1" --dbname "$3" '
    '--command "SELECT rolsuper FROM pg_roles WHERE rolname = current_user" </dev/null 2>/dev/null)" = t ] '
    '|| role=$2; '
    'exec psql --no-psqlrc --quiet --set ON_ERROR_STOP=1 --username "$role" --dbname "$3" --file -')


def psql_argv(pg) -> list[str]:
    """psql reading a script on stdin over the container's local socket (which trusts its own
    users): as the superuser role, or on a volume older than it as the admin role (see
    `_PSQL_AS_SUPERUSER`). Only role and database names are in argv."""
    return ["sh", "-c", _PSQL_AS_SUPERUSER, "opskit-roles", pg.superuser_role, pg.admin_role, pg.database]


def roles_step(env, folder: str, inline: bool = False) -> Run:
    """Create or update the roles and their grants, in one transaction; safe on every deploy
    (on a volume older than the superuser role it also makes that role and demotes the admin).
    Passwords travel on stdin, never in argv or logs. Its output ends with the report that
    `roles_result` reads. `inline` sends the script rendered from this inventory instead of
    `\\i` of the server's copy (what `invoke db.roles` between deploys wants)."""
    pg = env.postgres
    argv = compose(folder, "exec", "-T", "postgres", *psql_argv(pg))
    stdin = roles_input(env, script=None if inline else ROLES_SCRIPT)
    return Run(f"roles {pg.superuser_role}, {pg.admin_role} and {pg.ui_role}", argv, on=SERVER, stdin=stdin,
               timeout=120)


def migrate_step(env, folder: str, heads: tuple | None = None) -> Run:
    """`alembic upgrade head` once, in the new API image, as the admin role (its env file);
    `migrate_result` reads the output. With the `heads` of the image's scripts (`alembic_heads`),
    the database's `alembic_version` is read first (psql in the Postgres container, a fraction of
    the upgrade's container start) and the upgrade runs only when it differs: what `upgrade head`
    at head would do, nothing. Any doubt (no such table, psql refused) runs the upgrade."""
    argv = compose(folder, "run", "--rm", "--no-deps", "-T", "api", "alembic", "upgrade", "head")
    if not heads:
        return Run("migrate: alembic upgrade head (new image, admin role)", argv, on=SERVER, stream=True,
                   timeout=900)
    read = compose(folder, "exec", "-T", "postgres", "psql", "--no-psqlrc", "--no-align", "--tuples-only",
                   "--username", env.postgres.superuser_role, "--dbname", env.postgres.database,
                   "--command", "SELECT version_num FROM alembic_version ORDER BY 1")
    want = " ".join(sorted(heads))
    script = (f"cur=$({shlex.join(read)} </dev/null 2>/dev/null | tr '\\n' ' ' | sed 's/ *$//')\n"
              f'if [ "$cur" = {shlex.quote(want)} ]; then echo "{AT_HEAD} ({want}): no upgrade to run"; exit 0; fi\n'
              f"exec {shlex.join(argv)}\n")
    return Run(f"migrate: alembic upgrade head (new image, admin role) unless the database is at {want}",
               ["sh", "-c", script], on=SERVER, stream=True, timeout=900)


#: what the migrate step prints when the database is at the image's heads already
AT_HEAD = "the database is at the head of the image's migrations"

#: run in the build context: the heads of its Alembic scripts, with no database (one per line)
_HEADS = ("from alembic.config import Config\nfrom alembic.script import ScriptDirectory\n"
          "print('\\n'.join(ScriptDirectory.from_config(Config('alembic.ini')).get_heads()))\n")


def alembic_heads(context: Path) -> tuple | None:
    """The head revisions of the Alembic scripts in a build context (its alembic.ini), read here in
    a process of their own (the scripts are imported, with the context on sys.path); None when they
    cannot be read (no alembic.ini, a script that imports what this machine lacks): the upgrade
    then runs as always. The code layers are built from these same files, with no cache."""
    if not (context / "alembic.ini").is_file():
        return None
    try:
        done = subprocess.run([sys.executable, "-c", _HEADS], cwd=context, capture_output=True, text=True,
                              timeout=60, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    heads = tuple(sorted(line.strip() for line in done.stdout.splitlines() if line.strip()))
    return heads if done.returncode == 0 and heads else None


# -- reading the output ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RolesResult:
    """What roles.psql reported: `changed` parts such as "ui role password", or none."""

    changed: tuple = ()

    @property
    def is_changed(self) -> bool:
        return bool(self.changed)

    def summary(self) -> str:
        return f"{REPORT_PREFIX}changed: {', '.join(self.changed)}" if self.changed else f"{REPORT_PREFIX}no change"


def roles_result(output: str) -> RolesResult:
    """Read the last `roles: ...` line of roles.psql's output.

    Raises OpskitError when there is none: the script stopped early, or the server's roles.psql
    predates the report (re-render and redeploy the release)."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line == f"{REPORT_PREFIX}no change":
            return RolesResult()
        if line.startswith(f"{REPORT_PREFIX}changed: "):
            parts = line[len(f"{REPORT_PREFIX}changed: "):].split(", ")
            return RolesResult(tuple(p for p in parts if p))
    raise OpskitError("roles.psql printed no `roles: ...` report: it stopped before its end, or the "
                      "server has an older roles.psql (render and deploy the release again)"
                      + (f"; its output was:\n{output.strip()}" if output.strip() else ""))


_UPGRADE = re.compile(r"Running upgrade\s+(?:(?P<source>\S+)\s+)?->\s+(?P<target>[^,\s]+)(?:,\s*(?P<message>.*))?")


@dataclass(frozen=True)
class Revision:
    source: str | None  # None: the first revision, from an empty database
    target: str
    message: str


@dataclass(frozen=True)
class MigrateResult:
    """The revisions `alembic upgrade head` applied, in order; none when it was already at head."""

    applied: tuple = ()

    def summary(self) -> str:
        if not self.applied:
            return "migrations: already at head, nothing applied"
        done = ", ".join(f"{r.target} ({r.message})" if r.message else r.target for r in self.applied)
        return f"migrations: applied {len(self.applied)}: {done}"


def migrate_result(output: str) -> MigrateResult:
    """Read Alembic's `Running upgrade A -> B, message` log lines (its INFO logging, which the
    sample app's alembic.ini turns on; without it every run reads as "already at head")."""
    revs = []
    for line in output.splitlines():
        found = _UPGRADE.search(line)
        if found:
            revs.append(Revision(found["source"], found["target"], (found["message"] or "").strip()))
    return MigrateResult(tuple(revs))
