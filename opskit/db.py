"""Database steps: the roles (`roles.psql`, on every deploy) and Alembic, the only tool that
changes the schema. Both run on the server, inside the release's own containers.

`roles_result` and `migrate_result` read those steps' output into what `invoke db.roles` and
`invoke db.migrate` report; they are pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def migrate_step(env, folder: str) -> Run:
    """`alembic upgrade head` once, in the new API image, as the admin role (its env file).
    At head it applies nothing and costs one container start; `migrate_result` reads the output."""
    argv = compose(folder, "run", "--rm", "--no-deps", "-T", "api", "alembic", "upgrade", "head")
    return Run("migrate: alembic upgrade head (new image, admin role)", argv, on=SERVER, stream=True, timeout=900)


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
