"""What `invoke db.backup`, `db.backups` and `db.restore` do, over one SSH connection.

Each builds its steps with `opskit.backup.plan`/`drill`/`live` and runs them with the one runner;
nothing here writes a secret (restic's files come with the release: the deploy installs them).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import sys
import time
from pathlib import Path

from ..errors import OpskitError, UsageError
from ..layout import Layout
from ..steps import Plan
from . import drill as drills, live as lives, manifest as manifests, plan as plans, settings, snapshots

SET_FILES = (manifests.DUMP_FILE, manifests.SUM_FILE, manifests.MANIFEST_FILE)


class BackupFailed(OpskitError):
    """A drill or restore whose check failed (the message names it)."""


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def backup(env, conn, runner, release: str, download: str | None = None) -> str:
    """One backup now; returns its stamp. `download`: also copy the set to this folder here."""
    s = settings.settings(env)
    stamp = settings.stamp()
    runner.run(plans.backup_plan(s, stamp, release))
    if download and not runner.dry_run:
        print(f"downloaded to {fetch_set(conn, s.set_folder(stamp), Path(download) / f'{env.project}-{stamp}')}")
    return stamp


def fetch_set(conn, remote: str, local: Path) -> Path:
    """The set's files to `local` (0700, files 0600), the dump's sha256 checked against its manifest."""
    local.mkdir(mode=0o700, parents=True, exist_ok=False)
    os.chmod(local, 0o700)
    sftp = conn.client.open_sftp()
    try:
        for name in SET_FILES:
            target = local / name
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                sftp.getfo(posixpath.join(remote, name), out)
    finally:
        sftp.close()
    manifest = manifests.parse((local / manifests.MANIFEST_FILE).read_text())
    digest = hashlib.sha256()
    with open(local / manifests.DUMP_FILE, "rb") as dump:
        for chunk in iter(lambda: dump.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != manifest.sha256:
        raise BackupFailed(f"{local / manifests.DUMP_FILE}: its sha256 is not the manifest's: the copy is damaged")
    return local


def listing(env, runner) -> list[snapshots.Snapshot]:
    [done] = runner.run(Plan("db.backups", [plans.snapshots_step(settings.access(env))]))
    return snapshots.parse(done.output)


def resolve(env, runner, wanted: str) -> snapshots.Snapshot:
    """`latest` or an id (or its prefix) -> the snapshot, or UsageError naming what there is."""
    found = listing(env, runner)
    if not found:
        raise UsageError(f"{env.name}: the backup repository holds no snapshot: take one with "
                         f"`invoke db.backup -e {env.name}`")
    if wanted == "latest":
        return found[0]
    matches = [s for s in found if s.id.startswith(wanted.lower())]
    if len(matches) != 1:
        raise UsageError(f"snapshot {wanted!r}: {'no' if not matches else len(matches)} match among "
                         f"{len(found)}; `invoke db.backups -e {env.name}` lists them")
    return matches[0]


def drill(env, runner, snapshot: str = "latest") -> drills.DrillReport:
    pg = env.postgres
    s = settings.settings(env)
    chosen = snapshot if runner.dry_run else resolve(env, runner, snapshot).id
    d = drills.Drill(s, chosen, settings.drill_id(), pg.ui_role, pg.admin_role)
    if runner.dry_run:
        runner.run(d.plan())
        return drills.DrillReport(chosen, d.scratch)
    report = drills.run(runner, d)
    runner.run(Plan("drill record", [drills.record_step(s, report, now_iso())]))
    return report


def restore_live(env, runner, roles_step, release: str, snapshot: str = "latest") -> lives.Outcome:
    pg = env.postgres
    s = settings.settings(env)
    chosen = snapshot if runner.dry_run else resolve(env, runner, snapshot).id
    live = lives.LiveRestore(s, drills.Drill(s, chosen, settings.drill_id(), pg.ui_role, pg.admin_role),
                             Layout(env.remote_dir).current, roles_step, settings.stamp(), release)
    if runner.dry_run:
        runner.run(live.plan())
        return lives.Outcome(True, None, "dry run", False)
    print(f"restoring snapshot {chosen[:8]} into {pg.database} on {env.name}; the current state is backed up "
          f"first as {live.stamp}", file=sys.stderr)
    outcome = lives.run(runner, live)
    print(outcome.summary(chosen[:8], live.stamp))
    return outcome
