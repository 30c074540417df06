"""Restoring a backup into the LIVE database: the guarded mode of `invoke db.restore`.

In order, each step stopping the rest when it fails:

    backup     the current state first (dump and off-site copy; no forget: retention must not
               remove the snapshot being restored)
    restore    the chosen snapshot's set into a 0700 folder, and its sha256 checked against its
               manifest (the drill's first checks) BEFORE anything live is touched
    stop       the app services (api, worker, beat, flower, frontend): nothing writes meanwhile
    recreate   the app database dropped and made anew, owned as before (a restore into a fresh
               database leaves no table a later migration added)
    pg_restore one transaction, stopping at the first error
    roles      the roles and grants again (database-level grants are not in a dump)
    census     the restored revision and row counts equal the manifest's
    start      every service, waiting until healthy

The snapshot is resolved to its id before the backup of the current state is taken, which would
otherwise become `latest`. A failure after `stop` leaves the services stopped and says which
snapshot holds the state from before (restore it the same way); the restored files are removed
in every case.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import StepFailed
from ..inventory.model import APP_SERVICES
from ..layout import compose_argv
from ..steps import SERVER, Plan, Run
from . import drill as drills
from .drill import Drill
from .plan import HERE, Settings, dump_step, init_step, send_step

#: drop and create the app database, owned by whoever owned it (psql variables: db)
_RECREATE = """\\set ON_ERROR_STOP 1
SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = :'db' \\gset
DROP DATABASE IF EXISTS :"db" WITH (FORCE);
CREATE DATABASE :"db" OWNER :"owner" TEMPLATE template0;
"""


@dataclass(frozen=True)
class LiveRestore:
    settings: Settings
    drill: Drill  # its restore and read steps, and its cleanup of the folder
    release_folder: str  # the current release's: its compose file runs the services
    roles: Run  # db.roles_step of the environment
    stamp: str  # the backup of the current state
    release: str

    def _psql(self, database: str, *args: str) -> list[str]:
        return self.drill._psql(database, *args)

    def steps(self) -> list[tuple[str, Run]]:
        s, folder = self.settings, self.release_folder
        restore, read = [step for name, step in self.drill.steps() if name in ("restore", "manifest")]
        pg_restore = [*s.psql_prefix, "pg_restore", "--no-password", "--exit-on-error", "--single-transaction",
                      "--username", s.superuser_role, "--dbname", s.database]
        census = (HERE / "census.sql").read_bytes() + (HERE / "ui_select.sql").read_bytes()
        return [
            ("backup", dump_step(s, self.stamp, self.release)),
            ("backup", init_step(s.access)),
            ("backup", send_step(s, self.stamp)),
            ("restore", restore),
            ("manifest", read),
            ("stop", Run(f"stop {', '.join(APP_SERVICES)}", compose_argv(folder, "stop", *APP_SERVICES), on=SERVER,
                         stream=True, timeout=300)),
            ("recreate", Run(f"drop and create {s.database}", self._psql("postgres", "-v", f"db={s.database}", "-f", "-"),
                             on=SERVER, stdin=_RECREATE.encode(), timeout=300)),
            ("pg_restore", Run(f"pg_restore into {s.database}",
                               ["sh", "-c", drills._FROM_FILE, "opskit-restore", self.drill.dump_file, *pg_restore],
                               on=SERVER, timeout=4 * 3600)),
            ("roles", self.roles),
            ("census", Run(f"census of {s.database} (revision, rows, UI role)",
                           self._psql(s.database, "-A", "-t", "-v", f"ui={self.drill.ui_role}", "-f", "-"),
                           on=SERVER, stdin=census, timeout=600)),
            ("start", Run("start every service and wait until healthy",
                          compose_argv(folder, "up", "-d", "--wait", "--wait-timeout", "300"), on=SERVER, stream=True,
                          timeout=360)),
        ]

    def plan(self) -> Plan:
        return Plan(f"db.restore --live {self.drill.snapshot}",
                    [step for _, step in self.steps()] + self.drill.cleanup()[1:])


@dataclass(frozen=True)
class Outcome:
    ok: bool
    failed: str | None  # the step's name
    detail: str
    stopped: bool  # the app services were stopped and not started again

    def summary(self, snapshot: str, before: str) -> str:
        if self.ok:
            return f"restored snapshot {snapshot} into the live database: {self.detail}"
        text = f"restore of snapshot {snapshot} FAILED at {self.failed}: {self.detail}"
        if self.stopped:
            text += (f"\nthe app services are STOPPED; the state from before is backup {before}: "
                     f"restore it with `invoke db.restore --live --snapshot <its id from invoke db.backups>`")
        return text


def run(runner, live: LiveRestore) -> Outcome:
    """The steps in order; the census is checked against the restored manifest before `start`."""
    manifest, stopped = None, False
    try:
        for name, step in live.steps():
            try:
                output = drills._one(runner, step)
            except StepFailed as failed:
                return Outcome(False, name, drills._reason(failed), stopped)
            if name == "stop":
                stopped = True
            elif name == "start":
                stopped = False
            elif name == "manifest":
                try:
                    sha, size, manifest = drills.read_restored(output)
                except (ValueError, drills.manifests.ManifestError) as exc:
                    return Outcome(False, "manifest", str(exc), stopped)
                check = drills.verify_dump(manifest, sha, size)
                if not check.ok:
                    return Outcome(False, "sha256", check.detail, stopped)
            elif name == "census":
                try:
                    found = drills.read_census(output)
                except ValueError as exc:
                    return Outcome(False, "census", str(exc), stopped)
                wrong = [c for c in drills.verify_census(manifest, *found) if not c.ok]
                if wrong:
                    return Outcome(False, wrong[0].name, wrong[0].detail, stopped)
        rows = sum(manifest.rows.values())
        return Outcome(True, None, f"revision {manifest.revision}, {len(manifest.rows)} tables, {rows} rows", False)
    finally:
        for step in live.drill.cleanup()[1:]:  # the folder; there is no scratch database
            try:
                drills._one(runner, step)
            except StepFailed:
                pass
