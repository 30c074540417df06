"""The restore drill: a backup is proven by restoring it, not by its size.

Steps (data, printed by --dry-run), each with the check it proves:

    restore    restic dump of the snapshot's set into a 0700 folder on the server (restic
               verifies every blob it decrypts: a flipped byte in the repository fails here)
    manifest   the restored manifest.json parses and names this dump
    sha256     the restored dump's sha256 and size equal the manifest's
    scratch    a scratch database `<db>_drill_<id>` is created
    pg_restore the dump restores into it (one transaction, stops at the first error)
    revision   Alembic's revision there equals the manifest's
    rows       every table's row count there equals the manifest's
    ui_select  the UI role may connect and SELECT every app table there
    cleanup    the scratch database is dropped and the restored files removed: ALWAYS, also after
               a failed check

`run` executes them in order and stops at the first failed check; `verify_*` are pure.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field

from ..errors import StepFailed
from ..postgres import quote_ident
from ..steps import SERVER, Plan, Run, WriteFile
from . import manifest as manifests
from . import restic
from .plan import HERE, Settings

CHECKS = ("restore", "manifest", "sha256", "scratch", "pg_restore", "revision", "rows", "ui_select", "cleanup")
_ID = re.compile(r"^[a-z0-9]{1,16}$")
_SNAPSHOT = re.compile(r"^(latest|[0-9a-f]{8,64})$")
_RESTORE = ('set -eu; umask 077; dir=$1; shift; mkdir -- "$dir"; "$@" >"$dir/set.tar"; '
            'tar -x -f "$dir/set.tar" -C "$dir"; rm -- "$dir/set.tar"; ls -- "$dir/backup"')
_READ = ('set -eu; cd -- "$1/backup"; echo "opskit-sha256 $(sha256sum db.dump | cut -d" " -f1)"; '
         'echo "opskit-size $(wc -c <db.dump)"; echo opskit-manifest; cat manifest.json')
_FROM_FILE = 'file=$1; shift; exec "$@" <"$file"'


@dataclass(frozen=True)
class Drill:
    settings: Settings
    snapshot: str  # a restic snapshot id, or "latest"
    drill_id: str  # names the scratch database and folder (a few lowercase letters and digits)
    ui_role: str
    admin_role: str

    def __post_init__(self):
        if not _SNAPSHOT.match(self.snapshot):
            raise ValueError(f"snapshot {self.snapshot!r}: `latest` or a hex snapshot id")
        if not _ID.match(self.drill_id):
            raise ValueError(f"drill id {self.drill_id!r}: 1-16 lowercase letters and digits")
        if len(self.scratch.encode()) > 63:  # Postgres would cut it short and drop the wrong name
            raise ValueError(f"scratch database name {self.scratch!r} is longer than 63 bytes")

    @property
    def scratch(self) -> str:
        return f"{self.settings.database}_drill_{self.drill_id}"

    @property
    def folder(self) -> str:
        return posixpath.join(self.settings.root, f".drill-{self.drill_id}")

    @property
    def dump_file(self) -> str:
        return posixpath.join(self.folder, "backup", manifests.DUMP_FILE)

    def _psql(self, database: str, *args: str) -> list[str]:
        return [*self.settings.psql_prefix, "psql", "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1",
                "--username", self.settings.superuser_role, "--dbname", database, *args]

    def steps(self) -> list[tuple[str, Run]]:
        """(check, step) in order, cleanup not included."""
        s, access = self.settings, self.settings.access
        dump = restic.container_argv(access, *restic.restic_argv(
            access, "dump", *restic.host_filter(access), self.snapshot, restic.SET_PATH))
        create = (f"CREATE DATABASE {quote_ident(self.scratch)} OWNER {quote_ident(self.admin_role)} "
                  "TEMPLATE template0")
        pg_restore = [*s.psql_prefix, "pg_restore", "--no-password", "--exit-on-error", "--single-transaction",
                      "--username", s.superuser_role, "--dbname", self.scratch]
        census = (HERE / "census.sql").read_bytes() + (HERE / "ui_select.sql").read_bytes()
        return [
            ("restore", Run(f"restore snapshot {self.snapshot} to {self.folder}",
                            ["sh", "-c", _RESTORE, "opskit-drill-restore", self.folder, *dump], on=SERVER,
                            timeout=3600)),
            ("manifest", Run("read the restored set", ["sh", "-c", _READ, "opskit-drill-read", self.folder],
                             on=SERVER, timeout=600)),
            ("scratch", Run(f"create scratch database {self.scratch}",
                            self._psql("postgres", "--command", create), on=SERVER, timeout=120)),
            ("pg_restore", Run(f"pg_restore into {self.scratch}",
                               ["sh", "-c", _FROM_FILE, "opskit-drill-pg-restore", self.dump_file, *pg_restore],
                               on=SERVER, timeout=3600)),
            ("revision", Run(f"census of {self.scratch} (revision, rows, UI role)",
                             self._psql(self.scratch, "-A", "-t", "-v", f"ui={self.ui_role}", "-f", "-"),
                             on=SERVER, stdin=census, timeout=600)),
        ]

    def cleanup(self) -> list[Run]:
        drop = f"DROP DATABASE IF EXISTS {quote_ident(self.scratch)} WITH (FORCE)"
        return [Run(f"drop scratch database {self.scratch}", self._psql("postgres", "--command", drop), on=SERVER,
                    timeout=300),
                Run(f"remove {self.folder}", ["rm", "-rf", "--", self.folder], on=SERVER, timeout=300)]

    def plan(self) -> Plan:
        """Every step, cleanup included: what --dry-run prints."""
        return Plan(f"db.restore drill {self.snapshot}", [step for _, step in self.steps()] + self.cleanup())


# -- the verdict (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class DrillReport:
    snapshot: str
    scratch: str
    checks: tuple = ()
    manifest: manifests.Manifest | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks) and \
            {c.name for c in self.checks} == set(CHECKS)

    @property
    def failed(self) -> CheckResult | None:
        return next((c for c in self.checks if not c.ok), None)

    def summary(self) -> str:
        head = (f"drill of snapshot {self.snapshot}: " +
                ("passed" if self.ok else f"FAILED at {self.failed.name}" if self.failed else "incomplete"))
        lines = [head] + [f"  {'ok  ' if c.ok else 'FAIL'} {c.name}" + (f": {c.detail}" if c.detail else "")
                          for c in self.checks]
        return "\n".join(lines)

    def to_json(self, time: str | None = None) -> str:
        """What the server keeps as the latest drill's record (for the smoke check); `time` is
        when it ran (ISO 8601, UTC)."""
        return json.dumps({"time": time, "snapshot": self.snapshot, "ok": self.ok,
                           "failed": self.failed.name if self.failed else None,
                           "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks]},
                          indent=2) + "\n"


RECORD = "drill-last.json"


def record_step(settings: Settings, report: DrillReport, time: str) -> WriteFile:
    """The latest drill's verdict where the smoke suite reads it, beside the sets (0600)."""
    return WriteFile(f"record the drill's verdict in {RECORD}", posixpath.join(settings.root, RECORD),
                     report.to_json(time).encode(), mode=0o600)


def read_restored(output: str) -> tuple[str, int, manifests.Manifest]:
    """The `manifest` step's output -> (sha256, size, manifest); ManifestError when it is not one."""
    sha, size, rest = "", -1, None
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("opskit-sha256 "):
            sha = line.split(" ", 1)[1].strip()
        elif line.startswith("opskit-size "):
            size = int(line.split(" ", 1)[1].strip() or -1)
        elif line == "opskit-manifest":
            rest = "\n".join(lines[i + 1:])
            break
    if rest is None:
        raise manifests.ManifestError("manifest: the restored set has no manifest.json")
    return sha, size, manifests.parse(rest)


def verify_dump(manifest: manifests.Manifest, sha256: str, size: int) -> CheckResult:
    if sha256 != manifest.sha256:
        return CheckResult("sha256", False, f"the restored dump's sha256 {sha256[:12]}… is not the manifest's "
                                            f"{manifest.sha256[:12]}…")
    if size != manifest.size:
        return CheckResult("sha256", False, f"the restored dump has {size} bytes, the manifest says {manifest.size}")
    return CheckResult("sha256", True, f"{manifest.sha256[:12]}…, {size} bytes")


def read_census(output: str) -> tuple[str | None, dict, dict]:
    """The census step's output -> (revision, rows, ui); ValueError when a line is missing."""
    census = ui = None
    for line in output.splitlines():
        if line.startswith("opskit-census "):
            census = json.loads(line[len("opskit-census "):])
        elif line.startswith("opskit-ui "):
            ui = json.loads(line[len("opskit-ui "):])
    if census is None or ui is None:
        raise ValueError("the census printed no `opskit-census` or `opskit-ui` line")
    return census.get("revision"), dict(census.get("rows") or {}), ui


def verify_census(manifest: manifests.Manifest, revision: str | None, rows: dict, ui: dict) -> list[CheckResult]:
    out = []
    if revision == manifest.revision:
        out.append(CheckResult("revision", True, str(revision)))
    else:
        out.append(CheckResult("revision", False, f"restored revision {revision} is not the manifest's "
                                                  f"{manifest.revision}"))
    wrong = [f"{t}: {rows.get(t, 'missing')} restored, {n} in the manifest"
             for t, n in sorted(manifest.rows.items()) if rows.get(t) != n]
    wrong += [f"{t}: {rows[t]} restored, not in the manifest" for t in sorted(set(rows) - set(manifest.rows))]
    out.append(CheckResult("rows", not wrong, "; ".join(wrong) if wrong else
                           f"{len(rows)} tables, {sum(rows.values())} rows"))
    denied = list(ui.get("denied") or [])
    if not ui.get("connect"):
        out.append(CheckResult("ui_select", False, "the UI role may not connect to the restored database"))
    elif denied:
        out.append(CheckResult("ui_select", False, "the UI role may not SELECT from " + ", ".join(denied)))
    else:
        out.append(CheckResult("ui_select", True))
    return out


# -- running it -------------------------------------------------------------------------------------


def run(runner, drill: Drill) -> DrillReport:
    """Run the drill's steps one by one, stop at the first failed check, clean up always."""
    checks: list[CheckResult] = []
    manifest = None
    try:
        for name, step in drill.steps():
            try:
                output = _one(runner, step)
            except StepFailed as failed:
                checks.append(CheckResult(name, False, _reason(failed)))
                break
            if name == "manifest":
                try:
                    sha, size, manifest = read_restored(output)
                except (ValueError, manifests.ManifestError) as exc:
                    checks.append(CheckResult("manifest", False, str(exc)))
                    break
                checks.append(CheckResult("manifest", True, f"release {manifest.release}, {manifest.time:%Y-%m-%d %H:%M}"))
                checks.append(verify_dump(manifest, sha, size))
                if not checks[-1].ok:
                    break
            elif name == "revision":
                try:
                    found = read_census(output)
                except ValueError as exc:
                    checks.append(CheckResult("revision", False, str(exc)))
                    break
                checks.extend(verify_census(manifest, *found))
            else:
                checks.append(CheckResult(name, True))
    finally:
        problems = []
        for step in drill.cleanup():
            try:
                _one(runner, step)
            except StepFailed as failed:
                problems.append(f"{step.title}: {_reason(failed)}")
        checks.append(CheckResult("cleanup", not problems, "; ".join(problems)))
    return DrillReport(drill.snapshot, drill.scratch, tuple(checks), manifest)


def _one(runner, step: Run) -> str:
    return runner.run(Plan(step.title, [step]))[0].output


def _reason(failed: StepFailed, lines: int = 4) -> str:
    """The last lines of what the failed step printed (its command is in the plan, not here)."""
    text = failed.output.strip() or (f"exit {failed.returncode}" if failed.returncode is not None else "failed")
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())
